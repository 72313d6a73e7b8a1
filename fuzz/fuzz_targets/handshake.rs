//! The opening handshake parser, `protocol::handshake::parse_request`, on arbitrary bytes under a
//! policy chosen by the input, and the responses written for its outcomes.
//!
//! Input layout:
//!   byte 0      policy: bits 0-1 pick the path (none, "/", "/ws", "/chat"); bits 2-3 the allowed
//!               origins (none, an empty list, ["http://example.com"],
//!               ["https://good.example", "http://example.com"])
//!   the rest    the bytes the client sent
//!
//! Checked:
//! - never `Partial` once the buffer holds `MAX_HEADER_BYTES`; statuses are ones the server uses;
//! - `Accept`: 0 < consumed <= len and <= MAX_HEADER_BYTES, a 28-character base64 accept key
//!   (20 bytes), a valid client id if any; every prefix shorter than `consumed` is `Partial` (so
//!   never an `Accept`, in particular), and every longer one the same `Accept`;
//! - the outcome is monotonic over prefixes: once a prefix gives an answer other than `Partial`,
//!   longer prefixes give the same answer (except the length-based 431, which a longer buffer may
//!   turn into another rejection: the caller never gets that far);
//! - `write_accept` / `write_rejection` produce one complete HTTP/1.1 response (checked with
//!   httparse) with the right status, `Sec-WebSocket-Accept`, `Content-Length` and body.
#![no_main]

mod common;

use common::{header, parse_response};
use libfuzzer_sys::fuzz_target;
use wsbeat::protocol::handshake::{MAX_HEADER_BYTES, Outcome, Policy, parse_request, write_accept, write_rejection};
use wsbeat::protocol::heartbeat::is_valid_client_id;

pub fn origins(sel: u8) -> Option<Vec<String>> {
    match sel & 3 {
        0 => None,
        1 => Some(vec![]),
        2 => Some(vec!["http://example.com".into()]),
        _ => Some(vec!["https://good.example".into(), "http://example.com".into()]),
    }
}

pub fn path(sel: u8) -> Option<&'static str> {
    [None, Some("/"), Some("/ws"), Some("/chat")][sel as usize & 3]
}

fn is_base64_20(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 28
        && b[27] == b'='
        && b[..27]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
}

/// The 431 that only says the buffer filled up without a complete head.
fn length_based(o: &Outcome) -> bool {
    matches!(o, Outcome::Reject(r) if r.status == 431 && r.reason == "request headers too large")
}

fn check_response(o: &Outcome) {
    let mut out = Vec::new();
    match o {
        Outcome::Partial => {}
        Outcome::Accept(a) => {
            write_accept(&mut out, &a.accept);
            let (hs, n) = parse_response(&out, 101);
            assert_eq!(n, out.len(), "bytes after the 101 head");
            assert_eq!(header(&hs, "sec-websocket-accept"), Some(a.accept.as_bytes()));
            assert!(header(&hs, "upgrade").is_some_and(|v| v.eq_ignore_ascii_case(b"websocket")));
            assert!(header(&hs, "connection").is_some_and(|v| v.eq_ignore_ascii_case(b"upgrade")));
        }
        Outcome::Reject(r) => {
            write_rejection(&mut out, r);
            let (hs, n) = parse_response(&out, r.status);
            let body = &out[n..];
            let len: usize = std::str::from_utf8(header(&hs, "content-length").expect("Content-Length"))
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(len, body.len());
            assert_eq!(body, format!("{}\n", r.reason).as_bytes());
            assert_eq!(header(&hs, "connection"), Some(&b"close"[..]));
            assert_eq!(r.status == 426, header(&hs, "sec-websocket-version") == Some(b"13"));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, req)) = data.split_first() else {
        return;
    };
    let allowed = origins(sel >> 2);
    // Bits 4-5 choose limits in other targets; here bit 6 asks for the
    // `token` parameter and bit 7 for the request as the webhook sees it.
    let policy = Policy {
        path: path(sel),
        allowed_origins: allowed.as_deref(),
        token: sel & 0x40 != 0,
        capture: sel & 0x80 != 0,
    };

    let full = parse_request(req, &policy);
    if req.len() >= MAX_HEADER_BYTES {
        assert_ne!(full, Outcome::Partial, "Partial with {} bytes buffered", req.len());
    }
    match &full {
        Outcome::Partial => {}
        Outcome::Accept(a) => {
            assert!(a.consumed > 0 && a.consumed <= req.len() && a.consumed <= MAX_HEADER_BYTES);
            assert!(is_base64_20(&a.accept), "accept key {:?}", a.accept);
            if let Some(id) = &a.client_id {
                assert!(is_valid_client_id(id.as_bytes()), "client id {id:?}");
            }
        }
        Outcome::Reject(r) => {
            assert!([400, 403, 404, 426, 431].contains(&r.status), "{r:?}");
        }
    }
    check_response(&full);

    // Prefixes: all of them for short inputs, else an even sample plus the interesting points.
    let len = req.len();
    let mut cuts: Vec<usize> = if len <= 600 {
        (0..=len).collect()
    } else {
        (0..=128).map(|i| i * len / 128).collect()
    };
    if let Outcome::Accept(a) = &full {
        cuts.extend([a.consumed.saturating_sub(1), a.consumed, a.consumed + 1]);
    }
    cuts.extend([MAX_HEADER_BYTES - 1, MAX_HEADER_BYTES, MAX_HEADER_BYTES + 1]);
    cuts.retain(|&k| k <= len);
    cuts.sort_unstable();
    cuts.dedup();

    let mut settled: Option<(usize, Outcome)> = None;
    for &k in &cuts {
        let o = parse_request(&req[..k], &policy);
        if let Outcome::Accept(a) = &full {
            if k < a.consumed {
                assert_eq!(
                    o,
                    Outcome::Partial,
                    "prefix {k} of a request accepted at {}",
                    a.consumed
                );
            } else {
                assert_eq!(&o, &full, "prefix {k} of a request accepted at {}", a.consumed);
            }
        }
        if let Some((at, s)) = &settled {
            assert_eq!(&o, s, "prefix {k} differs from prefix {at}");
        } else if o != Outcome::Partial && !length_based(&o) {
            check_response(&o);
            settled = Some((k, o));
        }
    }
});
