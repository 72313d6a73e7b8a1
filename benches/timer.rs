//! Timer wheel costs: schedule, cancel, and the heartbeat tick.
//!
//! `tick/*` is the steady state of a loop holding N connections, each with
//! one timer re-armed 30 s ahead when it fires (a server heartbeat). Every
//! iteration advances the clock so that a fixed number of timers (1,000) is
//! due, expires them and re-arms them. If the wheel is right, the cost per
//! tick follows the 1,000 that expire, not N.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use wsbeat::timer::TimerWheel;

const INTERVAL: u64 = 30_000;

fn schedule_cancel(c: &mut Criterion) {
    let mut g = c.benchmark_group("wheel");
    g.throughput(Throughput::Elements(1));
    let mut wheel = TimerWheel::with_capacity(0, 1 << 20);
    // A realistic population: 100k timers spread over an interval.
    for i in 0..100_000u64 {
        wheel.schedule(i * INTERVAL / 100_000, i);
    }
    let mut x = 0u64;
    g.bench_function("schedule+cancel", |b| {
        b.iter(|| {
            x = x.wrapping_add(7919);
            let k = wheel.schedule(x % (INTERVAL * 2), x);
            black_box(wheel.cancel(k))
        })
    });
    let keys: Vec<_> = (0..1000u64).map(|i| wheel.schedule(i * 37 % INTERVAL, i)).collect();
    let mut i = 0;
    g.bench_function("reset", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            x = x.wrapping_add(7919);
            black_box(wheel.reset(keys[i], x % (INTERVAL * 2)))
        })
    });
    g.finish();
}

fn tick(c: &mut Criterion) {
    let mut g = c.benchmark_group("tick");
    g.sample_size(30);
    const DUE_PER_TICK: u64 = 1_000;
    for n in [10_000u64, 100_000, 1_000_000] {
        let mut wheel = TimerWheel::with_capacity(0, n as usize);
        for i in 0..n {
            // Spread uniformly over one interval.
            wheel.schedule(1 + i * INTERVAL / n, i);
        }
        // Clock step that makes DUE_PER_TICK timers due (1% of 100k).
        let step = (INTERVAL * DUE_PER_TICK / n).max(1);
        let mut now = 0;
        g.throughput(Throughput::Elements(DUE_PER_TICK));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                now += step;
                let mut fired = 0u64;
                while let Some((_, v)) = wheel.poll(now) {
                    wheel.schedule(now + INTERVAL, v);
                    fired += 1;
                }
                black_box(fired)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, schedule_cancel, tick);
criterion_main!(benches);
