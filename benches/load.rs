//! Load benchmark: wsbeat against a tokio-tungstenite echo server, side by
//! side in one run, both as child processes measured the same way through
//! `/proc`, driven over loopback by a cheap mio load generator.
//!
//! Run: `cargo bench --bench load` (about five minutes). Quick smoke run:
//! `LOAD_SECS=2 LOAD_IDLE_N=1000 cargo bench --bench load`.
//!
//! Environment:
//! - `LOAD_SECS` (10): idle hold and echo measurement time, in seconds.
//! - `LOAD_WARMUP_SECS` (1): echo traffic before measuring starts.
//! - `LOAD_IDLE_N` ("10000,max"): idle connection counts; `max` is the hard
//!   open-file limit minus 200 (each side needs one descriptor per connection).
//! - `LOAD_ECHO` ("100x16,1000x1"): echo scenarios, connections x in flight.
//! - `LOAD_PIN` (1): 0 runs everything unpinned.
//! - `LOAD_WSBEAT_BIN` (this build's `wsbeat`): another wsbeat binary to
//!   measure, e.g. one built from the commit before a change.
//! - `LOAD_THREADS` ("1,2"): wsbeat's `--threads` values, each a column. A
//!   wsbeat with more than one loop runs on every CPU (`taskset -c 0-N`),
//!   the generator's included: on a 2-CPU machine they compete.
//! - `LOAD_MULTI_LOOP_CPUS` (`0-N`): the `taskset -c` list for a wsbeat with
//!   more than one loop instead (`0`: on the servers' CPU, apart from the
//!   generator, which measures what several loops cost rather than gain).
//! - `LOAD_TLS` ("0,1"): `0` runs the scenarios over plain TCP (`ws://`),
//!   `1` over TLS (`wss://`, the same scenarios named `wss …`), `0,1` both.
//!   A self-signed ECDSA P-256 certificate for `localhost` is made at start
//!   (`target/load-bench-tls/`); both servers serve it, the generator trusts
//!   exactly it. Every TLS connection is a full TLS 1.3 handshake (X25519,
//!   no resumption), so the connect rows then cost handshake + upgrade.
//! - `LOAD_TLS_SUITE` (`TLS13_AES_128_GCM_SHA256`, what browsers offer
//!   first): the cipher suite the generator prefers; both servers follow
//!   the client's order. rustls clients prefer `TLS13_AES_256_GCM_SHA384`,
//!   whose SHA-384 key schedule costs the server more per handshake.
//!
//! Scenarios, each against wsbeat then the peer, each on a fresh server:
//! - idle N: N connections upgrade and send one `heartbeat` (then one every
//!   30 s), held LOAD_SECS. Connect rate over the ramp (first `connect` to
//!   last 101), server CPU per connection over the ramp (+200 ms settle),
//!   RSS growth per connection = (VmRSS after the hold − VmRSS before any
//!   connection) / N.
//! - echo C×K: C connections each keeping K 32-byte text messages in flight.
//!   Messages/s, round-trip p50/p99, server CPU per echoed message.
//!
//! The wss scenarios are the same, over TLS: wsbeat with `--tls-cert
//! --tls-key`, the peer with tokio-rustls in front of tokio-tungstenite.
//!
//! Pinning: with `taskset` and 2+ CPUs, both servers run on CPU 0
//! (`taskset -c 0`) and the generator on CPU 1 (this process re-executes
//! itself under `taskset -c 1`). Servers are also started under
//! `setpriv --pdeathsig KILL` so that they die with the bench even on SIGKILL;
//! on any other exit, panics included, a guard kills them.
//!
//! Output: one table on stdout, also written as markdown to
//! `target/load-bench.md`; server logs go to `target/load-bench-logs/`.
//! Under `cargo test --benches` (no `--bench` argument) it does nothing.

#[path = "load/generator.rs"]
mod generator;
#[path = "load/machine.rs"]
mod machine;
#[path = "load/peer.rs"]
mod peer;
#[path = "load/procs.rs"]
mod procs;

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use generator::{Gen, Mode};
use machine::{clock_ticks_per_sec, cpu_count, cpu_model, cpus_allowed, group, has_program, kernel, mem_total_mib};
use procs::{Kind, Launch, Opts, Server, TlsFiles};
use rustls::ClientConfig;

/// Descriptors kept free under the hard limit in the `max` idle scenario.
const FD_MARGIN: u64 = 200;
/// Upper bound on LOAD_SECS and LOAD_WARMUP_SECS: every loop is bounded.
const MAX_SECS: u64 = 600;
const SERVER_CPU: &str = "0";
const GENERATOR_CPU: &str = "1";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--peer-server") {
        let tls = args
            .iter()
            .position(|a| a == "--tls")
            .and_then(|t| Some((Path::new(args.get(t + 1)?), Path::new(args.get(t + 2)?))));
        return match args.get(i + 1).and_then(|p| p.parse().ok()) {
            Some(port) => peer::run(port, tls),
            None => {
                eprintln!("--peer-server needs a port (then, for wss://, --tls CERT KEY)");
                ExitCode::FAILURE
            }
        };
    }
    if !args.iter().any(|a| a == "--bench") {
        println!("load: skipped (run it with `cargo bench --bench load`)");
        return ExitCode::SUCCESS;
    }
    if let Some(code) = machine::run_pinned("LOAD", GENERATOR_CPU, &args) {
        return code;
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nload bench FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Config {
    secs: u64,
    warmup_secs: u64,
    idle_ns: Vec<usize>,
    echo: Vec<(usize, usize)>,
    threads: Vec<usize>,
    /// Plain TCP (`false`) and/or TLS (`true`), in this order.
    tls: Vec<bool>,
}

fn config(max_n: usize) -> Result<Config, String> {
    let secs = env_u64("LOAD_SECS", 10)?;
    let warmup_secs = env_u64("LOAD_WARMUP_SECS", 1)?;
    let idle = env::var("LOAD_IDLE_N").unwrap_or_else(|_| "10000,max".into());
    let mut idle_ns = Vec::new();
    for part in idle.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let n = if part == "max" {
            max_n
        } else {
            part.parse().map_err(|_| format!("LOAD_IDLE_N: bad count {part:?}"))?
        };
        if n == 0 || n > max_n {
            return Err(format!(
                "LOAD_IDLE_N: {n} is not in 1..={max_n} (hard open-file limit − {FD_MARGIN})"
            ));
        }
        idle_ns.push(n);
    }
    let echo_spec = env::var("LOAD_ECHO").unwrap_or_else(|_| "100x16,1000x1".into());
    let mut echo = Vec::new();
    for part in echo_spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let parsed = part
            .split_once('x')
            .and_then(|(c, k)| Some((c.parse::<usize>().ok()?, k.parse::<usize>().ok()?)));
        match parsed {
            Some((c, k)) if (1..=max_n).contains(&c) && (1..=1024).contains(&k) => echo.push((c, k)),
            _ => {
                return Err(format!(
                    "LOAD_ECHO: bad scenario {part:?} (want CONNSxINFLIGHT, e.g. 100x16)"
                ));
            }
        }
    }
    let mut threads = Vec::new();
    for part in env::var("LOAD_THREADS").unwrap_or_else(|_| "1,2".into()).split(',') {
        match part.trim().parse::<usize>() {
            Ok(n) if (1..=256).contains(&n) => threads.push(n),
            _ => return Err(format!("LOAD_THREADS: bad value {part:?} (want e.g. 1,2)")),
        }
    }
    let mut tls = Vec::new();
    for part in env::var("LOAD_TLS").unwrap_or_else(|_| "0,1".into()).split(',') {
        match part.trim() {
            "0" if !tls.contains(&false) => tls.push(false),
            "1" if !tls.contains(&true) => tls.push(true),
            _ => return Err(format!("LOAD_TLS: bad value {part:?} (want 0, 1 or 0,1)")),
        }
    }
    Ok(Config {
        secs,
        warmup_secs,
        idle_ns,
        echo,
        threads,
        tls,
    })
}

fn env_u64(name: &str, default: u64) -> Result<u64, String> {
    match env::var(name) {
        Err(_) => Ok(default),
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(n) if n <= MAX_SECS => Ok(n),
            _ => Err(format!(
                "{name}: expected a whole number of seconds up to {MAX_SECS}, got {v:?}"
            )),
        },
    }
}

/// One row of the table: a metric measured on wsbeat (at each `--threads`)
/// and on the peer.
struct Row {
    scenario: String,
    metric: &'static str,
    decimals: usize,
    wsbeat: Vec<f64>,
    peer: f64,
}

/// One server's results in one scenario, in row order.
type Measured = Vec<(&'static str, usize, f64)>;

fn run() -> Result<(), String> {
    let started = Instant::now();
    let hard = machine::raise_nofile()?;
    let max_n = hard.saturating_sub(FD_MARGIN).min(1_000_000) as usize;
    let cfg = config(max_n)?;

    let built_bin = PathBuf::from(env!("CARGO_BIN_EXE_wsbeat"));
    let target_dir = machine::target_dir(&built_bin)?;
    // Another build of wsbeat (e.g. the commit before a change) in its place.
    let wsbeat_bin = env::var_os("LOAD_WSBEAT_BIN").map_or(built_bin, PathBuf::from);
    let log_dir = target_dir.join("load-bench-logs");
    fs::create_dir_all(&log_dir).map_err(|e| format!("{}: {e}", log_dir.display()))?;
    let pinned = env::var_os("LOAD_GENERATOR_PINNED").is_some();
    let launch = Launch {
        wsbeat_bin,
        self_exe: env::current_exe().map_err(|e| format!("current_exe: {e}"))?,
        server_cpu: pinned.then(|| SERVER_CPU.to_string()),
        multi_loop_cpus: pinned.then(|| {
            env::var("LOAD_MULTI_LOOP_CPUS").unwrap_or_else(|_| format!("0-{}", cpu_count().saturating_sub(1)))
        }),
        setpriv: has_program("setpriv"),
        log_dir: log_dir.clone(),
    };
    let clk_tck = clock_ticks_per_sec();
    let self_cpus = cpus_allowed("self");
    eprintln!(
        "load: LOAD_SECS={} warm-up {} s, idle N {:?}, echo {:?}, TLS {:?}; generator on CPUs {self_cpus}",
        cfg.secs, cfg.warmup_secs, cfg.idle_ns, cfg.echo, cfg.tls
    );
    // One certificate for the whole run, both servers, every scenario.
    let tls = if cfg.tls.contains(&true) {
        let suite = env::var("LOAD_TLS_SUITE").unwrap_or_else(|_| "TLS13_AES_128_GCM_SHA256".into());
        Some(make_certificate(&target_dir.join("load-bench-tls"), &suite)?)
    } else {
        None
    };

    let mut rows: Vec<Row> = Vec::new();
    let mut server_cpus = String::new();
    // The wsbeat runs (one per --threads), then the peer, per scenario.
    let mut add = |scenario: String, mut runs: Vec<Measured>| {
        let p = runs.pop().unwrap_or_default();
        for (i, (metric, decimals, pv)) in p.into_iter().enumerate() {
            rows.push(Row {
                scenario: scenario.clone(),
                metric,
                decimals,
                wsbeat: runs.iter().map(|w| w.get(i).map_or(0.0, |m| m.2)).collect(),
                peer: pv,
            });
        }
    };
    let servers: Vec<(Kind, usize)> = cfg
        .threads
        .iter()
        .map(|&t| (Kind::Wsbeat, t))
        .chain([(Kind::Peer, 1)])
        .collect();
    let mut wire = Wire::default();
    for &over_tls in &cfg.tls {
        let (opts, prefix) = match (&tls, over_tls) {
            (Some((files, client)), true) => {
                wire.client = Some(client.clone());
                let opts = Opts {
                    tls: Some(files.clone()),
                    ..Opts::default()
                };
                (opts, "wss ")
            }
            _ => {
                wire.client = None;
                (Opts::default(), "")
            }
        };
        let tag = if over_tls { "wss-" } else { "" };
        for &n in &cfg.idle_ns {
            let mut runs = Vec::new();
            for &(kind, threads) in &servers {
                let mut srv = Server::start_with(&launch, kind, &format!("{tag}idle-{n}-t{threads}"), threads, &opts)?;
                if threads == 1 {
                    server_cpus = cpus_allowed(&srv.pid().to_string());
                }
                runs.push(idle(&mut srv, &mut wire, n, cfg.secs, clk_tck)?);
            }
            add(format!("{prefix}idle {n}"), runs);
        }
        for &(c, k) in &cfg.echo {
            let mut runs = Vec::new();
            for &(kind, threads) in &servers {
                let tag = format!("{tag}echo-{c}x{k}-t{threads}");
                let mut srv = Server::start_with(&launch, kind, &tag, threads, &opts)?;
                runs.push(echo(&mut srv, &mut wire, c, k, cfg.warmup_secs, cfg.secs, clk_tck)?);
            }
            add(format!("{prefix}echo {c}×{k}"), runs);
        }
    }

    let elapsed = started.elapsed();
    let mut report = render(&rows, &cfg, clk_tck, &server_cpus, &self_cpus, launch.setpriv, elapsed);
    if cfg.tls.contains(&true) {
        report += &tls_setup(&wire);
    }
    println!("\n{report}");
    let md = target_dir.join("load-bench.md");
    fs::write(&md, &report).map_err(|e| format!("{}: {e}", md.display()))?;
    eprintln!("load: table written to {}", md.display());
    Ok(())
}

/// How the generator connects: plain TCP, or TLS with this configuration;
/// and what the TLS handshakes of the run negotiated, each different
/// outcome once.
#[derive(Default)]
struct Wire {
    client: Option<Arc<ClientConfig>>,
    negotiated: Vec<String>,
}

impl Wire {
    fn generator(&self, srv: &Server, mode: Mode) -> Result<Gen, String> {
        let mut g = Gen::new(srv.addr, mode)?;
        if let Some(config) = &self.client {
            g.set_tls(config.clone());
        }
        Ok(g)
    }

    /// After a ramp: notes what the first connection negotiated.
    fn note(&mut self, g: &Gen, who: &str) {
        if let Some(t) = g.tls_summary()
            && !self.negotiated.contains(&t)
        {
            eprintln!("  {who}: {t}");
            self.negotiated.push(t);
        }
    }
}

/// Makes a self-signed certificate for `localhost` and 127.0.0.1 (rcgen's
/// default key: ECDSA P-256) and writes it and its key to `dir`; returns
/// the files, for the servers, and the generator's TLS configuration
/// (preferring `suite`).
fn make_certificate(dir: &Path, suite: &str) -> Result<(TlsFiles, Arc<ClientConfig>), String> {
    let names = vec![generator::SERVER_NAME.to_string(), "127.0.0.1".to_string()];
    let made = rcgen::generate_simple_self_signed(names).map_err(|e| format!("making a certificate: {e}"))?;
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let files = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    fs::write(&files.cert, made.cert.pem()).map_err(|e| format!("{}: {e}", files.cert.display()))?;
    fs::write(&files.key, made.signing_key.serialize_pem()).map_err(|e| format!("{}: {e}", files.key.display()))?;
    let client =
        generator::client_config(made.cert.der().clone(), suite).map_err(|e| format!("LOAD_TLS_SUITE: {e}"))?;
    Ok((files, client))
}

fn idle(srv: &mut Server, wire: &mut Wire, n: usize, secs: u64, clk_tck: f64) -> Result<Measured, String> {
    let who = srv.kind.label();
    let rss0 = srv.rss_kib()?;
    let cpu0 = srv.cpu_ticks()?;
    let gen0 = procs::proc_cpu_ticks("/proc/self/stat")?;
    let mut g = wire.generator(srv, Mode::Idle)?;
    let ramp = g.ramp(n, srv)?;
    let gen1 = procs::proc_cpu_ticks("/proc/self/stat")?;
    wire.note(&g, who);
    // Let the server take in the last heartbeats before reading its CPU time.
    g.run_for(Duration::from_millis(200), srv)?;
    let cpu1 = srv.cpu_ticks()?;
    g.run_for(Duration::from_secs(secs), srv)?;
    srv.check_alive()?;
    let rss1 = srv.rss_kib()?;
    if g.open() != n {
        return Err(format!("{who}: {} of {n} connections open after the hold", g.open()));
    }
    drop(g);
    let rate = n as f64 / ramp.as_secs_f64();
    let cpu_us = (cpu1 - cpu0) as f64 / clk_tck * 1e6 / n as f64;
    let rss_per_conn = (rss1 as f64 - rss0 as f64) * 1024.0 / n as f64;
    let gen_busy = (gen1 - gen0) as f64 / clk_tck / ramp.as_secs_f64() * 100.0;
    eprintln!(
        "  {}idle {n:>6} {who:<17} ramp {:.2} s ({rate:.0}/s), CPU {:.2} s, RSS {:.1} → {:.1} MiB ({rss_per_conn:.0} B/conn)",
        if wire.client.is_some() { "wss " } else { "" },
        ramp.as_secs_f64(),
        (cpu1 - cpu0) as f64 / clk_tck,
        rss0 as f64 / 1024.0,
        rss1 as f64 / 1024.0
    );
    Ok(vec![
        ("connect rate (conn/s)", 0, rate),
        ("server CPU per connection (µs)", 1, cpu_us),
        ("server RSS growth per connection (bytes)", 0, rss_per_conn),
        ("server RSS with N held (MiB)", 1, rss1 as f64 / 1024.0),
        ("generator CPU busy during the ramp (%)", 0, gen_busy),
    ])
}

fn echo(
    srv: &mut Server,
    wire: &mut Wire,
    conns: usize,
    in_flight: usize,
    warmup: u64,
    secs: u64,
    clk_tck: f64,
) -> Result<Measured, String> {
    let who = srv.kind.label();
    let mut g = wire.generator(srv, Mode::Echo { in_flight })?;
    g.ramp(conns, srv)?;
    wire.note(&g, who);
    g.run_for(Duration::from_secs(warmup), srv)?;
    let gen0 = procs::proc_cpu_ticks("/proc/self/stat")?;
    let cpu0 = srv.cpu_ticks()?;
    let t0 = Instant::now();
    g.start_recording();
    g.run_for(Duration::from_secs(secs), srv)?;
    let mut stats = g.finish();
    let wall = t0.elapsed().as_secs_f64();
    let cpu1 = srv.cpu_ticks()?;
    let gen1 = procs::proc_cpu_ticks("/proc/self/stat")?;
    srv.check_alive()?;
    drop(g);
    if stats.echoes == 0 {
        return Err(format!("{who}: no message came back in {secs} s"));
    }
    stats.rtt_ns.sort_unstable();
    let pct = |p: usize| stats.rtt_ns[(stats.rtt_ns.len() * p / 100).min(stats.rtt_ns.len() - 1)] as f64 / 1000.0;
    let cpu_s = (cpu1 - cpu0) as f64 / clk_tck;
    let rate = stats.echoes as f64 / wall;
    eprintln!(
        "  {}echo {conns}×{in_flight} {who:<17} {rate:.0} msg/s, p50 {:.0} µs, p99 {:.0} µs, server CPU {:.0}%, generator CPU {:.0}%",
        if wire.client.is_some() { "wss " } else { "" },
        pct(50),
        pct(99),
        cpu_s / wall * 100.0,
        (gen1 - gen0) as f64 / clk_tck / wall * 100.0
    );
    Ok(vec![
        ("messages/s", 0, rate),
        ("round trip p50 (µs)", 0, pct(50)),
        ("round trip p99 (µs)", 0, pct(99)),
        ("server CPU per message (ns)", 0, cpu_s * 1e9 / stats.echoes as f64),
        ("server CPU busy (%)", 0, cpu_s / wall * 100.0),
        (
            "generator CPU busy (%)",
            0,
            (gen1 - gen0) as f64 / clk_tck / wall * 100.0,
        ),
    ])
}

fn render(
    rows: &[Row],
    cfg: &Config,
    clk_tck: f64,
    server_cpus: &str,
    gen_cpus: &str,
    setpriv: bool,
    elapsed: Duration,
) -> String {
    let mut s = String::new();
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .stderr(Stdio::null())
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let vars: Vec<String> = [
        "LOAD_SECS",
        "LOAD_WARMUP_SECS",
        "LOAD_IDLE_N",
        "LOAD_ECHO",
        "LOAD_PIN",
        "LOAD_THREADS",
        "LOAD_MULTI_LOOP_CPUS",
        "LOAD_WSBEAT_BIN",
        "LOAD_TLS",
        "LOAD_TLS_SUITE",
    ]
    .iter()
    .filter_map(|k| env::var(k).ok().map(|v| format!("{k}={v}")))
    .collect();
    let command = if vars.is_empty() {
        "cargo bench --bench load".to_string()
    } else {
        format!("{} cargo bench --bench load", vars.join(" "))
    };
    s += &format!("## Load: wsbeat vs tokio-tungstenite — {date}\n\n");
    s += &format!("Command: `{command}` ({:.0} s)\n\n", elapsed.as_secs_f64());
    s += &format!(
        "Machine: {}, {} CPUs, {} MiB RAM, {}\n\n",
        cpu_model(),
        cpu_count(),
        mem_total_mib(),
        kernel()
    );
    let loops = |t: usize| {
        if t == 1 {
            "1 loop".to_string()
        } else {
            format!("{t} loops")
        }
    };
    s += "| scenario | metric |";
    for &t in &cfg.threads {
        s += &format!(" wsbeat, {} |", loops(t));
    }
    s += &format!(" tokio-tungstenite | ratio (wsbeat {}/peer) |\n", loops(cfg.threads[0]));
    s += "|---|---|";
    s += &"---:|".repeat(cfg.threads.len() + 2);
    s += "\n";
    for r in rows {
        let first = r.wsbeat.first().copied().unwrap_or(0.0);
        let ratio = if r.peer != 0.0 {
            format!("{:.2}", first / r.peer)
        } else {
            "–".into()
        };
        s += &format!("| {} | {} |", r.scenario, r.metric);
        for &w in &r.wsbeat {
            s += &format!(" {} |", group(w, r.decimals));
        }
        s += &format!(" {} | {} |\n", group(r.peer, r.decimals), ratio);
    }
    s += &format!(
        "\nSetup: servers on CPUs {server_cpus} (wsbeat with more than one loop on every CPU, sharing the generator's), \
         load generator (one mio thread, this bench) on CPUs {gen_cpus}{}; \
         loopback only, client sockets bound round-robin to 127.0.0.1–127.0.0.{}. \
         Each scenario starts a fresh server. wsbeat: release binary, `--echo --max-connections 100000 \
         --heartbeat-interval 30s --heartbeat-timeout 60s --threads N`, RUST_LOG=warn. tokio-tungstenite 0.30 echo server on a \
         current-thread runtime, `read_buffer_size` {} B (default write buffer, flushed per message), no compression. \
         Idle: held {} s after the ramp; CPU per connection is over the ramp. Echo: 32-byte text messages, \
         {} s warm-up then {} s measured. CPU time is utime+stime from /proc/PID/stat at {} ticks/s (±1 tick per reading); \
         RSS is VmRSS from /proc/PID/status (kernel socket buffers are not in it). Ratio above 1: wsbeat's \
         number is higher, which is better for conn/s and messages/s and worse for the other rows.\n",
        if setpriv {
            ", servers under `setpriv --pdeathsig KILL`"
        } else {
            ""
        },
        generator::SOURCE_ADDRS,
        peer::READ_BUFFER_SIZE,
        cfg.secs,
        cfg.warmup_secs,
        cfg.secs,
        clk_tck
    );
    s
}

/// The wss rows' setup, for the report.
fn tls_setup(wire: &Wire) -> String {
    format!(
        "\nwss rows: the same scenarios over TLS, one self-signed ECDSA P-256 certificate for both servers \
         (wsbeat `--tls-cert --tls-key`: rustls's unbuffered API; the peer: tokio-rustls, rustls's buffered \
         connection). Both on aws-lc-rs with TLS 1.3 and 1.2, ALPN `http/1.1`, one stateless TLS 1.3 ticket per \
         connection. The generator (rustls client) offers the same (its preferred suite first: `LOAD_TLS_SUITE`), \
         trusts exactly that certificate and never resumes: each connection is a full handshake, then the \
         upgrade. Negotiated: {}.\n",
        wire.negotiated.join("; ")
    )
}
