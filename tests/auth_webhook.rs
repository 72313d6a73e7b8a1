//! The auth webhook (SPEC §13) against a real HTTP backend
//! (`common::http`): what wsbeat tells it, how its answers decide the
//! upgrade, its failures and timeouts, the queue, and that the event loop
//! never waits on it.

mod common;

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::http::{HttpServer, Recorded, Reply};
use common::*;
use serde_json::json;
use wsbeat::config::{Auth, WebhookSettings};
use wsbeat::protocol::frame::OpCode;

const CLOSE_TIMEOUT: Duration = Duration::from_millis(300);

fn settings(url: String, timeout: Duration) -> WebhookSettings {
    WebhookSettings {
        url,
        timeout,
        concurrency: 16,
        queue: 1024,
    }
}

fn cfg(url: String) -> wsbeat::Config {
    cfg_with(settings(url, Duration::from_secs(2)))
}

fn cfg_with(s: WebhookSettings) -> wsbeat::Config {
    wsbeat::Config {
        auth: Auth::Webhook(s),
        close_timeout: CLOSE_TIMEOUT,
        heartbeat_timeout: Duration::from_secs(30),
        ..Default::default()
    }
}

/// A query parameter of the upgrade the backend was told about.
fn param(req: &Recorded, key: &str) -> Option<String> {
    let v = req.json();
    let query = v["query"].as_str()?.to_string();
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_string)
}

/// The backend most tests use: accepts as `?user=` (default `dev-1`).
fn accept_as_user(req: &Recorded) -> Reply {
    let id = param(req, "user").unwrap_or_else(|| "dev-1".into());
    Reply::json(200, json!({ "id": id }))
}

/// Holds the backend's answers until released (or dropped, so that the
/// backend's threads can end).
#[derive(Clone, Default)]
struct Hold(Arc<(Mutex<bool>, Condvar)>);

impl Hold {
    /// Blocks the calling backend thread until released (at most DEADLINE).
    fn wait(&self) {
        let (m, cv) = &*self.0;
        let released = m.lock().unwrap();
        let _ = cv.wait_timeout_while(released, DEADLINE, |r| !*r).unwrap();
    }

    fn release(&self) {
        let (m, cv) = &*self.0;
        *m.lock().unwrap() = true;
        cv.notify_all();
    }
}

/// Releases on drop: declared after the backend, it lets a failing test's
/// backend threads end before the backend is joined.
struct ReleaseOnDrop(Hold);

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// A backend that accepts every upgrade as its `user` once released; the
/// hold, and a guard that releases it when the test ends (even failing).
fn held_backend() -> (HttpServer, Hold, ReleaseOnDrop) {
    let hold = Hold::default();
    let held = hold.clone();
    let backend = HttpServer::start(move |req| {
        held.wait();
        accept_as_user(req)
    });
    let release = ReleaseOnDrop(hold.clone());
    (backend, hold, release)
}

/// Sends an upgrade request (with `extra` header lines) and returns the raw
/// connection, not reading anything.
fn send_upgrade(addr: SocketAddr, target: &str, extra: &str) -> Raw {
    let mut r = Raw::connect(addr);
    r.send(upgrade_request(target, extra).as_bytes());
    r
}

/// Expects `101` and at once a close frame: its code and reason.
fn read_refusal(r: &mut Raw) -> (u16, String) {
    let head = r.read_http_head();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let f = r.read_frame().expect("a close frame");
    assert_eq!(f.opcode, OpCode::Close, "{f:?}");
    (
        f.close_code().unwrap(),
        String::from_utf8(f.payload[2..].to_vec()).unwrap(),
    )
}

#[test]
fn the_backend_is_told_peer_path_query_and_headers() {
    let backend = HttpServer::start(accept_as_user);
    let s = spawn(cfg(backend.url("/auth/ws?key=k1")));
    let mut r = send_upgrade(
        s.addr,
        "/chat/room?user=u-1&x=a%20b&x=2",
        "Origin: https://app.example\r\nUser-Agent: test-agent/1.0\r\nCookie: session=abc; theme=dark\r\nAuthorization: Bearer t0k3n\r\nX-Other: no\r\n",
    );
    let peer = r.s.local_addr().unwrap();
    assert!(r.read_http_head().starts_with("HTTP/1.1 101 "));
    let reqs = backend.wait_for(1, DEADLINE);
    let req = &reqs[0];
    assert_eq!((req.method.as_str(), req.target.as_str()), ("POST", "/auth/ws?key=k1"));
    assert!(
        req.header("content-type").unwrap().starts_with("application/json"),
        "{:?}",
        req.headers
    );
    let body = req.json();
    assert_eq!(body["peer"], peer.to_string(), "{body}");
    assert_eq!(body["path"], "/chat/room", "{body}");
    // Raw, as in the request line.
    assert_eq!(body["query"], "user=u-1&x=a%20b&x=2", "{body}");
    assert_eq!(
        body["headers"],
        json!({
            "origin": "https://app.example",
            "user-agent": "test-agent/1.0",
            "cookie": "session=abc; theme=dark",
            "authorization": "Bearer t0k3n",
        }),
        "{body}"
    );
    wait_listed(s.admin, "u-1");

    // Without those headers, and without a query: nulls, and "".
    let mut r2 = send_upgrade(s.addr, "/", "");
    let peer2 = r2.s.local_addr().unwrap();
    assert!(r2.read_http_head().starts_with("HTTP/1.1 101 "));
    let body = backend.wait_for(2, DEADLINE)[1].json();
    assert_eq!(body["peer"], peer2.to_string(), "{body}");
    assert_eq!(body["path"], "/", "{body}");
    assert_eq!(body["query"], "", "{body}");
    assert_eq!(
        body["headers"],
        json!({"origin": null, "user-agent": null, "cookie": null, "authorization": null}),
        "{body}"
    );
    wait_listed(s.admin, "dev-1");
}

#[test]
fn an_accepted_client_gets_the_backends_id_and_its_pushes() {
    let backend = HttpServer::start(accept_as_user);
    let s = spawn(wsbeat::Config {
        echo: true,
        ..cfg(backend.url("/auth"))
    });
    let mut ws = connect(s.addr, "user=dev-1");
    wait_listed(s.admin, "dev-1");
    push_text(s.admin, "dev-1", "pushed");
    assert_eq!(read_text(&mut ws), "pushed");
    ws.send(tungstenite::Message::text("heartbeat:dev-1")).unwrap();
    ws.send(tungstenite::Message::text("echo")).unwrap();
    assert_eq!(read_text(&mut ws), "echo");

    // Frames sent right behind the request, before the 101, are kept and
    // served once the backend has answered.
    let mut r = Raw::connect(s.addr);
    let mut bytes = upgrade_request("/?user=dev-3", "").into_bytes();
    wsbeat::protocol::frame::encode_frame_masked(&mut bytes, true, OpCode::Text, b"early", [9, 8, 7, 6]);
    r.send(&bytes);
    assert!(r.read_http_head().starts_with("HTTP/1.1 101 "));
    let f = r.read_non_heartbeat().unwrap();
    assert_eq!((f.opcode, f.payload.as_slice()), (OpCode::Text, &b"early"[..]));
    wait_listed(s.admin, "dev-3");

    // The backend names the id: another ?client_id= is a mismatch.
    let mut r = send_upgrade(s.addr, "/?user=dev-1&client_id=dev-2", "");
    assert_eq!(read_refusal(&mut r), (1008, "client id mismatch".to_string()));
    assert_eq!(client_info(s.admin, "dev-2").status, 404);
    // The same one is fine (and, --duplicate-id replace, takes dev-1 over).
    let mut same = connect(s.addr, "user=dev-1&client_id=dev-1");
    assert!(matches!(
        ws.read(),
        Ok(tungstenite::Message::Close(Some(f))) if u16::from(f.code) == 4001
    ));
    push_text(s.admin, "dev-1", "to the newer");
    assert_eq!(read_text(&mut same), "to the newer");
    // A heartbeat naming another id than the backend's is a mismatch too.
    same.send(tungstenite::Message::text("heartbeat:intruder")).unwrap();
    match same.read() {
        Ok(tungstenite::Message::Close(Some(f))) => {
            assert_eq!((u16::from(f.code), f.reason.as_str()), (1008, "client id mismatch"))
        }
        other => panic!("{other:?}"),
    }
    wait_until("dev-1 offline", || client_info(s.admin, "dev-1").status == 404);
    // Both: the query's and the heartbeat's.
    assert_auth_failures(s.admin, &[("id_mismatch", 2)]);
}

/// The backend's answer by the upgrade's `?case=`.
fn answer_by_case(req: &Recorded) -> Reply {
    match param(req, "case").as_deref() {
        Some("401") => Reply::json(401, json!({"error": "who are you"})),
        Some("403") => Reply::status(403),
        Some("500") => Reply::text(500, "oops"),
        Some("503") => Reply::status(503),
        Some("302") => Reply::status(302).header("Location", "/elsewhere"),
        Some("201") => Reply::json(201, json!({"id": "dev-1"})),
        Some("garbage") => Reply::text(200, "this is not json"),
        Some("bad-id") => Reply::json(200, json!({"id": "a b"})),
        Some("empty-id") => Reply::json(200, json!({"id": ""})),
        Some("number-id") => Reply::json(200, json!({"id": 42})),
        Some("no-id") => Reply::json(200, json!({"user": "dev-1"})),
        Some("hang-up") => Reply::hang_up(),
        _ => Reply::json(200, json!({"id": "dev-1"})),
    }
}

#[test]
fn the_backends_refusals_and_failures_close_with_their_codes() {
    let backend = HttpServer::start(answer_by_case);
    let s = spawn(wsbeat::Config {
        echo: true,
        ..cfg(backend.url("/auth"))
    });
    let mut events = Events::open(s.admin);
    let unauthorized = (4401, "unauthorized: refused by the auth webhook");
    let forbidden = (4403, "forbidden");
    let later = (1011, "try again later");
    let cases = [
        ("401", unauthorized),
        ("403", forbidden),
        ("500", later),
        ("503", later),
        ("302", later),
        ("201", later),
        ("garbage", later),
        ("bad-id", later),
        ("empty-id", later),
        ("number-id", later),
        ("no-id", later),
        ("hang-up", later),
    ];
    let mut open = Vec::new();
    for (case, want) in cases {
        // A message rides along: it must not be served (echoed).
        let mut r = Raw::connect(s.addr);
        let mut bytes = upgrade_request(&format!("/?case={case}"), "").into_bytes();
        wsbeat::protocol::frame::encode_frame_masked(&mut bytes, true, OpCode::Text, b"echo me", [1, 2, 3, 4]);
        let t = Instant::now();
        r.send(&bytes);
        let (code, reason) = read_refusal(&mut r);
        assert_eq!((code, reason.as_str()), want, "case {case}");
        // Well within the webhook timeout: these are answers, not timeouts.
        assert!(t.elapsed() < Duration::from_secs(1), "case {case}: {:?}", t.elapsed());
        open.push((case, r, Instant::now()));
    }
    for (case, mut r, at) in open {
        // Nothing more, and dropped within the close timeout unanswered.
        assert_eq!(r.read_frame(), None, "case {case}");
        assert!(
            at.elapsed() <= CLOSE_TIMEOUT + Duration::from_millis(700),
            "case {case}"
        );
    }
    // The redirect was not followed.
    let reqs = backend.requests();
    assert!(reqs.iter().all(|r| r.target == "/auth"), "{reqs:?}");
    assert_eq!(reqs.len(), cases.len());
    assert_eq!(s.stats.clients_online(), 0);
    assert_eq!(client_info(s.admin, "dev-1").status, 404);
    assert_eq!(metric(s.admin, "wsbeat_messages_sent_total"), 0);
    wait_until("connections dropped", || s.stats.connections_open() == 0);
    assert_auth_failures(
        s.admin,
        &[
            ("webhook_unauthorized", 1),
            ("webhook_forbidden", 1),
            ("webhook_error", cases.len() as u64 - 2),
        ],
    );
    // None of them was ever online: the first presence event is the first
    // client let in.
    let _ws = connect(s.addr, "case=ok");
    events.expect("online", "dev-1", None);
}

#[test]
fn a_backend_that_is_down_closes_1011_at_once() {
    let mut backend = HttpServer::start(accept_as_user);
    let s = spawn(cfg(backend.url("/auth")));
    backend.stop();
    let t = Instant::now();
    let mut r = send_upgrade(s.addr, "/", "");
    assert_eq!(read_refusal(&mut r), (1011, "try again later".to_string()));
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    // Back up: the next upgrade is let in.
    backend.restart();
    let mut ws = connect(s.addr, "user=back");
    wait_listed(s.admin, "back");
    push_text(s.admin, "back", "welcome back");
    assert_eq!(read_text(&mut ws), "welcome back");
    assert_auth_failures(s.admin, &[("webhook_error", 1)]);
}

#[test]
fn a_backend_slower_than_the_timeout_closes_1011_on_time() {
    let backend = HttpServer::start(|req| accept_as_user(req).after(Duration::from_secs(2)));
    let timeout = Duration::from_millis(300);
    let s = spawn(cfg_with(settings(backend.url("/auth"), timeout)));
    let t = Instant::now();
    let mut r = send_upgrade(s.addr, "/", "");
    assert_eq!(read_refusal(&mut r), (1011, "try again later".to_string()));
    let took = t.elapsed();
    assert!(
        took >= timeout - Duration::from_millis(20) && took <= timeout + Duration::from_secs(1),
        "{took:?}"
    );
    assert_eq!(backend.requests().len(), 1);
    assert_eq!(s.stats.clients_online(), 0);
    assert_auth_failures(s.admin, &[("webhook_error", 1)]);
}

#[test]
fn a_timed_out_call_frees_its_thread() {
    // One thread: if the slow call held it past the timeout, the next
    // upgrade would wait behind it and fail too.
    let backend = HttpServer::start(|req| match param(req, "user").as_deref() {
        Some("slow") => accept_as_user(req).after(Duration::from_secs(3)),
        _ => accept_as_user(req),
    });
    let timeout = Duration::from_millis(300);
    let s = spawn(cfg_with(WebhookSettings {
        concurrency: 1,
        ..settings(backend.url("/auth"), timeout)
    }));
    let mut r = send_upgrade(s.addr, "/?user=slow", "");
    assert_eq!(read_refusal(&mut r), (1011, "try again later".to_string()));
    let t = Instant::now();
    let mut ws = connect(s.addr, "user=fast");
    assert!(t.elapsed() < timeout, "{:?}", t.elapsed());
    wait_listed(s.admin, "fast");
    push_text(s.admin, "fast", "ok");
    assert_eq!(read_text(&mut ws), "ok");
    assert_auth_failures(s.admin, &[("webhook_error", 1)]);
}

/// A backend on a raw socket that answers `?user=fast` at once and sends
/// the others a `200` whose head (`trickle_head`) or body comes one byte
/// every 50 ms, for up to 5 s.
struct Trickler {
    addr: SocketAddr,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Trickler {
    fn start(trickle_head: bool) -> Trickler {
        use std::io::{Read, Write};
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::spawn(move || {
            while !stopping.load(Ordering::Acquire) {
                let Ok((mut c, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let stopping = stopping.clone();
                std::thread::spawn(move || {
                    c.set_nonblocking(false).unwrap();
                    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    // One request: head and Content-Length body.
                    let mut req = Vec::new();
                    let mut buf = [0u8; 4096];
                    let body_start = loop {
                        match c.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                        if let Some(i) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                    };
                    let head = String::from_utf8_lossy(&req[..body_start]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    while req.len() < body_start + len {
                        match c.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let fast = String::from_utf8_lossy(&req[body_start..]).contains("user=fast");
                    let body = if fast { r#"{"id":"fast"}"# } else { r#"{"id":"slow"}"# };
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    if fast {
                        let _ = c.write_all(answer.as_bytes());
                        return;
                    }
                    let split = if trickle_head { 0 } else { answer.len() - body.len() };
                    if c.write_all(&answer.as_bytes()[..split]).is_err() {
                        return;
                    }
                    let t = Instant::now();
                    for b in answer.as_bytes()[split..].iter() {
                        if stopping.load(Ordering::Acquire) || t.elapsed() > Duration::from_secs(5) {
                            return;
                        }
                        if c.write_all(&[*b]).is_err() {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                });
            }
        });
        Trickler { addr, stop }
    }
}

impl Drop for Trickler {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
    }
}

#[test]
fn an_answer_that_trickles_in_is_cut_at_the_timeout() {
    for trickle_head in [false, true] {
        let backend = Trickler::start(trickle_head);
        let timeout = Duration::from_millis(400);
        let s = spawn(cfg_with(WebhookSettings {
            concurrency: 1,
            ..settings(format!("http://{}/auth", backend.addr), timeout)
        }));
        let t = Instant::now();
        let mut r = send_upgrade(s.addr, "/?user=slow", "");
        assert_eq!(
            read_refusal(&mut r),
            (1011, "try again later".to_string()),
            "trickle_head {trickle_head}"
        );
        let took = t.elapsed();
        assert!(
            took >= timeout - Duration::from_millis(20) && took <= timeout + Duration::from_secs(1),
            "trickle_head {trickle_head}: {took:?}"
        );
        // The one thread is free again at once: the whole call had one
        // deadline, not one per read.
        let t = Instant::now();
        let _ws = connect(s.addr, "user=fast");
        assert!(t.elapsed() < timeout, "trickle_head {trickle_head}: {:?}", t.elapsed());
        wait_listed(s.admin, "fast");
        assert_auth_failures(s.admin, &[("webhook_error", 1)]);
    }
}

#[test]
fn calls_run_in_parallel_up_to_the_concurrency() {
    let (backend, hold, _release) = held_backend();
    let s = spawn(cfg_with(WebhookSettings {
        concurrency: 3,
        queue: 1,
        ..settings(backend.url("/auth"), Duration::from_secs(5))
    }));
    let mut conns: Vec<Raw> = (0..3)
        .map(|i| send_upgrade(s.addr, &format!("/?user=p{i}"), ""))
        .collect();
    // All three reach the backend while none has been answered.
    backend.wait_for(3, DEADLINE);
    hold.release();
    for c in &mut conns {
        assert!(c.read_http_head().starts_with("HTTP/1.1 101 "));
    }
    wait_until("all online", || s.stats.clients_online() == 3);
}

#[test]
fn a_backend_restart_does_not_fail_the_next_upgrade() {
    // Kept-alive connections to the backend die with it; the next call
    // must not be lost on one of them.
    let mut backend = HttpServer::start(accept_as_user);
    let s = spawn(cfg(backend.url("/auth")));
    let _a = connect(s.addr, "user=before");
    wait_listed(s.admin, "before");
    backend.restart();
    let mut ws = connect(s.addr, "user=after");
    wait_listed(s.admin, "after");
    push_text(s.admin, "after", "ok");
    assert_eq!(read_text(&mut ws), "ok");
    assert_auth_failures(s.admin, &[]);
}

#[test]
fn the_loop_never_waits_on_the_backend() {
    let hold = Hold::default();
    let held = hold.clone();
    let backend = HttpServer::start(move |req| {
        if param(req, "user").as_deref() == Some("slow") {
            held.wait();
        }
        accept_as_user(req)
    });
    let _release = ReleaseOnDrop(hold.clone());
    let s = spawn(wsbeat::Config {
        echo: true,
        ..cfg(backend.url("/auth"))
    });
    let mut a = Raw::open(s.addr, "/?user=a");
    wait_listed(s.admin, "a");

    // An upgrade waits on the backend...
    let mut slow = send_upgrade(s.addr, "/?user=slow", "");
    backend.wait_for(2, DEADLINE);
    // ...while the open client is served promptly, again and again.
    for i in 0..5 {
        let t = Instant::now();
        a.send_frame(true, OpCode::Ping, format!("p{i}").as_bytes());
        let f = a.read_non_heartbeat().unwrap();
        assert_eq!((f.opcode, f.payload), (OpCode::Pong, format!("p{i}").into_bytes()));
        a.send_frame(true, OpCode::Text, b"echo");
        let f = a.read_non_heartbeat().unwrap();
        assert_eq!(f.payload, b"echo");
        assert!(t.elapsed() < Duration::from_millis(300), "{:?}", t.elapsed());
    }
    // Other upgrades go through, and pushes and the admin API answer.
    let mut b = connect(s.addr, "user=b");
    wait_listed(s.admin, "b");
    push_text(s.admin, "b", "hi b");
    assert_eq!(read_text(&mut b), "hi b");
    // The slow one has had no answer yet.
    slow.s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut byte = [0u8; 1];
    match slow.s.peek(&mut byte) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("the held upgrade was answered: {other:?}"),
    }
    // Once the backend answers, it is let in.
    hold.release();
    slow.s.set_read_timeout(Some(DEADLINE)).unwrap();
    assert!(slow.read_http_head().starts_with("HTTP/1.1 101 "));
    wait_listed(s.admin, "slow");
    assert_auth_failures(s.admin, &[]);
}

/// Waits until one of `conns` has bytes to read; its index.
fn first_answered(conns: &mut [Raw], within: Duration) -> Option<usize> {
    let t = Instant::now();
    for c in conns.iter() {
        c.s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
    }
    let mut byte = [0u8; 1];
    while t.elapsed() < within {
        for (i, c) in conns.iter().enumerate() {
            match c.s.peek(&mut byte) {
                Ok(_) => return Some(i),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("{e}"),
            }
        }
    }
    None
}

#[test]
fn a_full_queue_answers_503_at_once() {
    let (backend, hold, _release) = held_backend();
    let s = spawn(cfg_with(WebhookSettings {
        concurrency: 1,
        queue: 1,
        ..settings(backend.url("/auth"), Duration::from_secs(5))
    }));
    // The one call in flight...
    let mut first = send_upgrade(s.addr, "/?user=first", "");
    backend.wait_for(1, DEADLINE);
    // ...one waiting in the queue, and one too many: which of the two the
    // loop sees first is the kernel's business, so both are sent and
    // exactly one must get its 503 at once.
    let t = Instant::now();
    let mut two = vec![
        send_upgrade(s.addr, "/?user=second", ""),
        send_upgrade(s.addr, "/?user=third", ""),
    ];
    let i = first_answered(&mut two, Duration::from_secs(1)).expect("a 503 within 1 s");
    assert!(t.elapsed() < Duration::from_secs(1));
    let mut busy = two.remove(i);
    busy.s.set_read_timeout(Some(DEADLINE)).unwrap();
    let resp = read_response(&mut busy);
    assert_eq!(resp.status, 503, "{}", resp.head);
    busy.wait_closed();
    // The other one is still waiting.
    let mut queued = two.pop().unwrap();
    assert_eq!(
        first_answered(std::slice::from_mut(&mut queued), Duration::from_millis(200)),
        None
    );
    assert_eq!(backend.requests().len(), 1);
    // The backend answers: the first and the queued one are let in.
    hold.release();
    for r in [&mut first, &mut queued] {
        r.s.set_read_timeout(Some(DEADLINE)).unwrap();
        assert!(r.read_http_head().starts_with("HTTP/1.1 101 "));
    }
    wait_listed(s.admin, "first");
    assert_eq!(backend.wait_for(2, DEADLINE).len(), 2);
    assert_eq!(s.stats.clients_online(), 2);
    assert_eq!(metric(s.admin, "wsbeat_handshake_failures_total{status=\"503\"}"), 1);
    assert_auth_failures(s.admin, &[("webhook_busy", 1)]);
}

#[test]
fn the_handshake_timeout_covers_authorizing() {
    let backend = HttpServer::start(|req| accept_as_user(req).after(Duration::from_secs(10)));
    let handshake_timeout = Duration::from_millis(500);
    let s = spawn(wsbeat::Config {
        handshake_timeout,
        ..cfg_with(settings(backend.url("/auth"), Duration::from_secs(3)))
    });
    let t = Instant::now();
    let mut r = send_upgrade(s.addr, "/", "");
    // Dropped, with no 101 and nothing else.
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match std::io::Read::read(&mut r.s, &mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("not dropped within {DEADLINE:?}")
            }
            Err(_) => break,
        }
    }
    let took = t.elapsed();
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    assert!(
        took >= handshake_timeout - Duration::from_millis(50) && took <= handshake_timeout + Duration::from_millis(700),
        "{took:?}"
    );
    assert_eq!(backend.requests().len(), 1);
    assert_eq!(
        metric(
            s.admin,
            "wsbeat_connections_rejected_total{reason=\"handshake_timeout\"}"
        ),
        1
    );
    wait_until("connection dropped", || s.stats.connections_open() == 0);
}

#[test]
fn a_client_that_leaves_while_authorizing_is_forgotten() {
    let (backend, hold, _release) = held_backend();
    let s = spawn(cfg(backend.url("/auth")));
    let r = send_upgrade(s.addr, "/?user=gone", "");
    backend.wait_for(1, DEADLINE);
    drop(r);
    wait_until("connection dropped", || s.stats.connections_open() == 0);
    // The late answer finds no one, and does not let anyone in.
    hold.release();
    let mut ws = connect(s.addr, "user=next");
    wait_listed(s.admin, "next");
    push_text(s.admin, "next", "ok");
    assert_eq!(read_text(&mut ws), "ok");
    assert_eq!(client_info(s.admin, "gone").status, 404);
    assert_eq!(s.stats.clients_online(), 1);
}

#[test]
fn too_much_data_before_the_answer_is_refused() {
    let (backend, hold, _release) = held_backend();
    let s = spawn(cfg(backend.url("/auth")));
    let mut r = send_upgrade(s.addr, "/?user=eager", "");
    backend.wait_for(1, DEADLINE);
    // A client must wait for the 101; 9 KiB of frames is refused.
    let mut frames = Vec::new();
    wsbeat::protocol::frame::encode_frame_masked(&mut frames, true, OpCode::Binary, &[0u8; 9 * 1024], [1, 2, 3, 4]);
    r.send(&frames);
    let resp = read_response(&mut r);
    assert_eq!(resp.status, 400, "{}", resp.head);
    hold.release();
    r.wait_closed();
    assert_eq!(client_info(s.admin, "eager").status, 404);
}

#[test]
fn bad_webhook_flags_exit_2_with_one_line_naming_the_flag() {
    for (flags, flag) in [
        (vec!["--auth-webhook", "ftp://127.0.0.1/auth"], "--auth-webhook"),
        (vec!["--auth-webhook", "not a url"], "--auth-webhook"),
        (
            vec!["--auth-webhook", "http://127.0.0.1:9/", "--auth-webhook-timeout", "0s"],
            "--auth-webhook-timeout",
        ),
        (
            vec![
                "--auth-webhook",
                "http://127.0.0.1:9/",
                "--auth-webhook-timeout",
                "soon",
            ],
            "--auth-webhook-timeout",
        ),
        (
            vec![
                "--auth-webhook",
                "http://127.0.0.1:9/",
                "--auth-webhook-concurrency",
                "0",
            ],
            "--auth-webhook-concurrency",
        ),
        (
            vec!["--auth-webhook", "http://127.0.0.1:9/", "--auth-webhook-queue", "0"],
            "--auth-webhook-queue",
        ),
    ] {
        let mut args = vec!["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"];
        args.extend(&flags);
        let (code, err) = run_to_exit(&args);
        assert_eq!(code, Some(2), "{flags:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{flags:?}: {err}");
        assert!(err.contains(flag), "{flags:?}: {err}");
    }
}

#[test]
fn the_binary_asks_the_webhook() {
    let backend = HttpServer::start(|req| match param(req, "user").as_deref() {
        Some("slow") => accept_as_user(req).after(Duration::from_secs(3)),
        _ => accept_as_user(req),
    });
    let mut cmd = wsbeat_on_free_ports();
    cmd.args(["--auth-webhook-timeout", "300ms", "--auth-webhook"])
        .arg(backend.url("/hook"));
    let p = start_binary(cmd);
    let mut ws = connect(p.addr, "user=bin-1");
    wait_listed(p.admin, "bin-1");
    push_text(p.admin, "bin-1", "hello");
    assert_eq!(read_text(&mut ws), "hello");
    assert_eq!(backend.requests()[0].target, "/hook");
    // --auth-webhook-timeout is taken.
    let t = Instant::now();
    let mut r = send_upgrade(p.addr, "/?user=slow", "");
    assert_eq!(read_refusal(&mut r), (1011, "try again later".to_string()));
    assert!(t.elapsed() < Duration::from_millis(1300), "{:?}", t.elapsed());
    assert_auth_failures(p.admin, &[("webhook_error", 1)]);
}

also_with_two_loops!(
    an_accepted_client_gets_the_backends_id_and_its_pushes,
    the_backends_refusals_and_failures_close_with_their_codes,
    the_loop_never_waits_on_the_backend,
    a_full_queue_answers_503_at_once,
);
