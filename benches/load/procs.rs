//! The two servers as child processes: how they are started (pinned, and
//! killed with their parent), the guard that kills them on every exit path,
//! and what `/proc` says about their CPU time and resident memory.

use std::ffi::OsString;
use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long a server may take to accept its first TCP connection.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Wsbeat,
    Peer,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Wsbeat => "wsbeat",
            Kind::Peer => "tokio-tungstenite",
        }
    }
}

/// Everything needed to start either server.
pub struct Launch {
    pub wsbeat_bin: PathBuf,
    /// The bench binary itself: `--peer-server PORT` makes it the peer.
    pub self_exe: PathBuf,
    /// `taskset -c CPU` prefix for both servers, when taskset exists.
    pub server_cpu: Option<String>,
    /// The CPUs for a wsbeat with more than one loop (`taskset -c` list).
    pub multi_loop_cpus: Option<String>,
    /// `setpriv --pdeathsig KILL` prefix: a server dies with the bench even
    /// when the bench is killed with SIGKILL and no destructor runs.
    pub setpriv: bool,
    pub log_dir: PathBuf,
}

/// What a server gets beyond the flags every run gives it (`Server::start_with`).
#[derive(Clone, Debug, Default)]
pub struct Opts {
    /// wsbeat: `--admin-listen` (instead of `127.0.0.1:0`), to reach its admin API.
    pub admin_listen: Option<SocketAddr>,
    /// wsbeat: appended to the command line, e.g. `--auth-jwt-secret S`.
    pub args: Vec<String>,
    /// Both servers: `wss://` with this certificate.
    pub tls: Option<TlsFiles>,
}

/// A certificate and its key, PEM files.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A running server. Dropping it kills the process (SIGKILL) and reaps it.
pub struct Server {
    pub kind: Kind,
    pub addr: SocketAddr,
    child: Child,
    pid: u32,
    log: PathBuf,
    dead: bool,
}

impl Server {
    /// Starts a server on a free loopback port and waits until it accepts
    /// TCP connections. `tag` names its log file.
    /// `threads`: wsbeat's `--threads` (ignored for the peer).
    pub fn start_with(l: &Launch, kind: Kind, tag: &str, threads: usize, opts: &Opts) -> Result<Server, String> {
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log = l.log_dir.join(format!("{}-{tag}.log", kind.label()));
        let logf = fs::File::create(&log).map_err(|e| format!("creating {}: {e}", log.display()))?;
        let logf2 = logf.try_clone().map_err(|e| format!("log file: {e}"))?;

        let admin = opts
            .admin_listen
            .map_or_else(|| "127.0.0.1:0".to_string(), |a| a.to_string());
        let (prog, args): (&Path, Vec<String>) = match kind {
            Kind::Wsbeat => (
                &l.wsbeat_bin,
                [
                    "--listen",
                    &addr.to_string(),
                    "--admin-listen",
                    &admin,
                    "--echo",
                    "--max-connections",
                    "100000",
                    "--heartbeat-interval",
                    "30s",
                    "--heartbeat-timeout",
                    "60s",
                    "--threads",
                    &threads.to_string(),
                ]
                .map(String::from)
                .into_iter()
                .chain(opts.args.iter().cloned())
                .chain(opts.tls.iter().flat_map(|t| {
                    [
                        "--tls-cert".into(),
                        t.cert.display().to_string(),
                        "--tls-key".into(),
                        t.key.display().to_string(),
                    ]
                }))
                .collect(),
            ),
            Kind::Peer => (
                &l.self_exe,
                ["--peer-server".into(), port.to_string()]
                    .into_iter()
                    .chain(opts.tls.iter().flat_map(|t| {
                        [
                            "--tls".into(),
                            t.cert.display().to_string(),
                            t.key.display().to_string(),
                        ]
                    }))
                    .collect(),
            ),
        };
        // setpriv and taskset both exec in place, so the child's pid is the
        // server's own (checked below through /proc/PID/exe).
        let mut argv: Vec<OsString> = Vec::new();
        if l.setpriv {
            argv.extend(["setpriv", "--pdeathsig", "KILL"].map(OsString::from));
        }
        let cpus = match kind {
            Kind::Wsbeat if threads > 1 => l.multi_loop_cpus.as_ref(),
            _ => l.server_cpu.as_ref(),
        };
        if let Some(cpu) = cpus {
            argv.extend(["taskset".into(), "-c".into(), OsString::from(cpu)]);
        }
        argv.push(prog.into());
        argv.extend(args.into_iter().map(OsString::from));

        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(logf)
            .stderr(logf2)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", kind.label()))?;
        let pid = child.id();
        let mut server = Server {
            kind,
            addr,
            child,
            pid,
            log,
            dead: false,
        };
        server.wait_ready(prog)?;
        Ok(server)
    }

    fn wait_ready(&mut self, prog: &Path) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.check_alive()?;
            if TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not listen on {} within {READY_TIMEOUT:?}",
                    self.kind.label(),
                    self.addr
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
        let exe =
            fs::read_link(format!("/proc/{}/exe", self.pid)).map_err(|e| format!("/proc/{}/exe: {e}", self.pid))?;
        let want = fs::canonicalize(prog).map_err(|e| format!("{}: {e}", prog.display()))?;
        if exe != want {
            return Err(format!(
                "pid {} runs {}, not {}: the launcher did not exec in place",
                self.pid,
                exe.display(),
                want.display()
            ));
        }
        // Let the readiness probe's connection be torn down before any baseline.
        thread::sleep(Duration::from_millis(300));
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Fails, with the tail of the server's log, if the process has exited.
    pub fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                self.dead = true;
                Err(format!(
                    "{} (pid {}) died: {status}; last lines of {}:\n{}",
                    self.kind.label(),
                    self.pid,
                    self.log.display(),
                    log_tail(&self.log, 20)
                ))
            }
            Err(e) => Err(format!("waiting on {}: {e}", self.kind.label())),
        }
    }

    /// Like `check_alive`, but gives a dying process `grace` to be reaped:
    /// its sockets close before its exit status can be seen.
    pub fn check_alive_within(&mut self, grace: Duration) -> Result<(), String> {
        let end = Instant::now() + grace;
        loop {
            self.check_alive()?;
            if Instant::now() >= end {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// utime + stime of all the server's threads, in clock ticks.
    pub fn cpu_ticks(&self) -> Result<u64, String> {
        proc_cpu_ticks(&format!("/proc/{}/stat", self.pid))
    }

    /// VmRSS in KiB.
    pub fn rss_kib(&self) -> Result<u64, String> {
        let path = format!("/proc/{}/status", self.pid);
        let s = fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        status_field_kib(&s, "VmRSS:").ok_or_else(|| format!("{path}: no VmRSS"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !self.dead {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// utime + stime (fields 14 and 15 of `/proc/PID/stat`), in clock ticks.
pub fn proc_cpu_ticks(path: &str) -> Result<u64, String> {
    let s = fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    // The command name (field 2) may hold spaces and parentheses: count
    // fields from the last ')'. After it, field 3 (state) is index 0.
    let rest = &s[s.rfind(')').ok_or_else(|| format!("{path}: unexpected format"))? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| -> Result<u64, String> {
        f.get(i)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{path}: unexpected format"))
    };
    Ok(num(11)? + num(12)?)
}

fn status_field_kib(status: &str, key: &str) -> Option<u64> {
    let v = status.lines().find_map(|l| l.strip_prefix(key))?;
    v.trim().strip_suffix("kB")?.trim().parse().ok()
}

/// A port that was free a moment ago (the server binds it right after).
pub fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("finding a free port: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

fn log_tail(path: &Path, lines: usize) -> String {
    let s = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
