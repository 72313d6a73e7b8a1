//! Shared helpers: an in-process server on a free port and a raw client.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wsbeat::protocol::frame::{self, OpCode};

pub mod cluster;
pub mod http;
pub mod jwt;
pub mod redis;
pub mod script;
pub mod tls;

/// Generous: tests wait for events, never for wall-clock speed.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Starts a server with `cfg` (listening on 127.0.0.1, port 0) on its own
/// thread and returns its address.
pub fn start(cfg: wsbeat::Config) -> SocketAddr {
    start_with_stats(cfg).0
}

/// Like [`start`], also returning the server's live numbers.
pub fn start_with_stats(cfg: wsbeat::Config) -> (SocketAddr, Arc<wsbeat::Stats>) {
    let s = spawn(cfg);
    (s.addr, s.stats)
}

/// A server running on its own thread.
pub struct TestServer {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub stats: Arc<wsbeat::Stats>,
    pub handle: wsbeat::Handle,
    pub thread: std::thread::JoinHandle<std::io::Result<()>>,
    /// Its node id.
    pub node: String,
}

thread_local! {
    /// Event loops for the servers this test thread starts.
    static THREADS: std::cell::Cell<usize> = const { std::cell::Cell::new(1) };
}

/// Event loops the current test runs its servers with: 1, or 2 under
/// [`with_threads`].
pub fn threads() -> usize {
    THREADS.with(std::cell::Cell::get)
}

/// Runs `test` with servers of `n` event loops.
pub fn with_threads(n: usize, test: fn()) {
    THREADS.with(|t| t.set(n));
    test();
}

/// Runs each named test a second time with two event loops, as
/// `NAME::threads_2` (the test itself runs with one): every test of the
/// endpoint, heartbeats, presence, admin API and shutdown holds whatever
/// `--threads` is.
#[macro_export]
macro_rules! also_with_two_loops {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn threads_2() {
                    super::common::with_threads(2, super::$name);
                }
            }
        )*
    };
}

/// Test settings: both listeners on free loopback ports, no signal handling
/// (tests share one process), the test's number of event loops.
pub fn test_config(mut cfg: wsbeat::Config) -> wsbeat::Config {
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    cfg.handle_signals = false;
    cfg.threads = threads();
    cfg
}

pub fn spawn(cfg: wsbeat::Config) -> TestServer {
    spawn_server(wsbeat::Server::bind(test_config(cfg)).expect("bind"))
}

pub fn spawn_server(server: wsbeat::Server) -> TestServer {
    // RUST_LOG=debug shows the server's log in a failing test's output.
    let _ = env_logger::builder().is_test(true).try_init();
    let addr = server.local_addr();
    let admin = server.admin_addr().expect("admin listener");
    let stats = server.stats();
    let handle = server.handle();
    let node = server.node_id().to_string();
    let thread = std::thread::spawn(move || server.run());
    TestServer {
        addr,
        admin,
        stats,
        handle,
        thread,
        node,
    }
}

/// Waits for `cond` to hold, checking every few milliseconds, up to
/// [`DEADLINE`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn echo_config() -> wsbeat::Config {
    wsbeat::Config {
        echo: true,
        ..Default::default()
    }
}

pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

pub fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// A raw TCP client that speaks just enough WebSocket to send hostile bytes.
pub struct Raw {
    pub s: TcpStream,
    buf: Vec<u8>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: OpCode,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == OpCode::Close && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        s.set_nodelay(true).unwrap();
        Raw { s, buf: Vec::new() }
    }

    /// Wraps a connected socket (e.g. one bound to a chosen source address).
    pub fn from_stream(s: TcpStream) -> Raw {
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        s.set_nodelay(true).unwrap();
        Raw { s, buf: Vec::new() }
    }

    /// The next frame if one arrives within the socket's read timeout (set
    /// it short first); `None` if none does. A closed connection panics.
    pub fn read_frame_nowait(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = self.take_frame() {
                return Some(f);
            }
            let mut tmp = [0u8; 4096];
            match self.s.read(&mut tmp) {
                Ok(0) => panic!("connection closed without a frame"),
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => return None,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// Whatever arrives next (at least one byte), as text.
    pub fn read_some(&mut self) -> String {
        if self.buf.is_empty() {
            self.fill();
        }
        String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned()
    }

    /// Connects and completes the upgrade on `path`.
    pub fn open(addr: SocketAddr, path: &str) -> Raw {
        let mut r = Raw::connect(addr);
        r.send(upgrade_request(path, "").as_bytes());
        let head = r.read_http_head();
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        r
    }

    pub fn send(&mut self, b: &[u8]) {
        self.s.write_all(b).expect("write");
    }

    /// Like [`send_frame`](Self::send_frame), but reports a failed write
    /// (the server may already have dropped the connection).
    pub fn try_send_frame(&mut self, fin: bool, op: OpCode, payload: &[u8]) -> bool {
        let mut v = Vec::new();
        frame::encode_frame_masked(&mut v, fin, op, payload, [0x12, 0x34, 0x56, 0x78]);
        self.s.write_all(&v).is_ok()
    }

    pub fn send_frame(&mut self, fin: bool, op: OpCode, payload: &[u8]) {
        let mut v = Vec::new();
        frame::encode_frame_masked(&mut v, fin, op, payload, [0x12, 0x34, 0x56, 0x78]);
        self.send(&v);
    }

    fn fill(&mut self) -> usize {
        let mut tmp = [0u8; 65536];
        match self.s.read(&mut tmp) {
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                n
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                panic!("no data from the server within {DEADLINE:?}")
            }
            Err(_) => 0, // reset counts as closed
        }
    }

    /// Reads an HTTP response head (and returns it with its body if it has
    /// a Content-Length).
    pub fn read_http_head(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..i + 4]).into_owned();
                let body_len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .map(|v| v.trim().parse::<usize>().unwrap())
                    .unwrap_or(0);
                while self.buf.len() < i + 4 + body_len {
                    assert!(self.fill() > 0, "closed inside a response body");
                }
                let all = String::from_utf8_lossy(&self.buf[..i + 4 + body_len]).into_owned();
                self.buf.drain(..i + 4 + body_len);
                return all;
            }
            assert!(
                self.fill() > 0,
                "closed before a response: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    /// Reads one server frame; `None` if the connection closed first.
    pub fn read_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = self.take_frame() {
                return Some(f);
            }
            if self.fill() == 0 {
                return None;
            }
        }
    }

    /// A whole frame from what was read, if there is one.
    fn take_frame(&mut self) -> Option<Frame> {
        let (h, n) = frame::parse_header_any(&self.buf).expect("valid server frame")?;
        assert!(h.mask.is_none(), "server frames are unmasked");
        let end = n + h.len as usize;
        if self.buf.len() < end {
            return None;
        }
        let payload = self.buf[n..end].to_vec();
        self.buf.drain(..end);
        Some(Frame {
            fin: h.fin,
            opcode: h.opcode,
            payload,
        })
    }

    /// Reads frames until one that is not a server heartbeat (ping or text
    /// `heartbeat`).
    pub fn read_non_heartbeat(&mut self) -> Option<Frame> {
        loop {
            let f = self.read_frame()?;
            if f.opcode == OpCode::Ping || (f.opcode == OpCode::Text && f.payload == b"heartbeat") {
                continue;
            }
            return Some(f);
        }
    }

    /// Reads frames until a close frame; returns its code and reason.
    pub fn read_close_with_reason(&mut self) -> (u16, String) {
        loop {
            match self.read_frame() {
                Some(f) if f.opcode == OpCode::Close => {
                    let reason = String::from_utf8(f.payload.get(2..).unwrap_or_default().to_vec()).unwrap();
                    return (f.close_code().unwrap_or(0), reason);
                }
                Some(_) => continue,
                None => panic!("connection closed without a close frame"),
            }
        }
    }

    /// Reads frames until a close frame; returns its code (0 for none).
    pub fn read_close(&mut self) -> u16 {
        loop {
            match self.read_frame() {
                Some(f) if f.opcode == OpCode::Close => return f.close_code().unwrap_or(0),
                Some(_) => continue,
                None => panic!("connection closed without a close frame"),
            }
        }
    }

    /// Waits until the server closes the TCP connection; returns how long it took.
    pub fn wait_closed(&mut self) -> Duration {
        let t = Instant::now();
        let mut tmp = [0u8; 4096];
        loop {
            match self.s.read(&mut tmp) {
                Ok(0) => return t.elapsed(),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                    panic!("server did not close within {DEADLINE:?}")
                }
                Err(_) => return t.elapsed(),
            }
        }
    }

    /// Waits until the server has dropped the connection entirely (not just
    /// shut its write side): probes with a byte every 20 ms, which the server
    /// discards while it still holds the socket and answers with a reset once
    /// it has let go. Returns how long that took.
    pub fn wait_dropped(&mut self) -> Duration {
        let t = Instant::now();
        while t.elapsed() < DEADLINE {
            if self.s.write(b"x").is_err() {
                return t.elapsed();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("server did not drop the connection within {DEADLINE:?}")
    }
}

/// One HTTP response, as read off the wire.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// Reads one response (Content-Length framed) from `r`.
pub fn read_response(r: &mut Raw) -> Response {
    let all = r.read_http_head();
    let (head, body) = all.split_once("\r\n\r\n").unwrap();
    Response {
        status: head[9..12].parse().unwrap(),
        head: head.to_string(),
        body: body.as_bytes().to_vec(),
    }
}

/// Sends one request on a fresh connection and reads the response.
/// `extra` holds header lines, each ending in CRLF.
pub fn http(addr: SocketAddr, method: &str, target: &str, extra: &str, body: &[u8]) -> Response {
    let mut r = Raw::connect(addr);
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: admin\r\n{extra}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    r.send(&req);
    // Bodies are read as bytes: read_http_head goes through a lossy string,
    // so keep tests to UTF-8 bodies in responses.
    read_response(&mut r)
}

/// The `wsbeat` binary running as a child process. Killed when dropped.
pub struct Proc {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    /// Log lines seen before both addresses were known.
    pub startup_log: Vec<String>,
    /// Every line it has logged so far.
    pub log: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `wsbeat` with `RUST_LOG=info` (its start-up lines carry the addresses).
pub fn wsbeat_command() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_wsbeat"));
    c.env("RUST_LOG", "info");
    c
}

/// `wsbeat` on free loopback ports for both listeners (what
/// [`start_binary`] expects).
pub fn wsbeat_on_free_ports() -> std::process::Command {
    let mut c = wsbeat_command();
    c.args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]);
    c
}

/// Spawns `cmd` (a `wsbeat` listening on port 0 for both listeners) and
/// reads its addresses from its log.
pub fn start_binary(mut cmd: std::process::Command) -> Proc {
    use std::io::BufRead;
    use std::process::Stdio;
    // The test's number of event loops, unless the test chose (a flag beats
    // the variable).
    cmd.env("WSBEAT_THREADS", threads().to_string());
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wsbeat");
    // Killed on drop from here on, also when reading its start-up log
    // fails and the test panics.
    let mut p = Proc {
        child,
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        admin: SocketAddr::from(([0, 0, 0, 0], 0)),
        startup_log: Vec::new(),
        log: Arc::default(),
    };
    let stderr = p.child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let log = p.log.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            log.lock().unwrap().push(line.clone());
            let _ = tx.send(line);
        }
    });
    let (mut addr, mut admin) = (None, None);
    while addr.is_none() || admin.is_none() {
        let line = rx.recv_timeout(DEADLINE).expect("server start-up log");
        // ws:// or, with --tls-cert, wss:// (and https:// with --admin-tls).
        let listening = ["listening on ws://", "listening on wss://"];
        if let Some(a) = listening.iter().find_map(|p| line.split(p).nth(1)) {
            addr = Some(a.trim().parse().unwrap());
        }
        let admin_api = ["admin API on http://", "admin API on https://"];
        if let Some(a) = admin_api.iter().find_map(|p| line.split(p).nth(1)) {
            admin = Some(a.trim().parse().unwrap());
        }
        p.startup_log.push(line);
    }
    p.addr = addr.unwrap();
    p.admin = admin.unwrap();
    p
}

/// Reads SSE events (event, data) from a `/events` stream.
pub struct Events {
    raw: Raw,
    buf: String,
}

impl Events {
    pub fn open(admin: SocketAddr) -> Events {
        let mut raw = Raw::connect(admin);
        raw.send(b"GET /events HTTP/1.1\r\nHost: a\r\n\r\n");
        let head = raw.read_http_head();
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
        assert!(head.contains("Content-Type: text/event-stream"), "{head}");
        Events {
            raw,
            buf: String::new(),
        }
    }

    /// The next event, skipping comments.
    pub fn next(&mut self) -> (String, serde_json::Value) {
        use std::io::Read;
        loop {
            if let Some(i) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..i + 2).collect();
                let mut event = None;
                let mut data = None;
                for line in block.lines() {
                    if let Some(e) = line.strip_prefix("event: ") {
                        event = Some(e.to_string());
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(d).unwrap());
                    }
                }
                if let (Some(e), Some(d)) = (event, data) {
                    return (e, d);
                }
                continue;
            }
            let mut tmp = [0u8; 4096];
            let n = self.raw.s.read(&mut tmp).expect("event stream read");
            assert!(n > 0, "event stream closed");
            self.buf.push_str(std::str::from_utf8(&tmp[..n]).unwrap());
        }
    }

    pub fn expect(&mut self, kind: &str, id: &str, reason: Option<&str>) {
        let (e, d) = self.next();
        assert_eq!((e.as_str(), d["id"].as_str()), (kind, Some(id)), "{d}");
        assert_eq!(d["reason"].as_str(), reason, "{d}");
        assert!(d["at_ms"].as_u64().unwrap() > 1_700_000_000_000);
    }
}

/// The value of the `/metrics` line named `name` exactly (labels included).
pub fn metric(admin: SocketAddr, name: &str) -> u64 {
    metric_in(&http(admin, "GET", "/metrics", "", b"").text(), name)
}

/// The value of the line named `name` exactly in a `/metrics` text.
pub fn metric_in(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// `GET /clients/ID`.
pub fn client_info(admin: SocketAddr, id: &str) -> Response {
    http(admin, "GET", &format!("/clients/{id}"), "", b"")
}

/// Waits until the admin API lists `id`, and returns its CLIENT.
pub fn wait_listed(admin: SocketAddr, id: &str) -> serde_json::Value {
    let mut found = None;
    wait_until(&format!("{id} listed"), || {
        let r = client_info(admin, id);
        if r.status == 200 {
            found = Some(r.json());
        }
        found.is_some()
    });
    found.unwrap()
}

/// Pushes text `body` to `id` through the admin API (`202` expected).
pub fn push_text(admin: SocketAddr, id: &str, body: &str) {
    let r = http(
        admin,
        "POST",
        &format!("/clients/{id}/messages"),
        "Content-Type: text/plain\r\n",
        body.as_bytes(),
    );
    assert_eq!(r.status, 202, "{}", r.text());
}

/// Every `wsbeat_auth_failures_total` counter, by reason.
pub fn auth_failures(admin: SocketAddr) -> std::collections::BTreeMap<String, u64> {
    let text = http(admin, "GET", "/metrics", "", b"").text();
    text.lines()
        .filter_map(|l| l.strip_prefix("wsbeat_auth_failures_total{reason=\""))
        .map(|rest| {
            let (label, value) = rest.split_once("\"} ").unwrap();
            (label.to_string(), value.trim().parse::<u64>().unwrap())
        })
        .collect()
}

/// Asserts the `wsbeat_auth_failures_total` counters: those in `want`, every
/// other one 0.
pub fn assert_auth_failures(admin: SocketAddr, want: &[(&str, u64)]) {
    let got = auth_failures(admin);
    for (label, _) in want {
        assert!(got.contains_key(*label), "no counter for {label:?}: {got:?}");
    }
    for (label, value) in &got {
        let expected = want.iter().find(|(l, _)| l == label).map_or(0, |(_, v)| *v);
        assert_eq!(
            *value, expected,
            "wsbeat_auth_failures_total{{reason={label:?}}}: {got:?}"
        );
    }
}

/// Runs `wsbeat` with `args` until it exits (within [`DEADLINE`], else it is
/// killed and the test fails): its exit code and stderr.
pub fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    use std::process::Stdio;
    let mut child = wsbeat_command()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wsbeat");
    let mut stderr = child.stderr.take().unwrap();
    // Read as it comes, so that a chatty child never blocks on a full pipe.
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let t = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if t.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("wsbeat {args:?} did not exit within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (status.code(), reader.join().unwrap())
}

/// A tungstenite client (plain TCP).
pub type WsClient = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>;

/// A tungstenite client upgraded on `/?{query}`, reads bounded by [`DEADLINE`].
pub fn connect(addr: SocketAddr, query: &str) -> WsClient {
    let (ws, resp) = tungstenite::connect(format!("ws://{addr}/?{query}")).expect("upgrade");
    assert_eq!(resp.status(), 101);
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(DEADLINE)).unwrap();
    }
    ws
}

/// Each set of flags stops start-up with exit code 2 and one line naming
/// `flag` and saying `also`.
pub fn assert_refused_at_start(cases: &[(Vec<&str>, &str, &str)]) {
    for (flags, flag, also) in cases {
        let mut args = vec!["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"];
        args.extend(flags);
        let (code, err) = run_to_exit(&args);
        assert_eq!(code, Some(2), "{flags:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{flags:?}: {err}");
        assert!(err.contains(flag) && err.contains(also), "{flags:?}: {err}");
    }
}

/// Connections per loop, from `/metrics`.
pub fn loop_connections(admin: SocketAddr) -> Vec<u64> {
    let text = http(admin, "GET", "/metrics", "", b"").text();
    let mut per_loop: Vec<(usize, u64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("wsbeat_loop_connections{loop=\""))
        .map(|l| {
            let (i, rest) = l.split_once("\"} ").unwrap();
            (i.parse().unwrap(), rest.parse().unwrap())
        })
        .collect();
    per_loop.sort();
    per_loop.into_iter().map(|(_, n)| n).collect()
}

/// The next text message other than a server heartbeat (pings are answered
/// by tungstenite), over any transport.
pub fn read_text<S: Read + Write>(ws: &mut tungstenite::WebSocket<S>) -> String {
    loop {
        match ws.read().expect("read") {
            tungstenite::Message::Text(t) if t.as_str() != "heartbeat" => return t.to_string(),
            tungstenite::Message::Close(f) => panic!("closed: {f:?}"),
            _ => {}
        }
    }
}
