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
    assert_eq!(*log.0.lock().unwrap(), ["open Some(\"dev-1\")", "beat Some(\"dev-1\")"]);
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
