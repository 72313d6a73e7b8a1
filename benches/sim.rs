//! A million connections, simulated: the server's own connection table,
//! registry and timer wheel, driven through the sans-IO core with no
//! sockets (`wsbeat::session::sim`). Reports the user-space bytes per
//! connection (resident memory of this process, before and after) and the
//! cost of a heartbeat tick against the number of deadlines that expire; then
//! a broadcast to every session on `SIM_LOOPS` (2) simulated loops, one
//! thread each, every write costing `SIM_SEND_NS` (1000) ns of spinning for
//! the socket call, while evictions and server heartbeats come due.
//!
//! Run: `cargo bench --bench sim` (`SIM_N=100000` for a smaller run).

use std::sync::Arc;
use std::time::{Duration, Instant};

use wsbeat::presence::{Directory, SharedRegistry};
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

/// What one simulated loop saw while a broadcast to all its sessions ran.
struct BroadcastRun {
    sessions: usize,
    /// Real time from the start of the broadcast to its last frame.
    took: Duration,
    /// The longest loop turn (one broadcast slice plus the timers due).
    longest_turn: Duration,
    turns: u64,
    /// Heartbeats sent and evictions made while it ran.
    beats: u64,
    evicted: u64,
    /// How late the latest of those came after its deadline (simulated
    /// clock, which runs at real time during the broadcast).
    max_late_ms: u64,
}

/// Loop `index` of a process: `n` sessions connected over one interval,
/// the clock moved to where they start timing out, half of them having
/// just heartbeated; then a broadcast to all of them, sliced as the loop
/// slices it (5 ms), with the timers that come due run between slices:
/// evictions of the silent half, server heartbeats to the other.
fn broadcast_loop(
    index: usize,
    directory: Arc<dyn Directory>,
    n: usize,
    frame: Arc<[u8]>,
    send_cost: Duration,
) -> BroadcastRun {
    let mut sim = Simulation::loop_of(index, directory, n, INTERVAL, TIMEOUT);
    for i in 0..n {
        sim.advance(i as u64 * INTERVAL / n as u64);
        sim.connect(&format!("l{index}-device-{i:07}"));
    }
    // In steps, so that the server's heartbeats go out on time (a clock
    // that jumps sends the ones it skipped late, all at once).
    let base = TIMEOUT;
    for t in (INTERVAL..base).step_by(100) {
        sim.advance(t);
    }
    // The first silent ones reach their timeout now, and as the broadcast
    // runs (at real time) more and more do; the other half has just
    // heartbeated, and the server's heartbeats to them come due throughout.
    sim.advance(base - 1);
    let alive = (0..n).step_by(2).filter(|&idx| sim.heartbeat(idx)).count();
    assert_eq!(alive, n.div_ceil(2), "every other session heartbeats");
    sim.advance(base);
    sim.set_send_cost(send_cost);
    let sent_before = sim.messages_sent();
    let start = Instant::now();
    sim.broadcast(frame);
    let (mut longest_turn, mut turns, mut beats, mut evicted, mut max_late_ms) = (Duration::ZERO, 0, 0, 0, 0);
    loop {
        let turn = Instant::now();
        let deadline = turn + Duration::from_millis(5);
        let done = sim.step_broadcast(|| Instant::now() >= deadline);
        let tick = sim.advance(base + start.elapsed().as_millis() as u64);
        beats += tick.beats;
        evicted += tick.evicted;
        max_late_ms = max_late_ms.max(tick.max_late_ms);
        longest_turn = longest_turn.max(turn.elapsed());
        turns += 1;
        if done {
            break;
        }
    }
    let took = start.elapsed();
    assert!(sim.messages_sent() - sent_before >= (n / 2) as u64);
    BroadcastRun {
        sessions: n,
        took,
        longest_turn,
        turns,
        beats,
        evicted,
        max_late_ms,
    }
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

    // A broadcast to every session of a process of SIM_LOOPS loops (two by
    // default), one thread per loop, the ids in one shared directory.
    let loops: usize = std::env::var("SIM_LOOPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    drop(sim);
    drop(small);
    // What a socket write costs the server on loopback (a broadcast to a
    // million connections on one loop took about a second), spent per frame.
    let send_cost = Duration::from_nanos(
        std::env::var("SIM_SEND_NS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000),
    );
    let directory: Arc<dyn Directory> = Arc::new(SharedRegistry::new());
    let frame: Arc<[u8]> = Arc::from(&b"\x81\x20broadcast: thirty-two bytes long"[..]);
    let runs: Vec<BroadcastRun> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..loops)
            .map(|i| {
                let (directory, frame) = (directory.clone(), frame.clone());
                scope.spawn(move || broadcast_loop(i, directory, n / loops, frame, send_cost))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

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
    println!(
        "Broadcast to every session, {loops} loops on {loops} threads (one directory), each write costing {} ns (SIM_SEND_NS):\n",
        send_cost.as_nanos()
    );
    println!(
        "| loop | sessions | broadcast took | turns | longest turn | heartbeats sent meanwhile | evicted meanwhile | latest beat or eviction late by |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (i, r) in runs.iter().enumerate() {
        println!(
            "| {i} | {} | {:.0} ms | {} | {:.1} ms | {} | {} | {} ms |",
            r.sessions,
            r.took.as_secs_f64() * 1e3,
            r.turns,
            r.longest_turn.as_secs_f64() * 1e3,
            r.beats,
            r.evicted,
            r.max_late_ms
        );
    }
    let worst = runs.iter().map(|r| r.max_late_ms).max().unwrap_or(0);
    println!(
        "\nHeartbeats and evictions during the broadcast came at most {worst} ms late (bound: 250 ms): {}\n",
        if worst <= 250 { "within" } else { "OVER" }
    );
    let fits = per_conn < TARGET_BYTES;
    println!(
        "{} connections in {:.0} MB of user-space state: {}",
        n,
        (after - before) as f64 / 1e6,
        if fits { "within the bound" } else { "OVER the bound" }
    );
}
