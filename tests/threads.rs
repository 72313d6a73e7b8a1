//! What only several event loops can get wrong: the same id arriving on two
//! loops at once, balance, and every process-wide view (pushes, `/clients`,
//! `/events`, `/metrics`, broadcasts, the library handle) covering every
//! loop. Each test runs with two loops.

mod common;

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use wsbeat::config::DuplicateId;
use wsbeat::protocol::frame::OpCode;

fn two_loops(cfg: wsbeat::Config) -> TestServer {
    let cfg = wsbeat::Config {
        threads: 2,
        ..test_config(cfg)
    };
    spawn_server(wsbeat::Server::bind(cfg).expect("bind"))
}

fn cfg() -> wsbeat::Config {
    wsbeat::Config {
        heartbeat_timeout: Duration::from_secs(30),
        ..Default::default()
    }
}

/// Two connections with the same id upgrade at the same instant, one on
/// each loop, a hundred times: exactly one keeps the id each time (replace:
/// the other, the older, gets 4001; reject: the newer gets 4002), and the
/// registry never ends with a stale entry or none.
#[test]
fn the_same_id_on_two_loops_at_once_is_settled_once() {
    for mode in [DuplicateId::Replace, DuplicateId::Reject] {
        let s = two_loops(wsbeat::Config {
            duplicate_id: mode,
            ..cfg()
        });
        let mut events = EventStream::open(s.admin);
        wait_until("subscribed", || metric(s.admin, "wsbeat_events_subscribers") == 1);
        for round in 0..100 {
            let id = format!("race-{round}");
            // Both accepted before either upgrades: the loops take turns, so
            // they land on different loops.
            let mut pair = [Raw::connect(s.addr), Raw::connect(s.addr)];
            wait_until("accepted", || s.stats.loop_connections() == [1, 1]);
            let req = upgrade_request(&format!("/?client_id={id}"), "");
            for c in pair.iter_mut() {
                c.send(req.as_bytes());
            }
            for c in pair.iter_mut() {
                assert!(c.read_http_head().starts_with("HTTP/1.1 101"));
                c.s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
            }
            let expected = match mode {
                DuplicateId::Replace => 4001,
                DuplicateId::Reject => 4002,
            };
            // Exactly one of them is closed, with the mode's code.
            let waiting = std::time::Instant::now();
            let closed = 'found: loop {
                assert!(
                    waiting.elapsed() < DEADLINE,
                    "{mode:?} round {round}: neither was closed"
                );
                for (i, c) in pair.iter_mut().enumerate() {
                    if let Some(f) = c.read_frame_nowait() {
                        assert_eq!(f.close_code(), Some(expected), "{mode:?} round {round}");
                        break 'found i;
                    }
                }
            };
            let kept = 1 - closed;
            // The other holds the id, and is left alone.
            let got = http(s.admin, "GET", &format!("/clients/{id}"), "", b"");
            assert_eq!(got.status, 200, "{mode:?} round {round}: the id has no holder");
            pair[kept].s.set_read_timeout(Some(Duration::from_millis(30))).unwrap();
            assert!(pair[kept].read_frame_nowait().is_none(), "the holder was closed too");
            // Subscribers saw it in the order it happened: never offline
            // after the id came back.
            let want: &[(&str, Option<&str>)] = match mode {
                DuplicateId::Replace => &[("online", None), ("offline", Some("replaced")), ("online", None)],
                DuplicateId::Reject => &[("online", None)],
            };
            for (kind, reason) in want {
                assert_eq!(events.next(), (kind.to_string(), id.clone(), reason.map(String::from)));
            }
            drop(pair);
            assert_eq!(events.next().1, id);
            wait_until("both connections gone", || s.stats.connections_open() == 0);
            assert_eq!(s.stats.clients_online(), 0);
        }
        assert_eq!(metric(s.admin, "wsbeat_clients_online"), 0);
    }
}

/// `/events`, as (event, id, reason).
struct EventStream {
    raw: Raw,
    buf: String,
}

impl EventStream {
    fn open(admin: SocketAddr) -> EventStream {
        let mut raw = Raw::connect(admin);
        raw.send(b"GET /events HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(raw.read_http_head().starts_with("HTTP/1.1 200"));
        EventStream {
            raw,
            buf: String::new(),
        }
    }

    fn next(&mut self) -> (String, String, Option<String>) {
        loop {
            if let Some(i) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..i + 2).collect();
                let event = block.lines().find_map(|l| l.strip_prefix("event: "));
                let data = block.lines().find_map(|l| l.strip_prefix("data: "));
                if let (Some(e), Some(d)) = (event, data) {
                    let d: serde_json::Value = serde_json::from_str(d).unwrap();
                    return (
                        e.to_string(),
                        d["id"].as_str().unwrap().to_string(),
                        d["reason"].as_str().map(String::from),
                    );
                }
                continue;
            }
            self.buf.push_str(&self.raw.read_some());
        }
    }
}

/// Opens `n` upgraded connections with source addresses cycling through
/// `sources` (127.0.0.x).
fn open_from(addr: SocketAddr, sources: &[IpAddr], n: usize) -> Vec<Raw> {
    (0..n)
        .map(|i| {
            let src = sources[i % sources.len()];
            let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            sock.bind(&SocketAddr::new(src, 0).into()).unwrap();
            sock.connect(&addr.into()).unwrap();
            let s: TcpStream = sock.into();
            let mut r = Raw::from_stream(s);
            r.send(upgrade_request("/", "").as_bytes());
            assert!(r.read_http_head().starts_with("HTTP/1.1 101"));
            r
        })
        .collect()
}

fn assert_balanced(per_loop: &[u64], total: u64) {
    let mean = total as f64 / per_loop.len() as f64;
    for &n in per_loop {
        assert!(
            (n as f64 - mean).abs() <= 0.15 * mean,
            "{per_loop:?}: a loop is more than 15% off the mean {mean}"
        );
    }
}

#[test]
fn loops_hold_even_shares_from_one_address_and_from_twenty() {
    let s = two_loops(cfg());
    let one = [IpAddr::from([127, 0, 0, 1])];
    let twenty: Vec<IpAddr> = (1..=20).map(|i| IpAddr::from([127, 0, 0, i])).collect();
    for sources in [&one[..], &twenty[..]] {
        let clients = open_from(s.addr, sources, 400);
        wait_until("all counted", || loop_connections(s.admin).iter().sum::<u64>() == 400);
        assert_balanced(&loop_connections(s.admin), 400);
        assert_eq!(s.stats.loop_connections().iter().sum::<usize>(), 400);
        drop(clients);
        wait_until("all gone", || s.stats.connections_open() == 0);
    }
    // After departures from one loop only, new connections go to it first.
    let mut clients = open_from(s.addr, &one, 100);
    assert_eq!(s.stats.loop_connections(), [50, 50]);
    // The loops took turns: the even ones are loop 0's.
    let mut i = 0;
    clients.retain(|_| {
        i += 1;
        i % 2 == 0
    });
    wait_until("loop 0 emptied", || s.stats.loop_connections() == [0, 50]);
    let _more = open_from(s.addr, &twenty, 100);
    assert_eq!(s.stats.loop_connections(), [75, 75]);
    assert_balanced(&loop_connections(s.admin), 150);
}

#[test]
fn pushes_to_800_ids_on_both_loops_all_arrive() {
    let s = two_loops(cfg());
    let mut clients: Vec<Raw> = (0..800)
        .map(|i| Raw::open(s.addr, &format!("/?client_id=p-{i}")))
        .collect();
    wait_until("all online", || s.stats.clients_online() == 800);
    let per_loop = loop_connections(s.admin);
    assert!(per_loop.iter().all(|&n| n >= 300), "{per_loop:?}");
    // Half through the admin API (served by loop 0), half through the
    // library handle (straight to the loop holding the id).
    for i in 0..800 {
        if i % 2 == 0 {
            let r = http(
                s.admin,
                "POST",
                &format!("/clients/p-{i}/messages"),
                "",
                format!("to {i}").as_bytes(),
            );
            assert_eq!(r.status, 202, "{}", r.text());
        } else {
            s.handle.send(&format!("p-{i}"), format!("to {i}")).unwrap();
        }
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let f = c.read_non_heartbeat().expect("the push");
        assert_eq!(f.payload, format!("to {i}").as_bytes());
    }
    // A kick through either way reaches the right loop too.
    assert_eq!(http(s.admin, "DELETE", "/clients/p-1", "", b"bye").status, 200);
    s.handle.kick("p-2", "bye").unwrap();
    assert_eq!(clients[1].read_close(), 4003);
    assert_eq!(clients[2].read_close(), 4003);
    // Offline ids are 404 whatever loop last held them.
    wait_until("kicked ones gone", || s.stats.clients_online() == 798);
    assert_eq!(http(s.admin, "POST", "/clients/p-1/messages", "", b"x").status, 404);
}

#[test]
fn clients_page_in_id_order_across_loops_and_metrics_sum_them() {
    let s = two_loops(cfg());
    let mut clients: Vec<Raw> = (0..30)
        .map(|i| Raw::open(s.addr, &format!("/?client_id=c-{i:02}")))
        .collect();
    for c in clients.iter_mut() {
        c.send_frame(true, OpCode::Text, b"heartbeat");
    }
    wait_until("all online", || s.stats.clients_online() == 30);
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let target = if after.is_empty() {
            "/clients?limit=7".to_string()
        } else {
            format!("/clients?limit=7&after={after}")
        };
        let page = http(s.admin, "GET", &target, "", b"").json();
        assert_eq!(page["total"], 30);
        for c in page["clients"].as_array().unwrap() {
            assert!(c["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{c}");
            assert!(c["connected_at_ms"].as_u64().unwrap() > 1_700_000_000_000);
            seen.push(c["id"].as_str().unwrap().to_string());
        }
        match page["next"].as_str() {
            Some(n) => after = n.to_string(),
            None => break,
        }
    }
    let expected: Vec<String> = (0..30).map(|i| format!("c-{i:02}")).collect();
    assert_eq!(seen, expected);
    // One client on each loop, looked up by id.
    for id in ["c-00", "c-01"] {
        let c = http(s.admin, "GET", &format!("/clients/{id}"), "", b"").json();
        assert_eq!(c["id"], id);
    }
    // Counters are summed over the loops, gauges too.
    wait_until("heartbeats counted", || {
        metric(s.admin, "wsbeat_heartbeats_received_total") == 30
    });
    assert_eq!(metric(s.admin, "wsbeat_connections_open"), 30);
    assert_eq!(metric(s.admin, "wsbeat_connections_accepted_total"), 30);
    assert_eq!(loop_connections(s.admin).iter().sum::<u64>(), 30);
    // A broadcast reaches every loop's clients, and counts them all.
    let r = http(s.admin, "POST", "/broadcast", "", b"all of you").json();
    assert_eq!(r["recipients"], 30);
    for c in clients.iter_mut() {
        assert_eq!(c.read_non_heartbeat().unwrap().payload, b"all of you");
    }
}

#[test]
fn events_carry_every_loops_changes() {
    let s = two_loops(cfg());
    let mut events = EventStream::open(s.admin);
    wait_until("subscribed", || metric(s.admin, "wsbeat_events_subscribers") == 1);
    let clients: Vec<Raw> = (0..10)
        .map(|i| Raw::open(s.addr, &format!("/?client_id=e-{i}")))
        .collect();
    assert_eq!(s.stats.loop_connections(), [5, 5]);
    let mut online: Vec<String> = (0..10)
        .map(|_| events.next())
        .map(|(e, id, _)| {
            assert_eq!(e, "online");
            id
        })
        .collect();
    online.sort();
    assert_eq!(online, (0..10).map(|i| format!("e-{i}")).collect::<Vec<_>>());
    drop(clients);
    for _ in 0..10 {
        let (e, _, reason) = events.next();
        assert_eq!((e.as_str(), reason.as_deref()), ("offline", Some("error")));
    }
}

#[test]
fn the_library_handle_reaches_every_loop_and_stops_them_all() {
    use wsbeat::{AppMessage, ConnInfo, Control, Handler};
    /// One handler per loop; each tells which loop saw which message.
    struct PerLoop(usize, mpsc::Sender<(usize, String)>);
    impl Handler for PerLoop {
        fn on_message(&mut self, c: &ConnInfo<'_>, m: AppMessage<'_>, ctl: &mut Control) {
            if let AppMessage::Text(t) = m {
                let _ = self.1.send((self.0, t.to_string()));
                ctl.send(c.conn, format!("loop {} heard {t}", self.0));
            }
        }
    }
    let (tx, rx) = mpsc::channel();
    let cfg = wsbeat::Config {
        threads: 2,
        ..test_config(cfg())
    };
    let server = wsbeat::Server::with_handlers(cfg, |i| PerLoop(i, tx.clone())).unwrap();
    assert_eq!(server.threads(), 2);
    let s = spawn_server(server);
    let mut clients: Vec<Raw> = (0..6)
        .map(|i| Raw::open(s.addr, &format!("/?client_id=h-{i}")))
        .collect();
    wait_until("all online", || s.stats.clients_online() == 6);
    for (i, c) in clients.iter_mut().enumerate() {
        c.send_frame(true, OpCode::Text, format!("m{i}").as_bytes());
    }
    let mut loops_seen = [false; 2];
    for _ in 0..6 {
        let (l, _) = rx.recv_timeout(DEADLINE).unwrap();
        loops_seen[l] = true;
    }
    assert_eq!(loops_seen, [true, true], "each loop's handler serves its own clients");
    for c in clients.iter_mut() {
        let f = c.read_non_heartbeat().unwrap();
        assert!(String::from_utf8(f.payload).unwrap().contains(" heard m"));
    }
    for i in 0..6 {
        s.handle.send(&format!("h-{i}"), format!("direct {i}")).unwrap();
    }
    s.handle.broadcast("everyone").unwrap();
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(
            c.read_non_heartbeat().unwrap().payload,
            format!("direct {i}").as_bytes()
        );
        assert_eq!(c.read_non_heartbeat().unwrap().payload, b"everyone");
    }
    s.handle.shutdown().unwrap();
    for c in clients.iter_mut() {
        assert_eq!(c.read_close(), 1001);
    }
    drop(clients);
    s.thread.join().unwrap().unwrap();
    assert_eq!(s.handle.send("h-0", "late"), Err(wsbeat::ServerGone));
}

/// A handler on any loop may stop the server: every loop's clients get 1001.
#[test]
fn a_shutdown_asked_on_another_loop_stops_every_loop() {
    use wsbeat::{AppMessage, ConnInfo, Control, Handler};
    struct StopOnStop;
    impl Handler for StopOnStop {
        fn on_message(&mut self, _: &ConnInfo<'_>, m: AppMessage<'_>, ctl: &mut Control) {
            if m == AppMessage::Text("stop") {
                ctl.shutdown();
            }
        }
    }
    let cfg = wsbeat::Config {
        threads: 2,
        ..test_config(cfg())
    };
    let s = spawn_server(wsbeat::Server::with_handlers(cfg, |_| StopOnStop).unwrap());
    let mut on_loop_0 = Raw::open(s.addr, "/");
    let mut on_loop_1 = Raw::open(s.addr, "/");
    assert_eq!(s.stats.loop_connections(), [1, 1]);
    on_loop_1.send_frame(true, OpCode::Text, b"stop");
    assert_eq!(on_loop_0.read_close(), 1001);
    assert_eq!(on_loop_1.read_close(), 1001);
    drop((on_loop_0, on_loop_1));
    s.thread.join().unwrap().unwrap();
}

/// A loop that does not answer in time makes the admin API say so (503),
/// rather than report zeros or a partial list.
#[test]
fn an_admin_request_a_busy_loop_cannot_answer_gets_503() {
    use wsbeat::{AppMessage, ConnInfo, Control, Handler};
    struct Sleepy(usize);
    impl Handler for Sleepy {
        fn on_message(&mut self, _: &ConnInfo<'_>, m: AppMessage<'_>, _: &mut Control) {
            if self.0 == 1 && m == AppMessage::Text("sleep") {
                // A handler that blocks its loop (which handlers must not).
                std::thread::sleep(Duration::from_millis(4000));
            }
        }
    }
    let cfg = wsbeat::Config {
        threads: 2,
        ..test_config(cfg())
    };
    let s = spawn_server(wsbeat::Server::with_handlers(cfg, Sleepy).unwrap());
    let _on_loop_0 = Raw::open(s.addr, "/?client_id=zero");
    let mut on_loop_1 = Raw::open(s.addr, "/?client_id=one");
    assert_eq!(http(s.admin, "GET", "/metrics", "", b"").status, 200);
    on_loop_1.send_frame(true, OpCode::Text, b"sleep");
    std::thread::sleep(Duration::from_millis(200));
    let t = std::time::Instant::now();
    let r = http(s.admin, "GET", "/metrics", "", b"");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(t.elapsed() < Duration::from_secs(2), "answered after {:?}", t.elapsed());
    assert_eq!(http(s.admin, "GET", "/clients/one", "", b"").status, 503);
    // What loop 0 knows alone it still answers.
    assert_eq!(http(s.admin, "GET", "/clients/zero", "", b"").status, 200);
    wait_until("loop 1 back", || {
        http(s.admin, "GET", "/metrics", "", b"").status == 200
    });
}

/// A loop whose thread dies takes the server down cleanly: the other
/// loops' clients are closed with 1001 and `run` reports the failure.
#[test]
fn a_loop_that_dies_shuts_the_server_down() {
    use wsbeat::{AppMessage, ConnInfo, Control, Handler};
    struct Fragile;
    impl Handler for Fragile {
        fn on_message(&mut self, _: &ConnInfo<'_>, m: AppMessage<'_>, _: &mut Control) {
            if m == AppMessage::Text("die") {
                panic!("a handler bug");
            }
        }
    }
    let cfg = wsbeat::Config {
        threads: 2,
        ..test_config(cfg())
    };
    for dying in [1, 0] {
        let cfg = cfg.clone();
        let s = spawn_server(wsbeat::Server::with_handlers(cfg, |_| Fragile).unwrap());
        let mut on_loop = [Raw::open(s.addr, "/"), Raw::open(s.addr, "/")];
        on_loop[dying].send_frame(true, OpCode::Text, b"die");
        assert_eq!(on_loop[1 - dying].read_close(), 1001, "loop {dying} died");
        drop(on_loop);
        match s.thread.join() {
            // Another loop died: `run` says so.
            Ok(result) => assert!(dying != 0 && result.is_err(), "run must report the dead loop"),
            // Loop 0 (run's own thread) died: the panic goes on from `run`.
            Err(_) => assert_eq!(dying, 0),
        }
    }
}

/// Many broadcasts to many connections, faster than a loop sends them in
/// one turn: each client gets every one, once, in order, with a push sent
/// after them arriving after them.
#[test]
fn a_burst_of_broadcasts_arrives_whole_and_in_order() {
    let s = two_loops(cfg());
    let mut clients: Vec<Raw> = (0..1000)
        .map(|i| Raw::open(s.addr, &format!("/?client_id=b-{i}")))
        .collect();
    wait_until("all online", || s.stats.clients_online() == 1000);
    for n in 0..40 {
        s.handle.broadcast(format!("{n:04}{}", "x".repeat(200))).unwrap();
    }
    s.handle.send("b-1", "after").unwrap();
    for (i, c) in clients.iter_mut().enumerate() {
        for n in 0..40 {
            let f = c.read_non_heartbeat().unwrap();
            assert_eq!(&f.payload[..4], format!("{n:04}").as_bytes(), "client {i}");
        }
        if i == 1 {
            assert_eq!(c.read_non_heartbeat().unwrap().payload, b"after");
        }
    }
}
