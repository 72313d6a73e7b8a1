//! The admin HTTP API against a running server, with raw HTTP and raw
//! WebSocket clients.

mod common;

use std::time::Duration;

use common::*;
use wsbeat::protocol::frame::OpCode;

fn cfg() -> wsbeat::Config {
    wsbeat::Config {
        heartbeat_timeout: Duration::from_secs(30),
        close_timeout: Duration::from_millis(300),
        ..Default::default()
    }
}

/// Opens a WebSocket client named `id` and waits until it is listed.
fn client(s: &TestServer, id: &str) -> Raw {
    let before = s.stats.clients_online();
    let c = Raw::open(s.addr, &format!("/?client_id={id}"));
    wait_until("client online", || s.stats.clients_online() > before);
    c
}

#[test]
fn healthz_and_metrics() {
    let s = spawn(cfg());
    let r = http(s.admin, "GET", "/healthz", "", b"");
    assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));
    let _a = client(&s, "m1");
    let r = http(s.admin, "GET", "/metrics", "", b"");
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = r.text();
    for name in [
        "wsbeat_connections_open",
        "wsbeat_clients_online",
        "wsbeat_connections_accepted_total",
        "wsbeat_connections_rejected_total",
        "wsbeat_handshake_failures_total",
        "wsbeat_heartbeats_received_total",
        "wsbeat_heartbeats_sent_total",
        "wsbeat_evictions_total",
        "wsbeat_messages_received_total",
        "wsbeat_messages_sent_total",
        "wsbeat_bytes_received_total",
        "wsbeat_bytes_sent_total",
        "wsbeat_protocol_errors_total",
    ] {
        assert!(text.contains(&format!("# HELP {name} ")), "{name}");
        assert!(text.contains(&format!("# TYPE {name} ")), "{name}");
    }
    assert!(text.contains("\nwsbeat_connections_open 1\n"), "{text}");
    assert!(text.contains("\nwsbeat_clients_online 1\n"), "{text}");
}

#[test]
fn metrics_count_what_happens() {
    let s = spawn(cfg());
    let mut c = client(&s, "counted");
    c.send_frame(true, OpCode::Text, b"heartbeat");
    c.send_frame(true, OpCode::Text, b"app message");
    c.send_frame(true, OpCode::Ping, b"");
    c.read_frame().unwrap();
    let mut bad = Raw::connect(s.addr);
    bad.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(read_response(&mut bad).status, 400);
    let mut err = Raw::open(s.addr, "/");
    err.send(&[0x81, 0x01, b'x']);
    assert_eq!(err.read_close(), 1002);
    let text = http(s.admin, "GET", "/metrics", "", b"").text();
    for line in [
        "wsbeat_heartbeats_received_total 1",
        "wsbeat_messages_received_total 2",
        "wsbeat_messages_dropped_total 1",
        "wsbeat_handshake_failures_total{status=\"400\"} 1",
        "wsbeat_protocol_errors_total{code=\"1002\"} 1",
        "wsbeat_evictions_total{reason=\"error\"} 1",
        "wsbeat_connections_accepted_total 3",
    ] {
        assert!(text.contains(&format!("{line}\n")), "missing {line:?} in\n{text}");
    }
}

#[test]
fn bearer_token_guards_everything_but_healthz() {
    let s = spawn(wsbeat::Config {
        admin_token: Some("t0ken".into()),
        ..cfg()
    });
    assert_eq!(http(s.admin, "GET", "/healthz", "", b"").status, 200);
    for (m, p) in [
        ("GET", "/metrics"),
        ("GET", "/clients"),
        ("POST", "/broadcast"),
        ("GET", "/events"),
    ] {
        let r = http(s.admin, m, p, "", b"");
        assert_eq!(r.status, 401, "{m} {p}");
        assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
        assert!(r.json()["error"].is_string());
        let r = http(s.admin, m, p, "Authorization: Bearer nope\r\n", b"");
        assert_eq!(r.status, 401, "{m} {p}");
    }
    let r = http(s.admin, "GET", "/clients", "Authorization: Bearer t0ken\r\n", b"");
    assert_eq!(r.status, 200);
}

#[test]
fn clients_listing_pages_by_id() {
    let s = spawn(cfg());
    let mut held = Vec::new();
    for i in (0..30).rev() {
        held.push(Raw::open(s.addr, &format!("/?client_id=c{i:02}")));
    }
    // And some anonymous ones, which are not listed.
    for _ in 0..3 {
        held.push(Raw::open(s.addr, "/"));
    }
    wait_until("30 online", || s.stats.clients_online() == 30);
    let mut seen = Vec::new();
    let mut target = "/clients?limit=7".to_string();
    loop {
        let r = http(s.admin, "GET", &target, "", b"");
        assert_eq!(r.status, 200);
        let v = r.json();
        assert_eq!(v["total"], 30);
        for c in v["clients"].as_array().unwrap() {
            seen.push(c["id"].as_str().unwrap().to_string());
            assert!(c["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
            assert!(c["connected_at_ms"].as_u64().unwrap() > 1_700_000_000_000);
            assert!(c["last_seen_ms"].as_u64().unwrap() >= c["connected_at_ms"].as_u64().unwrap());
        }
        match v["next"].as_str() {
            Some(n) => target = format!("/clients?limit=7&after={n}"),
            None => break,
        }
    }
    let want: Vec<String> = (0..30).map(|i| format!("c{i:02}")).collect();
    assert_eq!(seen, want);
    // Default limit, bad limits.
    assert_eq!(
        http(s.admin, "GET", "/clients", "", b"").json()["clients"]
            .as_array()
            .unwrap()
            .len(),
        30
    );
    assert_eq!(http(s.admin, "GET", "/clients?limit=0", "", b"").status, 400);
    assert_eq!(http(s.admin, "GET", "/clients?limit=-1", "", b"").status, 400);
}

#[test]
fn one_client_by_id() {
    let s = spawn(cfg());
    let _c = client(&s, "dev%3A1");
    let r = http(s.admin, "GET", "/clients/dev%3a1", "", b"");
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["id"], "dev:1");
    let r = http(s.admin, "GET", "/clients/dev:1", "", b"");
    assert_eq!(r.status, 200);
    assert_eq!(http(s.admin, "GET", "/clients/nobody", "", b"").status, 404);
    assert_eq!(http(s.admin, "GET", "/clients/bad%20id", "", b"").status, 400);
    assert_eq!(
        http(s.admin, "GET", &format!("/clients/{}", "x".repeat(129)), "", b"").status,
        400
    );
    assert_eq!(http(s.admin, "GET", "/clients/%zz", "", b"").status, 400);
}

#[test]
fn push_text_and_binary_to_one_client() {
    let s = spawn(cfg());
    let mut c = client(&s, "target");
    let r = http(
        s.admin,
        "POST",
        "/clients/target/messages",
        "Content-Type: text/plain\r\n",
        "héllo".as_bytes(),
    );
    assert_eq!(r.status, 202);
    // The node that has it (SPEC §9), also on a single node.
    assert_eq!(r.json(), serde_json::json!({"queued": true, "node": s.node}));
    let f = c.read_non_heartbeat().unwrap();
    assert_eq!((f.opcode, f.payload.as_slice()), (OpCode::Text, "héllo".as_bytes()));
    let r = http(
        s.admin,
        "POST",
        "/clients/target/messages",
        "Content-Type: application/octet-stream\r\n",
        &[0xff, 0x00, 0x01],
    );
    assert_eq!(r.status, 202);
    let f = c.read_non_heartbeat().unwrap();
    assert_eq!(
        (f.opcode, f.payload.as_slice()),
        (OpCode::Binary, &[0xff, 0x00, 0x01][..])
    );
    // Not UTF-8 without the binary content type.
    assert_eq!(
        http(s.admin, "POST", "/clients/target/messages", "", &[0xff]).status,
        400
    );
    assert_eq!(http(s.admin, "POST", "/clients/ghost/messages", "", b"hi").status, 404);
    assert_eq!(http(s.admin, "GET", "/clients/target/messages", "", b"").status, 405);
}

#[test]
fn broadcast_reaches_every_open_connection() {
    let s = spawn(cfg());
    let mut a = client(&s, "a");
    let mut b = client(&s, "b");
    let mut anon = Raw::open(s.addr, "/");
    wait_until("3 open", || s.stats.connections_open() == 3);
    let r = http(s.admin, "POST", "/broadcast", "", b"to all");
    assert_eq!(r.status, 202);
    assert_eq!(r.json(), serde_json::json!({"recipients": 3, "nodes": 1}));
    for c in [&mut a, &mut b, &mut anon] {
        assert_eq!(c.read_non_heartbeat().unwrap().payload, b"to all");
    }
}

#[test]
fn kick_closes_with_4003_and_the_reason() {
    let s = spawn(cfg());
    let mut c = client(&s, "unruly");
    let r = http(s.admin, "DELETE", "/clients/unruly", "", b"too loud");
    assert_eq!(r.status, 200);
    assert_eq!(c.read_close_with_reason(), (4003, "too loud".to_string()));
    wait_until("gone", || s.stats.clients_online() == 0);
    assert_eq!(http(s.admin, "DELETE", "/clients/unruly", "", b"").status, 404);
    let _d = client(&s, "quiet");
    assert_eq!(http(s.admin, "DELETE", "/clients/quiet", "", &[b'r'; 124]).status, 400);
}

#[test]
fn bodies_over_max_message_size_get_413() {
    let s = spawn(wsbeat::Config {
        max_message_size: 1000,
        ..cfg()
    });
    let _c = client(&s, "small");
    let mut r = Raw::connect(s.admin);
    // Refused from the header alone, before the body is sent.
    r.send(b"POST /broadcast HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\n");
    let resp = read_response(&mut r);
    assert_eq!(resp.status, 413);
    // The message states the limit and the flag that sets it.
    let msg = resp.json()["error"].as_str().unwrap().to_string();
    assert!(
        msg.contains("1000 bytes") && msg.contains("--max-message-size"),
        "{msg}"
    );
    r.wait_closed();
    assert_eq!(
        http(s.admin, "POST", "/clients/small/messages", "", &[b'x'; 1000]).status,
        202
    );
}

#[test]
fn keep_alive_and_pipelining() {
    let s = spawn(cfg());
    let mut r = Raw::connect(s.admin);
    r.send(
        b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\nGET /clients HTTP/1.1\r\nHost: a\r\n\r\nPOST /broadcast HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi",
    );
    assert_eq!(read_response(&mut r).status, 200);
    assert_eq!(read_response(&mut r).status, 200);
    let b = read_response(&mut r);
    assert_eq!((b.status, b.json()["recipients"].as_u64()), (202, Some(0)));
    // Still open: one more, asking to close.
    r.send(b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    let last = read_response(&mut r);
    assert_eq!(last.status, 200);
    assert_eq!(last.header("connection").as_deref(), Some("close"));
    r.wait_closed();
}

#[test]
fn unknown_paths_methods_and_garbage() {
    let s = spawn(cfg());
    let r = http(s.admin, "GET", "/nope", "", b"");
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].is_string());
    let r = http(s.admin, "PUT", "/broadcast", "", b"");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow").as_deref(), Some("POST"));
    assert_eq!(http(s.admin, "BREW", "/healthz", "", b"").status, 405);
    let mut g = Raw::connect(s.admin);
    g.send(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03garbage\r\n\r\n");
    assert_eq!(read_response(&mut g).status, 400);
    g.wait_closed();
    let mut both = Raw::connect(s.admin);
    both.send(b"POST /broadcast HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\nhi");
    assert_eq!(read_response(&mut both).status, 400);
}

#[test]
fn events_stream_every_presence_change_with_its_reason() {
    let s = spawn(wsbeat::Config {
        heartbeat_interval: Duration::from_millis(100),
        heartbeat_timeout: Duration::from_millis(400),
        max_backpressure: 64 * 1024,
        ..cfg()
    });
    let mut ev = Events::open(s.admin);
    wait_until("subscribed", || {
        http(s.admin, "GET", "/metrics", "", b"")
            .text()
            .contains("wsbeat_events_subscribers 1\n")
    });

    // closed: a clean client close.
    let mut a = Raw::open(s.addr, "/?client_id=a");
    ev.expect("online", "a", None);
    a.send_frame(true, OpCode::Close, &1000u16.to_be_bytes());
    ev.expect("offline", "a", Some("closed"));

    // error: a protocol violation.
    let mut b = Raw::open(s.addr, "/?client_id=b");
    ev.expect("online", "b", None);
    b.send(&[0x81, 0x01, b'x']);
    ev.expect("offline", "b", Some("error"));

    // error too: the TCP connection just goes away.
    drop(Raw::open(s.addr, "/?client_id=b2"));
    ev.expect("online", "b2", None);
    ev.expect("offline", "b2", Some("error"));

    // heartbeat_timeout: silence.
    let _c = Raw::open(s.addr, "/?client_id=c");
    ev.expect("online", "c", None);
    ev.expect("offline", "c", Some("heartbeat_timeout"));

    // replaced: a newer connection takes the id (offline comes first).
    let mut d1 = Raw::open(s.addr, "/?client_id=d");
    ev.expect("online", "d", None);
    let mut d2 = Raw::open(s.addr, "/?client_id=d");
    ev.expect("offline", "d", Some("replaced"));
    ev.expect("online", "d", None);
    assert_eq!(d1.read_close(), 4001);

    // kicked.
    assert_eq!(http(s.admin, "DELETE", "/clients/d", "", b"").status, 200);
    ev.expect("offline", "d", Some("kicked"));
    assert_eq!(d2.read_close(), 4003);

    // backpressure: a client that stops reading while pushes pile up. It
    // keeps heartbeating so that only backpressure can remove it.
    let mut slow = Raw::open(s.addr, "/?client_id=slow");
    ev.expect("online", "slow", None);
    let chunk = vec![b'x'; 60_000];
    let mut pushed = 0;
    while s.stats.clients_online() > 0 && pushed < 2000 {
        if !slow.try_send_frame(true, OpCode::Text, b"heartbeat") {
            break; // dropped already
        }
        s.handle
            .send("slow", String::from_utf8(chunk.clone()).unwrap())
            .unwrap();
        pushed += 1;
        if pushed % 50 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    ev.expect("offline", "slow", Some("backpressure"));

    // shutdown.
    let _e = Raw::open(s.addr, "/?client_id=e");
    ev.expect("online", "e", None);
    s.handle.shutdown().unwrap();
    ev.expect("offline", "e", Some("shutdown"));
}

#[test]
fn a_slow_events_reader_is_dropped_not_buffered_forever() {
    let s = spawn(wsbeat::Config {
        max_backpressure: 16 * 1024,
        ..cfg()
    });
    // Subscribe and never read.
    let mut r = Raw::connect(s.admin);
    r.send(b"GET /events HTTP/1.1\r\nHost: a\r\n\r\n");
    wait_until("subscribed", || {
        http(s.admin, "GET", "/metrics", "", b"")
            .text()
            .contains("wsbeat_events_subscribers 1\n")
    });
    // Churn presence until the stream is dropped.
    let mut rounds = 0;
    while http(s.admin, "GET", "/metrics", "", b"")
        .text()
        .contains("wsbeat_events_subscribers 1\n")
    {
        assert!(rounds < 20_000, "slow subscriber never dropped");
        let mut c = Raw::open(s.addr, &format!("/?client_id=churn-{rounds}-{}", "x".repeat(100)));
        c.send_frame(true, OpCode::Close, &[]);
        c.read_close();
        rounds += 1;
    }
}

#[test]
fn the_handle_works_from_another_thread() {
    let s = spawn(cfg());
    let mut c = client(&s, "h1");
    let h = s.handle.clone();
    std::thread::spawn(move || {
        h.send("h1", "from a thread").unwrap();
        h.broadcast(vec![1u8, 2, 3]).unwrap();
        h.send("nobody", "dropped").unwrap();
    })
    .join()
    .unwrap();
    assert_eq!(c.read_non_heartbeat().unwrap().payload, b"from a thread");
    let f = c.read_non_heartbeat().unwrap();
    assert_eq!((f.opcode, f.payload), (OpCode::Binary, vec![1, 2, 3]));
    s.handle.kick("h1", "bye").unwrap();
    assert_eq!(c.read_close_with_reason(), (4003, "bye".into()));
    c.send_frame(true, OpCode::Close, &4003u16.to_be_bytes());
    s.handle.shutdown().unwrap();
    s.thread.join().unwrap().unwrap();
    assert_eq!(s.handle.send("h1", "late"), Err(wsbeat::ServerGone));
}

#[test]
fn shutdown_closes_clients_with_1001_and_run_returns() {
    let s = spawn(wsbeat::Config {
        shutdown_timeout: Duration::from_secs(10),
        ..cfg()
    });
    let mut polite = client(&s, "polite");
    let mut anon = Raw::open(s.addr, "/");
    let t = std::time::Instant::now();
    s.handle.shutdown().unwrap();
    for c in [&mut polite, &mut anon] {
        assert_eq!(c.read_close_with_reason(), (1001, "server shutting down".into()));
        c.send_frame(true, OpCode::Close, &1001u16.to_be_bytes());
    }
    // Every client answered: no need to wait out the timeout.
    s.thread.join().unwrap().unwrap();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // Nothing listens any more.
    assert!(std::net::TcpStream::connect(s.addr).is_err());
}

/// An idle admin connection is closed after `--admin-idle-timeout`; one that
/// keeps asking is not, and an `/events` stream gets keep-alive comments
/// instead.
#[test]
fn idle_admin_connections_are_closed_and_streams_kept_alive() {
    let s = spawn(wsbeat::Config {
        admin_idle_timeout: Duration::from_millis(300),
        ..cfg()
    });
    let mut idle = Raw::connect(s.admin);
    let mut busy = Raw::connect(s.admin);
    let mut events = Raw::connect(s.admin);
    events.send(b"GET /events HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(events.read_http_head().starts_with("HTTP/1.1 200"));
    for _ in 0..6 {
        busy.send(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(read_response(&mut busy).status, 200);
        std::thread::sleep(Duration::from_millis(100));
    }
    // 600 ms in: the idle one was closed at 300 ms, the busy one still works.
    let waited = idle.wait_closed();
    assert!(
        waited < Duration::from_millis(100),
        "closed {waited:?} after the busy one's last request"
    );
    busy.send(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(read_response(&mut busy).status, 200);
    let mut text = String::new();
    while !text.contains(": keepalive") {
        text.push_str(&events.read_some());
    }
}

crate::also_with_two_loops!(
    idle_admin_connections_are_closed_and_streams_kept_alive,
    healthz_and_metrics,
    metrics_count_what_happens,
    bearer_token_guards_everything_but_healthz,
    clients_listing_pages_by_id,
    one_client_by_id,
    push_text_and_binary_to_one_client,
    broadcast_reaches_every_open_connection,
    kick_closes_with_4003_and_the_reason,
    bodies_over_max_message_size_get_413,
    keep_alive_and_pipelining,
    unknown_paths_methods_and_garbage,
    events_stream_every_presence_change_with_its_reason,
    a_slow_events_reader_is_dropped_not_buffered_forever,
    the_handle_works_from_another_thread,
    shutdown_closes_clients_with_1001_and_run_returns,
);
