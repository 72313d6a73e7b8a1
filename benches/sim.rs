//! A million connections, simulated: the server's own connection table,
//! registry and timer wheel, driven through the sans-IO core with no
//! sockets (`wsbeat::session::sim`). Reports the user-space bytes per
//! connection (resident memory of this process, before and after) and the
//! cost of a heartbeat tick against the number of deadlines that expire.
//!
//! Run: `cargo bench --bench sim` (`SIM_N=100000` for a smaller run).

use std::time::Instant;

use wsbeat::session::sim::Simulation;

const INTERVAL: u64 = 30_000;
const TIMEOUT: u64 = 60_000;
/// The per-connection bound the real server is held to (uWebSockets' 272 B).
const TARGET_BYTES: f64 = 272.0;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Builds `n` connections spread evenly over one heartbeat interval, each
/// having sent one heartbeat through its decoder.
fn build(n: usize) -> Simulation {
    let mut sim = Simulation::new(n, INTERVAL, TIMEOUT);
    for i in 0..n {
        sim.advance(i as u64 * INTERVAL / n as u64);
        let idx = sim.connect(&format!("device-{i:07}"));
        sim.heartbeat(idx);
    }
    sim
}

/// Advances the clock `ticks` times by `step` ms (never past 20 s, so that
/// nobody times out and every tick is heartbeat work); returns ns per tick
/// and timers fired per tick.
fn ticks(sim: &mut Simulation, step: u64, ticks: u32) -> (f64, f64) {
    let ticks = ticks.min((20_000 / step).max(1) as u32);
    let mut fired = 0;
    let t = Instant::now();
    for _ in 0..ticks {
        let now = sim.now() + step;
        fired += sim.advance(now).fired;
    }
    let ns = t.elapsed().as_nanos() as f64 / ticks as f64;
    (ns, fired as f64 / ticks as f64)
}

fn main() {
    // `cargo test --benches` runs bench binaries without `--bench`: skip.
    if !std::env::args().any(|a| a == "--bench") {
        println!("sim: skipped (run with cargo bench)");
        return;
    }
    let n: usize = std::env::var("SIM_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);

    let before = rss_bytes();
    let t = Instant::now();
    let mut sim = build(n);
    let built = t.elapsed();
    let after = rss_bytes();
    let per_conn = (after.saturating_sub(before)) as f64 / n as f64;
    assert_eq!((sim.len(), sim.clients_online(), sim.timers()), (n, n, n));
    assert!(sim.decoder_is_idle());

    // The same number of expiring deadlines per tick (1% of the million)
    // against a tenth of the connections.
    let fired_per_tick = (n / 100).max(1) as u64;
    let step_big = (INTERVAL * fired_per_tick / n as u64).max(1);
    let (ns_big, fired_big) = ticks(&mut sim, step_big, 50);
    let small_n = n / 10;
    let mut small = build(small_n);
    let step_small = (INTERVAL * fired_per_tick / small_n as u64).max(1);
    let (ns_small, fired_small) = ticks(&mut small, step_small, 50);

    let machine = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_default();
    println!("## Simulated connections — sans-IO core, no sockets\n");
    println!(
        "Command: `cargo bench --bench sim`; machine: {machine}, {} CPUs\n",
        std::thread::available_parallelism().map_or(0, |p| p.get())
    );
    println!("| measure | value |");
    println!("|---|---:|");
    println!("| connections | {n} |");
    println!("| built in | {:.2} s |", built.as_secs_f64());
    println!(
        "| user-space state (RSS growth) | {:.1} MB |",
        (after - before) as f64 / 1e6
    );
    println!("| per connection | {per_conn:.0} B (target < {TARGET_BYTES} B) |");
    println!("| connection table slot (struct) | {} B |", Simulation::conn_size());
    println!(
        "| tick, {n} connections, {fired_big:.0} deadlines expiring | {:.0} µs ({:.0} ns per expiry) |",
        ns_big / 1e3,
        ns_big / fired_big.max(1.0)
    );
    println!(
        "| tick, {small_n} connections, {fired_small:.0} deadlines expiring | {:.0} µs ({:.0} ns per expiry) |",
        ns_small / 1e3,
        ns_small / fired_small.max(1.0)
    );
    println!();
    let fits = per_conn < TARGET_BYTES;
    println!(
        "{} connections in {:.0} MB of user-space state: {}",
        n,
        (after - before) as f64 / 1e6,
        if fits { "within the bound" } else { "OVER the bound" }
    );
}
