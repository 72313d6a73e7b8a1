//! A whole client connection through the sans-IO core, as the event loop drives it: reads are
//! appended to a buffer that goes to `handshake::parse_request` until it answers; after an
//! `Accept` the bytes past `consumed`, and every later read, go to a `Decoder`; text messages go
//! through `heartbeat::parse_heartbeat`, close payloads through `message::parse_close_payload`.
//! The connection is run twice, in one read and in the reads the input chooses, and both runs
//! must tell the same story.
//!
//! Input layout:
//!   byte 0      bits 0-1 path and bits 2-3 allowed origins, as in the handshake target; bits
//!               4-5 max_message_size: 125, 4096, 65536 or 1 MiB
//!   byte 1      N = 1 + (b % 16): how many read sizes follow
//!   N bytes     read sizes, each b + 1 (1..=256), used cyclically
//!   the rest    what the client sent: an upgrade request, then masked frames
//!
//! Checked: no panics; the same events for both read patterns (handshake outcome, messages,
//! heartbeat classifications, the error that ended decoding) and the same final state; heartbeat
//! classification equals an independent reading of the grammar; a close frame's (code, reason)
//! re-validates to itself, and ping payloads taken as close payloads follow the close rules.
#![no_main]

mod common;

use common::{Beat, Event, model_close, model_heartbeat, own, reads};
use libfuzzer_sys::fuzz_target;
use wsbeat::protocol::handshake::{MAX_HEADER_BYTES, Outcome, Policy, parse_request};
use wsbeat::protocol::heartbeat::{Heartbeat, parse_heartbeat};
use wsbeat::protocol::message::{Decoder, Limits, Message, parse_close_payload};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Accepted {
        consumed: usize,
        accept: String,
        client_id: Option<String>,
    },
    Rejected(u16, &'static str),
    Msg(Event),
    Beat(Beat),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    /// Still in the handshake, with this many bytes buffered.
    Handshaking(usize),
    /// Refused; true when the buffer had reached MAX_HEADER_BYTES by then.
    Rejected(bool),
    /// Decoding stopped at an error or a close frame.
    Stopped,
    /// Open, with `Decoder::is_idle()`.
    Open(bool),
}

fn beat(b: Heartbeat<'_>) -> Beat {
    match b {
        Heartbeat::NotHeartbeat => Beat::Not,
        Heartbeat::Plain => Beat::Plain,
        Heartbeat::WithId(id) => Beat::WithId(id.to_owned()),
        Heartbeat::InvalidId => Beat::InvalidId,
    }
}

fn check_close_payload(payload: &[u8]) {
    let got = match parse_close_payload(payload) {
        Ok(c) => Event::Close(c.map(|(c, r)| (c, r.to_owned()))),
        Err(e) => Event::Error(e.code),
    };
    assert_eq!(got, model_close(payload), "close payload {payload:?}");
}

/// Decodes `buf` (one read, or what followed the request in the read that completed it).
/// Returns false once decoding has stopped.
fn decode(dec: &mut Decoder, buf: &mut [u8], limits: &Limits, steps: &mut Vec<Step>) -> bool {
    let mut pos = 0;
    loop {
        match dec.decode(&mut buf[pos..], limits) {
            Ok((_, None)) => return true,
            Ok((used, Some(m))) => {
                pos += used;
                steps.push(Step::Msg(own(&m)));
                match m {
                    Message::Text(t) => {
                        let b = beat(parse_heartbeat(t));
                        assert_eq!(b, model_heartbeat(t), "heartbeat {t:?}");
                        steps.push(Step::Beat(b));
                    }
                    Message::Ping(p) => check_close_payload(p),
                    Message::Close(c) => {
                        // What the decoder accepted re-validates to the same thing.
                        let mut p = Vec::new();
                        if let Some((code, reason)) = c {
                            p.extend_from_slice(&code.to_be_bytes());
                            p.extend_from_slice(reason.as_bytes());
                        }
                        assert_eq!(parse_close_payload(&p), Ok(c));
                        // The server stops reading once the client's close is in.
                        return false;
                    }
                    Message::Binary(_) | Message::Pong(_) => {}
                }
            }
            Err(e) => {
                steps.push(Step::Msg(Event::Error(e.code)));
                return false;
            }
        }
    }
}

fn run(data: &[u8], rs: &[std::ops::Range<usize>], policy: &Policy<'_>, limits: &Limits) -> (Vec<Step>, End) {
    let mut steps = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut dec: Option<Decoder> = None;
    for r in rs {
        let mut read = data[r.clone()].to_vec();
        if let Some(d) = dec.as_mut() {
            if !decode(d, &mut read, limits, &mut steps) {
                return (steps, End::Stopped);
            }
            continue;
        }
        pending.extend_from_slice(&read);
        match parse_request(&pending, policy) {
            Outcome::Partial => {
                assert!(pending.len() < MAX_HEADER_BYTES);
            }
            Outcome::Reject(rj) => {
                steps.push(Step::Rejected(rj.status, rj.reason));
                return (steps, End::Rejected(pending.len() >= MAX_HEADER_BYTES));
            }
            Outcome::Accept(a) => {
                steps.push(Step::Accepted {
                    consumed: a.consumed,
                    accept: a.accept,
                    client_id: a.client_id.map(String::from),
                });
                let d = dec.insert(Decoder::new());
                if !decode(d, &mut pending[a.consumed..], limits, &mut steps) {
                    return (steps, End::Stopped);
                }
            }
        }
    }
    match dec {
        Some(d) => (steps, End::Open(d.is_idle())),
        None => (steps, End::Handshaking(pending.len())),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let Some((&n, rest)) = rest.split_first() else {
        return;
    };
    let n = (1 + n as usize % 16).min(rest.len());
    let (sizes, conn) = rest.split_at(n);
    let allowed = match (sel >> 2) & 3 {
        0 => None,
        1 => Some(vec![]),
        2 => Some(vec!["http://example.com".to_string()]),
        _ => Some(vec![
            "https://good.example".to_string(),
            "http://example.com".to_string(),
        ]),
    };
    let policy = Policy {
        path: [None, Some("/"), Some("/ws"), Some("/chat")][sel as usize & 3],
        allowed_origins: allowed.as_deref(),
    };
    let limits = Limits {
        max_message_size: [125, 4096, 65536, 1 << 20][(sel as usize >> 4) & 3],
    };

    let one = run(conn, &reads(conn.len(), &[]), &policy, &limits);
    let many = run(conn, &reads(conn.len(), sizes), &policy, &limits);
    match (&one.1, &many.1) {
        // A head that outgrows MAX_HEADER_BYTES is refused with 431 as soon as the buffer is
        // full; a bigger single read may instead reach a malformed byte past that point first.
        // Either way the request is refused (and that is the only step): only the status and
        // reason may differ.
        (End::Rejected(x), End::Rejected(y)) if *x || *y => {
            assert_eq!((one.0.len(), many.0.len()), (1, 1));
        }
        (End::Rejected(_), End::Rejected(_)) => assert_eq!(one.0, many.0, "one read vs reads of {sizes:?}"),
        _ => assert_eq!(one, many, "one read vs reads of {sizes:?}"),
    }
});
