//! Heartbeats, presence and eviction against the real server, with short
//! settings (interval 200 ms, timeout 600 ms).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use wsbeat::config::{DuplicateId, Liveness, ServerHeartbeat};
use wsbeat::protocol::frame::OpCode;

const INTERVAL: Duration = Duration::from_millis(200);
const TIMEOUT: Duration = Duration::from_millis(600);
/// SPEC §3: eviction no later than timeout + 250 ms.
const EVICTION_SLACK: Duration = Duration::from_millis(250);

fn short() -> wsbeat::Config {
    wsbeat::Config {
        heartbeat_interval: INTERVAL,
        heartbeat_timeout: TIMEOUT,
        close_timeout: Duration::from_millis(300),
        ..Default::default()
    }
}

/// Sends `heartbeat` text frames every `every` for `total`, discarding what
/// the server sends meanwhile.
fn heartbeat_for(c: &mut Raw, text: &str, every: Duration, total: Duration) {
    let t = Instant::now();
    while t.elapsed() < total {
        c.send_frame(true, OpCode::Text, text.as_bytes());
        std::thread::sleep(every);
    }
}

/// Proves the connection is open and served: a ping gets its pong.
fn assert_served(c: &mut Raw) {
    c.send_frame(true, OpCode::Ping, b"still-there");
    loop {
        let f = c.read_frame().expect("connection open");
        if f.opcode == OpCode::Pong && f.payload == b"still-there" {
            return;
        }
        assert!(f.opcode != OpCode::Close, "closed: {:?}", f.close_code());
    }
}

#[test]
fn pings_arrive_on_schedule() {
    let addr = start(wsbeat::Config {
        heartbeat_timeout: Duration::from_secs(30),
        ..short()
    });
    let mut c = Raw::open(addr, "/");
    let t0 = Instant::now();
    let mut at = Vec::new();
    while at.len() < 5 {
        let f = c.read_frame().unwrap();
        assert_eq!(f.opcode, OpCode::Ping);
        at.push(t0.elapsed());
    }
    // First one after one interval; then one per interval. Lower bounds are
    // strict (the schedule never runs early); upper bounds are generous.
    assert!(at[0] >= INTERVAL - Duration::from_millis(5), "{at:?}");
    for w in at.windows(2) {
        let gap = w[1] - w[0];
        assert!(gap >= INTERVAL - Duration::from_millis(5), "{at:?}");
        assert!(gap <= INTERVAL + Duration::from_millis(500), "{at:?}");
    }
}

#[test]
fn text_and_both_modes() {
    for (mode, want) in [
        (ServerHeartbeat::Text, vec![OpCode::Text]),
        (ServerHeartbeat::Both, vec![OpCode::Ping, OpCode::Text]),
    ] {
        let addr = start(wsbeat::Config {
            server_heartbeat: mode,
            heartbeat_timeout: Duration::from_secs(30),
            ..short()
        });
        let mut c = Raw::open(addr, "/");
        for _ in 0..2 {
            for op in &want {
                let f = c.read_frame().unwrap();
                assert_eq!(f.opcode, *op, "{mode:?}");
                if f.opcode == OpCode::Text {
                    assert_eq!(f.payload, b"heartbeat");
                }
            }
        }
    }
}

#[test]
fn off_mode_sends_nothing_and_still_evicts() {
    let addr = start(wsbeat::Config {
        server_heartbeat: ServerHeartbeat::Off,
        ..short()
    });
    let mut c = Raw::open(addr, "/");
    // The first frame is the eviction: no heartbeats came before it.
    let f = c.read_frame().unwrap();
    assert_eq!(f.close_code(), Some(4000));
}

#[test]
fn a_heartbeating_client_stays_online_well_past_the_timeout() {
    let (addr, stats) = start_with_stats(short());
    let mut c = Raw::open(addr, "/?client_id=steady");
    wait_until("steady online", || stats.clients_online() == 1);
    heartbeat_for(&mut c, "heartbeat", Duration::from_millis(150), TIMEOUT * 4);
    assert_served(&mut c);
    assert_eq!(stats.clients_online(), 1);
}

#[test]
fn a_silent_client_is_evicted_on_time_and_dropped_though_it_never_answers() {
    let (addr, stats) = start_with_stats(short());
    let mut c = Raw::connect(addr);
    c.send(upgrade_request("/?client_id=silent", "").as_bytes());
    let t0 = Instant::now();
    assert!(c.read_http_head().starts_with("HTTP/1.1 101"));
    wait_until("silent online", || stats.clients_online() == 1);
    let (code, reason) = c.read_close_with_reason();
    let after = t0.elapsed();
    assert_eq!((code, reason.as_str()), (4000, "heartbeat timeout"));
    // The server's clock counts whole milliseconds (floored), so the
    // client, timing from just before its request, may see up to 1 ms less.
    assert!(
        after + Duration::from_millis(1) >= TIMEOUT,
        "evicted early, after {after:?}"
    );
    assert!(after <= TIMEOUT + EVICTION_SLACK, "evicted late, after {after:?}");
    // Out of the registry at once, and the socket let go after the close
    // timeout even though the client never answers.
    wait_until("registry empty", || stats.clients_online() == 0);
    c.wait_dropped();
    wait_until("slab empty", || stats.connections_open() == 0);
}

#[test]
fn a_heartbeat_id_binds_the_connection() {
    let (addr, stats) = start_with_stats(short());
    let mut c = Raw::open(addr, "/");
    c.send_frame(true, OpCode::Text, b"  heartbeat:device-42 \n");
    wait_until("bound", || stats.clients_online() == 1);
    // The same id again is fine; the form with a space too.
    c.send_frame(true, OpCode::Text, b"heartbeat device-42");
    c.send_frame(true, OpCode::Text, b"heartbeat");
    assert_served(&mut c);
    // Another id is a mismatch.
    c.send_frame(true, OpCode::Text, b"heartbeat:device-43");
    assert_eq!(c.read_close_with_reason(), (1008, "client id mismatch".into()));
    wait_until("unbound", || stats.clients_online() == 0);
}

#[test]
fn an_invalid_heartbeat_id_is_1008() {
    let addr = start(short());
    for bad in ["heartbeat:", "heartbeat:has space", "heartbeat:é"] {
        let mut c = Raw::open(addr, "/");
        c.send_frame(true, OpCode::Text, bad.as_bytes());
        assert_eq!(
            c.read_close_with_reason(),
            (1008, "invalid client id".into()),
            "{bad:?}"
        );
    }
}

#[test]
fn heartbeats_are_not_echoed_but_other_messages_are() {
    let addr = start(wsbeat::Config {
        echo: true,
        heartbeat_timeout: Duration::from_secs(30),
        ..short()
    });
    let mut c = Raw::open(addr, "/");
    c.send_frame(true, OpCode::Text, b"heartbeat:x");
    c.send_frame(true, OpCode::Text, b"heartbeats are not heartbeats");
    let f = c.read_non_heartbeat().unwrap();
    assert_eq!(f.payload, b"heartbeats are not heartbeats");
}

type Client = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>;

/// A tungstenite client that reads (and so answers pings, as browsers do)
/// for `total`, sending nothing of its own. Returns the close code if the
/// server closed it, and the client (still connected otherwise).
fn pong_only_client(addr: SocketAddr, total: Duration) -> (Option<u16>, Client) {
    let (mut ws, _) = tungstenite::connect(format!("ws://{addr}/?client_id=ponger")).unwrap();
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    }
    let t = Instant::now();
    while t.elapsed() < total {
        match ws.read() {
            Ok(tungstenite::Message::Close(f)) => return (f.map(|f| u16::from(f.code)), ws),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => panic!("{e}"),
        }
        let _ = ws.flush();
    }
    (None, ws)
}

#[test]
fn a_client_that_only_answers_pings_stays_with_liveness_any() {
    let (addr, stats) = start_with_stats(short());
    let (closed, _still_connected) = pong_only_client(addr, TIMEOUT * 4);
    assert_eq!(closed, None);
    assert_eq!(stats.clients_online(), 1);
}

#[test]
fn a_client_that_only_answers_pings_is_evicted_with_liveness_heartbeat() {
    let addr = start(wsbeat::Config {
        liveness: Liveness::Heartbeat,
        ..short()
    });
    let t = Instant::now();
    assert_eq!(pong_only_client(addr, Duration::from_secs(10)).0, Some(4000));
    assert!(t.elapsed() <= TIMEOUT + EVICTION_SLACK + Duration::from_millis(200));
}

#[test]
fn liveness_heartbeat_ignores_data_but_counts_heartbeats() {
    let addr = start(wsbeat::Config {
        liveness: Liveness::Heartbeat,
        ..short()
    });
    let mut data_only = Raw::open(addr, "/");
    let mut beating = Raw::open(addr, "/");
    let t = Instant::now();
    while t.elapsed() < TIMEOUT * 3 {
        data_only.send_frame(true, OpCode::Binary, b"data");
        beating.send_frame(true, OpCode::Text, b"heartbeat");
        std::thread::sleep(Duration::from_millis(100));
        if t.elapsed() > TIMEOUT + EVICTION_SLACK {
            break;
        }
    }
    assert_eq!(data_only.read_close(), 4000);
    assert_served(&mut beating);
}

#[test]
fn duplicate_id_replace_closes_the_older_with_4001() {
    let (addr, stats) = start_with_stats(wsbeat::Config {
        heartbeat_timeout: Duration::from_secs(30),
        ..short()
    });
    let mut old = Raw::open(addr, "/?client_id=dup");
    wait_until("old online", || stats.clients_online() == 1);
    let mut new = Raw::open(addr, "/?client_id=dup");
    assert_eq!(
        old.read_close_with_reason(),
        (4001, "replaced by a newer connection".into())
    );
    // The old connection completes its close; its cleanup must not remove
    // the newer connection's entry.
    old.send_frame(true, OpCode::Close, &4001u16.to_be_bytes());
    old.wait_closed();
    wait_until("old gone", || stats.connections_open() == 1);
    assert_eq!(stats.clients_online(), 1);
    assert_served(&mut new);

    // Taking the id by heartbeat works the same way.
    let mut third = Raw::open(addr, "/");
    third.send_frame(true, OpCode::Text, b"heartbeat:dup");
    assert_eq!(new.read_close(), 4001);
    assert_served(&mut third);
    assert_eq!(stats.clients_online(), 1);
}

#[test]
fn duplicate_id_reject_closes_the_newer_with_4002() {
    let (addr, stats) = start_with_stats(wsbeat::Config {
        duplicate_id: DuplicateId::Reject,
        heartbeat_timeout: Duration::from_secs(30),
        ..short()
    });
    let mut first = Raw::open(addr, "/?client_id=taken");
    wait_until("first online", || stats.clients_online() == 1);
    let mut second = Raw::open(addr, "/?client_id=taken");
    assert_eq!(
        second.read_close_with_reason(),
        (4002, "client id already in use".into())
    );
    let mut third = Raw::open(addr, "/");
    third.send_frame(true, OpCode::Text, b"heartbeat:taken");
    assert_eq!(third.read_close(), 4002);
    assert_served(&mut first);
    assert_eq!(stats.clients_online(), 1);
}

#[test]
fn after_every_kind_of_exit_the_registry_and_slab_are_empty() {
    let (addr, stats) = start_with_stats(wsbeat::Config {
        close_timeout: Duration::from_millis(300),
        handshake_timeout: Duration::from_millis(300),
        ..short()
    });
    let mut clients = Vec::new();
    // Clean close.
    let mut a = Raw::open(addr, "/?client_id=a");
    a.send_frame(true, OpCode::Close, &1000u16.to_be_bytes());
    clients.push(a);
    // Abrupt drop.
    drop(Raw::open(addr, "/?client_id=b"));
    // Protocol error.
    let mut c = Raw::open(addr, "/?client_id=c");
    c.send(&[0x81, 0x01, b'x']);
    clients.push(c);
    // Evicted (silent).
    clients.push(Raw::open(addr, "/?client_id=d"));
    // Replaced, then the replacement leaves too.
    clients.push(Raw::open(addr, "/?client_id=e"));
    let mut e2 = Raw::open(addr, "/?client_id=e");
    e2.send_frame(true, OpCode::Close, &1000u16.to_be_bytes());
    clients.push(e2);
    // Half-sent handshake.
    let mut h = Raw::connect(addr);
    h.send(b"GET / HTTP/1.1\r\n");
    clients.push(h);
    wait_until("all gone", || {
        stats.connections_open() == 0 && stats.clients_online() == 0 && stats.timers() == 0
    });
}

crate::also_with_two_loops!(
    pings_arrive_on_schedule,
    text_and_both_modes,
    off_mode_sends_nothing_and_still_evicts,
    a_heartbeating_client_stays_online_well_past_the_timeout,
    a_silent_client_is_evicted_on_time_and_dropped_though_it_never_answers,
    a_heartbeat_id_binds_the_connection,
    an_invalid_heartbeat_id_is_1008,
    heartbeats_are_not_echoed_but_other_messages_are,
    a_client_that_only_answers_pings_stays_with_liveness_any,
    a_client_that_only_answers_pings_is_evicted_with_liveness_heartbeat,
    liveness_heartbeat_ignores_data_but_counts_heartbeats,
    duplicate_id_replace_closes_the_older_with_4001,
    duplicate_id_reject_closes_the_newer_with_4002,
    after_every_kind_of_exit_the_registry_and_slab_are_empty,
);
