//! The forwarding thread against a real (tiny, hand-written) HTTP/1.1
//! backend on 127.0.0.1.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::buffer::ITEM_OVERHEAD;
use super::*;
use crate::presence::OfflineReason;

/// One request the backend got, and what it answered.
#[derive(Clone, Debug)]
struct Received {
    /// Header lines, names lowercased.
    headers: Vec<(String, String)>,
    body: Value,
    status: u16,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The `at_ms` of its messages: the tests' item tags.
    fn tags(&self) -> Vec<u64> {
        self.body["messages"]
            .as_array()
            .map(|a| a.iter().filter_map(|m| m["at_ms"].as_u64()).collect())
            .unwrap_or_default()
    }

    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

type Respond = Box<dyn FnMut(&Value) -> u16 + Send>;

struct Backend {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Backend {
    fn start(respond: impl FnMut(&Value) -> u16 + Send + 'static) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        Backend::serve(listener, Box::new(respond))
    }

    /// On `addr` (a port reserved earlier).
    fn start_at(addr: SocketAddr, respond: impl FnMut(&Value) -> u16 + Send + 'static) -> Backend {
        let listener = TcpListener::bind(addr).expect("bind again");
        Backend::serve(listener, Box::new(respond))
    }

    fn serve(listener: TcpListener, respond: Respond) -> Backend {
        let addr = listener.local_addr().expect("addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let respond = Arc::new(Mutex::new(respond));
        let r = Arc::clone(&received);
        // Left running: the test process ends it.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (r, respond) = (Arc::clone(&r), Arc::clone(&respond));
                std::thread::spawn(move || {
                    let _ = connection(stream, &r, &respond);
                });
            }
        });
        Backend { addr, received }
    }

    fn url(&self) -> String {
        format!("http://{}/ingest", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Tags of the messages of the accepted requests, in order.
    fn accepted_tags(&self) -> Vec<u64> {
        self.received()
            .iter()
            .filter(|r| r.ok())
            .flat_map(|r| r.tags())
            .collect()
    }
}

/// Requests on one keep-alive connection until it closes.
fn connection(stream: TcpStream, received: &Mutex<Vec<Received>>, respond: &Mutex<Respond>) -> std::io::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        assert!(line.starts_with("POST /ingest HTTP/1.1"), "{line:?}");
        let mut headers = Vec::new();
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .expect("content-length");
        let mut body = vec![0; len];
        reader.read_exact(&mut body)?;
        let body: Value = serde_json::from_slice(&body).expect("JSON body");
        let status = (respond.lock().unwrap())(&body);
        received.lock().unwrap().push(Received { headers, body, status });
        let location = if (300..400).contains(&status) {
            "location: /elsewhere\r\n"
        } else {
            ""
        };
        write!(writer, "HTTP/1.1 {status} X\r\n{location}content-length: 2\r\n\r\nok")?;
        writer.flush()?;
    }
}

/// A port nothing listens on (for a while).
fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// Polls `cond` every 10 ms for up to 10 s.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn settings(url: String) -> ForwardSettings {
    ForwardSettings {
        url,
        headers: Vec::new(),
        buffer: 16 << 20,
        timeout: Duration::from_secs(5),
    }
}

fn start(settings: &ForwardSettings) -> Forwarder {
    Forwarder::start(settings, Arc::from("node-a")).expect("start")
}

/// A text message tagged `tag` (its `at_ms`) costing `cost` bytes.
fn sized(conn: u64, tag: u64, cost: usize) -> Item {
    Item::Message {
        id: None,
        conn: ConnId::from_raw(conn),
        binary: false,
        data: vec![b'x'; cost - ITEM_OVERHEAD].into(),
        at_ms: tag,
    }
}

fn msg(conn: u64, tag: u64) -> Item {
    Item::Message {
        id: Some(Arc::from(format!("client-{conn}"))),
        conn: ConnId::from_raw(conn),
        binary: false,
        data: format!("message {tag}").into_bytes().into(),
        at_ms: tag,
    }
}

#[test]
fn batches_arrive_in_order_with_headers() {
    let backend = Backend::start(|_| 200);
    let mut s = settings(backend.url());
    s.headers = vec![
        ("Authorization".into(), "Bearer secret".into()),
        ("X-Test".into(), " yes ".into()),
    ];
    let f = start(&s);
    let mut items = Vec::with_capacity(100);
    for tag in 0..2500 {
        items.push(msg(1, tag));
        if tag == 7 {
            items.push(Item::Event(PresenceEvent::Offline {
                id: Arc::from("client-9"),
                reason: OfflineReason::Kicked,
                at_ms: 77,
            }));
        }
        if items.len() >= 100 {
            f.push(&mut items);
            assert!(items.is_empty() && items.capacity() >= 100);
        }
    }
    f.push(&mut items);
    wait_until("2501 delivered", || f.stats().delivered == 2501);
    let received = backend.received();
    assert_eq!(backend.accepted_tags(), (0..2500).collect::<Vec<_>>());
    for r in &received {
        assert_eq!(r.status, 200);
        assert!(r.body["messages"].as_array().map_or(0, Vec::len) <= 1000);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("authorization"), Some("Bearer secret"));
        assert_eq!(r.header("x-test"), Some("yes"));
        assert_eq!(r.body["node"], "node-a");
    }
    let first = &received[0].body["messages"][0];
    assert_eq!(first["id"], "client-1");
    assert_eq!(first["conn"], "1");
    assert_eq!(first["type"], "text");
    assert_eq!(first["data"], "message 0");
    let events: Vec<&Value> = received
        .iter()
        .flat_map(|r| r.body["events"].as_array().unwrap())
        .collect();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["event"], "offline");
    assert_eq!(events[0]["reason"], "kicked");
    let stats = f.stats();
    assert_eq!(stats.requests_ok as usize, received.len());
    assert_eq!((stats.dropped, stats.requests_failed, stats.buffered_bytes), (0, 0, 0));
    f.stop(Duration::from_secs(1));
}

#[test]
fn order_is_kept_per_client_with_concurrent_pushers() {
    let backend = Backend::start(|_| 200);
    let f = Arc::new(start(&settings(backend.url())));
    let pushers: Vec<_> = (0..4u64)
        .map(|conn| {
            let f = Arc::clone(&f);
            std::thread::spawn(move || {
                let mut items = Vec::new();
                for tag in 0..600 {
                    items.push(msg(conn, tag));
                    // Pushes of varied sizes, as loop turns would make.
                    if tag % (conn + 3) == 0 {
                        f.push(&mut items);
                    }
                }
                f.push(&mut items);
            })
        })
        .collect();
    for p in pushers {
        p.join().unwrap();
    }
    wait_until("2400 delivered", || f.stats().delivered == 2400);
    let mut per_conn: Vec<Vec<u64>> = vec![Vec::new(); 4];
    for r in backend.received() {
        for m in r.body["messages"].as_array().unwrap() {
            let conn: usize = m["conn"].as_str().unwrap().parse().unwrap();
            per_conn[conn].push(m["at_ms"].as_u64().unwrap());
        }
    }
    for tags in per_conn {
        assert_eq!(tags, (0..600).collect::<Vec<_>>());
    }
}

#[test]
fn failed_batches_are_retried_without_loss_or_reordering() {
    let answered = Arc::new(AtomicUsize::new(0));
    let a = Arc::clone(&answered);
    // 500, a redirect, then 200s.
    let backend = Backend::start(move |_| match a.fetch_add(1, Ordering::SeqCst) {
        0 => 500,
        1 => 307,
        _ => 200,
    });
    let f = start(&settings(backend.url()));
    let mut items: Vec<Item> = (0..10).map(|t| msg(1, t)).collect();
    f.push(&mut items);
    wait_until("a failure", || f.stats().requests_failed >= 1);
    // Pushed while the first batch is being retried: must come after it.
    let mut items: Vec<Item> = (10..20).map(|t| msg(1, t)).collect();
    f.push(&mut items);
    wait_until("20 delivered", || f.stats().delivered == 20);
    let received = backend.received();
    assert_eq!(received[0].status, 500);
    assert_eq!(received[1].status, 307);
    // The same batch thrice.
    let first: Vec<u64> = (0..10).collect();
    assert_eq!(received[0].tags(), first);
    assert_eq!(received[1].tags(), first);
    assert_eq!(received[2].tags(), first);
    assert_eq!(backend.accepted_tags(), (0..20).collect::<Vec<_>>());
    let stats = f.stats();
    assert_eq!((stats.requests_failed, stats.dropped, stats.buffered_bytes), (2, 0, 0));
}

#[test]
fn backend_down_then_up() {
    let addr = closed_port();
    let f = start(&settings(format!("http://{addr}/ingest")));
    let mut items: Vec<Item> = (0..5).map(|t| msg(1, t)).collect();
    f.push(&mut items);
    wait_until("two failures", || f.stats().requests_failed >= 2);
    let mut items: Vec<Item> = (5..10).map(|t| msg(2, t)).collect();
    f.push(&mut items);
    assert!(f.stats().buffered_bytes > 0);
    let backend = Backend::start_at(addr, |_| 200);
    wait_until("10 delivered", || f.stats().delivered == 10);
    assert_eq!(backend.accepted_tags(), (0..10).collect::<Vec<_>>());
    let stats = f.stats();
    assert_eq!((stats.dropped, stats.buffered_bytes), (0, 0));
    assert!(stats.requests_ok >= 1);
}

#[test]
fn overflow_drops_the_oldest_waiting_and_counts() {
    let up = Arc::new(AtomicBool::new(false));
    let u = Arc::clone(&up);
    let backend = Backend::start(move |_| if u.load(Ordering::SeqCst) { 200 } else { 503 });
    let mut s = settings(backend.url());
    s.buffer = 500;
    let f = start(&s);
    let mut items = vec![sized(1, 0, 100)];
    f.push(&mut items);
    // Item 0 is in flight now, retried until accepted.
    wait_until("a failure", || f.stats().requests_failed >= 1);
    let mut items: Vec<Item> = (1..=10).map(|t| sized(1, t, 100)).collect();
    f.push(&mut items);
    let stats = f.stats();
    // 100 in flight + 400 waiting: 1..=6 dropped, 7..=10 kept.
    assert_eq!((stats.dropped, stats.buffered_bytes), (6, 500));
    let mut items = vec![sized(1, 11, 100)];
    f.push(&mut items);
    assert_eq!((f.stats().dropped, f.stats().buffered_bytes), (7, 500));
    up.store(true, Ordering::SeqCst);
    wait_until("5 delivered", || f.stats().delivered == 5);
    assert_eq!(backend.accepted_tags(), [0, 8, 9, 10, 11]);
    let stats = f.stats();
    assert_eq!((stats.dropped, stats.buffered_bytes), (7, 0));
}

#[test]
fn too_large_batches_are_split_in_halves() {
    // 413 for more than two messages, or for the one "huge" message.
    let backend = Backend::start(|body| {
        let messages = body["messages"].as_array().unwrap();
        if messages.len() > 2 || messages.iter().any(|m| m["data"] == "huge") {
            413
        } else {
            200
        }
    });
    let f = start(&settings(backend.url()));
    let mut items: Vec<Item> = (0..8).map(|t| msg(1, t)).collect();
    if let Item::Message { data, .. } = &mut items[3] {
        *data = b"huge".to_vec().into();
    }
    f.push(&mut items);
    wait_until("all settled", || {
        let s = f.stats();
        s.delivered + s.dropped == 8
    });
    let sizes: Vec<usize> = backend.received().iter().map(|r| r.tags().len()).collect();
    assert_eq!(sizes, [8, 4, 2, 2, 1, 1, 4, 2, 2]);
    assert_eq!(backend.accepted_tags(), [0, 1, 2, 4, 5, 6, 7]);
    let stats = f.stats();
    assert_eq!((stats.delivered, stats.dropped, stats.buffered_bytes), (7, 1, 0));
    assert_eq!((stats.requests_ok, stats.requests_failed), (4, 5));
}

#[test]
fn stop_is_bounded_when_the_backend_is_down() {
    let f = start(&settings(format!("http://{}/ingest", closed_port())));
    let mut items: Vec<Item> = (0..3).map(|t| msg(1, t)).collect();
    f.push(&mut items);
    wait_until("a failure", || f.stats().requests_failed >= 1);
    let t = Instant::now();
    f.stop(Duration::from_millis(300));
    let took = t.elapsed();
    assert!(took < Duration::from_millis(1500), "{took:?}");
    // (A connection attempt may still be under way at the deadline; the
    // thread then ends right after it.)
    wait_until("3 dropped", || f.stats().dropped == 3);
    let stats = f.stats();
    assert_eq!((stats.delivered, stats.buffered_bytes), (0, 0));
    // After stop: dropped, counted, capacity kept; a second stop is a no-op.
    let mut items = Vec::with_capacity(8);
    items.push(msg(1, 3));
    f.push(&mut items);
    assert!(items.is_empty() && items.capacity() >= 8);
    wait_until("4 dropped", || f.stats().dropped == 4);
    let t = Instant::now();
    f.stop(Duration::from_secs(10));
    assert!(t.elapsed() < Duration::from_millis(500));
}

#[test]
fn stop_is_bounded_when_the_backend_hangs() {
    // Accepts and reads, never answers.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let a = Arc::clone(&accepted);
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            a.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    let mut s = settings(format!("http://{addr}/ingest"));
    s.timeout = Duration::from_secs(30);
    let f = start(&s);
    let mut items = vec![msg(1, 0)];
    f.push(&mut items);
    wait_until("a connection", || accepted.load(Ordering::SeqCst) >= 1);
    let t = Instant::now();
    f.stop(Duration::from_millis(200));
    let took = t.elapsed();
    assert!(took < Duration::from_millis(1500), "{took:?}");
    // Drop after stop: nothing more to wait for.
    let t = Instant::now();
    drop(f);
    assert!(t.elapsed() < Duration::from_millis(500));
}

#[test]
fn stop_delivers_what_is_buffered() {
    let backend = Backend::start(|_| 200);
    let f = start(&settings(backend.url()));
    for tag in 0..50 {
        f.push(&mut vec![msg(1, tag)]);
    }
    f.stop(Duration::from_secs(10));
    let stats = f.stats();
    assert_eq!((stats.delivered, stats.dropped), (50, 0));
    assert_eq!(backend.accepted_tags(), (0..50).collect::<Vec<_>>());
}

#[test]
fn drop_ends_the_thread_promptly() {
    let f = start(&settings(format!("http://{}/ingest", closed_port())));
    f.push(&mut vec![msg(1, 0)]);
    wait_until("a failure", || f.stats().requests_failed >= 1);
    let t = Instant::now();
    drop(f);
    assert!(t.elapsed() < Duration::from_millis(1500));
}

#[test]
fn start_refuses_bad_settings() {
    for url in ["", "not a url", "ftp://host/x", "/relative", "http://"] {
        assert!(
            Forwarder::start(&settings(url.into()), Arc::from("n")).is_err(),
            "{url:?}"
        );
    }
    for (k, v) in [("Bad Name", "v"), ("", "v"), ("X-Ok", "line\nbreak")] {
        let mut s = settings("http://127.0.0.1:9/x".into());
        s.headers = vec![(k.into(), v.into())];
        assert!(Forwarder::start(&s, Arc::from("n")).is_err(), "{k:?}: {v:?}");
    }
    let s = settings("https://example.invalid/ingest".into());
    let f = Forwarder::start(&s, Arc::from("n")).expect("https accepted");
    f.stop(Duration::ZERO);
}
