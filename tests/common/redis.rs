//! A real `redis-server` on a free loopback port, one per test, and a tiny
//! blocking RESP2 client to drive and inspect it. Never a mock: the cluster
//! tests are about what Redis actually does (`scripts/install-test-deps.sh`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, ErrorKind, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a server may take to answer PING (and a port to come free on restart).
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Per reply: a test waiting on Redis should fail, not hang.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A `redis-server` child process on 127.0.0.1, killed on drop.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    /// The server's stdout and stderr, for the panic message when it does not come up.
    log: PathBuf,
}

impl RedisServer {
    /// Starts an empty server on a free loopback port and waits until it answers PING.
    pub fn start() -> RedisServer {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let mut server = RedisServer {
                port: free_port(),
                child: None,
                log: log_path(),
            };
            match server.launch(deadline) {
                Ok(()) => return server,
                Err(e) if Instant::now() >= deadline => panic!("redis-server did not start: {e}"),
                // The port was free when picked but was taken before Redis bound it: pick another.
                Err(_) => {}
            }
        }
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL, no shutdown of its own) and reaps it. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts a fresh, empty one on the same port.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + START_TIMEOUT;
        // Retried: the port can be briefly unavailable after the kill.
        while let Err(e) = self.launch(deadline) {
            if Instant::now() >= deadline {
                panic!("redis-server did not restart on port {}: {e}", self.port);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends one command and returns its reply; panics on I/O errors (Redis errors are
    /// [`RespValue::Error`]).
    pub fn cmd(&self, args: &[&str]) -> RespValue {
        self.try_cmd(args)
            .unwrap_or_else(|e| panic!("redis {args:?} on port {}: {e}", self.port))
    }

    /// Like [`cmd`](Self::cmd), with I/O errors (e.g. the server is down) returned.
    pub fn try_cmd(&self, args: &[&str]) -> io::Result<RespValue> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.write_all(&encode(args))?;
        parse(&mut BufReader::new(stream))
    }

    /// Calls per command since start or [`config_resetstat`](Self::config_resetstat), from
    /// `INFO commandstats`: `"get"`, `"set"`, `"config|resetstat"`, …
    pub fn command_calls(&self) -> BTreeMap<String, u64> {
        let info = self.cmd(&["INFO", "commandstats"]);
        let info = info.as_str().unwrap_or_else(|| panic!("INFO commandstats: {info:?}"));
        info.lines()
            .filter_map(|line| {
                // cmdstat_get:calls=12,usec=34,usec_per_call=2.83,rejected_calls=0,failed_calls=0
                let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = stats.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
                Some((name.to_string(), calls.parse().ok()?))
            })
            .collect()
    }

    /// Zeroes the server's statistics, [`command_calls`](Self::command_calls) among them.
    pub fn config_resetstat(&self) {
        let reply = self.cmd(&["CONFIG", "RESETSTAT"]);
        assert_eq!(reply, RespValue::Simple("OK".into()), "CONFIG RESETSTAT");
    }

    /// Spawns `redis-server` on `self.port` and waits until it answers PING; `Err` if it exits
    /// first or `deadline` passes.
    fn launch(&mut self, deadline: Instant) -> Result<(), String> {
        let log = File::create(&self.log).unwrap_or_else(|e| panic!("{}: {e}", self.log.display()));
        let spawned = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no", "--daemonize", "no", "--protected-mode", "no"])
            .args(["--loglevel", "warning"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn();
        let pid = match spawned {
            Ok(child) => self.child.insert(child).id(),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                panic!("redis-server not found on PATH: run scripts/install-test-deps.sh")
            }
            Err(e) => panic!("spawning redis-server: {e}"),
        };
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                return Err(format!("it exited ({status}) on port {}: {}", self.port, log.trim()));
            }
            // Ours, not another test's server that got the port first.
            if self.cmd_is(&["PING"], |r| r == "PONG") && self.cmd_is(&["INFO", "server"], |info| owned_by(info, pid)) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!("no PONG on port {} within {START_TIMEOUT:?}", self.port));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether `args` gets a string reply satisfying `ok` (false if the server is not up yet).
    fn cmd_is(&self, args: &[&str], ok: impl FnOnce(&str) -> bool) -> bool {
        self.try_cmd(args).is_ok_and(|r| r.as_str().is_some_and(ok))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Whether `INFO server` text names `pid` as the server's `process_id`.
fn owned_by(info: &str, pid: u32) -> bool {
    info.lines().any(|l| {
        l.strip_prefix("process_id:")
            .is_some_and(|p| p.trim() == pid.to_string())
    })
}

/// A loopback port nobody listens on right now (the OS picks it).
fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// A fresh file for one server's output, under Cargo's scratch directory for tests.
fn log_path() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("redis-{}-{n}.log", std::process::id()))
}

/// One RESP2 reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RespValue {
    Simple(String),
    Error(String),
    Int(i64),
    /// `None` is the null bulk string (e.g. GET of a missing key).
    Bulk(Option<Vec<u8>>),
    /// `None` is the null array.
    Array(Option<Vec<RespValue>>),
}

impl RespValue {
    pub fn as_int(&self) -> Option<i64> {
        match self {
            RespValue::Int(n) => Some(*n),
            _ => None,
        }
    }

    /// A simple string, or a bulk string that is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            RespValue::Simple(s) => Some(s),
            RespValue::Bulk(Some(b)) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// A simple or bulk string, invalid UTF-8 replaced.
    pub fn as_string(&self) -> Option<String> {
        match self {
            RespValue::Simple(s) => Some(s.clone()),
            RespValue::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }
}

/// A command as RESP2 sends it: an array of bulk strings.
fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Reads one reply.
fn parse(r: &mut impl BufRead) -> io::Result<RespValue> {
    let bad = |what: &str| io::Error::new(ErrorKind::InvalidData, format!("bad RESP: {what}"));
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)?;
    let Some(body) = line.strip_suffix(b"\r\n") else {
        return Err(if line.is_empty() {
            ErrorKind::UnexpectedEof.into()
        } else {
            bad("line without CRLF")
        });
    };
    let (kind, rest) = body.split_first().ok_or_else(|| bad("empty line"))?;
    let text = String::from_utf8_lossy(rest).into_owned();
    let int = || text.parse::<i64>().map_err(|_| bad(&format!("number {text:?}")));
    // -1 is null; other lengths must fit a usize.
    let len = || match int()? {
        -1 => Ok(None),
        n => usize::try_from(n).map(Some).map_err(|_| bad(&format!("length {n}"))),
    };
    Ok(match kind {
        b'+' => RespValue::Simple(text),
        b'-' => RespValue::Error(text),
        b':' => RespValue::Int(int()?),
        b'$' => match len()? {
            None => RespValue::Bulk(None),
            Some(n) => {
                let mut data = vec![0; n + 2];
                r.read_exact(&mut data)?;
                if data[n..] != *b"\r\n" {
                    return Err(bad("bulk string without CRLF"));
                }
                data.truncate(n);
                RespValue::Bulk(Some(data))
            }
        },
        b'*' => match len()? {
            None => RespValue::Array(None),
            Some(n) => RespValue::Array(Some((0..n).map(|_| parse(r)).collect::<io::Result<_>>()?)),
        },
        _ => return Err(bad(&format!("type byte {:?}", *kind as char))),
    })
}

impl RedisServer {
    /// Starts an empty server on `port` (one a node was pointed at before
    /// Redis was up) and waits until it answers PING.
    pub fn start_on(port: u16) -> RedisServer {
        let mut server = RedisServer {
            port,
            child: None,
            log: log_path(),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        // Retried like a restart: the port can be briefly unavailable.
        while let Err(e) = server.launch(deadline) {
            if Instant::now() >= deadline {
                panic!("redis-server did not start on port {port}: {e}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(bytes: &[u8]) -> RespValue {
        let mut r = bytes;
        let v = parse(&mut r).unwrap();
        assert!(r.is_empty(), "left over: {r:?}");
        v
    }

    #[test]
    fn resp_replies_parse() {
        use RespValue::*;
        assert_eq!(parse_all(b"+OK\r\n"), Simple("OK".into()));
        assert_eq!(parse_all(b"-ERR no\r\n"), Error("ERR no".into()));
        assert_eq!(parse_all(b":-42\r\n").as_int(), Some(-42));
        assert_eq!(parse_all(b"$5\r\na\r\nbc\r\n"), Bulk(Some(b"a\r\nbc".to_vec())));
        assert_eq!(parse_all(b"$0\r\n\r\n").as_str(), Some(""));
        assert_eq!(parse_all(b"$-1\r\n"), Bulk(None));
        assert_eq!(parse_all(b"*-1\r\n"), Array(None));
        assert_eq!(
            parse_all(b"*3\r\n:1\r\n*2\r\n$1\r\nx\r\n$-1\r\n*0\r\n"),
            Array(Some(vec![
                Int(1),
                Array(Some(vec![Bulk(Some(b"x".to_vec())), Bulk(None)])),
                Array(Some(vec![])),
            ]))
        );
    }

    #[test]
    fn resp_rejects_truncated_and_unknown() {
        assert_eq!(parse(&mut &b""[..]).unwrap_err().kind(), ErrorKind::UnexpectedEof);
        assert_eq!(
            parse(&mut &b"$3\r\nab"[..]).unwrap_err().kind(),
            ErrorKind::UnexpectedEof
        );
        assert_eq!(parse(&mut &b"+OK"[..]).unwrap_err().kind(), ErrorKind::InvalidData);
        assert_eq!(parse(&mut &b"%1\r\n"[..]).unwrap_err().kind(), ErrorKind::InvalidData);
        assert_eq!(parse(&mut &b"$-2\r\n"[..]).unwrap_err().kind(), ErrorKind::InvalidData);
        assert_eq!(encode(&["GET", "k"]), b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    }
}
