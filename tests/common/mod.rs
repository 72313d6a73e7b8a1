//! Shared helpers: an in-process server on a free port and a raw client.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wsbeat::protocol::frame::{self, OpCode};

/// Generous: tests wait for events, never for wall-clock speed.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Starts a server with `cfg` (listening on 127.0.0.1, port 0) on its own
/// thread and returns its address.
pub fn start(cfg: wsbeat::Config) -> SocketAddr {
    start_with_stats(cfg).0
}

/// Like [`start`], also returning the server's live numbers.
pub fn start_with_stats(mut cfg: wsbeat::Config) -> (SocketAddr, Arc<wsbeat::Stats>) {
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    let server = wsbeat::Server::bind(cfg).expect("bind");
    let addr = server.local_addr();
    let stats = server.stats();
    std::thread::spawn(move || server.run().expect("server loop"));
    (addr, stats)
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
            if let Some((h, n)) = frame::parse_header_any(&self.buf).expect("valid server frame") {
                assert!(h.mask.is_none(), "server frames are unmasked");
                let end = n + h.len as usize;
                if self.buf.len() >= end {
                    let payload = self.buf[n..end].to_vec();
                    self.buf.drain(..end);
                    return Some(Frame {
                        fin: h.fin,
                        opcode: h.opcode,
                        payload,
                    });
                }
            }
            if self.fill() == 0 {
                return None;
            }
        }
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
