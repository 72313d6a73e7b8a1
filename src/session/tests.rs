//! A session driven by hand: bytes in, the clock set by the test, no
//! sockets and no sleeps. (Test code only: `mod tests` is `#[cfg(test)]`.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::config::{Config, DuplicateId};
use crate::handler::{Command, Control, Handler};
use crate::presence::{PresenceEvent, SharedRegistry};

const REQUEST: &str = "GET /?client_id=dev-1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                       Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// Records what the handler hears.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Handler for Log {
    fn on_open(&mut self, c: &ConnInfo<'_>, _: &mut Control) {
        self.0.lock().unwrap().push(format!("open {:?}", c.id));
    }
    fn on_bind(&mut self, c: &ConnInfo<'_>, _: &mut Control) {
        self.0.lock().unwrap().push(format!("bind {:?}", c.id));
    }
    fn on_heartbeat(&mut self, c: &ConnInfo<'_>, _: &mut Control) {
        self.0.lock().unwrap().push(format!("beat {:?}", c.id));
    }
    fn on_message(&mut self, _: &ConnInfo<'_>, m: AppMessage<'_>, _: &mut Control) {
        self.0.lock().unwrap().push(format!("message {m:?}"));
    }
    fn on_close(&mut self, c: &ConnInfo<'_>, r: OfflineReason, _: &mut Control) {
        self.0.lock().unwrap().push(format!("close {:?} {}", c.id, r.as_str()));
    }
}

fn context(cfg: Config) -> (Context, Log) {
    let log = Log::default();
    (
        Context::new(cfg, Arc::new(SharedRegistry::new()), Box::new(log.clone()), true, 16),
        log,
    )
}

fn cfg() -> Config {
    Config {
        heartbeat_interval: Duration::from_secs(30),
        heartbeat_timeout: Duration::from_secs(60),
        close_timeout: Duration::from_secs(5),
        ..Config::default()
    }
}

fn masked(op: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    frame::encode_frame_masked(&mut v, true, op, payload, [1, 2, 3, 4]);
    v
}

/// Runs the timers due at `now`, as a driver does (taking what the session
/// writes after each call); the verdicts and the bytes written.
fn advance(cx: &mut Context, s: &mut Session, now: u64) -> (Vec<After>, Vec<u8>) {
    cx.tick(now, 1_000_000 + now);
    let mut verdicts = Vec::new();
    let mut written = Vec::new();
    while let Some((_, id)) = cx.timers.poll(now) {
        assert_eq!(id, s.id());
        verdicts.push(s.on_timer(cx));
        written.append(&mut cx.out);
    }
    (verdicts, written)
}

fn upgraded(cx: &mut Context) -> Session {
    let mut s = Session::accept((), ConnId::new(0, 0, 0), cx);
    let mut req = REQUEST.as_bytes().to_vec();
    assert_eq!(s.on_bytes(cx, &mut req), After::Keep);
    assert!(cx.out.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
    cx.out.clear();
    s
}

#[test]
fn the_upgrade_in_pieces_then_frames_in_the_same_read() {
    let (mut cx, log) = context(cfg());
    let mut s = Session::accept((), ConnId::new(3, 0, 1), &mut cx);
    let mut bytes = REQUEST.as_bytes().to_vec();
    bytes.extend(masked(OpCode::Text, b"heartbeat"));
    bytes.extend(masked(OpCode::Ping, b"p"));
    let (head, rest) = bytes.split_at_mut(10);
    assert_eq!(s.on_bytes(&mut cx, head), After::Keep);
    assert!(
        cx.out.is_empty() && s.buffered_bytes() > 0,
        "an incomplete request is kept"
    );
    assert_eq!(s.on_bytes(&mut cx, rest), After::Keep);
    assert_eq!(s.phase(), Phase::Open);
    assert_eq!(s.client_id(), Some("dev-1"));
    assert_eq!(s.buffered_bytes(), 0, "nothing kept once upgraded");
    // The 101, then the pong for the ping that came with it.
    assert!(cx.out.starts_with(b"HTTP/1.1 101"));
    assert!(cx.out.ends_with(&[0x8A, 1, b'p']));
    assert_eq!(
        *log.0.lock().unwrap(),
        ["open Some(\"dev-1\")", "bind Some(\"dev-1\")", "beat Some(\"dev-1\")"]
    );
    assert_eq!(
        cx.events,
        [PresenceEvent::Online {
            id: "dev-1".into(),
            at_ms: 0
        }]
    );
}

#[test]
fn a_silent_client_is_evicted_at_its_deadline_and_dropped_after_the_close_timeout() {
    let (mut cx, log) = context(cfg());
    let mut s = upgraded(&mut cx);
    // The server heartbeat at 30 s (a ping), nothing else.
    assert_eq!(advance(&mut cx, &mut s, 30_000), (vec![After::Keep], vec![0x89, 0]));
    assert_eq!(advance(&mut cx, &mut s, 59_999), (vec![], vec![]));
    // 60 s of silence: close 4000, out of the registry at once.
    let (verdicts, written) = advance(&mut cx, &mut s, 60_000);
    assert_eq!(verdicts, [After::Keep]);
    assert_eq!(&written[..4], [0x88, 19, 0x0F, 0xA0]);
    assert!(cx.registry.is_empty());
    assert_eq!(s.phase(), Phase::Closing);
    // No close frame back within 5 s: the driver is told to drop it.
    assert_eq!(
        advance(&mut cx, &mut s, 65_000).0,
        [After::Close(OfflineReason::Closed, "close timeout")]
    );
    assert!(cx.timers.is_empty());
    assert_eq!(
        log.0.lock().unwrap().last().unwrap(),
        "close Some(\"dev-1\") heartbeat_timeout"
    );
}

#[test]
fn frames_keep_a_client_alive_without_touching_the_timer() {
    let (mut cx, _) = context(cfg());
    let mut s = upgraded(&mut cx);
    cx.tick(50_000, 0);
    let mut f = masked(OpCode::Binary, b"x");
    assert_eq!(s.on_bytes(&mut cx, &mut f), After::Keep);
    assert_eq!(s.last_seen(), 50_000);
    advance(&mut cx, &mut s, 60_000);
    assert_eq!(s.phase(), Phase::Open, "alive: its last frame was at 50 s");
    advance(&mut cx, &mut s, 110_000);
    assert_eq!(s.phase(), Phase::Closing);
}

#[test]
fn protocol_errors_fail_the_connection_and_a_client_close_is_echoed() {
    let (mut cx, _) = context(cfg());
    let mut s = upgraded(&mut cx);
    let mut bad = masked(OpCode::Text, &[0xFF]);
    assert_eq!(s.on_bytes(&mut cx, &mut bad), After::Keep);
    assert_eq!(&cx.out[..4], [0x88, 15, 0x03, 0xEF], "1007");
    assert_eq!(s.phase(), Phase::Failing { write_shut: false });
    cx.out.clear();
    assert_eq!(s.on_drained(), Drained::ShutWrite);
    assert_eq!(s.on_eof().0, OfflineReason::Closed);

    let mut s = upgraded(&mut cx);
    let mut close = masked(OpCode::Close, &1000u16.to_be_bytes());
    assert_eq!(s.on_bytes(&mut cx, &mut close), After::Keep);
    assert_eq!(cx.out, [0x88, 2, 0x03, 0xE8]);
    assert_eq!(s.on_drained(), Drained::Close);
}

#[test]
fn duplicate_ids_replace_or_reject() {
    let (mut cx, _) = context(cfg());
    let mut old = upgraded(&mut cx);
    let mut new = Session::accept((), ConnId::new(1, 0, 0), &mut cx);
    assert_eq!(new.on_bytes(&mut cx, &mut REQUEST.as_bytes().to_vec()), After::Keep);
    assert_eq!(cx.registry.lookup("dev-1"), Some(new.id()));
    assert!(matches!(cx.ctl.commands[..], [Command::Replaced(id)] if id == old.id()));
    cx.out.clear();
    assert_eq!(old.replaced(&mut cx), After::Keep);
    assert_eq!(&cx.out[..4], [0x88, 32, 0x0F, 0xA1], "4001");
    assert_eq!(
        cx.registry.lookup("dev-1"),
        Some(new.id()),
        "the old one's leaving spares the new"
    );

    let (mut cx, _) = context(Config {
        duplicate_id: DuplicateId::Reject,
        ..cfg()
    });
    let first = upgraded(&mut cx);
    let mut second = Session::accept((), ConnId::new(1, 0, 0), &mut cx);
    assert_eq!(second.on_bytes(&mut cx, &mut REQUEST.as_bytes().to_vec()), After::Keep);
    assert!(cx.out.windows(2).any(|w| w == [0x0F, 0xA2]), "4002");
    assert_eq!(cx.registry.lookup("dev-1"), Some(first.id()));
    assert_eq!(second.phase(), Phase::Closing);
}

#[test]
fn a_backed_up_session_keeps_order_and_is_dropped_past_its_limit() {
    let (mut cx, _) = context(Config {
        max_backpressure: 100,
        ..cfg()
    });
    let mut s = upgraded(&mut cx);
    s.keep_unsent(&[0; 60]);
    // While bytes wait, new frames queue behind them, not in `out`.
    assert_eq!(s.push(&mut cx, &Outgoing::Text("hi".into())), Some(After::Keep));
    assert!(cx.out.is_empty());
    assert_eq!(s.backlog(), 64);
    s.wrote_unsent(64);
    assert_eq!(s.on_drained(), Drained::Nothing);
    assert_eq!(s.buffered_bytes(), 0, "a drained session gives its buffer back");
    s.keep_unsent(&[0; 101]);
    assert_eq!(
        s.push(&mut cx, &Outgoing::Text("x".into())),
        Some(After::Close(OfflineReason::Backpressure, "backpressure"))
    );
    assert!(cx.registry.is_empty());
}

/// Every byte here is paid a million times. (mio's stream carries an extra
/// selector id in debug builds: 16 bytes instead of 4.)
#[test]
fn an_idle_connection_stays_small() {
    use crate::timer::TimerKey;
    let stream = std::mem::size_of::<mio::net::TcpStream>();
    let session = std::mem::size_of::<Session<mio::net::TcpStream>>();
    assert!(session <= 80 + stream, "{session}");
    assert!(std::mem::size_of::<Session<()>>() <= 80);
    assert_eq!(std::mem::size_of::<Phase>(), 1);
    assert_eq!(std::mem::size_of::<Decoder>(), 8);
    assert_eq!(std::mem::size_of::<Option<TimerKey>>(), 8);
}

// ---- Who may come in (SPEC §13), with the clock in the test's hands.

const SECRET: &[u8] = b"a secret of the test";

/// `advance` sets the wall clock to this plus the monotonic time.
const WALL0: u64 = 1_000_000;

fn token(claims: serde_json::Value) -> String {
    use jsonwebtoken::{EncodingKey, Header, encode};
    let key = EncodingKey::from_secret(SECRET).expect("a key");
    encode(&Header::default(), &claims, &key).expect("signed")
}

/// A token for `sub` valid until `exp` (Unix seconds).
fn token_for(sub: &str, exp: u64) -> String {
    token(serde_json::json!({"sub": sub, "exp": exp}))
}

fn jwt_context() -> (Context, Log) {
    let (mut cx, log) = context(Config {
        // Long enough that heartbeats never decide these tests.
        heartbeat_timeout: Duration::from_secs(3600),
        ..cfg()
    });
    let settings = crate::auth::jwt::JwtSettings {
        key: crate::auth::jwt::JwtKey::Secret(SECRET.to_vec()),
        issuer: None,
        audience: None,
    };
    cx.gate = Gate::Jwt(Arc::new(
        crate::auth::jwt::JwtVerifier::new(&settings).expect("a verifier"),
    ));
    cx.tick(0, WALL0);
    (cx, log)
}

fn request(target: &str) -> Vec<u8> {
    format!(
        "GET {target} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// The close frame at the end of `out`: its code and reason.
fn close_of(out: &[u8]) -> (u16, String) {
    let at = out.iter().rposition(|&b| b == 0x88).expect("a close frame");
    let len = out[at + 1] as usize;
    let body = &out[at + 2..at + 2 + len];
    (
        u16::from_be_bytes([body[0], body[1]]),
        String::from_utf8(body[2..].to_vec()).expect("UTF-8"),
    )
}

fn auth_failures(cx: &Context, f: crate::auth::AuthFailure) -> u64 {
    cx.metrics.auth_failures[f as usize]
}

#[test]
fn a_valid_token_binds_its_sub_and_the_session_closes_at_exp() {
    let (mut cx, log) = jwt_context();
    let mut s = Session::accept((), ConnId::new(0, 0, 0), &mut cx);
    let exp = WALL0 / 1000 + 100;
    let mut req = request(&format!("/?token={}", token_for("dev-7", exp)));
    assert_eq!(s.on_bytes(&mut cx, &mut req), After::Keep);
    assert!(cx.out.starts_with(b"HTTP/1.1 101"));
    cx.out.clear();
    assert_eq!(s.client_id(), Some("dev-7"));
    assert_eq!(s.token_exp(), Some(exp));
    assert_eq!(*log.0.lock().unwrap(), ["open Some(\"dev-7\")", "bind Some(\"dev-7\")"]);
    // Server heartbeats go on; nothing closes before exp.
    let (verdicts, _) = advance(&mut cx, &mut s, 99_999);
    assert!(verdicts.iter().all(|v| *v == After::Keep));
    assert_eq!(s.phase(), Phase::Open);
    // At exp, from the timer, with no frame from the client.
    let (_, written) = advance(&mut cx, &mut s, 100_000);
    assert_eq!(close_of(&written), (4401, "token expired".into()));
    assert_eq!(s.phase(), Phase::Closing);
    assert!(cx.registry.is_empty(), "out of the registry at once");
    assert_eq!(auth_failures(&cx, crate::auth::AuthFailure::TokenExpired), 1);
}

#[test]
fn a_refresh_moves_exp_and_a_bad_one_closes() {
    let exp = WALL0 / 1000 + 100;
    let later = exp + 100;
    let cases: [(String, Option<(u16, &str)>); 7] = [
        (token_for("dev-7", later), None),
        // The same token again: each refresh costs a signature check.
        (
            token_for("dev-7", exp),
            Some((4401, "unauthorized: refreshed token does not expire later")),
        ),
        (token_for("dev-8", later), Some((1008, "client id mismatch"))),
        (
            token_for("dev-7", exp - 10),
            Some((4401, "unauthorized: refreshed token does not expire later")),
        ),
        ("not.a.token".into(), Some((4401, "unauthorized: malformed token"))),
        // 64 KiB: refused before any decoding.
        ("a".repeat(64 << 10), Some((4401, "unauthorized: token too large"))),
        (String::new(), Some((4401, "unauthorized: missing token"))),
    ];
    for (refresh, outcome) in cases {
        let (mut cx, _) = jwt_context();
        let mut s = Session::accept((), ConnId::new(0, 0, 0), &mut cx);
        let mut req = request(&format!("/?token={}", token_for("dev-7", exp)));
        assert_eq!(s.on_bytes(&mut cx, &mut req), After::Keep);
        cx.out.clear();
        advance(&mut cx, &mut s, 50_000);
        cx.out.clear();
        let mut msg = masked(OpCode::Text, format!("token {refresh}").as_bytes());
        assert_eq!(s.on_bytes(&mut cx, &mut msg), After::Keep);
        match outcome {
            Some(expected) => {
                assert_eq!(close_of(&cx.out), (expected.0, expected.1.to_string()), "{refresh:?}");
                assert_eq!(s.phase(), Phase::Closing);
            }
            None => {
                assert!(cx.out.is_empty(), "a refresh is not answered");
                assert_eq!(s.token_exp(), Some(later));
                let (_, written) = advance(&mut cx, &mut s, 100_000);
                assert_eq!(s.phase(), Phase::Open, "the old exp passed: {written:?}");
                let (_, written) = advance(&mut cx, &mut s, 200_000);
                assert_eq!(close_of(&written), (4401, "token expired".into()));
            }
        }
    }
}

#[test]
fn a_refresh_read_after_exp_is_too_late() {
    let (mut cx, _) = jwt_context();
    let mut s = Session::accept((), ConnId::new(0, 0, 0), &mut cx);
    let exp = WALL0 / 1000 + 100;
    let mut req = request(&format!("/?token={}", token_for("dev-7", exp)));
    s.on_bytes(&mut cx, &mut req);
    cx.out.clear();
    // Read in the turn the timer is due, before the timers run.
    cx.tick(100_000, WALL0 + 100_000);
    let mut msg = masked(
        OpCode::Text,
        format!("token {}", token_for("dev-7", exp + 100)).as_bytes(),
    );
    s.on_bytes(&mut cx, &mut msg);
    assert_eq!(close_of(&cx.out), (4401, "token expired".into()));
    assert_eq!(auth_failures(&cx, crate::auth::AuthFailure::TokenExpired), 1);
}

#[test]
fn a_refused_token_gets_the_upgrade_and_a_4401_and_never_joins() {
    let exp = WALL0 / 1000 + 100;
    let cases = [
        ("/".to_string(), (4401, "unauthorized: missing token")),
        ("/?token=".into(), (4401, "unauthorized: missing token")),
        ("/?token=%FF".into(), (4401, "unauthorized: malformed token")),
        (
            format!("/?token={}", token_for("dev-7", WALL0 / 1000 - 1)),
            (4401, "unauthorized: token expired"),
        ),
        (
            format!("/?token={}", token(serde_json::json!({"sub": "dev-7"}))),
            (4401, "unauthorized: missing exp"),
        ),
        (
            format!("/?client_id=dev-8&token={}", token_for("dev-7", exp)),
            (1008, "client id mismatch"),
        ),
    ];
    for (target, (code, reason)) in cases {
        let (mut cx, log) = jwt_context();
        let mut s = Session::accept((), ConnId::new(0, 0, 0), &mut cx);
        let mut req = request(&target);
        assert_eq!(s.on_bytes(&mut cx, &mut req), After::Keep, "{target}");
        assert!(cx.out.starts_with(b"HTTP/1.1 101"), "{target}");
        assert_eq!(close_of(&cx.out), (code, reason.to_string()), "{target}");
        assert_eq!(s.phase(), Phase::Closing);
        assert_eq!(s.client_id(), None);
        assert!(log.0.lock().unwrap().is_empty(), "the handler never sees it");
        assert!(cx.events.is_empty() && cx.registry.is_empty() && cx.open == 0);
        assert_eq!(cx.metrics.auth_failures.iter().sum::<u64>(), 1);
        // The client's close ends it; so does the close timeout.
        cx.out.clear();
        let mut close = masked(OpCode::Close, &4401u16.to_be_bytes());
        assert!(matches!(s.on_bytes(&mut cx, &mut close), After::Close(..)));
    }
}

#[test]
fn a_heartbeat_naming_another_id_than_sub_closes_1008() {
    let (mut cx, _) = jwt_context();
    let mut s = Session::accept((), ConnId::new(0, 0, 0), &mut cx);
    let mut req = request(&format!("/?token={}", token_for("dev-7", WALL0 / 1000 + 100)));
    s.on_bytes(&mut cx, &mut req);
    cx.out.clear();
    let mut same = masked(OpCode::Text, b"heartbeat:dev-7");
    assert_eq!(s.on_bytes(&mut cx, &mut same), After::Keep);
    assert!(cx.out.is_empty());
    let mut other = masked(OpCode::Text, b"heartbeat:dev-8");
    s.on_bytes(&mut cx, &mut other);
    assert_eq!(close_of(&cx.out), (1008, "client id mismatch".into()));
    assert_eq!(auth_failures(&cx, crate::auth::AuthFailure::IdMismatch), 1);
}

/// What the webhook was asked; answers come from the test.
#[derive(Default)]
struct Asked {
    calls: Mutex<Vec<(ConnId, crate::auth::webhook::WebhookRequest)>>,
    full: std::sync::atomic::AtomicBool,
}

impl AskBackend for Asked {
    fn ask(
        &self,
        conn: ConnId,
        req: crate::auth::webhook::WebhookRequest,
    ) -> Result<(), crate::auth::webhook::QueueFull> {
        if self.full.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(crate::auth::webhook::QueueFull);
        }
        self.calls.lock().unwrap().push((conn, req));
        Ok(())
    }

    fn cancel(&self, conn: ConnId) {
        self.calls.lock().unwrap().retain(|(c, _)| *c != conn);
    }
}

fn webhook_context(timeout_ms: u64) -> (Context, Log, Arc<Asked>) {
    let (mut cx, log) = context(cfg());
    let asked = Arc::new(Asked::default());
    cx.gate = Gate::Webhook(asked.clone(), timeout_ms);
    (cx, log, asked)
}

#[test]
fn the_upgrade_waits_for_the_webhook_then_binds_its_id() {
    let (mut cx, log, asked) = webhook_context(2000);
    let mut s = Session::accept((), ConnId::new(0, 0, 0), &mut cx);
    let mut bytes = request("/ws?client_id=dev-9&x=1");
    // A frame sent too early waits with the request.
    bytes.extend(masked(OpCode::Ping, b"early"));
    assert_eq!(s.on_bytes(&mut cx, &mut bytes), After::Keep);
    assert_eq!(s.phase(), Phase::Authorizing);
    assert!(cx.out.is_empty(), "no answer before the webhook's");
    {
        let calls = asked.calls.lock().unwrap();
        assert_eq!(calls.len(), 1);
        assert_eq!(&*calls[0].1.request.path, "/ws");
        assert_eq!(&*calls[0].1.request.query, "client_id=dev-9&x=1");
    }
    let after = s.on_authorized(&mut cx, Verdict::Accept("dev-9".into()));
    assert_eq!(after, After::Keep);
    assert!(cx.out.starts_with(b"HTTP/1.1 101"));
    assert!(
        cx.out.ends_with(&[0x8A, 5, b'e', b'a', b'r', b'l', b'y']),
        "the early ping answered"
    );
    assert_eq!(s.phase(), Phase::Open);
    assert_eq!(s.client_id(), Some("dev-9"));
    assert_eq!(s.buffered_bytes(), 0);
    assert_eq!(*log.0.lock().unwrap(), ["open Some(\"dev-9\")", "bind Some(\"dev-9\")"]);
    // A second verdict (late, duplicated) changes nothing.
    cx.out.clear();
    assert_eq!(s.on_authorized(&mut cx, Verdict::Forbidden), After::Keep);
    assert!(cx.out.is_empty());
}

#[test]
fn webhook_refusals_and_silence_close_with_their_codes() {
    let cases = [
        (
            Some(Verdict::Unauthorized),
            (4401, "unauthorized: refused by the auth webhook"),
        ),
        (Some(Verdict::Forbidden), (4403, "forbidden")),
        (Some(Verdict::Unavailable("500".into())), (1011, "try again later")),
        (Some(Verdict::Accept("dev-2".into())), (1008, "client id mismatch")),
        // No answer: the backstop timer, at the webhook timeout + 250 ms.
        (None, (1011, "try again later")),
    ];
    for (verdict, (code, reason)) in cases {
        let (mut cx, log, _) = webhook_context(2000);
        let mut s = Session::accept((), ConnId::new(0, 0, 0), &mut cx);
        let mut req = request("/?client_id=dev-1");
        s.on_bytes(&mut cx, &mut req);
        let written = match verdict.clone() {
            Some(v) => {
                s.on_authorized(&mut cx, v);
                std::mem::take(&mut cx.out)
            }
            None => {
                assert_eq!(advance(&mut cx, &mut s, 2249), (vec![], vec![]));
                advance(&mut cx, &mut s, 2250).1
            }
        };
        assert!(written.starts_with(b"HTTP/1.1 101"), "{verdict:?}");
        assert_eq!(close_of(&written), (code, reason.to_string()), "{verdict:?}");
        assert!(log.0.lock().unwrap().is_empty() && cx.registry.is_empty());
        assert_eq!(cx.metrics.auth_failures.iter().sum::<u64>(), 1);
    }
}

#[test]
fn a_full_webhook_queue_is_a_503_and_the_handshake_timeout_still_holds() {
    let (mut cx, _, asked) = webhook_context(2000);
    asked.full.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut s = Session::accept((), ConnId::new(0, 0, 0), &mut cx);
    let mut req = request("/");
    assert_eq!(s.on_bytes(&mut cx, &mut req), After::Keep);
    assert!(
        cx.out.starts_with(b"HTTP/1.1 503 "),
        "{:?}",
        String::from_utf8_lossy(&cx.out)
    );
    assert!(matches!(s.phase(), Phase::Failing { .. }));
    assert_eq!(auth_failures(&cx, crate::auth::AuthFailure::WebhookBusy), 1);

    // A handshake timeout shorter than the webhook's: dropped without a 101.
    let (mut cx, _) = context(Config {
        handshake_timeout: Duration::from_millis(500),
        ..cfg()
    });
    cx.gate = Gate::Webhook(Arc::new(Asked::default()), 2000);
    let mut s = Session::accept((), ConnId::new(0, 0, 0), &mut cx);
    let mut req = request("/");
    s.on_bytes(&mut cx, &mut req);
    assert_eq!(s.phase(), Phase::Authorizing);
    let (verdicts, written) = advance(&mut cx, &mut s, 500);
    assert!(matches!(verdicts[..], [After::Close(..)]), "{verdicts:?}");
    assert!(written.is_empty());
}

#[test]
fn too_much_early_data_while_authorizing_is_refused() {
    let (mut cx, _, asked) = webhook_context(2000);
    let mut s = Session::accept((), ConnId::new(0, 0, 0), &mut cx);
    let mut req = request("/");
    s.on_bytes(&mut cx, &mut req);
    let mut flood = vec![0u8; crate::protocol::handshake::MAX_HEADER_BYTES + 1];
    assert_eq!(s.on_bytes(&mut cx, &mut flood), After::Keep);
    assert!(cx.out.starts_with(b"HTTP/1.1 400 "));
    assert!(matches!(s.phase(), Phase::Failing { .. }));
    assert_eq!(s.buffered_bytes(), 0, "nothing kept while failing");
    assert!(
        asked.calls.lock().unwrap().is_empty(),
        "the call is not wanted any more"
    );
    cx.out.clear();
    // Its verdict, arriving later, is ignored.
    assert_eq!(s.on_authorized(&mut cx, Verdict::Accept("x".into())), After::Keep);
    assert!(cx.out.is_empty());

    // The same limit when the early bytes come in the request's own read:
    // refused before the webhook is asked.
    let (mut cx, _, asked) = webhook_context(2000);
    let mut s = Session::accept((), ConnId::new(0, 0, 0), &mut cx);
    let mut bytes = request("/");
    bytes.extend(vec![0u8; crate::protocol::handshake::MAX_HEADER_BYTES + 1]);
    assert_eq!(s.on_bytes(&mut cx, &mut bytes), After::Keep);
    assert!(cx.out.starts_with(b"HTTP/1.1 400 "));
    assert!(asked.calls.lock().unwrap().is_empty());
    assert_eq!(s.buffered_bytes(), 0);
    cx.out.clear();
    assert_eq!(s.on_authorized(&mut cx, Verdict::Accept("x".into())), After::Keep);
    assert!(cx.out.is_empty());
}
