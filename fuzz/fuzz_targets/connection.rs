//! A whole client connection through the server's own `Session` — the code the event loop runs —
//! with no socket: the input is split into reads, each read goes to `Session::on_bytes`, and what
//! the session does is recorded: the handler callbacks (open, heartbeat, application message,
//! close with reason), the presence events, every byte it wrote, and its verdict. Then the clock
//! jumps ahead in 10-minute steps and the session's timer runs (handshake timeout, eviction, close
//! timeout) until the session is gone. The connection is run twice, in one read and in the reads
//! the input chooses, and both runs must tell the same story.
//!
//! Input layout:
//!   byte 0      bits 0-1 path and bits 2-3 allowed origins, as in the handshake target; bits
//!               4-5 max_message_size: 125, 4096, 65536 or 1 MiB; bit 6 alone JWT auth (HS256,
//!               secret `fuzz-secret`: tokens in `?token=` and `token JWT` refreshes); bit 7 alone
//!               --liveness heartbeat; bits 6 and 7 the auth webhook: the upgrade waits until
//!               the input is all read, then gets the verdict bits 0-1 choose (accept as
//!               `device-42`, 401, an error, or none: the backstop timer)
//!   byte 1      N = 1 + (b % 16): how many read sizes follow
//!   N bytes     read sizes, each b + 1 (1..=256), used cyclically
//!   the rest    what the client sent: an upgrade request, then masked frames
//!
//! Checked: no panics; with JWT or the webhook, no connection opens without the id it was given;
//! the webhook is asked at most once and its call dropped when the connection goes before; the
//! same callbacks, events, output bytes, verdict and final state for both
//! read patterns; an application text message is never a heartbeat by an independent reading of
//! the grammar; what the server wrote after its 101 is a sequence of well-formed, whole, unmasked
//! frames, and every close frame it sent carries a valid code; every session ends within three
//! timer steps, out of the registry and with no timer left.
#![no_main]

mod common;

use std::sync::{Arc, Mutex};

use common::{Beat, model_heartbeat};
use libfuzzer_sys::fuzz_target;
use wsbeat::auth::jwt::{JwtKey, JwtSettings, JwtVerifier};
use wsbeat::auth::webhook::{QueueFull, Verdict, WebhookRequest};
use wsbeat::config::{Config, DuplicateId, Liveness};
use wsbeat::handler::{AppMessage, ConnInfo, Control, Handler};
use wsbeat::presence::{ConnId, OfflineReason, PresenceEvent, SharedRegistry};
use wsbeat::protocol::frame::{OpCode, parse_header_any};
use wsbeat::protocol::message::parse_close_payload;
use wsbeat::session::{After, AskBackend, Context, Gate, Phase, Session};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Open(Option<String>),
    Bind(Option<String>),
    Beat(Option<String>),
    Text(String),
    Binary(Vec<u8>),
    Close(Option<String>, OfflineReason),
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Step>>>);

fn id(c: &ConnInfo<'_>) -> Option<String> {
    c.id.map(str::to_owned)
}

impl Handler for Recorder {
    fn on_open(&mut self, c: &ConnInfo<'_>, _: &mut Control) {
        self.0.lock().unwrap().push(Step::Open(id(c)));
    }
    fn on_bind(&mut self, c: &ConnInfo<'_>, _: &mut Control) {
        self.0.lock().unwrap().push(Step::Bind(id(c)));
    }
    fn on_heartbeat(&mut self, c: &ConnInfo<'_>, _: &mut Control) {
        self.0.lock().unwrap().push(Step::Beat(id(c)));
    }
    fn on_message(&mut self, _: &ConnInfo<'_>, m: AppMessage<'_>, _: &mut Control) {
        let step = match m {
            AppMessage::Text(t) => {
                assert_eq!(
                    model_heartbeat(t),
                    Beat::Not,
                    "a heartbeat handed to the application: {t:?}"
                );
                Step::Text(t.to_owned())
            }
            AppMessage::Binary(b) => Step::Binary(b.to_vec()),
        };
        self.0.lock().unwrap().push(step);
    }
    fn on_close(&mut self, c: &ConnInfo<'_>, r: OfflineReason, _: &mut Control) {
        self.0.lock().unwrap().push(Step::Close(id(c), r));
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Story {
    steps: Vec<Step>,
    events: Vec<PresenceEvent>,
    out: Vec<u8>,
    verdict: After,
    phase: Phase,
    client_id: Option<String>,
    /// No buffer held by a kept session (capacities may differ with the reads, emptiness may not).
    idle: bool,
    /// What the timer steps did after the input.
    ending: Vec<After>,
}

/// The webhook as the session sees it: records what it is asked.
#[derive(Default)]
struct Asked(Mutex<Vec<(ConnId, bool)>>);

impl AskBackend for Asked {
    fn ask(&self, conn: ConnId, _: WebhookRequest) -> Result<(), QueueFull> {
        self.0.lock().unwrap().push((conn, true));
        Ok(())
    }
    fn cancel(&self, conn: ConnId) {
        self.0.lock().unwrap().push((conn, false));
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Auth {
    Open,
    Jwt,
    /// The verdict given once the input is read (`None`: no answer).
    Webhook(Option<fn() -> Verdict>),
}

fn run(data: &[u8], rs: &[std::ops::Range<usize>], cfg: &Config, auth: Auth) -> Story {
    let rec = Recorder::default();
    let mut cx = Context::new(
        cfg.clone(),
        Arc::new(SharedRegistry::new()),
        Box::new(rec.clone()),
        true,
        1,
    );
    let asked = Arc::new(Asked::default());
    let jwt = auth == Auth::Jwt;
    if let Auth::Webhook(_) = auth {
        cx.gate = Gate::Webhook(asked.clone(), 2000);
    }
    if jwt {
        let settings = JwtSettings {
            key: JwtKey::Secret(b"fuzz-secret".to_vec()),
            issuer: None,
            audience: None,
        };
        cx.gate = Gate::Jwt(Arc::new(JwtVerifier::new(&settings).unwrap()));
        // Unix time 2000-01-01: the seeds' tokens expire in 2100, or in the first timer step.
        cx.tick(0, 946_684_800_000);
    }
    let mut s = Session::accept((), ConnId::from_raw(0), &mut cx);
    let mut out = Vec::new();
    let mut verdict = After::Keep;
    // A read hands over at least one byte (zero is the end of the stream).
    for r in rs.iter().filter(|r| !r.is_empty()) {
        let mut read = data[r.clone()].to_vec();
        verdict = s.on_bytes(&mut cx, &mut read);
        out.extend_from_slice(&cx.out);
        cx.out.clear();
        if verdict != After::Keep {
            break;
        }
    }
    if let (Auth::Webhook(Some(answer)), After::Keep) = (auth, verdict) {
        if s.phase() == Phase::Authorizing {
            verdict = s.on_authorized(&mut cx, answer());
            out.extend_from_slice(&cx.out);
            cx.out.clear();
        }
    }
    // A session the driver drops frees its buffers with it: only a kept one's count.
    let idle = verdict != After::Keep || s.buffered_bytes() == 0;
    let (phase, client_id) = (s.phase(), s.client_id().map(str::to_owned));
    let mut ending = Vec::new();
    if verdict == After::Keep {
        let mut now = 0;
        'steps: for _ in 0..3 {
            now += 600_000;
            cx.tick(now, if jwt { 946_684_800_000 + now } else { now });
            while let Some((_, conn)) = cx.timers.poll(now) {
                assert_eq!(conn, s.id());
                let after = s.on_timer(&mut cx);
                out.extend_from_slice(&cx.out);
                cx.out.clear();
                ending.push(after);
                if after != After::Keep {
                    break 'steps;
                }
            }
        }
        assert!(
            matches!(ending.last(), Some(After::Close(..))),
            "never ended: {ending:?}"
        );
        assert!(cx.timers.is_empty() && cx.registry.is_empty());
    }
    let steps = rec.0.lock().unwrap().clone();
    if auth != Auth::Open {
        for s in &steps {
            assert!(
                !matches!(s, Step::Open(None)),
                "a connection opened without the id auth gave: {steps:?}"
            );
        }
    }
    let calls = asked.0.lock().unwrap().clone();
    assert!(
        calls.len() <= 2 && calls.first().is_none_or(|c| c.1),
        "asked: {calls:?}"
    );
    Story {
        steps,
        events: std::mem::take(&mut cx.events),
        out,
        verdict,
        phase,
        client_id,
        idle,
        ending,
    }
}

/// The status of the response at the start of `out`.
fn status(out: &[u8]) -> Option<&[u8]> {
    out.strip_prefix(b"HTTP/1.1 ").map(|r| &r[..3.min(r.len())])
}

/// Checks the frames the server wrote after a 101: well formed, whole, unmasked, close codes valid.
fn check_server_frames(out: &[u8]) {
    if status(out) != Some(b"101") {
        return;
    }
    let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") else {
        panic!("an incomplete 101: {out:?}");
    };
    let mut rest = &out[end + 4..];
    while !rest.is_empty() {
        let (h, n) = match parse_header_any(rest) {
            Ok(Some(x)) => x,
            other => panic!("the server wrote a bad frame header: {other:?} in {rest:?}"),
        };
        assert!(h.fin && h.mask.is_none(), "server frames are whole and unmasked: {h:?}");
        let len = usize::try_from(h.len).unwrap();
        let payload = &rest[n..n + len];
        if h.opcode == OpCode::Close && !payload.is_empty() {
            assert!(
                parse_close_payload(payload).is_ok(),
                "invalid close payload {payload:?}"
            );
        }
        rest = &rest[n + len..];
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
    let cfg = Config {
        path: [None, Some("/"), Some("/ws"), Some("/chat")][sel as usize & 3].map(String::from),
        allowed_origins: allowed,
        max_message_size: [125, 4096, 65536, 1 << 20][(sel as usize >> 4) & 3],
        duplicate_id: DuplicateId::Replace,
        liveness: if sel >> 6 == 2 {
            Liveness::Heartbeat
        } else {
            Liveness::Any
        },
        admin_listen: None,
        handle_signals: false,
        ..Config::default()
    };

    let auth = match sel >> 6 {
        0 | 2 => Auth::Open,
        1 => Auth::Jwt,
        _ => Auth::Webhook(
            [
                Some((|| Verdict::Accept("device-42".into())) as fn() -> Verdict),
                Some(|| Verdict::Unauthorized),
                Some(|| Verdict::Unavailable("fuzz".into())),
                None,
            ][sel as usize & 3],
        ),
    };
    let one = run(conn, &common::reads(conn.len(), &[]), &cfg, auth);
    let many = run(conn, &common::reads(conn.len(), sizes), &cfg, auth);
    check_server_frames(&one.out);
    let refused = |s: &Story| status(&s.out).is_some_and(|st| st != b"101");
    if refused(&one) && refused(&many) && (status(&one.out) == Some(b"431") || status(&many.out) == Some(b"431")) {
        // A head that outgrows MAX_HEADER_BYTES is refused with 431 as soon as the buffer is full;
        // a bigger single read may instead reach a malformed byte past that point first. Either
        // way the request is refused and nothing else happens: only the response may differ.
        assert!(one.steps.is_empty() && many.steps.is_empty());
        let failing = Phase::Failing { write_shut: false };
        assert_eq!((one.phase, many.phase), (failing, failing));
    } else {
        assert_eq!(one, many, "one read vs reads of {sizes:?}");
    }
});
