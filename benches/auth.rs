//! Auth and forwarding benchmark (SPEC §13): what JWT connection tokens add
//! to the cost of a connection, and what `--forward` adds to the cost of a
//! client message. The wsbeat binary of this build runs as a child process,
//! measured through `/proc`, driven over loopback by the load bench's mio
//! generator (`benches/load/`).
//!
//! Run: `cargo bench --bench auth` (about two minutes once built). Quick
//! smoke run (seconds):
//! `AUTH_ROUNDS=1 AUTH_N=500 AUTH_SECS=1 AUTH_FWD_MSGS=20000 cargo bench --bench auth`.
//!
//! Environment:
//! - `AUTH_N` (10000): connections of the connect scenarios.
//! - `AUTH_SECS` (5): idle hold after the ramp, in seconds.
//! - `AUTH_ROUNDS` (3): every scenario this many times, interleaved (a round
//!   runs them all once); the tables give medians, and the forwarding
//!   counts summed over the rounds.
//! - `AUTH_ALGS` ("open,HS256,ES256,EdDSA"): the connect scenarios; `open` is
//!   no auth (`?client_id=`), `RS256` may be added (signing 10,000 RSA
//!   tokens takes the bench a while, before the server starts).
//! - `AUTH_FWD_CONNS` (100), `AUTH_FWD_INFLIGHT` (16): the forwarding load,
//!   connections × echo messages kept in flight on each.
//! - `AUTH_FWD_MSGS` (1000000): messages sent in the measured burst, in all.
//! - `AUTH_FWD_WARMUP` (a tenth of AUTH_FWD_MSGS): messages of an unmeasured
//!   burst before it (the forwarder's HTTP connection made, buffers grown).
//! - `AUTH_FWD_BUFFER`, `AUTH_FWD_TIMEOUT`: passed as `--forward-buffer`
//!   and `--forward-timeout` when set (default: wsbeat's, 16MiB and 30s).
//! - `AUTH_PIN` (1): 0 runs everything unpinned.
//! - `AUTH_WSBEAT_BIN` (this build's `wsbeat`): another wsbeat binary.
//!
//! Scenarios, each run on a fresh wsbeat (`--threads 1 --echo`):
//! - connect, per entry of AUTH_ALGS: AUTH_N connections upgrade (with
//!   `?token=JWT`, `sub` = `dev-<i>`, `exp` an hour ahead; or with
//!   `?client_id=dev-<i>` for `open`) and send one `heartbeat`, held
//!   AUTH_SECS. Tokens are signed in this process before the server starts.
//!   Connect rate over the ramp (first `connect` to last 101), server CPU per
//!   connection over the ramp (+200 ms settle), RSS growth per connection =
//!   (VmRSS after the hold − VmRSS before any connection) / N. The admin
//!   `/metrics` must then show N clients online and no auth failure.
//! - forward, without and with `--forward http://127.0.0.1:SINK/`: a
//!   warm-up burst, then AUTH_FWD_MSGS 32-byte text messages over
//!   AUTH_FWD_CONNS connections with AUTH_FWD_INFLIGHT in flight on each,
//!   echoed (`--echo`, so the generator keeps its window) and, in the second
//!   run, forwarded. The sink is a minimal HTTP/1.1 server on a thread of
//!   this process (keep-alive, 204 to every POST, items counted by their
//!   `"conn":` key). Messages/s over the burst (first send to last echo);
//!   server CPU per message from the burst's start until the sink has every
//!   item (or the forwarder has settled all it holds); delivery lag = last
//!   item at the sink − last echo at the generator; the sink's item count
//!   must be the messages sent, less `wsbeat_forward_dropped_total`.
//!
//! Pinning as in the load bench: wsbeat on CPU 0 (`taskset -c 0`, its
//! forwarding thread included), this process (generator and sink) on CPU 1;
//! wsbeat under `setpriv --pdeathsig KILL`, and killed by a guard on every
//! other exit.
//!
//! Output: tables on stdout, also written as markdown to
//! `target/auth-bench.md`; server logs and key files go to
//! `target/auth-bench-logs/`. Under `cargo test --benches` (no `--bench`
//! argument) it does nothing.

#[path = "load/generator.rs"]
#[allow(dead_code)] // the load bench's generator; this bench uses part of it
mod generator;
#[path = "load/machine.rs"]
mod machine;
#[path = "load/procs.rs"]
#[allow(dead_code)] // the load bench's processes; the peer server is not used here
mod procs;

use std::env;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use generator::{Gen, Mode};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use machine::{clock_ticks_per_sec, cpu_count, cpu_model, cpus_allowed, group, has_program, kernel, mem_total_mib};
use procs::{Kind, Launch, Opts, Server};

/// Descriptors kept free under the hard limit.
const FD_MARGIN: u64 = 200;
/// wsbeat's `--max-connections` in `procs.rs`.
const SERVER_MAX_CONNECTIONS: u64 = 100_000;
const MAX_SECS: u64 = 600;
const MAX_MSGS: u64 = 20_000_000;
const SERVER_CPU: &str = "0";
const GENERATOR_CPU: &str = "1";
/// The HS256 secret (32 bytes, as RFC 7518 §3.2 asks of HS256).
const SECRET: &str = "wsbeat-auth-bench-secret-0123456";
/// How long a burst of echo messages may take before the bench fails.
const BURST_TIMEOUT: Duration = Duration::from_secs(240);
/// After the last echo: how long the sink may take to receive the rest.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// No new item at the sink for this long: ask the server whether the
/// forwarder still holds any.
const DRAIN_STALL: Duration = Duration::from_secs(2);
/// The forwarding thread's name (`/proc/PID/task/TID/comm`).
const FORWARD_THREAD: &str = "wsbeat-forward";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("auth: skipped (run it with `cargo bench --bench auth`)");
        return ExitCode::SUCCESS;
    }
    if let Some(code) = machine::run_pinned("AUTH", GENERATOR_CPU, &args) {
        return code;
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nauth bench FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

/// How the connections of a connect scenario identify themselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    Open,
    Hs256,
    Es256,
    EdDsa,
    Rs256,
}

impl Scheme {
    fn parse(s: &str) -> Option<Scheme> {
        Some(match s.to_ascii_lowercase().as_str() {
            "open" | "none" => Scheme::Open,
            "hs256" => Scheme::Hs256,
            "es256" => Scheme::Es256,
            "eddsa" | "ed25519" => Scheme::EdDsa,
            "rs256" => Scheme::Rs256,
            _ => return None,
        })
    }

    fn label(self) -> &'static str {
        match self {
            Scheme::Open => "no auth",
            Scheme::Hs256 => "HS256",
            Scheme::Es256 => "ES256",
            Scheme::EdDsa => "EdDSA",
            Scheme::Rs256 => "RS256",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Scheme::Open => "open",
            Scheme::Hs256 => "hs256",
            Scheme::Es256 => "es256",
            Scheme::EdDsa => "eddsa",
            Scheme::Rs256 => "rs256",
        }
    }
}

struct Config {
    n: usize,
    secs: u64,
    rounds: u64,
    schemes: Vec<Scheme>,
    fwd_conns: usize,
    fwd_in_flight: usize,
    fwd_msgs: u64,
    fwd_warmup: u64,
    fwd_buffer: Option<String>,
    fwd_timeout: Option<String>,
}

fn config(max_n: usize) -> Result<Config, String> {
    let n = env_num("AUTH_N", 10_000, 1, max_n as u64)? as usize;
    let secs = env_num("AUTH_SECS", 5, 0, MAX_SECS)?;
    let rounds = env_num("AUTH_ROUNDS", 3, 1, 20)?;
    let mut schemes = Vec::new();
    for part in env::var("AUTH_ALGS")
        .unwrap_or_else(|_| "open,HS256,ES256,EdDSA".into())
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let s = Scheme::parse(part)
            .ok_or_else(|| format!("AUTH_ALGS: unknown {part:?} (want open, HS256, ES256, EdDSA, RS256)"))?;
        if !schemes.contains(&s) {
            schemes.push(s);
        }
    }
    let fwd_conns = env_num("AUTH_FWD_CONNS", 100, 1, 10_000.min(max_n as u64))? as usize;
    let fwd_in_flight = env_num("AUTH_FWD_INFLIGHT", 16, 1, 1024)? as usize;
    let fwd_msgs = env_num("AUTH_FWD_MSGS", 1_000_000, 1, MAX_MSGS)?;
    let fwd_warmup = env_num("AUTH_FWD_WARMUP", fwd_msgs / 10, 0, MAX_MSGS)?;
    let text = |name: &str| {
        env::var(name)
            .ok()
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    Ok(Config {
        n,
        secs,
        rounds,
        schemes,
        fwd_conns,
        fwd_in_flight,
        fwd_msgs,
        fwd_warmup,
        fwd_buffer: text("AUTH_FWD_BUFFER"),
        fwd_timeout: text("AUTH_FWD_TIMEOUT"),
    })
}

fn env_num(name: &str, default: u64, min: u64, max: u64) -> Result<u64, String> {
    match env::var(name) {
        Err(_) => Ok(default),
        Ok(v) => match v.trim().replace('_', "").parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(format!("{name}: expected a whole number in {min}..={max}, got {v:?}")),
        },
    }
}

/// One table row: a metric in each column (`None`: does not apply).
struct Row {
    metric: String,
    decimals: usize,
    values: Vec<Option<f64>>,
}

fn run() -> Result<(), String> {
    let started = Instant::now();
    let hard = machine::raise_nofile()?;
    let max_n = hard.saturating_sub(FD_MARGIN).min(SERVER_MAX_CONNECTIONS) as usize;
    let cfg = config(max_n)?;

    let built_bin = PathBuf::from(env!("CARGO_BIN_EXE_wsbeat"));
    let target_dir = machine::target_dir(&built_bin)?;
    let wsbeat_bin = env::var_os("AUTH_WSBEAT_BIN").map_or(built_bin, PathBuf::from);
    let log_dir = target_dir.join("auth-bench-logs");
    fs::create_dir_all(&log_dir).map_err(|e| format!("{}: {e}", log_dir.display()))?;
    let pinned = env::var_os("AUTH_GENERATOR_PINNED").is_some();
    let launch = Launch {
        wsbeat_bin,
        self_exe: env::current_exe().map_err(|e| format!("current_exe: {e}"))?,
        server_cpu: pinned.then(|| SERVER_CPU.to_string()),
        multi_loop_cpus: None,
        setpriv: has_program("setpriv"),
        log_dir: log_dir.clone(),
    };
    let clk_tck = clock_ticks_per_sec();
    let self_cpus = cpus_allowed("self");
    eprintln!(
        "auth: N={} AUTH_SECS={} schemes {:?}; forward {}×{} with {} messages (+{} warm-up); generator on CPUs {self_cpus}",
        cfg.n, cfg.secs, cfg.schemes, cfg.fwd_conns, cfg.fwd_in_flight, cfg.fwd_msgs, cfg.fwd_warmup
    );

    // Tokens for every scheme, before any server starts.
    let mut creds = Vec::new();
    let mut signing = Vec::new();
    for &scheme in &cfg.schemes {
        let t = Instant::now();
        let (queries, args) = credentials(scheme, cfg.n, &log_dir)?;
        let sign_s = t.elapsed().as_secs_f64();
        if scheme != Scheme::Open {
            eprintln!(
                "  signed {} {} tokens in {:.2} s ({:.1} µs each)",
                cfg.n,
                scheme.label(),
                sign_s,
                sign_s * 1e6 / cfg.n as f64
            );
            signing.push(format!("{} {:.1} µs", scheme.label(), sign_s * 1e6 / cfg.n as f64));
        }
        creds.push((scheme, queries, args));
    }

    let mut connect_runs: Vec<(Scheme, Vec<Connected>)> = cfg.schemes.iter().map(|&s| (s, Vec::new())).collect();
    let mut fwd_runs: [Vec<Forwarded>; 2] = [Vec::new(), Vec::new()];
    let mut server_cpus = String::from("?");
    for round in 1..=cfg.rounds {
        if cfg.rounds > 1 {
            eprintln!("round {round} of {}", cfg.rounds);
        }
        // 1. Connect + upgrade, per scheme.
        for ((scheme, queries, args), (_, runs)) in creds.iter().zip(&mut connect_runs) {
            let admin = SocketAddr::from(([127, 0, 0, 1], procs::free_port()?));
            let opts = Opts {
                admin_listen: Some(admin),
                args: args.clone(),
                ..Opts::default()
            };
            let tag = format!("connect-{}-r{round}", scheme.tag());
            let mut srv = Server::start_with(&launch, Kind::Wsbeat, &tag, 1, &opts)?;
            server_cpus = cpus_allowed(&srv.pid().to_string());
            let r = connect(&mut srv, admin, *scheme, queries.clone(), cfg.n, cfg.secs, clk_tck)
                .map_err(|e| format!("connect {}: {e}", scheme.label()))?;
            runs.push(r);
        }
        // 2. Echo, then echo + forward.
        for (forward, runs) in [false, true].into_iter().zip(&mut fwd_runs) {
            let r = forwarding(&launch, &cfg, forward, round, clk_tck)
                .map_err(|e| format!("{}: {e}", if forward { "echo + forward" } else { "echo" }))?;
            runs.push(r);
        }
    }

    let elapsed = started.elapsed();
    let report = render(
        &cfg,
        &connect_runs,
        &fwd_runs,
        &Env {
            clk_tck,
            server_cpus,
            gen_cpus: self_cpus,
            setpriv: launch.setpriv,
            signing,
            elapsed,
        },
    );
    println!("\n{report}");
    let md = target_dir.join("auth-bench.md");
    fs::write(&md, &report).map_err(|e| format!("{}: {e}", md.display()))?;
    eprintln!("auth: table written to {}", md.display());
    Ok(())
}

/// The upgrade query of each connection, and the server flags that go with
/// them. Signing happens here, before any server runs.
fn credentials(scheme: Scheme, n: usize, dir: &Path) -> Result<(Vec<String>, Vec<String>), String> {
    if scheme == Scheme::Open {
        return Ok(((0..n).map(|i| format!("client_id=dev-{i}")).collect(), Vec::new()));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| format!("clock: {e}"))?
        .as_secs();
    let exp = now + 3600;
    let pem_file = |name: &str, pem: &str| -> Result<Vec<String>, String> {
        let path = dir.join(name);
        fs::write(&path, pem).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(vec!["--auth-jwt-public-key".into(), path.display().to_string()])
    };
    let pair = |alg: &'static rcgen::SignatureAlgorithm| {
        rcgen::KeyPair::generate_for(alg).map_err(|e| format!("generating a {} key: {e}", scheme.label()))
    };
    let (alg, key, args) = match scheme {
        Scheme::Open => unreachable!("returned above"),
        Scheme::Hs256 => (
            Algorithm::HS256,
            EncodingKey::from_secret(SECRET.as_bytes()).map_err(|e| format!("HS256 key: {e}"))?,
            vec!["--auth-jwt-secret".into(), SECRET.into()],
        ),
        Scheme::Es256 => {
            let kp = pair(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            let key = EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).map_err(|e| format!("ES256 key: {e}"))?;
            (Algorithm::ES256, key, pem_file("es256.pub.pem", &kp.public_key_pem())?)
        }
        Scheme::EdDsa => {
            let kp = pair(&rcgen::PKCS_ED25519)?;
            let key = EncodingKey::from_ed_pem(kp.serialize_pem().as_bytes()).map_err(|e| format!("EdDSA key: {e}"))?;
            (
                Algorithm::EdDSA,
                key,
                pem_file("ed25519.pub.pem", &kp.public_key_pem())?,
            )
        }
        Scheme::Rs256 => {
            let kp = pair(&rcgen::PKCS_RSA_SHA256)?;
            let key =
                EncodingKey::from_rsa_pem(kp.serialize_pem().as_bytes()).map_err(|e| format!("RS256 key: {e}"))?;
            (Algorithm::RS256, key, pem_file("rs256.pub.pem", &kp.public_key_pem())?)
        }
    };
    let header = Header::new(alg);
    let mut queries = Vec::with_capacity(n);
    for i in 0..n {
        let claims = serde_json::json!({"sub": format!("dev-{i}"), "exp": exp});
        let token = jsonwebtoken::encode(&header, &claims, &key).map_err(|e| format!("signing: {e}"))?;
        queries.push(format!("token={token}"));
    }
    Ok((queries, args))
}

/// A connect scenario's results.
struct Connected {
    rate: f64,
    cpu_us: f64,
    rss_per_conn: f64,
    rss_mib: f64,
    gen_busy: f64,
    query_bytes: f64,
}

fn connect(
    srv: &mut Server,
    admin: SocketAddr,
    scheme: Scheme,
    queries: Vec<String>,
    n: usize,
    secs: u64,
    clk_tck: f64,
) -> Result<Connected, String> {
    let query_bytes = queries.iter().map(String::len).sum::<usize>() as f64 / queries.len().max(1) as f64;
    let rss0 = srv.rss_kib()?;
    let cpu0 = srv.cpu_ticks()?;
    let gen0 = procs::proc_cpu_ticks("/proc/self/stat")?;
    let mut g = Gen::new(srv.addr, Mode::Idle)?;
    g.set_queries(queries);
    let ramp = g.ramp(n, srv)?;
    let gen1 = procs::proc_cpu_ticks("/proc/self/stat")?;
    // Let the server take in the last heartbeats before reading its CPU time.
    g.run_for(Duration::from_millis(200), srv)?;
    let cpu1 = srv.cpu_ticks()?;
    g.run_for(Duration::from_secs(secs), srv)?;
    srv.check_alive()?;
    let rss1 = srv.rss_kib()?;
    if g.open() != n {
        return Err(format!("{} of {n} connections open after the hold", g.open()));
    }
    let metrics = http_get(admin, "/metrics")?;
    let online = metric(&metrics, "wsbeat_clients_online").unwrap_or(-1.0);
    let failures = metric(&metrics, "wsbeat_auth_failures_total").unwrap_or(-1.0);
    drop(g);
    if online != n as f64 || failures != 0.0 {
        return Err(format!(
            "after the hold the server has {online} clients online (want {n}) and {failures} auth failures (want 0)"
        ));
    }
    let r = Connected {
        rate: n as f64 / ramp.as_secs_f64(),
        cpu_us: (cpu1 - cpu0) as f64 / clk_tck * 1e6 / n as f64,
        rss_per_conn: (rss1 as f64 - rss0 as f64) * 1024.0 / n as f64,
        rss_mib: rss1 as f64 / 1024.0,
        gen_busy: (gen1 - gen0) as f64 / clk_tck / ramp.as_secs_f64() * 100.0,
        query_bytes,
    };
    eprintln!(
        "  connect {n:>6} {:<8} ramp {:.2} s ({:.0}/s), CPU {:.2} s ({:.1} µs/conn), RSS {:.1} → {:.1} MiB ({:.0} B/conn)",
        scheme.label(),
        ramp.as_secs_f64(),
        r.rate,
        (cpu1 - cpu0) as f64 / clk_tck,
        r.cpu_us,
        rss0 as f64 / 1024.0,
        r.rss_mib,
        r.rss_per_conn
    );
    Ok(r)
}

/// A forwarding scenario's results (`forward`: the sink's side).
struct Forwarded {
    rate: f64,
    p50_us: f64,
    p99_us: f64,
    cpu_us: f64,
    forward_thread_us: Option<f64>,
    gen_busy: f64,
    forward: Option<SinkSide>,
}

struct SinkSide {
    items: u64,
    requests: u64,
    lag_ms: f64,
    dropped: f64,
    delivered: f64,
    failed_requests: f64,
}

fn forwarding(launch: &Launch, cfg: &Config, forward: bool, round: u64, clk_tck: f64) -> Result<Forwarded, String> {
    let sink = if forward { Some(Sink::start()?) } else { None };
    let admin = SocketAddr::from(([127, 0, 0, 1], procs::free_port()?));
    let mut args = Vec::new();
    if let Some(s) = &sink {
        args.extend(["--forward".to_string(), format!("http://{}/", s.addr)]);
        if let Some(b) = &cfg.fwd_buffer {
            args.extend(["--forward-buffer".to_string(), b.clone()]);
        }
        if let Some(t) = &cfg.fwd_timeout {
            args.extend(["--forward-timeout".to_string(), t.clone()]);
        }
    }
    let opts = Opts {
        admin_listen: Some(admin),
        args,
        ..Opts::default()
    };
    let tag = if forward { "forward" } else { "echo" };
    let mut srv = Server::start_with(launch, Kind::Wsbeat, &format!("{tag}-r{round}"), 1, &opts)?;
    let mut g = Gen::new(
        srv.addr,
        Mode::Echo {
            in_flight: cfg.fwd_in_flight,
        },
    )?;
    g.set_send_budget(Some(0));
    g.ramp(cfg.fwd_conns, &mut srv)?;

    // Warm-up: its items reach the sink (or are settled) before measuring.
    if cfg.fwd_warmup > 0 {
        g.start_recording();
        g.burst(cfg.fwd_warmup, &mut srv)?;
        g.run_until_echoes(cfg.fwd_warmup, BURST_TIMEOUT, &mut srv)?;
        let last = g.finish().last_echo.unwrap_or_else(Instant::now);
        if let Some(s) = &sink {
            drain(s, cfg.fwd_warmup, last, admin, &mut g, &mut srv)?;
        }
    }
    let sink0 = sink.as_ref().map(|s| s.snapshot());
    let metrics0 = if forward {
        Some(http_get(admin, "/metrics")?)
    } else {
        None
    };

    let fwd_thread0 = thread_ticks(srv.pid(), FORWARD_THREAD);
    let gen0 = procs::proc_cpu_ticks("/proc/self/stat")?;
    let cpu0 = srv.cpu_ticks()?;
    let t0 = Instant::now();
    g.start_recording();
    g.burst(cfg.fwd_msgs, &mut srv)?;
    g.run_until_echoes(cfg.fwd_msgs, BURST_TIMEOUT, &mut srv)?;
    let mut stats = g.finish();
    let gen1 = procs::proc_cpu_ticks("/proc/self/stat")?;
    let last_echo = stats.last_echo.ok_or("no echo recorded")?;
    let burst = last_echo.duration_since(t0).as_secs_f64();
    let last_item = match (&sink, &sink0) {
        (Some(s), Some(s0)) => Some(drain(s, s0.items + cfg.fwd_msgs, last_echo, admin, &mut g, &mut srv)?),
        _ => None,
    };
    let cpu1 = srv.cpu_ticks()?;
    let fwd_thread1 = thread_ticks(srv.pid(), FORWARD_THREAD);
    srv.check_alive()?;
    let side = match (&sink, sink0, metrics0) {
        (Some(s), Some(s0), Some(m0)) => {
            let s1 = s.snapshot();
            let m1 = http_get(admin, "/metrics")?;
            let delta = |name: &str| metric(&m1, name).unwrap_or(0.0) - metric(&m0, name).unwrap_or(0.0);
            let failed_requests = requests_failed(&m1) - requests_failed(&m0);
            let items = s1.items - s0.items;
            let dropped = delta("wsbeat_forward_dropped_total");
            if s1.errors > 0 {
                return Err(format!("the sink saw {} malformed requests", s1.errors));
            }
            if items as f64 + dropped != cfg.fwd_msgs as f64 {
                return Err(format!(
                    "the sink received {items} items and wsbeat dropped {dropped}: together not the {} messages sent",
                    cfg.fwd_msgs
                ));
            }
            let lag = match last_item.flatten() {
                Some(t) if t >= last_echo => t.duration_since(last_echo).as_secs_f64(),
                Some(t) => -last_echo.duration_since(t).as_secs_f64(),
                None => f64::NAN,
            };
            Some(SinkSide {
                items,
                requests: s1.requests - s0.requests,
                lag_ms: lag * 1000.0,
                dropped,
                delivered: delta("wsbeat_forward_delivered_total"),
                failed_requests,
            })
        }
        _ => None,
    };
    drop(g);
    drop(srv);
    drop(sink);

    stats.rtt_ns.sort_unstable();
    let pct = |p: usize| {
        let v = &stats.rtt_ns;
        v.get((v.len() * p / 100).min(v.len().saturating_sub(1)))
            .map_or(f64::NAN, |&ns| ns as f64 / 1000.0)
    };
    let msgs = cfg.fwd_msgs as f64;
    let r = Forwarded {
        rate: msgs / burst,
        p50_us: pct(50),
        p99_us: pct(99),
        cpu_us: (cpu1 - cpu0) as f64 / clk_tck * 1e6 / msgs,
        forward_thread_us: match (fwd_thread0, fwd_thread1) {
            (Some(a), Some(b)) => Some((b - a) as f64 / clk_tck * 1e6 / msgs),
            _ => None,
        },
        gen_busy: (gen1 - gen0) as f64 / clk_tck / burst * 100.0,
        forward: side,
    };
    eprintln!(
        "  {tag:<8} {} msgs in {burst:.2} s ({:.0}/s), p50 {:.0} µs, p99 {:.0} µs, server CPU {:.2} s ({:.3} µs/msg){}",
        cfg.fwd_msgs,
        r.rate,
        r.p50_us,
        r.p99_us,
        (cpu1 - cpu0) as f64 / clk_tck,
        r.cpu_us,
        match &r.forward {
            Some(f) => format!(
                "; sink {} items in {} requests, lag {:.1} ms, dropped {}",
                f.items, f.requests, f.lag_ms, f.dropped
            ),
            None => String::new(),
        }
    );
    Ok(r)
}

/// Serves the (quiet) connections until the sink has `want` items in all,
/// or the forwarder has settled everything it held. Returns when the last
/// item arrived (`None` if none did).
fn drain(
    sink: &Sink,
    want: u64,
    since: Instant,
    admin: SocketAddr,
    g: &mut Gen,
    srv: &mut Server,
) -> Result<Option<Instant>, String> {
    let deadline = since + DRAIN_TIMEOUT;
    let mut seen = sink.snapshot().items;
    let mut progress_at = Instant::now();
    loop {
        let s = sink.snapshot();
        if s.items >= want {
            return Ok(s.last);
        }
        let now = Instant::now();
        if s.items != seen {
            seen = s.items;
            progress_at = now;
        } else if now.duration_since(progress_at) >= DRAIN_STALL {
            // Nothing new for a while: done if the forwarder holds nothing.
            let m = http_get(admin, "/metrics")?;
            if metric(&m, "wsbeat_forward_buffered_bytes") == Some(0.0) {
                return Ok(sink.snapshot().last);
            }
            progress_at = now;
        }
        if now > deadline {
            return Err(format!(
                "the sink has {} of {want} items {DRAIN_TIMEOUT:?} after the last echo",
                s.items
            ));
        }
        // Short steps: the sink's clock of the last item is what counts.
        g.run_for(Duration::from_millis(1), srv)?;
    }
}

/// `wsbeat_forward_requests_total{result="error"}`.
fn requests_failed(metrics: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("wsbeat_forward_requests_total{result=\"error\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// utime + stime of the server's thread named `name`, in clock ticks.
fn thread_ticks(pid: u32, name: &str) -> Option<u64> {
    let dir = format!("/proc/{pid}/task");
    for entry in fs::read_dir(&dir).ok()?.flatten().take(10_000) {
        let p = entry.path();
        if fs::read_to_string(p.join("comm")).is_ok_and(|c| c.trim() == name) {
            return procs::proc_cpu_ticks(&p.join("stat").display().to_string()).ok();
        }
    }
    None
}

/// The sum of a metric's samples (all its label sets) in a Prometheus text
/// exposition.
fn metric(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = if rest.starts_with(' ') {
            rest
        } else if rest.starts_with('{') {
            rest.rsplit_once('}').map_or("", |(_, v)| v)
        } else {
            continue;
        };
        if let Ok(v) = value.trim().parse::<f64>() {
            found = Some(found.unwrap_or(0.0) + v);
        }
    }
    found
}

/// A GET on one short-lived connection; the body of a 200.
fn http_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    let err = |e: io::Error| format!("GET http://{addr}{path}: {e}");
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(err)?;
    s.set_read_timeout(Some(Duration::from_secs(5))).map_err(err)?;
    s.set_write_timeout(Some(Duration::from_secs(5))).map_err(err)?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").map_err(err)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len = header(&head, "content-length").and_then(|v| v.parse::<usize>().ok());
            if len.is_some_and(|l| buf.len() >= end + 4 + l) {
                let l = len.unwrap_or(0);
                if !head.starts_with("HTTP/1.1 200") {
                    return Err(format!("GET {path}: {}", head.lines().next().unwrap_or("")));
                }
                return Ok(String::from_utf8_lossy(&buf[end + 4..end + 4 + l]).into_owned());
            }
        }
        if Instant::now() > deadline || buf.len() > 16 << 20 {
            return Err(format!("GET http://{addr}{path}: no complete answer"));
        }
        match s.read(&mut chunk) {
            Ok(0) => return Err(format!("GET http://{addr}{path}: closed before a complete answer")),
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(err(e)),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A header's value in a request or response head (case-insensitive name).
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The forwarding backend: a minimal HTTP/1.1 server on threads of this
/// process. Keep-alive; every request answered 204 once its body is read;
/// items counted by their `"conn":` key (a message's; events have none).
struct Sink {
    addr: SocketAddr,
    shared: Arc<SinkShared>,
    acceptor: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct SinkShared {
    stop: AtomicBool,
    items: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    live: AtomicUsize,
    /// When the last item-carrying request was read.
    last: Mutex<Option<Instant>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

#[derive(Clone, Copy)]
struct SinkSnapshot {
    items: u64,
    requests: u64,
    errors: u64,
    last: Option<Instant>,
}

/// Connections the sink serves at once (wsbeat uses one).
const SINK_MAX_CONNS: usize = 16;
/// Largest request head and body the sink takes.
const SINK_MAX_HEAD: usize = 64 * 1024;
const SINK_MAX_BODY: usize = 256 << 20;
/// How often blocked sink threads look at the stop flag.
const SINK_TICK: Duration = Duration::from_millis(50);

impl Sink {
    fn start() -> Result<Sink, String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("sink: bind: {e}"))?;
        let addr = listener.local_addr().map_err(|e| format!("sink: {e}"))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("sink: O_NONBLOCK: {e}"))?;
        let shared = Arc::new(SinkShared::default());
        let sh = Arc::clone(&shared);
        let acceptor = thread::Builder::new()
            .name("auth-bench-sink".into())
            .spawn(move || accept_loop(&listener, &sh))
            .map_err(|e| format!("sink: thread: {e}"))?;
        Ok(Sink {
            addr,
            shared,
            acceptor: Some(acceptor),
        })
    }

    fn snapshot(&self) -> SinkSnapshot {
        let s = &self.shared;
        SinkSnapshot {
            items: s.items.load(Ordering::Acquire),
            requests: s.requests.load(Ordering::Relaxed),
            errors: s.errors.load(Ordering::Relaxed),
            last: *s.last.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
        let workers = std::mem::take(&mut *self.shared.workers.lock().unwrap_or_else(|e| e.into_inner()));
        for w in workers {
            let _ = w.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, sh: &Arc<SinkShared>) {
    while !sh.stop.load(Ordering::Acquire) {
        match listener.accept() {
            Ok((stream, _)) if sh.live.load(Ordering::Acquire) < SINK_MAX_CONNS => {
                sh.live.fetch_add(1, Ordering::AcqRel);
                let sh2 = Arc::clone(sh);
                let spawned = thread::Builder::new()
                    .name("auth-bench-sink-conn".into())
                    .spawn(move || {
                        if serve_conn(stream, &sh2).is_err() {
                            sh2.errors.fetch_add(1, Ordering::Relaxed);
                        }
                        sh2.live.fetch_sub(1, Ordering::AcqRel);
                    });
                match spawned {
                    Ok(h) => sh.workers.lock().unwrap_or_else(|e| e.into_inner()).push(h),
                    Err(_) => {
                        sh.live.fetch_sub(1, Ordering::AcqRel);
                    }
                }
            }
            // Over the limit: refused by closing.
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(5)),
            Err(_) => thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Serves one keep-alive connection until the peer closes it or the sink
/// stops. `Err` for a request it cannot make sense of.
fn serve_conn(mut s: TcpStream, sh: &SinkShared) -> Result<(), ()> {
    s.set_nonblocking(false).map_err(drop)?;
    s.set_nodelay(true).map_err(drop)?;
    s.set_read_timeout(Some(SINK_TICK)).map_err(drop)?;
    let mut buf: Vec<u8> = Vec::with_capacity(256 * 1024);
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        // One request: the head, then its body.
        let head_end = loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                break end;
            }
            if buf.len() > SINK_MAX_HEAD {
                return Err(());
            }
            if !fill(&mut s, &mut buf, &mut chunk, sh)? {
                return Ok(());
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut pos = head_end + 4;
        if header(&head, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
            s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").map_err(drop)?;
        }
        let chunked = header(&head, "transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let body: Vec<u8> = if chunked {
            let mut body = Vec::new();
            loop {
                let line_end = loop {
                    if let Some(e) = find(&buf[pos..], b"\r\n") {
                        break pos + e;
                    }
                    if !fill(&mut s, &mut buf, &mut chunk, sh)? {
                        return Err(());
                    }
                };
                let size_text = String::from_utf8_lossy(&buf[pos..line_end]);
                let size_text = size_text.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size_text, 16).map_err(drop)?;
                if body.len() + size > SINK_MAX_BODY {
                    return Err(());
                }
                // Data, then CRLF (for the last chunk: trailers assumed none).
                while buf.len() < line_end + 2 + size + 2 {
                    if !fill(&mut s, &mut buf, &mut chunk, sh)? {
                        return Err(());
                    }
                }
                body.extend_from_slice(&buf[line_end + 2..line_end + 2 + size]);
                pos = line_end + 2 + size + 2;
                if size == 0 {
                    break;
                }
            }
            body
        } else {
            let len = match header(&head, "content-length") {
                Some(v) => v.parse::<usize>().map_err(drop)?,
                None => 0,
            };
            if len > SINK_MAX_BODY {
                return Err(());
            }
            while buf.len() < pos + len {
                if !fill(&mut s, &mut buf, &mut chunk, sh)? {
                    return Err(());
                }
            }
            let body = buf[pos..pos + len].to_vec();
            pos += len;
            body
        };
        buf.drain(..pos);
        let items = count(&body, b"\"conn\":");
        if head.starts_with("POST ") {
            sh.requests.fetch_add(1, Ordering::Relaxed);
            if items > 0 {
                *sh.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                sh.items.fetch_add(items, Ordering::Release);
            }
        }
        let close = header(&head, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").map_err(drop)?;
        if close {
            return Ok(());
        }
    }
}

/// Reads more of the connection into `buf`: `Ok(false)` at its end or when
/// the sink stops.
fn fill(s: &mut TcpStream, buf: &mut Vec<u8>, chunk: &mut [u8], sh: &SinkShared) -> Result<bool, ()> {
    loop {
        if sh.stop.load(Ordering::Acquire) {
            return Ok(false);
        }
        match s.read(chunk) {
            Ok(0) => return Ok(false),
            Ok(k) => {
                buf.extend_from_slice(&chunk[..k]);
                return Ok(true);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return Ok(false),
        }
    }
}

/// Occurrences of `needle` in `hay` (found by its first byte, then compared).
fn count(hay: &[u8], needle: &[u8]) -> u64 {
    let mut n = 0;
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        match hay[i..hay.len() + 1 - needle.len()]
            .iter()
            .position(|&b| b == needle[0])
        {
            Some(p) => {
                i += p;
                if &hay[i..i + needle.len()] == needle {
                    n += 1;
                    i += needle.len();
                } else {
                    i += 1;
                }
            }
            None => break,
        }
    }
    n
}

/// What the report says about the run beside the numbers.
struct Env {
    clk_tck: f64,
    server_cpus: String,
    gen_cpus: String,
    setpriv: bool,
    signing: Vec<String>,
    elapsed: Duration,
}

fn render(cfg: &Config, connects: &[(Scheme, Vec<Connected>)], fwd: &[Vec<Forwarded>], env_: &Env) -> String {
    let mut s = String::new();
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .stderr(Stdio::null())
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let vars: Vec<String> = [
        "AUTH_N",
        "AUTH_SECS",
        "AUTH_ROUNDS",
        "AUTH_ALGS",
        "AUTH_FWD_CONNS",
        "AUTH_FWD_INFLIGHT",
        "AUTH_FWD_MSGS",
        "AUTH_FWD_WARMUP",
        "AUTH_FWD_BUFFER",
        "AUTH_FWD_TIMEOUT",
        "AUTH_PIN",
        "AUTH_WSBEAT_BIN",
    ]
    .iter()
    .filter_map(|k| env::var(k).ok().map(|v| format!("{k}={v}")))
    .collect();
    let command = if vars.is_empty() {
        "cargo bench --bench auth".to_string()
    } else {
        format!("{} cargo bench --bench auth", vars.join(" "))
    };
    s += &format!("## Auth and forwarding — {date}\n\n");
    s += &format!("Command: `{command}` ({:.0} s)\n\n", env_.elapsed.as_secs_f64());
    s += &format!(
        "Machine: {}, {} CPUs, {} MiB RAM, {}\n\n",
        cpu_model(),
        cpu_count(),
        mem_total_mib(),
        kernel()
    );

    let rounds = if cfg.rounds > 1 {
        format!(" (median of {} rounds)", cfg.rounds)
    } else {
        String::new()
    };

    // Connect scenarios.
    if !connects.is_empty() {
        let med = |runs: &[Connected], f: &dyn Fn(&Connected) -> f64| median(runs.iter().map(f));
        let col = |f: &dyn Fn(&Connected) -> f64| connects.iter().map(|(_, r)| Some(med(r, f))).collect::<Vec<_>>();
        let mut rows = vec![
            Row {
                metric: "connect rate (conn/s)".into(),
                decimals: 0,
                values: col(&|r| r.rate),
            },
            Row {
                metric: "server CPU per connection (µs)".into(),
                decimals: 1,
                values: col(&|r| r.cpu_us),
            },
        ];
        if let Some((_, base)) = connects.iter().find(|(sc, _)| *sc == Scheme::Open) {
            let b = med(base, &|r| r.cpu_us);
            rows.push(Row {
                metric: "added CPU per connection vs no auth (µs)".into(),
                decimals: 1,
                values: connects
                    .iter()
                    .map(|(sc, r)| (*sc != Scheme::Open).then(|| med(r, &|r| r.cpu_us) - b))
                    .collect(),
            });
        }
        rows.extend([
            Row {
                metric: "RSS growth per idle connection (bytes)".into(),
                decimals: 0,
                values: col(&|r| r.rss_per_conn),
            },
            Row {
                metric: "server RSS with N held (MiB)".into(),
                decimals: 1,
                values: col(&|r| r.rss_mib),
            },
            Row {
                metric: "upgrade query length (bytes)".into(),
                decimals: 0,
                values: col(&|r| r.query_bytes),
            },
            Row {
                metric: "generator CPU busy during the ramp (%)".into(),
                decimals: 0,
                values: col(&|r| r.gen_busy),
            },
        ]);
        s += &format!(
            "### Connect + upgrade + one heartbeat, {} connections{rounds}\n\n",
            group(cfg.n as f64, 0)
        );
        let heads: Vec<String> = connects.iter().map(|(sc, _)| sc.label().to_string()).collect();
        s += &table(&heads, &rows);
        s += "\n";
    }

    // Forwarding.
    if let [echo, fwd_r] = fwd {
        let med = |runs: &[Forwarded], f: &dyn Fn(&Forwarded) -> f64| median(runs.iter().map(f));
        let both = |f: &dyn Fn(&Forwarded) -> f64| {
            let (a, b) = (med(echo, f), med(fwd_r, f));
            vec![Some(a), Some(b), Some(b - a)]
        };
        let sides: Vec<&SinkSide> = fwd_r.iter().filter_map(|r| r.forward.as_ref()).collect();
        let total = |f: &dyn Fn(&SinkSide) -> f64| vec![None, Some(sides.iter().map(|x| f(x)).sum::<f64>()), None];
        let items: f64 = sides.iter().map(|x| x.items as f64).sum();
        let requests: f64 = sides.iter().map(|x| x.requests as f64).sum();
        let all = if cfg.rounds > 1 { " (all rounds)" } else { "" };
        let sent = (cfg.fwd_msgs * cfg.rounds) as f64;
        let mut rows = vec![
            Row {
                metric: "messages/s".into(),
                decimals: 0,
                values: both(&|r| r.rate),
            },
            Row {
                metric: "round trip p50 (µs)".into(),
                decimals: 0,
                values: both(&|r| r.p50_us),
            },
            Row {
                metric: "round trip p99 (µs)".into(),
                decimals: 0,
                values: both(&|r| r.p99_us),
            },
            Row {
                metric: "server CPU per message (µs)".into(),
                decimals: 3,
                values: both(&|r| r.cpu_us),
            },
            Row {
                metric: "of which the forwarding thread (µs)".into(),
                decimals: 3,
                values: vec![
                    None,
                    Some(median(fwd_r.iter().filter_map(|r| r.forward_thread_us))),
                    None,
                ],
            },
            Row {
                metric: "forwarding thread CPU per item it delivered (µs)".into(),
                decimals: 3,
                values: vec![
                    None,
                    Some(median(fwd_r.iter().filter_map(|r| {
                        let items = r.forward.as_ref()?.items;
                        Some(r.forward_thread_us? * cfg.fwd_msgs as f64 / items.max(1) as f64)
                    }))),
                    None,
                ],
            },
            Row {
                metric: "generator+sink CPU busy during the burst (%)".into(),
                decimals: 0,
                values: both(&|r| r.gen_busy).into_iter().take(2).collect(),
            },
            Row {
                metric: "delivery lag, last echo → last item at the sink (ms)".into(),
                decimals: 1,
                values: vec![None, Some(median(sides.iter().map(|x| x.lag_ms))), None],
            },
        ];
        let mut counted = |metric: &str, values: Vec<Option<f64>>| {
            rows.push(Row {
                metric: format!("{metric}{all}"),
                decimals: 0,
                values,
            })
        };
        counted("messages sent", vec![Some(sent), Some(sent), None]);
        counted("items received by the sink", vec![None, Some(items), None]);
        counted("wsbeat_forward_dropped_total", total(&|x| x.dropped));
        counted("wsbeat_forward_delivered_total", total(&|x| x.delivered));
        counted("failed (retried) forward requests", total(&|x| x.failed_requests));
        rows.push(Row {
            metric: "items per POST request".into(),
            decimals: 0,
            values: vec![None, Some(items / requests.max(1.0)), None],
        });
        s += &format!(
            "### Forwarding: {} messages of 32 bytes, {} connections × {} in flight{rounds}\n\n",
            group(cfg.fwd_msgs as f64, 0),
            cfg.fwd_conns,
            cfg.fwd_in_flight
        );
        s += &table(
            &[
                "`--echo`".to_string(),
                "`--echo --forward`".to_string(),
                "added by forwarding".to_string(),
            ],
            &rows,
        );
        let dropped: Vec<String> = sides.iter().map(|x| group(x.dropped, 0)).collect();
        if sides.iter().any(|x| x.dropped > 0.0) {
            s += &format!(
                "\nItems dropped past `--forward-buffer`, per round: {}. The burst outran the forwarder (one request \
                 in flight, on the loop's CPU): the oldest waiting items were dropped and counted, as designed; \
                 their encoding and sending is missing from the CPU per message.\n",
                dropped.join(", ")
            );
        }
        s += "\n";
    }

    s += &format!(
        "Setup: wsbeat (release binary of this build, `--threads 1 --echo --max-connections 100000 \
         --heartbeat-interval 30s --heartbeat-timeout 60s`, RUST_LOG=warn) on CPUs {}, its helper threads included; \
         the load generator (one mio thread) and the forwarding sink (std threads) in the bench process on CPUs {}{}; \
         loopback only. Each scenario starts a fresh server. Connect: tokens signed by the bench before the server \
         starts ({}), `sub` `dev-<i>`, `exp` an hour ahead; no-auth connections send `?client_id=dev-<i>`; CPU per \
         connection is over the ramp (+200 ms), RSS growth after a {} s hold. Forwarding: a warm-up burst of {} \
         messages, then the measured burst; wsbeat's defaults for `--forward-buffer` and `--forward-timeout` unless \
         set; server CPU per message is counted until the sink has every item. CPU time is utime+stime from \
         /proc/PID/stat at {} ticks/s (±1 tick per reading); RSS is VmRSS from /proc/PID/status.\n",
        env_.server_cpus,
        env_.gen_cpus,
        if env_.setpriv {
            ", wsbeat under `setpriv --pdeathsig KILL`"
        } else {
            ""
        },
        if env_.signing.is_empty() {
            "none".to_string()
        } else {
            format!("signing cost per token: {}", env_.signing.join(", "))
        },
        cfg.secs,
        group(cfg.fwd_warmup as f64, 0),
        env_.clk_tck,
    );
    s
}

/// The median (the mean of the middle two for an even count); NaN if empty.
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn table(heads: &[String], rows: &[Row]) -> String {
    let mut s = String::from("| metric |");
    for h in heads {
        s += &format!(" {h} |");
    }
    s += "\n|---|";
    s += &"---:|".repeat(heads.len());
    s += "\n";
    for r in rows {
        s += &format!("| {} |", r.metric);
        // Missing and non-finite values: "–".
        for i in 0..heads.len() {
            match r.values.get(i).copied().flatten() {
                Some(v) if v.is_finite() => s += &format!(" {} |", group(v, r.decimals)),
                _ => s += " – |",
            }
        }
        s += "\n";
    }
    s
}
