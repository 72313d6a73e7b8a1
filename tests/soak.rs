//! Soak: a few thousand well-behaved clients heartbeat and receive pushes
//! while attackers hammer the same server (loopback only, bounded in count
//! and time). At the end every push has arrived in order, no good client was
//! evicted, and the server's memory is back near where it started.

mod common;

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};
use wsbeat::protocol::frame::{self, OpCode};

const GOOD: usize = 2000;
const PUSHES: usize = 10;
const ATTACK_TIME: Duration = Duration::from_secs(20);

fn start_server() -> Proc {
    let mut cmd = wsbeat_on_free_ports();
    cmd.args([
        "--heartbeat-interval",
        "1s",
        "--heartbeat-timeout",
        "4s",
        "--handshake-timeout",
        "1s",
        "--close-timeout",
        "500ms",
        "--max-backpressure",
        "64KiB",
        "--max-message-size",
        "64KiB",
        "--max-connections",
        "6000",
    ]);
    start_binary(cmd)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// One well-behaved client, driven by the test's own mio loop.
struct Client {
    stream: MioStream,
    id: String,
    upgraded: bool,
    inbuf: Vec<u8>,
    next_push: usize,
    closed: Option<String>,
    next_beat: Instant,
}

impl Client {
    /// Handles what arrived; false on a protocol problem.
    fn on_bytes(&mut self) {
        if !self.upgraded {
            let Some(i) = self.inbuf.windows(4).position(|w| w == b"\r\n\r\n") else {
                return;
            };
            assert!(
                self.inbuf.starts_with(b"HTTP/1.1 101"),
                "{}: {:?}",
                self.id,
                String::from_utf8_lossy(&self.inbuf)
            );
            self.inbuf.drain(..i + 4);
            self.upgraded = true;
        }
        loop {
            let Some((h, n)) = frame::parse_header_any(&self.inbuf).unwrap() else {
                return;
            };
            let end = n + h.len as usize;
            if self.inbuf.len() < end {
                return;
            }
            let payload = self.inbuf[n..end].to_vec();
            self.inbuf.drain(..end);
            match h.opcode {
                OpCode::Text => {
                    let want = format!("{}#{}", self.id, self.next_push);
                    assert_eq!(String::from_utf8(payload).unwrap(), want, "out of order or lost");
                    self.next_push += 1;
                }
                OpCode::Close => {
                    self.closed = Some(format!("{:?}", &payload[..payload.len().min(2)]));
                }
                _ => {}
            }
        }
    }
}

/// Runs the good clients until `done` says every push arrived (or time is up).
fn run_good_clients(addr: SocketAddr, ready: Arc<AtomicU64>, stop: Arc<AtomicBool>) -> Vec<Client> {
    let mut poll = Poll::new().unwrap();
    let mut clients: Vec<Client> = Vec::with_capacity(GOOD);
    for i in 0..GOOD {
        let std = TcpStream::connect(addr).unwrap();
        std.set_nonblocking(true).unwrap();
        std.set_nodelay(true).unwrap();
        let mut stream = MioStream::from_std(std);
        poll.registry()
            .register(&mut stream, Token(i), Interest::READABLE)
            .unwrap();
        let id = format!("good-{i:04}");
        let req = upgrade_request(&format!("/?client_id={id}"), "");
        stream.write_all(req.as_bytes()).unwrap();
        clients.push(Client {
            stream,
            id,
            upgraded: false,
            inbuf: Vec::new(),
            next_push: 0,
            closed: None,
            // Staggered heartbeats, every 500 ms each.
            next_beat: Instant::now() + Duration::from_millis((i % 500) as u64),
        });
    }
    let mut events = Events::with_capacity(1024);
    let mut beat = Vec::new();
    frame::encode_frame_masked(&mut beat, true, OpCode::Text, b"heartbeat", [1, 2, 3, 4]);
    let mut buf = vec![0u8; 65536];
    let start = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        assert!(start.elapsed() < Duration::from_secs(120), "soak client loop ran away");
        poll.poll(&mut events, Some(Duration::from_millis(20))).unwrap();
        for ev in events.iter() {
            let c = &mut clients[ev.token().0];
            loop {
                match c.stream.read(&mut buf) {
                    Ok(0) => {
                        c.closed.get_or_insert_with(|| "eof".into());
                        break;
                    }
                    Ok(n) => c.inbuf.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => {
                        c.closed.get_or_insert_with(|| e.to_string());
                        break;
                    }
                }
            }
            c.on_bytes();
        }
        let now = Instant::now();
        let mut up = 0;
        for c in &mut clients {
            if c.upgraded {
                up += 1;
                if now >= c.next_beat {
                    // Tiny writes never block on a healthy socket; a failure
                    // shows as a closed client at the end.
                    if c.stream.write_all(&beat).is_err() {
                        c.closed.get_or_insert_with(|| "write failed".into());
                    }
                    c.next_beat = now + Duration::from_millis(500);
                }
            }
        }
        let delivered: u64 = clients.iter().map(|c| c.next_push as u64).sum();
        ready.store(((up as u64) << 32) | delivered, Ordering::Relaxed);
    }
    clients
}

/// Pushes `PUSHES` numbered messages to every good client through the admin
/// API, pipelined on one keep-alive connection.
fn push_all(admin: SocketAddr) {
    let mut r = Raw::connect(admin);
    for k in 0..PUSHES {
        for chunk in (0..GOOD).collect::<Vec<_>>().chunks(100) {
            let mut batch = Vec::new();
            for &i in chunk {
                let body = format!("good-{i:04}#{k}");
                batch.extend_from_slice(
                    format!(
                        "POST /clients/good-{i:04}/messages HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            }
            r.send(&batch);
            for _ in chunk {
                assert_eq!(read_response(&mut r).status, 202);
            }
        }
    }
}

/// The attackers: each kind in waves until `stop`.
fn attack(addr: SocketAddr, stop: Arc<AtomicBool>) -> u64 {
    let mut rounds = 0u64;
    let mask = [7, 7, 7, 7];
    let mut ping = Vec::new();
    frame::encode_frame_masked(&mut ping, true, OpCode::Ping, &[0; 125], mask);
    let ping_flood: Vec<u8> = ping.iter().copied().cycle().take(ping.len() * 200).collect();
    let client_hello: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03];
    while !stop.load(Ordering::Relaxed) {
        let mut held = Vec::new();
        // Slowloris: half a request, then a byte now and then.
        for _ in 0..100 {
            if let Ok(mut s) = TcpStream::connect(addr) {
                let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n");
                held.push(s);
            }
        }
        // Garbage, TLS, oversized headers: answered and closed.
        for i in 0..60 {
            if let Ok(mut s) = TcpStream::connect(addr) {
                let _ = match i % 3 {
                    0 => s.write_all(client_hello),
                    1 => s.write_all(b"\x00\xff garbage \r\n\r\n"),
                    _ => s.write_all(format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000)).as_bytes()),
                };
                held.push(s);
            }
        }
        // Protocol violators and abrupt resets mid-frame.
        for i in 0..40 {
            if let Ok(mut s) = TcpStream::connect(addr) {
                let _ = s.write_all(upgrade_request("/", "").as_bytes());
                let _ = s.write_all(if i % 2 == 0 {
                    &[0x81, 0x01, b'x'][..]
                } else {
                    &[0x82, 0xFE, 0x10, 0x00, 1, 2, 3]
                });
                if i % 2 == 1 {
                    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                } else {
                    held.push(s);
                }
            }
        }
        // Ping flooders that never read: dropped for backpressure.
        for _ in 0..5 {
            if let Ok(mut s) = TcpStream::connect(addr) {
                let _ = s.write_all(upgrade_request("/", "").as_bytes());
                let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
                for _ in 0..200 {
                    if s.write_all(&ping_flood).is_err() {
                        break;
                    }
                }
                held.push(s);
            }
        }
        for _ in 0..10 {
            std::thread::sleep(Duration::from_millis(100));
            for s in &mut held {
                let _ = s.write_all(b"X");
            }
        }
        rounds += 1;
    }
    rounds
}

#[test]
fn soak_good_clients_keep_everything_while_attackers_hammer() {
    // Two descriptors per good client live in this process (ours) and one in
    // the server's: raise our soft limit to what the system allows.
    let (_, hard) = rlimit::Resource::NOFILE.get().unwrap();
    rlimit::Resource::NOFILE.set(hard, hard).unwrap();

    let server = start_server();
    let ready = Arc::new(AtomicU64::new(0));
    let stop_clients = Arc::new(AtomicBool::new(false));
    let clients_thread = {
        let (ready, stop) = (ready.clone(), stop_clients.clone());
        let addr = server.addr;
        std::thread::spawn(move || run_good_clients(addr, ready, stop))
    };
    wait_until("good clients upgraded", || {
        ready.load(Ordering::Relaxed) >> 32 == GOOD as u64
    });
    wait_until("good clients listed", || {
        http(server.admin, "GET", "/clients?limit=1", "", b"").json()["total"] == GOOD
    });
    let baseline = rss_kib(server.child.id());

    let stop_attacks = Arc::new(AtomicBool::new(false));
    let attackers: Vec<_> = (0..2)
        .map(|_| {
            let (addr, stop) = (server.addr, stop_attacks.clone());
            std::thread::spawn(move || attack(addr, stop))
        })
        .collect();
    let t = Instant::now();
    push_all(server.admin);
    let peak = rss_kib(server.child.id());
    while t.elapsed() < ATTACK_TIME {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop_attacks.store(true, Ordering::Relaxed);
    let rounds: u64 = attackers.into_iter().map(|a| a.join().unwrap()).sum();
    assert!(rounds >= 4, "attackers ran {rounds} rounds");

    // Every push delivered, in order (checked as they arrive).
    wait_until("all pushes delivered", || {
        ready.load(Ordering::Relaxed) & 0xFFFF_FFFF == (GOOD * PUSHES) as u64
    });
    // Attackers' connections are all gone, good ones all still here.
    wait_until("attackers cleaned up", || {
        metric(server.admin, "wsbeat_connections_open") == GOOD as u64
    });
    assert_eq!(metric(server.admin, "wsbeat_clients_online"), GOOD as u64);
    assert_eq!(
        metric(server.admin, "wsbeat_evictions_total{reason=\"heartbeat_timeout\"}"),
        0
    );
    assert!(metric(server.admin, "wsbeat_evictions_total{reason=\"backpressure\"}") > 0);
    assert!(
        metric(
            server.admin,
            "wsbeat_connections_rejected_total{reason=\"handshake_timeout\"}"
        ) > 0
    );
    let end = rss_kib(server.child.id());

    stop_clients.store(true, Ordering::Relaxed);
    let clients = clients_thread.join().unwrap();
    let closed: HashMap<&str, &String> = clients
        .iter()
        .filter_map(|c| c.closed.as_ref().map(|r| (c.id.as_str(), r)))
        .collect();
    assert!(closed.is_empty(), "good clients closed: {closed:?}");
    assert!(clients.iter().all(|c| c.next_push == PUSHES));

    // Memory back within a small margin of the baseline: what attackers and
    // bursts took was given back (or is reused, not grown).
    eprintln!(
        "server RSS: baseline {baseline} KiB, peak during pushes {peak} KiB, end {end} KiB, {rounds} attack rounds"
    );
    let margin = (baseline / 10).max(8 * 1024);
    assert!(end <= baseline + margin, "RSS grew from {baseline} KiB to {end} KiB");
}

crate::also_with_two_loops!(soak_good_clients_keep_everything_while_attackers_hammer,);
