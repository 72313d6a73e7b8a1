//! The cluster's costs, measured against a real `redis-server` and real
//! `wsbeat` nodes on loopback (numbers for BENCHMARKS.md, not pass/fail):
//!
//! 1. Redis commands per client heartbeat (`INFO commandstats` around
//!    10,000 heartbeats, beside an idle window of the same length: the
//!    nodes' own timers run a few commands a second whatever the clients do).
//! 2. Connect rate of one node with `--cluster` against the same node
//!    without it (connect, upgrade, bind an id).
//! 3. Push latency through the admin API of node A to a client on node B,
//!    beside the same push to a client on A (p50, p99).
//! 4. Redis memory per registered id and commands per connect/disconnect,
//!    scaled to a million clients over ten nodes.
//!
//! `CLUSTER_N` (default 5000) connections for 2 and 4; `CLUSTER_PUSHES`
//! (default 10000); `LOAD_WSBEAT_BIN` picks another binary;
//! `CLUSTER_THREAD_CPU=1` also prints the clustered node's CPU by thread.

#[allow(dead_code)]
#[path = "../tests/common/redis.rs"]
mod redis;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::RedisServer;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A `wsbeat` node, killed on drop.
struct Node {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn node<S: AsRef<std::ffi::OsStr>>(extra: &[S]) -> Node {
    let bin = std::env::var("LOAD_WSBEAT_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_wsbeat").to_string());
    let mut child = Command::new(bin)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--threads",
            "1",
        ])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wsbeat");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let (mut addr, mut admin) = (None, None);
    while addr.is_none() || admin.is_none() {
        let line = lines.next().expect("start-up log").expect("log line");
        if let Some(a) = line.split("listening on ws://").nth(1) {
            addr = a.trim().parse().ok();
        }
        if let Some(a) = line.split("admin API on http://").nth(1) {
            admin = a.trim().parse().ok();
        }
    }
    // Keep draining its log so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let n = Node {
        child,
        addr: addr.expect("addr"),
        admin: admin.expect("admin"),
    };
    let t = Instant::now();
    while get(n.admin, "/readyz").0 != 200 {
        assert!(t.elapsed() < Duration::from_secs(20), "node never ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    n
}

/// One HTTP/1.1 request on a keep-alive connection; (status, body).
fn request(s: &mut TcpStream, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    s.write_all(&req).expect("write");
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).expect("read head");
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let status = head[9..12].parse().unwrap_or(0);
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    s.read_exact(&mut body).expect("read body");
    (status, String::from_utf8_lossy(&body).to_string())
}

fn get(admin: SocketAddr, path: &str) -> (u16, String) {
    match TcpStream::connect(admin) {
        Ok(mut s) => request(&mut s, "GET", path, b""),
        Err(_) => (0, String::new()),
    }
}

/// A minimal WebSocket client.
struct Ws(TcpStream);

impl Ws {
    fn open(addr: SocketAddr, id: &str) -> Ws {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_nodelay(true).ok();
        write!(
            s,
            "GET /?client_id={id} HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .expect("upgrade");
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut b).expect("101");
            head.push(b[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
        Ws(s)
    }

    fn text(&mut self, t: &str) {
        let mut f = vec![0x81, 0x80 | t.len() as u8, 1, 2, 3, 4];
        f.extend(t.bytes().enumerate().map(|(i, b)| b ^ [1, 2, 3, 4][i % 4]));
        self.0.write_all(&f).expect("send");
    }

    /// The next data frame's payload (short frames only; pings skipped).
    fn read(&mut self) -> Vec<u8> {
        loop {
            let mut h = [0u8; 2];
            self.0.read_exact(&mut h).expect("frame");
            let len = (h[1] & 0x7f) as usize;
            assert!(len < 126, "short frames only");
            let mut p = vec![0; len];
            self.0.read_exact(&mut p).expect("payload");
            if h[0] & 0x0f != 0x9 {
                return p;
            }
        }
    }
}

/// CPU seconds a process has used (all its threads), from /proc.
fn cpu_secs(pid: u32) -> f64 {
    stat_cpu(&format!("/proc/{pid}/stat"))
}

/// CPU seconds of a process's main thread: with `--threads 1`, its event
/// loop (the cluster's helper threads are others).
fn loop_cpu_secs(pid: u32) -> f64 {
    stat_cpu(&format!("/proc/{pid}/task/{pid}/stat"))
}

fn stat_cpu(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 (1-based), 11 and 12 here.
    (ticks(11) + ticks(12)) / 100.0
}

fn metric(admin: SocketAddr, name: &str) -> u64 {
    let (_, text) = get(admin, "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok()))
        .unwrap_or(0.0) as u64
}

fn total_calls(r: &RedisServer) -> u64 {
    r.command_calls().values().sum()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn main() {
    let n = env_usize("CLUSTER_N", 5000);
    let pushes = env_usize("CLUSTER_PUSHES", 10_000);
    let r = RedisServer::start();
    let url = r.url();
    let cluster = |id: &'static str| {
        vec![
            "--cluster".to_string(),
            url.clone(),
            "--node-id".to_string(),
            id.to_string(),
        ]
    };

    // 1. Redis commands per heartbeat.
    let a_flags = cluster("bench-a");
    let a = node(&a_flags);
    let mut clients: Vec<Ws> = (0..100).map(|i| Ws::open(a.addr, &format!("hb-{i}"))).collect();
    let settle = Instant::now();
    while metric(a.admin, "wsbeat_clients_online") < 100 && settle.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    let before_hb = metric(a.admin, "wsbeat_heartbeats_received_total");
    r.config_resetstat();
    let t = Instant::now();
    for _ in 0..100 {
        for c in &mut clients {
            c.text("heartbeat");
        }
    }
    while metric(a.admin, "wsbeat_heartbeats_received_total") < before_hb + 10_000 {
        std::thread::sleep(Duration::from_millis(5));
    }
    // At least two seconds, so the idle window below is comparable.
    let window = t.elapsed().max(Duration::from_secs(2));
    std::thread::sleep(window.saturating_sub(t.elapsed()));
    let with_heartbeats = total_calls(&r);
    r.config_resetstat();
    std::thread::sleep(window);
    let idle = total_calls(&r);
    println!(
        "heartbeats: 10000 in a {:.1} s window: {with_heartbeats} Redis commands; the same window idle: {idle} (lease, probe, reaping)",
        window.as_secs_f64()
    );
    drop(clients);

    // 2. Connect rate, with and without --cluster: 4 client threads, three
    // rounds each, interleaved; the median round counts.
    let connect = |addr: SocketAddr, prefix: String| -> (f64, Vec<Ws>) {
        let t = Instant::now();
        let threads: Vec<_> = (0..4)
            .map(|k| {
                let prefix = prefix.clone();
                std::thread::spawn(move || {
                    (k..n)
                        .step_by(4)
                        .map(|i| Ws::open(addr, &format!("{prefix}-{i}")))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let kept: Vec<Ws> = threads
            .into_iter()
            .flat_map(|t| t.join().expect("client thread"))
            .collect();
        (n as f64 / t.elapsed().as_secs_f64(), kept)
    };
    let solo = node::<&str>(&[]);
    let (mut solo_rates, mut cluster_rates) = (Vec::new(), Vec::new());
    // CPU of the node and of its loop thread, over connects and the
    // disconnects that follow (each round until the node has let go).
    let (mut solo_cpu, mut cluster_cpu, mut solo_loop, mut cluster_loop) = (0.0, 0.0, 0.0, 0.0);
    let settle_empty = |admin: SocketAddr| {
        let t = Instant::now();
        while metric(admin, "wsbeat_connections_open") > 0 && t.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    for round in 0..3 {
        let pid = solo.child.id();
        let (c0, l0) = (cpu_secs(pid), loop_cpu_secs(pid));
        let (rate, kept) = connect(solo.addr, format!("solo{round}"));
        solo_rates.push(rate);
        drop(kept);
        settle_empty(solo.admin);
        solo_cpu += cpu_secs(pid) - c0;
        solo_loop += loop_cpu_secs(pid) - l0;
        let pid = a.child.id();
        let (c0, l0) = (cpu_secs(pid), loop_cpu_secs(pid));
        let (rate, kept) = connect(a.addr, format!("warm{round}"));
        cluster_rates.push(rate);
        drop(kept);
        settle_empty(a.admin);
        // The releases reach Redis just after.
        std::thread::sleep(Duration::from_millis(300));
        cluster_cpu += cpu_secs(pid) - c0;
        cluster_loop += loop_cpu_secs(pid) - l0;
        // Let both nodes see their clients leave before the next round.
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(solo);
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (solo_rate, cluster_rate) = (median(&mut solo_rates), median(&mut cluster_rates));
    if std::env::var("CLUSTER_THREAD_CPU").is_ok() {
        for e in std::fs::read_dir(format!("/proc/{}/task", a.child.id()))
            .expect("tasks")
            .flatten()
        {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let comm = stat
                .split_once('(')
                .and_then(|(_, r)| r.split_once(')'))
                .map_or("", |(c, _)| c);
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let f: Vec<&str> = rest.split_whitespace().collect();
            let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            println!("  thread {comm}: {:.2} s", (t(11) + t(12)) / 100.0);
        }
    }
    let per = |secs: f64| secs * 1e6 / (3 * n) as f64;
    println!(
        "CPU per client (connect, bind, disconnect), 3 rounds: event loop {:.1} µs without --cluster, {:.1} µs with; whole node {:.1} µs without, {:.1} µs with (the cluster's helper threads run beside the loop)",
        per(solo_loop),
        per(cluster_loop),
        per(solo_cpu),
        per(cluster_cpu)
    );
    let used_before: u64 = info_field(&r, "memory", "used_memory");
    r.config_resetstat();
    let t = Instant::now();
    let (_, kept) = connect(a.addr, "c".to_string());
    let ids_key_count = || match r.cmd(&["SCARD", "wsbeat:ids:bench-a"]) {
        redis::RespValue::Int(k) => k as usize,
        _ => 0,
    };
    while ids_key_count() < n && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let registered_after = t.elapsed();
    let claim_calls = r.command_calls().get("evalsha").copied().unwrap_or(0);
    let used_after: u64 = info_field(&r, "memory", "used_memory");
    let per_id = used_after.saturating_sub(used_before) as f64 / n as f64;
    println!(
        "connect rate, {n} clients from 4 threads, median of 3 rounds: {solo_rate:.0}/s without --cluster, {cluster_rate:.0}/s with ({:.0}%); all {n} ids in Redis {:.2} s after the first connect",
        100.0 * cluster_rate / solo_rate,
        registered_after.as_secs_f64()
    );
    println!("redis memory per registered id: {per_id:.0} B; EVALSHA calls while connecting: {claim_calls}");

    // 3. Push latency: A's admin API to a client on B, and to one on A.
    let b_flags = cluster("bench-b");
    let b = node(&b_flags);
    let mut remote = Ws::open(b.addr, "target-b");
    let mut local = Ws::open(a.addr, "target-a");
    let t = Instant::now();
    while get(a.admin, "/clients/target-b").0 != 200 && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut admin = TcpStream::connect(a.admin).expect("admin");
    admin.set_nodelay(true).ok();
    let mut measure = |ws: &mut Ws, id: &str| -> Vec<Duration> {
        let path = format!("/clients/{id}/messages");
        let mut lat = Vec::with_capacity(pushes);
        for _ in 0..pushes {
            let t = Instant::now();
            let (status, body) = request(&mut admin, "POST", &path, b"x");
            assert_eq!(status, 202, "{body}");
            let got = ws.read();
            lat.push(t.elapsed());
            assert_eq!(got, b"x");
        }
        lat.sort();
        lat
    };
    let l = measure(&mut local, "target-a");
    let rm = measure(&mut remote, "target-b");
    println!(
        "push latency over {pushes} pushes (admin POST to frame received): local p50 {:?} p99 {:?}; node A to a client on B p50 {:?} p99 {:?}",
        percentile(&l, 0.5),
        percentile(&l, 0.99),
        percentile(&rm, 0.5),
        percentile(&rm, 0.99)
    );

    // 4. Scaled to a million clients over ten nodes.
    let lease_renewals = 3.0 / 10.0; // every third of the default 10 s lease
    let periodic = idle as f64 / window.as_secs_f64();
    println!(
        "a million clients over ten nodes: {:.0} MiB of Redis for ids ({per_id:.0} B each); per node, {:.1} commands/s of upkeep (measured {periodic:.1}/s with a 10 s lease: {lease_renewals:.1} renewals, a probe, an epoch check and the node list per second) plus 2 script calls per connect+disconnect and 1 per push to another node",
        1e6 * per_id / (1024.0 * 1024.0),
        periodic,
    );
    drop(kept);
}

fn info_field(r: &RedisServer, section: &str, field: &str) -> u64 {
    let text = r.cmd(&["INFO", section]).as_string().unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}
