//! A real HTTP/1.1 server for the tests: the auth webhook and the forwarding
//! backend. Each connection gets a thread; each request is recorded and
//! answered by the test's function (which may make it wait). It can be
//! stopped (the port then refuses connections) and started again on the
//! same port, for outages.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One request as it arrived.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub target: String,
    /// Names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
}

/// How to answer.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Wait this long before answering.
    pub delay: Duration,
    /// Close the connection without answering.
    pub hang_up: bool,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            delay: Duration::ZERO,
            hang_up: false,
        }
    }

    pub fn json(status: u16, body: serde_json::Value) -> Reply {
        Reply {
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
            ..Reply::status(status)
        }
    }

    pub fn text(status: u16, body: &str) -> Reply {
        Reply {
            body: body.as_bytes().to_vec(),
            ..Reply::status(status)
        }
    }

    pub fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.into(), v.into()));
        self
    }

    pub fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    pub fn hang_up() -> Reply {
        Reply {
            hang_up: true,
            ..Reply::status(0)
        }
    }
}

type Respond = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

struct State {
    requests: Mutex<Vec<Recorded>>,
    arrived: Condvar,
    respond: Mutex<Respond>,
}

pub struct HttpServer {
    pub addr: SocketAddr,
    state: Arc<State>,
    running: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

impl HttpServer {
    /// Listens on a free loopback port.
    pub fn start(respond: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(State {
            requests: Mutex::new(Vec::new()),
            arrived: Condvar::new(),
            respond: Mutex::new(Arc::new(respond)),
        });
        let mut s = HttpServer {
            addr,
            state,
            running: None,
        };
        s.serve(listener);
        s
    }

    /// Answers from now on with `respond`.
    pub fn respond_with(&self, respond: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) {
        *self.state.respond.lock().unwrap() = Arc::new(respond);
    }

    fn serve(&mut self, listener: TcpListener) {
        let stop = Arc::new(AtomicBool::new(false));
        let state = self.state.clone();
        let stopping = stop.clone();
        listener.set_nonblocking(true).expect("nonblocking");
        let t = std::thread::spawn(move || {
            let mut conns: Vec<(TcpStream, JoinHandle<()>)> = Vec::new();
            while !stopping.load(Ordering::Acquire) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        let keep = stream.try_clone().expect("clone");
                        let state = state.clone();
                        let stop = stopping.clone();
                        conns.push((keep, std::thread::spawn(move || serve_conn(stream, &state, &stop))));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => break,
                }
                conns.retain(|(_, t)| !t.is_finished());
            }
            // Stopped: the listener closes with this thread, and open
            // connections are cut, as a crashed backend's would be.
            for (c, t) in conns {
                let _ = c.shutdown(Shutdown::Both);
                let _ = t.join();
            }
        });
        self.running = Some((stop, t));
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Waits (at most `within`) until `n` requests have arrived; all of them.
    pub fn wait_for(&self, n: usize, within: Duration) -> Vec<Recorded> {
        let deadline = Instant::now() + within;
        let mut got = self.state.requests.lock().unwrap();
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "{} requests of {n} within {within:?}", got.len());
            got = self.state.arrived.wait_timeout(got, left).unwrap().0;
        }
        got.clone()
    }

    /// Closes the port: connections are refused until [`restart`].
    pub fn stop(&mut self) {
        if let Some((stop, t)) = self.running.take() {
            stop.store(true, Ordering::Release);
            let _ = t.join();
        }
    }

    /// Listens again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(self.addr) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("cannot listen on {} again: {e}", self.addr),
            }
        };
        self.serve(listener);
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve_conn(stream: TcpStream, state: &State, stop: &AtomicBool) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut reader = BufReader::new(stream);
    while !stop.load(Ordering::Acquire) {
        let Some(req) = read_request(&mut reader, stop) else {
            return;
        };
        let reply = {
            let mut all = state.requests.lock().unwrap();
            all.push(req.clone());
            state.arrived.notify_all();
            let respond = state.respond.lock().unwrap().clone();
            drop(all);
            respond(&req)
        };
        let deadline = Instant::now() + reply.delay;
        while Instant::now() < deadline {
            if stop.load(Ordering::Acquire) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5).min(deadline.saturating_duration_since(Instant::now())));
        }
        let stream = reader.get_mut();
        if reply.hang_up {
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        let mut head = format!(
            "HTTP/1.1 {} Status\r\nContent-Length: {}\r\n",
            reply.status,
            reply.body.len()
        );
        for (k, v) in &reply.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        if stream.write_all(head.as_bytes()).is_err() || stream.write_all(&reply.body).is_err() {
            return;
        }
    }
}

/// Reads one request; `None` at the end of the connection or when stopped.
fn read_request(reader: &mut BufReader<TcpStream>, stop: &AtomicBool) -> Option<Recorded> {
    let mut lines: Vec<String> = Vec::new();
    // Bytes of a line survive a read timeout: `read_until` keeps what it
    // consumed.
    let mut line = Vec::new();
    loop {
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => return None,
            Ok(_) if !line.ends_with(b"\n") => continue,
            Ok(_) => {
                let l = String::from_utf8_lossy(&line)
                    .trim_end_matches(['\r', '\n'])
                    .to_string();
                line.clear();
                match (l.is_empty(), lines.is_empty()) {
                    (true, true) => continue,
                    (true, false) => break,
                    _ => lines.push(l),
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                if stop.load(Ordering::Acquire) {
                    return None;
                }
            }
            Err(_) => return None,
        }
    }
    let mut first = lines[0].split(' ');
    let method = first.next().unwrap_or_default().to_string();
    let target = first.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines[1..]
        .iter()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    let mut got = 0;
    while got < len {
        match reader.read(&mut body[got..]) {
            Ok(0) => return None,
            Ok(n) => got += n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                if stop.load(Ordering::Acquire) {
                    return None;
                }
            }
            Err(_) => return None,
        }
    }
    Some(Recorded {
        method,
        target,
        headers,
        body,
        at: Instant::now(),
    })
}
