//! The connect webhook (SPEC §13): each upgrade is POSTed to the backend by
//! helper threads; the answer goes back to the loop holding the connection.
//!
//! The loops only ever [`Webhook::submit`], which never blocks: a bounded
//! queue feeds `concurrency` threads sharing one `ureq` agent (keep-alive
//! pool, no redirects, one deadline per call). Each job is answered once,
//! through [`Deliver`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::presence::ConnId;
use crate::protocol::handshake::RequestInfo;
use crate::protocol::heartbeat::is_valid_client_id;

/// The most of an answer read: `{"id": ...}` needs far less.
const MAX_ANSWER_BYTES: u64 = 64 * 1024;

/// At most one warning line per this, so a backend outage does not flood the
/// log at the rate clients reconnect.
const WARN_EVERY: Duration = Duration::from_secs(1);

/// `--auth-webhook*`.
#[derive(Clone)]
pub struct WebhookSettings {
    /// `http://` or `https://`.
    pub url: String,
    /// The whole call, connect to last byte.
    pub timeout: Duration,
    /// Calls in flight at once (helper threads).
    pub concurrency: usize,
    /// Upgrades waiting for a thread; past it, new upgrades get `503`.
    pub queue: usize,
}

impl std::fmt::Debug for WebhookSettings {
    /// The URL's credentials are secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("url", &crate::http_client::shown_url(&self.url))
            .field("timeout", &self.timeout)
            .field("concurrency", &self.concurrency)
            .field("queue", &self.queue)
            .finish()
    }
}

/// What the backend is told about an upgrade: who asks, and what the
/// handshake parser kept of the request.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct WebhookRequest {
    pub peer: Option<SocketAddr>,
    pub request: RequestInfo,
}

/// The backend's decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// `200 {"id": ID}` with a valid id.
    Accept(Box<str>),
    /// `401`.
    Unauthorized,
    /// `403`.
    Forbidden,
    /// Anything else: no answer in time, another status, a redirect, a body
    /// that is not `{"id": valid id}`; why, for the log.
    Unavailable(String),
}

/// The queue is full.
#[derive(Debug, PartialEq, Eq)]
pub struct QueueFull;

/// Where verdicts go: the server sends each to the loop of its connection.
pub type Deliver = Box<dyn Fn(ConnId, Verdict) + Send + Sync>;

/// The helper threads and their queue.
pub struct Webhook {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

/// What the threads and [`Webhook::submit`] share.
struct Shared {
    url: String,
    timeout: Duration,
    /// Jobs allowed to wait when no thread is free.
    queue: usize,
    agent: ureq::Agent,
    deliver: Deliver,
    state: Mutex<State>,
    /// Signals a new job, or the stop.
    wake: Condvar,
    /// `true` until stopped. Threads deliver under its read lock, so once
    /// stop() has taken the write lock no verdict goes out any more.
    open: RwLock<bool>,
    warnings: Mutex<WarnLimit>,
}

struct State {
    pending: VecDeque<Job>,
    /// Threads waiting for a job.
    idle: usize,
    stopped: bool,
}

struct Job {
    conn: ConnId,
    req: WebhookRequest,
    queued_at: Instant,
}

impl Webhook {
    /// Starts `settings.concurrency` threads.
    pub fn start(settings: &WebhookSettings, deliver: Deliver) -> std::io::Result<Webhook> {
        crate::http_client::check_url(&settings.url)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("auth webhook URL: {e}")))?;
        if settings.concurrency == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "auth webhook concurrency must be at least 1",
            ));
        }
        let shared = Arc::new(Shared {
            url: settings.url.clone(),
            timeout: settings.timeout,
            queue: settings.queue,
            // A connection per thread kept alive between calls.
            agent: crate::http_client::agent(settings.timeout, settings.concurrency),
            deliver,
            state: Mutex::new(State {
                pending: VecDeque::new(),
                idle: 0,
                stopped: false,
            }),
            wake: Condvar::new(),
            open: RwLock::new(true),
            warnings: Mutex::new(WarnLimit::default()),
        });
        let mut webhook = Webhook {
            shared,
            threads: Vec::with_capacity(settings.concurrency),
        };
        for i in 0..settings.concurrency {
            let shared = Arc::clone(&webhook.shared);
            // On failure, `webhook` is dropped, which stops the ones started.
            let t = std::thread::Builder::new()
                .name(format!("wsbeat-webhook-{i}"))
                .spawn(move || work(&shared))?;
            webhook.threads.push(t);
        }
        Ok(webhook)
    }

    /// Queues a call for `conn`, without waiting.
    pub fn submit(&self, conn: ConnId, req: WebhookRequest) -> Result<(), QueueFull> {
        let mut st = lock(&self.shared.state);
        // Room: the queue's, plus one per thread waiting for a job.
        if st.stopped || st.pending.len() >= self.shared.queue.saturating_add(st.idle) {
            return Err(QueueFull);
        }
        st.pending.push_back(Job {
            conn,
            req,
            queued_at: Instant::now(),
        });
        drop(st);
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Drops `conn`'s call if it is still queued (its connection is gone:
    /// a client that opens and closes at once must not spend the queue).
    /// A call already under way finishes; its verdict finds no one.
    pub fn cancel(&self, conn: ConnId) {
        let dropped = {
            let mut st = lock(&self.shared.state);
            let at = st.pending.iter().position(|j| j.conn == conn);
            at.and_then(|i| st.pending.remove(i))
        };
        drop(dropped);
    }

    /// Ends the threads (calls in flight finish within the timeout; queued
    /// ones are dropped unanswered). Does not wait for them; once it
    /// returns, no verdict is delivered any more.
    pub fn stop(&self) {
        *self.shared.open.write().unwrap_or_else(PoisonError::into_inner) = false;
        let dropped = {
            let mut st = lock(&self.shared.state);
            st.stopped = true;
            std::mem::take(&mut st.pending)
        };
        self.shared.wake.notify_all();
        drop(dropped);
    }

    /// Waits for the threads to end (after [`Webhook::stop`]).
    #[cfg(test)]
    fn join(&mut self) {
        for t in self.threads.drain(..) {
            t.join().unwrap(); // test only: a thread that panicked fails the test
        }
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        // The threads are left to end on their own, within the timeout:
        // dropping must not hold up the caller for a slow backend.
        self.stop();
    }
}

/// A poisoned lock only means another thread panicked while holding it;
/// the state it guards stays consistent (every update is a single step).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A helper thread: takes jobs until stopped.
fn work(shared: &Shared) {
    while let Some(job) = next_job(shared) {
        let verdict = run(shared, &job);
        if let Verdict::Unavailable(reason) = &verdict {
            shared.warn(reason);
        }
        let open = shared.open.read().unwrap_or_else(PoisonError::into_inner);
        if !*open {
            return;
        }
        // The server's code: a panic there must not end this thread.
        if catch_unwind(AssertUnwindSafe(|| (shared.deliver)(job.conn, verdict))).is_err() {
            log::error!("auth webhook: delivering a verdict panicked");
        }
    }
}

/// The next job, or `None` once stopped.
fn next_job(shared: &Shared) -> Option<Job> {
    let mut st = lock(&shared.state);
    loop {
        if st.stopped {
            return None;
        }
        if let Some(job) = st.pending.pop_front() {
            return Some(job);
        }
        st.idle += 1;
        st = shared.wake.wait(st).unwrap_or_else(PoisonError::into_inner);
        st.idle -= 1;
    }
}

/// One job's verdict: the call gets what is left of the timeout since the
/// job was queued, so the client hears within the timeout either way.
fn run(shared: &Shared, job: &Job) -> Verdict {
    let budget = shared.timeout.saturating_sub(job.queued_at.elapsed());
    if budget.is_zero() {
        return Verdict::Unavailable("waited too long".into());
    }
    // ureq is not expected to panic; if it does, this thread carries on.
    catch_unwind(AssertUnwindSafe(|| call(shared, &job.req, budget)))
        .unwrap_or_else(|_| Verdict::Unavailable("the call panicked".into()))
}

fn call(shared: &Shared, req: &WebhookRequest, budget: Duration) -> Verdict {
    let result = shared
        .agent
        .post(&shared.url)
        .header("content-type", "application/json")
        .config()
        .timeout_global(Some(budget))
        .build()
        .send(request_body(req).as_bytes());
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => return Verdict::Unavailable(describe(&e)),
    };
    match resp.status().as_u16() {
        200 => {}
        401 => return Verdict::Unauthorized,
        403 => return Verdict::Forbidden,
        s @ 300..=399 => return Verdict::Unavailable(format!("redirect ({s}) not followed")),
        s => return Verdict::Unavailable(format!("status {s}")),
    }
    match resp.body_mut().with_config().limit(MAX_ANSWER_BYTES).read_to_vec() {
        Ok(body) => verdict_of(&body),
        Err(e) => Verdict::Unavailable(describe(&e)),
    }
}

/// `{"peer", "path", "query", "headers": {...}}`, absent values as `null`.
fn request_body(req: &WebhookRequest) -> String {
    json!({
        "peer": req.peer.map(|p| p.to_string()),
        "path": &*req.request.path,
        "query": &*req.request.query,
        "headers": {
            "origin": req.request.origin.as_deref(),
            "user-agent": req.request.user_agent.as_deref(),
            "cookie": req.request.cookie.as_deref(),
            "authorization": req.request.authorization.as_deref(),
        },
    })
    .to_string()
}

/// A `200`'s body: `{"id": valid id}` accepts, anything else is a backend
/// fault (the id itself is not logged: it is the backend's data).
fn verdict_of(body: &[u8]) -> Verdict {
    let Ok(answer) = serde_json::from_slice::<Value>(body) else {
        return Verdict::Unavailable("the answer is not JSON".into());
    };
    match answer.get("id") {
        Some(Value::String(id)) if is_valid_client_id(id.as_bytes()) => Verdict::Accept(id.as_str().into()),
        Some(Value::String(_)) => Verdict::Unavailable("the answer's id breaks the client id rules".into()),
        _ => Verdict::Unavailable("the answer has no string \"id\"".into()),
    }
}

/// Why a call failed, for the log: never the URL (it may hold a password)
/// nor anything of the request.
fn describe(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(_) => "no answer within the timeout".into(),
        ureq::Error::Io(io) if matches!(io.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock) => {
            "no answer within the timeout".into()
        }
        ureq::Error::Io(io) => format!("connection error: {io}"),
        ureq::Error::HostNotFound => "host not found".into(),
        ureq::Error::ConnectionFailed => "connection failed".into(),
        ureq::Error::BodyExceedsLimit(_) => {
            format!("the answer is over {} KiB", MAX_ANSWER_BYTES / 1024)
        }
        ureq::Error::Protocol(p) => format!("bad HTTP answer: {p}"),
        ureq::Error::Tls(t) => format!("TLS: {t}"),
        ureq::Error::Rustls(r) => format!("TLS: {r}"),
        ureq::Error::TooManyRedirects | ureq::Error::RedirectFailed => "redirect not followed".into(),
        ureq::Error::BadUri(_) => "bad URL".into(),
        other => other.to_string(),
    }
}

impl Shared {
    /// Logs a failed call, at most once per [`WARN_EVERY`].
    fn warn(&self, reason: &str) {
        let Some(suppressed) = lock(&self.warnings).admit(Instant::now()) else {
            return;
        };
        if suppressed == 0 {
            log::warn!("auth webhook {}: {reason}", crate::http_client::shown_url(&self.url));
        } else {
            log::warn!(
                "auth webhook {}: {reason} ({suppressed} more failures since the last warning)",
                crate::http_client::shown_url(&self.url)
            );
        }
    }
}

/// One line per [`WARN_EVERY`], counting the ones left out.
#[derive(Default)]
struct WarnLimit {
    last: Option<Instant>,
    suppressed: u64,
}

impl WarnLimit {
    /// `Some(lines suppressed since the last)` if a line may go out now.
    fn admit(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < WARN_EVERY)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::mpsc::{self, Receiver, Sender};

    /// Ample for a loaded 2-core machine; waits end as soon as they can.
    const WAIT: Duration = Duration::from_secs(20);

    /// What the test backend got.
    #[derive(Debug)]
    struct Recorded {
        request_line: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Recorded {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    /// What the test backend answers.
    #[derive(Clone)]
    struct Answer {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        /// Wait on this before answering (the test drops or signals it).
        hold: Option<Arc<Mutex<Receiver<()>>>>,
    }

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
            hold: None,
        }
    }

    /// A hand-written HTTP/1.1 backend: one request per connection.
    struct Backend {
        addr: SocketAddr,
        requests: Receiver<Recorded>,
        done: Arc<AtomicBool>,
    }

    impl Backend {
        fn start(answer: Answer) -> Backend {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let (tx, requests) = mpsc::channel();
            let done = Arc::new(AtomicBool::new(false));
            let stop = Arc::clone(&done);
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let (tx, answer) = (tx.clone(), answer.clone());
                    std::thread::spawn(move || serve(stream, &tx, &answer));
                }
            });
            Backend { addr, requests, done }
        }

        fn url(&self, path: &str) -> String {
            format!("http://{}{path}", self.addr)
        }

        fn next(&self) -> Recorded {
            self.requests.recv_timeout(WAIT).expect("no request")
        }
    }

    impl Drop for Backend {
        fn drop(&mut self) {
            self.done.store(true, Ordering::SeqCst);
            // Wakes the accept loop so that it sees `done`.
            let _ = TcpStream::connect(self.addr);
        }
    }

    fn serve(stream: TcpStream, tx: &Sender<Recorded>, answer: &Answer) {
        let mut reader = BufReader::new(&stream);
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).is_err() || request_line.is_empty() {
            return;
        }
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() || line.is_empty() {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((n, v)) = line.split_once(':') {
                headers.push((n.trim().to_string(), v.trim().to_string()));
            }
        }
        let len = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let _ = tx.send(Recorded {
            request_line: request_line.trim_end().to_string(),
            headers,
            body,
        });
        if let Some(hold) = &answer.hold {
            let _ = hold.lock().unwrap().recv_timeout(WAIT);
        }
        let mut out = format!(
            "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
            answer.status,
            answer.body.len()
        );
        for (n, v) in &answer.headers {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
        out.push_str("\r\n");
        let mut stream = &stream;
        let _ = stream.write_all(out.as_bytes());
        let _ = stream.write_all(&answer.body);
    }

    fn conn(n: usize) -> ConnId {
        ConnId::new(n, 0, 1)
    }

    fn settings(url: String) -> WebhookSettings {
        WebhookSettings {
            url,
            timeout: Duration::from_secs(10),
            concurrency: 2,
            queue: 8,
        }
    }

    fn start(s: &WebhookSettings) -> (Webhook, Receiver<(ConnId, Verdict)>) {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let deliver: Deliver = Box::new(move |c, v| {
            let _ = tx.lock().unwrap().send((c, v));
        });
        (Webhook::start(s, deliver).unwrap(), rx)
    }

    /// The verdict for one request to a backend answering `a`.
    fn verdict_for(a: Answer) -> Verdict {
        let backend = Backend::start(a);
        let (hook, rx) = start(&settings(backend.url("/auth")));
        hook.submit(conn(1), WebhookRequest::default()).unwrap();
        let (c, v) = rx.recv_timeout(WAIT).unwrap();
        assert_eq!(c, conn(1));
        backend.next();
        v
    }

    fn unavailable(v: &Verdict) -> &str {
        match v {
            Verdict::Unavailable(r) => r,
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }

    #[test]
    fn the_request_is_posted_as_json() {
        let backend = Backend::start(answer(200, r#"{"id":"dev-1"}"#));
        let (hook, rx) = start(&settings(backend.url("/hooks/auth?k=1")));
        let full = WebhookRequest {
            peer: Some("[::1]:5000".parse().unwrap()),
            request: RequestInfo {
                path: "/ws".into(),
                query: "token=a%20b&x=\"y\"".into(),
                origin: Some("https://app.example".into()),
                user_agent: Some("Mozilla/5.0".into()),
                cookie: Some("session=abc; theme=dark".into()),
                authorization: Some("Bearer xyz".into()),
            },
        };
        hook.submit(conn(1), full).unwrap();
        let r = backend.next();
        assert_eq!(r.request_line, "POST /hooks/auth?k=1 HTTP/1.1");
        assert_eq!(r.header("content-type"), Some("application/json"));
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            body,
            json!({
                "peer": "[::1]:5000",
                "path": "/ws",
                "query": "token=a%20b&x=\"y\"",
                "headers": {
                    "origin": "https://app.example",
                    "user-agent": "Mozilla/5.0",
                    "cookie": "session=abc; theme=dark",
                    "authorization": "Bearer xyz",
                },
            })
        );
        assert_eq!(
            rx.recv_timeout(WAIT).unwrap(),
            (conn(1), Verdict::Accept("dev-1".into()))
        );

        let bare = WebhookRequest {
            peer: None,
            request: RequestInfo {
                path: "/".into(),
                ..Default::default()
            },
        };
        hook.submit(conn(2), bare).unwrap();
        let body: Value = serde_json::from_slice(&backend.next().body).unwrap();
        assert_eq!(
            body,
            json!({
                "peer": null,
                "path": "/",
                "query": "",
                "headers": {
                    "origin": null,
                    "user-agent": null,
                    "cookie": null,
                    "authorization": null,
                },
            })
        );
        assert_eq!(
            rx.recv_timeout(WAIT).unwrap(),
            (conn(2), Verdict::Accept("dev-1".into()))
        );
    }

    #[test]
    fn ok_with_a_valid_id_accepts() {
        assert_eq!(
            verdict_for(answer(200, r#"{"id":"user@example.com:phone-1","name":"x"}"#)),
            Verdict::Accept("user@example.com:phone-1".into())
        );
    }

    #[test]
    fn ok_with_anything_else_is_unavailable() {
        let big = format!(r#"{{"id":"dev-1","pad":"{}"}}"#, "x".repeat(70_000));
        for body in [
            "garbage",
            "",
            r#"{"id":"a b"}"#,
            r#"{"id":""}"#,
            r#"{"id":5}"#,
            r#"{"name":"dev-1"}"#,
            r#"["dev-1"]"#,
            r#""dev-1""#,
            big.as_str(),
        ] {
            let v = verdict_for(answer(200, body));
            unavailable(&v);
        }
    }

    #[test]
    fn statuses() {
        assert_eq!(verdict_for(answer(401, "")), Verdict::Unauthorized);
        assert_eq!(verdict_for(answer(403, "no")), Verdict::Forbidden);
        for status in [500, 503, 204, 201, 404, 400] {
            let v = verdict_for(answer(status, r#"{"id":"dev-1"}"#));
            assert_eq!(unavailable(&v), format!("status {status}"));
        }
    }

    #[test]
    fn redirects_are_not_followed() {
        let elsewhere = Backend::start(answer(200, r#"{"id":"dev-1"}"#));
        for status in [301, 302, 303, 307, 308] {
            let mut a = answer(status, "");
            a.headers.push(("Location".into(), elsewhere.url("/elsewhere")));
            let v = verdict_for(a);
            assert!(unavailable(&v).contains("redirect"), "{v:?}");
        }
        // The verdict came after ureq was done: had it followed, the
        // request would be recorded already.
        assert!(elsewhere.requests.try_recv().is_err());
    }

    #[test]
    fn a_slow_backend_times_out() {
        let (_release, hold) = mpsc::channel::<()>();
        let mut a = answer(200, r#"{"id":"dev-1"}"#);
        a.hold = Some(Arc::new(Mutex::new(hold)));
        let backend = Backend::start(a);
        let mut s = settings(backend.url("/"));
        s.timeout = Duration::from_millis(300);
        let (hook, rx) = start(&s);
        let t0 = Instant::now();
        hook.submit(conn(1), WebhookRequest::default()).unwrap();
        let (c, v) = rx.recv_timeout(WAIT).unwrap();
        let took = t0.elapsed();
        assert_eq!(c, conn(1));
        assert!(unavailable(&v).contains("timeout"), "{v:?}");
        assert!(took >= Duration::from_millis(290), "{took:?}");
        assert!(took < Duration::from_millis(300) + Duration::from_secs(2), "{took:?}");
    }

    #[test]
    fn a_backend_down_is_unavailable() {
        // A port nothing listens on any more.
        let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let (hook, rx) = start(&settings(format!("http://{addr}/auth")));
        hook.submit(conn(7), WebhookRequest::default()).unwrap();
        let (c, v) = rx.recv_timeout(WAIT).unwrap();
        assert_eq!(c, conn(7));
        unavailable(&v);
    }

    #[test]
    fn https_to_a_plain_http_backend_is_unavailable() {
        // Builds the rustls client with the aws-lc-rs provider; the
        // handshake then fails against plain HTTP.
        let backend = Backend::start(answer(200, r#"{"id":"dev-1"}"#));
        let url = format!("https://{}/auth", backend.addr);
        let (hook, rx) = start(&settings(url));
        hook.submit(conn(1), WebhookRequest::default()).unwrap();
        let (_, v) = rx.recv_timeout(WAIT).unwrap();
        assert_ne!(unavailable(&v), "the call panicked");
    }

    /// A webhook with one thread and one queued place, against a backend
    /// that holds each request until `release` sends.
    fn one_thread_one_place() -> (Webhook, mpsc::Receiver<(ConnId, Verdict)>, Backend, mpsc::Sender<()>) {
        let (release, hold) = mpsc::channel::<()>();
        let mut a = answer(200, r#"{"id":"dev-1"}"#);
        a.hold = Some(Arc::new(Mutex::new(hold)));
        let backend = Backend::start(a);
        let mut s = settings(backend.url("/"));
        s.concurrency = 1;
        s.queue = 1;
        let (hook, rx) = start(&s);
        (hook, rx, backend, release)
    }

    #[test]
    fn a_full_queue_refuses_without_waiting() {
        let (hook, rx, backend, release) = one_thread_one_place();
        hook.submit(conn(1), WebhookRequest::default()).unwrap();
        backend.next(); // in flight, held
        hook.submit(conn(2), WebhookRequest::default()).unwrap(); // queued
        let t0 = Instant::now();
        assert_eq!(hook.submit(conn(3), WebhookRequest::default()), Err(QueueFull));
        assert!(t0.elapsed() < Duration::from_secs(1));
        release.send(()).unwrap();
        assert_eq!(
            rx.recv_timeout(WAIT).unwrap(),
            (conn(1), Verdict::Accept("dev-1".into()))
        );
        backend.next();
        release.send(()).unwrap();
        assert_eq!(
            rx.recv_timeout(WAIT).unwrap(),
            (conn(2), Verdict::Accept("dev-1".into()))
        );
        // Room again.
        hook.submit(conn(4), WebhookRequest::default()).unwrap();
        backend.next();
        release.send(()).unwrap();
        assert_eq!(
            rx.recv_timeout(WAIT).unwrap(),
            (conn(4), Verdict::Accept("dev-1".into()))
        );
    }

    #[test]
    fn a_cancelled_call_is_not_made_and_frees_its_place() {
        let (hook, rx, backend, release) = one_thread_one_place();
        hook.submit(conn(1), WebhookRequest::default()).unwrap();
        backend.next(); // in flight, held
        hook.submit(conn(2), WebhookRequest::default()).unwrap(); // queued
        hook.cancel(conn(2));
        hook.cancel(conn(9)); // not there: nothing happens
        // Its place is free again.
        hook.submit(conn(3), WebhookRequest::default()).unwrap();
        release.send(()).unwrap();
        assert_eq!(rx.recv_timeout(WAIT).unwrap().0, conn(1));
        backend.next();
        release.send(()).unwrap();
        assert_eq!(rx.recv_timeout(WAIT).unwrap().0, conn(3), "conn 2 was never asked for");
    }

    #[test]
    fn a_job_that_waited_too_long_is_not_sent() {
        let backend = Backend::start(answer(200, r#"{"id":"dev-1"}"#));
        let mut s = settings(backend.url("/"));
        s.timeout = Duration::from_millis(500);
        let (hook, _rx) = start(&s);
        let job = Job {
            conn: conn(1),
            req: WebhookRequest::default(),
            queued_at: Instant::now() - Duration::from_secs(1),
        };
        assert_eq!(run(&hook.shared, &job), Verdict::Unavailable("waited too long".into()));
        // A fresh job goes out, and the one before never did.
        let fresh = Job {
            queued_at: Instant::now(),
            ..job
        };
        assert_eq!(run(&hook.shared, &fresh), Verdict::Accept("dev-1".into()));
        backend.next();
        assert!(backend.requests.try_recv().is_err());
    }

    #[test]
    fn stop_drops_queued_jobs_and_ends_the_threads() {
        let (release, hold) = mpsc::channel::<()>();
        let mut a = answer(200, r#"{"id":"dev-1"}"#);
        a.hold = Some(Arc::new(Mutex::new(hold)));
        let backend = Backend::start(a);
        let mut s = settings(backend.url("/"));
        s.concurrency = 1;
        let delivered = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&delivered);
        let deliver: Deliver = Box::new(move |_, _| {
            count.fetch_add(1, Ordering::SeqCst);
        });
        let mut hook = Webhook::start(&s, deliver).unwrap();
        hook.submit(conn(1), WebhookRequest::default()).unwrap();
        backend.next(); // in flight
        hook.submit(conn(2), WebhookRequest::default()).unwrap();
        hook.stop();
        hook.stop(); // idempotent
        assert_eq!(hook.submit(conn(3), WebhookRequest::default()), Err(QueueFull));
        release.send(()).unwrap();
        hook.join();
        // The call in flight ended, but after stop() nothing is delivered,
        // and the queued job never went out.
        assert_eq!(delivered.load(Ordering::SeqCst), 0);
        assert!(backend.requests.try_recv().is_err());
    }

    #[test]
    fn a_panicking_deliver_does_not_end_the_thread() {
        let backend = Backend::start(answer(200, r#"{"id":"dev-1"}"#));
        let mut s = settings(backend.url("/"));
        s.concurrency = 1;
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let deliver: Deliver = Box::new(move |c, v| {
            assert_ne!(c, conn(1), "the server's bug");
            let _ = tx.lock().unwrap().send((c, v));
        });
        let hook = Webhook::start(&s, deliver).unwrap();
        hook.submit(conn(1), WebhookRequest::default()).unwrap();
        hook.submit(conn(2), WebhookRequest::default()).unwrap();
        assert_eq!(
            rx.recv_timeout(WAIT).unwrap(),
            (conn(2), Verdict::Accept("dev-1".into()))
        );
    }

    #[test]
    fn zero_threads_is_an_error() {
        let mut s = settings("http://127.0.0.1:1/".into());
        s.concurrency = 0;
        assert!(Webhook::start(&s, Box::new(|_, _| {})).is_err());
    }

    #[test]
    fn warnings_are_rate_limited() {
        let mut w = WarnLimit::default();
        let t0 = Instant::now();
        assert_eq!(w.admit(t0), Some(0));
        assert_eq!(w.admit(t0 + Duration::from_millis(10)), None);
        assert_eq!(w.admit(t0 + Duration::from_millis(999)), None);
        assert_eq!(w.admit(t0 + Duration::from_secs(1)), Some(2));
        assert_eq!(w.admit(t0 + Duration::from_millis(1500)), None);
        assert_eq!(w.admit(t0 + Duration::from_secs(5)), Some(1));
        // A clock that seems to step back does not silence it for long.
        assert_eq!(w.admit(t0), None);
    }

    #[test]
    fn the_log_url_has_no_credentials_or_query() {
        let backend = Backend::start(answer(200, "{}"));
        let (hook, _rx) = start(&settings(format!("http://user:secret@{}/auth?key=k", backend.addr)));
        let shown = crate::http_client::shown_url(&hook.shared.url);
        assert_eq!(shown, format!("http://{}", backend.addr));
    }
}
