//! Hostile clients and overload: whatever one client does, the others keep
//! their service, and the server lets go of everything it held for it.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use wsbeat::protocol::frame::{self, OpCode};

fn cfg() -> wsbeat::Config {
    wsbeat::Config {
        heartbeat_timeout: Duration::from_secs(30),
        close_timeout: Duration::from_millis(300),
        handshake_timeout: Duration::from_millis(500),
        ..Default::default()
    }
}

fn metric(s: &TestServer, line_start: &str) -> u64 {
    let text = http(s.admin, "GET", "/metrics", "", b"").text();
    text.lines()
        .find_map(|l| l.strip_prefix(line_start).map(|v| v.trim().parse().unwrap()))
        .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
}

/// Whether the server has closed (or reset) this socket.
fn is_closed(s: &mut TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 1024];
    let closed = loop {
        match s.read(&mut b) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
            Err(_) => break true,
        }
    };
    s.set_nonblocking(false).unwrap();
    closed
}

/// Proves a client is served: ping, pong.
fn assert_served(c: &mut Raw) {
    c.send_frame(true, OpCode::Ping, b"ok?");
    loop {
        let f = c.read_frame().expect("open");
        if f.opcode == OpCode::Pong {
            assert_eq!(f.payload, b"ok?");
            return;
        }
    }
}

/// Resets the connection (RST, not FIN) when dropped.
fn reset_on_drop(s: &TcpStream) {
    socket2::SockRef::from(s).set_linger(Some(Duration::ZERO)).unwrap();
}

#[test]
fn slowloris_handshakes_are_dropped_at_the_handshake_timeout() {
    let s = spawn(cfg());
    let mut good = Raw::open(s.addr, "/?client_id=good");
    let mut slow: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut t = TcpStream::connect(s.addr).unwrap();
            t.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").unwrap();
            t
        })
        .collect();
    let start = Instant::now();
    // Trickle a header byte every 100 ms: it must not extend the deadline.
    while start.elapsed() < Duration::from_millis(1500) {
        for t in &mut slow {
            let _ = t.write_all(b"X");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for t in &mut slow {
        assert!(is_closed(t), "a trickling handshake outlived the timeout");
    }
    assert_served(&mut good);
    wait_until("only the good one left", || s.stats.connections_open() == 1);
    assert_eq!(
        metric(&s, "wsbeat_connections_rejected_total{reason=\"handshake_timeout\"}"),
        300
    );
}

#[test]
fn oversized_garbage_and_tls_get_their_answer_not_a_hang() {
    let s = spawn(cfg());
    // A real TLS 1.2/1.3 ClientHello prefix.
    let client_hello: &[u8] = &[
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0x5a, 0x1b, 0x9c, 0x00, 0xff, 0x13,
    ];
    let big = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    let cases: Vec<(&[u8], u16)> = vec![
        (client_hello, 400),
        (b"\x00\x01\x02\x03\r\n\r\n", 400),
        (b"SSH-2.0-OpenSSH_9.6\r\n", 400),
        (big.as_bytes(), 431),
    ];
    for (bytes, status) in cases {
        let mut c = Raw::connect(s.addr);
        c.send(bytes);
        let r = read_response(&mut c);
        assert_eq!(
            r.status,
            status,
            "{:?}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(20)])
        );
        c.wait_closed();
    }
}

#[test]
fn a_connection_flood_past_the_limit_gets_503_and_the_rest_are_served() {
    let s = spawn(wsbeat::Config {
        max_connections: 20,
        ..cfg()
    });
    let mut served: Vec<Raw> = (0..20)
        .map(|i| Raw::open(s.addr, &format!("/?client_id=in-{i}")))
        .collect();
    // Each flooder sends its upgrade at once, as real clients do: the 503
    // must still arrive whole.
    for _ in 0..100 {
        let mut c = Raw::connect(s.addr);
        c.send(upgrade_request("/", "").as_bytes());
        let r = read_response(&mut c);
        assert_eq!(r.status, 503);
        assert!(r.text().contains("connection limit"));
        c.wait_closed();
    }
    for c in &mut served {
        assert_served(c);
    }
    assert_eq!(
        metric(&s, "wsbeat_connections_rejected_total{reason=\"max_connections\"}"),
        100
    );
}

#[test]
fn out_of_descriptors_refuses_with_503_without_spinning() {
    // The binary under a 64-descriptor limit (it cannot raise it).
    let mut cmd = std::process::Command::new("sh");
    cmd.args([
        "-c",
        "ulimit -n 64 && exec \"$0\" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --max-connections 1000",
        env!("CARGO_BIN_EXE_wsbeat"),
    ])
    .env("RUST_LOG", "info");
    let p = start_binary(cmd);
    assert!(
        p.startup_log
            .iter()
            // 1000 connections, 256 spare, and two per event loop.
            .any(|l| l.contains(&format!(
                "open-file limit is 64 (hard limit 64), below the {}",
                1256 + 2 * threads()
            ))),
        "no warning naming the descriptor cap: {:?}",
        p.startup_log
    );
    let (addr, admin) = (p.addr, p.admin);
    let mut open = Vec::new();
    let mut refused = 0;
    for _ in 0..100 {
        let mut c = Raw::connect(addr);
        c.send(upgrade_request("/", "").as_bytes());
        let r = read_response(&mut c);
        match r.status {
            101 => open.push(c),
            503 => {
                assert!(r.text().contains("out of file descriptors"), "{}", r.text());
                refused += 1;
            }
            other => panic!("status {other}"),
        }
    }
    assert!(refused > 0 && open.len() > 20, "{} open, {refused} refused", open.len());
    // Not spinning: with connections waiting and none to spare, the process
    // uses (almost) no CPU.
    let cpu = || {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", p.child.id())).unwrap();
        let f: Vec<u64> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .skip(11)
            .take(2)
            .map(|v| v.parse().unwrap())
            .collect();
        f[0] + f[1]
    };
    let _pending: Vec<TcpStream> = (0..5).filter_map(|_| TcpStream::connect(addr).ok()).collect();
    let before = cpu();
    std::thread::sleep(Duration::from_secs(1));
    let ticks = cpu() - before;
    assert!(ticks < 30, "{ticks} clock ticks of CPU in one second");
    // Freeing descriptors makes room again.
    drop(open.drain(..10).collect::<Vec<_>>());
    drop(_pending);
    let t = Instant::now();
    loop {
        let mut c = Raw::connect(addr);
        c.send(upgrade_request("/", "").as_bytes());
        if read_response(&mut c).status == 101 {
            break;
        }
        assert!(t.elapsed() < DEADLINE);
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = {
        let mut r = Raw::connect(admin);
        r.send(b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        read_response(&mut r).text()
    };
    assert!(!text.contains("wsbeat_accept_errors_total 0\n"), "{text}");
    assert!(!text.contains("reason=\"out_of_descriptors\"} 0\n"), "{text}");
}

#[test]
fn a_client_that_floods_pings_without_reading_is_dropped_for_backpressure() {
    let s = spawn(wsbeat::Config {
        max_backpressure: 64 * 1024,
        ..cfg()
    });
    let mut good = Raw::open(s.addr, "/?client_id=good");
    let mut flood = Raw::open(s.addr, "/?client_id=flooder");
    wait_until("both online", || s.stats.clients_online() == 2);
    let mut one = Vec::new();
    frame::encode_frame_masked(&mut one, true, OpCode::Ping, &[7; 125], [1, 2, 3, 4]);
    let batch: Vec<u8> = one.iter().copied().cycle().take(one.len() * 500).collect();
    let t = Instant::now();
    while s.stats.clients_online() == 2 {
        if flood.s.write_all(&batch).is_err() {
            break;
        }
        assert!(t.elapsed() < DEADLINE, "never dropped");
    }
    wait_until("flooder gone", || s.stats.clients_online() == 1);
    assert_eq!(metric(&s, "wsbeat_evictions_total{reason=\"backpressure\"}"), 1);
    assert_served(&mut good);
}

#[test]
fn outbound_buffers_shrink_back_after_a_burst() {
    let s = spawn(wsbeat::Config {
        max_backpressure: 128 << 20,
        ..cfg()
    });
    // A burst larger than the kernel's socket buffers, read late: held while
    // the client does not read, given back once drained.
    let mut reader = Raw::open(s.addr, "/?client_id=late-reader");
    for i in 0..600u32 {
        s.handle.send("late-reader", vec![(i % 251) as u8; 100_000]).unwrap();
    }
    wait_until("a burst buffered", || metric(&s, "wsbeat_buffered_bytes ") > 1 << 20);
    for i in 0..600u32 {
        let f = reader.read_non_heartbeat().unwrap();
        assert_eq!((f.payload.len(), f.payload[0]), (100_000, (i % 251) as u8));
    }
    wait_until("buffers given back", || {
        metric(&s, "wsbeat_buffered_bytes ") == 0 && metric(&s, "wsbeat_connections_buffering ") == 0
    });
    assert_served(&mut reader);
}

#[test]
fn a_client_that_never_reads_its_echoes_is_dropped() {
    let s = spawn(wsbeat::Config {
        echo: true,
        max_backpressure: 256 * 1024,
        ..cfg()
    });
    let mut good = Raw::open(s.addr, "/?client_id=good");
    let mut slow = Raw::open(s.addr, "/?client_id=never-reads");
    wait_until("both online", || s.stats.clients_online() == 2);
    let mut msg = Vec::new();
    frame::encode_frame_masked(&mut msg, true, OpCode::Binary, &[1; 60_000], [9, 9, 9, 9]);
    let t = Instant::now();
    while s.stats.clients_online() == 2 {
        if slow.s.write_all(&msg).is_err() {
            break;
        }
        assert!(t.elapsed() < DEADLINE, "never dropped");
    }
    wait_until("dropped", || s.stats.clients_online() == 1);
    assert_eq!(metric(&s, "wsbeat_evictions_total{reason=\"backpressure\"}"), 1);
    assert_served(&mut good);
}

#[test]
fn frame_abuse_is_closed_with_the_right_code() {
    let s = spawn(wsbeat::Config {
        max_message_size: 64 * 1024,
        ..cfg()
    });
    let mask = [1, 2, 3, 4];
    let mut endless = Vec::new();
    frame::encode_frame_masked(&mut endless, false, OpCode::Binary, &[0; 1000], mask);
    for _ in 0..100 {
        frame::encode_frame_masked(&mut endless, false, OpCode::Continuation, &[0; 1000], mask);
    }
    let mut interleaved = Vec::new();
    frame::encode_frame_masked(&mut interleaved, false, OpCode::Text, b"a", mask);
    frame::encode_frame_masked(&mut interleaved, true, OpCode::Binary, b"b", mask);
    let mut bad_utf8 = Vec::new();
    frame::encode_frame_masked(&mut bad_utf8, false, OpCode::Text, "é".as_bytes(), mask);
    frame::encode_frame_masked(&mut bad_utf8, true, OpCode::Continuation, b"\xff", mask);
    // 2^63 - 1 bytes declared: too big; with the top bit set: malformed.
    let huge: Vec<u8> = vec![0x82, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4];
    let top_bit: Vec<u8> = vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4];
    for (bytes, code) in [
        (endless, 1009),
        (interleaved, 1002),
        (bad_utf8, 1007),
        (huge, 1009),
        (top_bit, 1002),
    ] {
        let mut c = Raw::open(s.addr, "/");
        let _ = c.s.write_all(&bytes);
        assert_eq!(c.read_close(), code);
    }
    let mut big_len = vec![0x82, 0xFF, 0, 0, 0, 1, 0, 0, 0, 0];
    big_len.extend_from_slice(&mask);
    let mut c = Raw::open(s.addr, "/");
    c.send(&big_len);
    assert_eq!(c.read_close(), 1009);
    // Nothing was buffered for any of them.
    assert_eq!(metric(&s, "wsbeat_buffered_bytes "), 0);
}

#[test]
fn admin_abuse_gets_4xx() {
    let s = spawn(cfg());
    let cases: Vec<(&[u8], u16)> = vec![
        (
            b"POST /broadcast HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            400,
        ),
        (
            b"POST /broadcast HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\n",
            400,
        ),
        (
            b"POST /broadcast HTTP/1.1\r\nHost: a\r\nContent-Length: 5000000000\r\n\r\n",
            413,
        ),
        (
            b"POST /broadcast HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nhi",
            400,
        ),
        (
            b"POST /broadcast HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
            411,
        ),
        (b"GET /clients/%ZZ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET /clients/a%00b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"TRACE / HTTP/1.1\r\nHost: a\r\n\r\n", 404),
        (b"DELETE /healthz HTTP/1.1\r\nHost: a\r\n\r\n", 405),
        (b"GET /healthz HTTP/3.0\r\nHost: a\r\n\r\n", 505),
    ];
    for (req, status) in cases {
        let mut c = Raw::connect(s.admin);
        c.send(req);
        let r = read_response(&mut c);
        assert_eq!(r.status, status, "{}", String::from_utf8_lossy(req));
    }
    let long = format!("GET /clients/{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(10_000));
    let mut c = Raw::connect(s.admin);
    c.send(long.as_bytes());
    assert!(matches!(read_response(&mut c).status, 414 | 431));
    // Still serving.
    assert_eq!(http(s.admin, "GET", "/healthz", "", b"").status, 200);
}

#[test]
fn abrupt_peers_are_cleaned_up_with_reason_error() {
    let s = spawn(cfg());
    // Reset in the middle of a frame.
    let mut a = Raw::open(s.addr, "/?client_id=rst-frame");
    a.send(&[0x82, 0xFE, 0x10, 0x00, 1, 2, 3, 4, 0, 0, 0]);
    reset_on_drop(&a.s);
    drop(a);
    // Reset in the middle of a handshake.
    let mut b = TcpStream::connect(s.addr).unwrap();
    b.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nUpg").unwrap();
    reset_on_drop(&b);
    drop(b);
    // Half-closed: the client shuts its side after upgrading.
    let h = Raw::open(s.addr, "/?client_id=half");
    h.s.shutdown(std::net::Shutdown::Write).unwrap();
    // Reset while the server has output queued for it (EPIPE/ECONNRESET on write).
    let p = Raw::open(s.addr, "/?client_id=rst-write");
    wait_until("rst-write online", || {
        http(s.admin, "GET", "/clients/rst-write", "", b"").status == 200
    });
    for _ in 0..50 {
        let _ = s.handle.send("rst-write", vec![0u8; 100_000]);
    }
    reset_on_drop(&p.s);
    drop(p);
    wait_until("all cleaned up", || {
        s.stats.connections_open() == 0 && s.stats.clients_online() == 0
    });
    assert_eq!(metric(&s, "wsbeat_evictions_total{reason=\"error\"}"), 3);
    drop(h);
}

#[test]
fn one_fast_sender_does_not_starve_the_others() {
    let s = spawn(wsbeat::Config {
        max_message_size: 1 << 20,
        ..cfg()
    });
    let addr = s.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let flooder = std::thread::spawn(move || {
        let mut f = Raw::open(addr, "/?client_id=firehose");
        let mut msg = Vec::new();
        frame::encode_frame_masked(&mut msg, true, OpCode::Binary, &vec![5u8; 512 * 1024], [3, 1, 4, 1]);
        let mut sent = 0u64;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            if f.s.write_all(&msg).is_err() {
                break;
            }
            sent += 1;
        }
        sent
    });
    let mut c = Raw::open(s.addr, "/?client_id=latency");
    std::thread::sleep(Duration::from_millis(200));
    let mut worst = Duration::ZERO;
    for _ in 0..50 {
        let t = Instant::now();
        assert_served(&mut c);
        worst = worst.max(t.elapsed());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = flooder.join().unwrap();
    assert!(sent > 10, "the flooder did not get going ({sent} messages)");
    // Generous: starvation would be seconds, not milliseconds.
    assert!(worst < Duration::from_millis(500), "worst ping round trip {worst:?}");
}

crate::also_with_two_loops!(
    slowloris_handshakes_are_dropped_at_the_handshake_timeout,
    oversized_garbage_and_tls_get_their_answer_not_a_hang,
    a_connection_flood_past_the_limit_gets_503_and_the_rest_are_served,
    out_of_descriptors_refuses_with_503_without_spinning,
    a_client_that_floods_pings_without_reading_is_dropped_for_backpressure,
    outbound_buffers_shrink_back_after_a_burst,
    a_client_that_never_reads_its_echoes_is_dropped,
    frame_abuse_is_closed_with_the_right_code,
    admin_abuse_gets_4xx,
    abrupt_peers_are_cleaned_up_with_reason_error,
    one_fast_sender_does_not_starve_the_others,
);
