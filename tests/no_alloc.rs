//! An idle, heartbeating connection costs no allocation in steady state:
//! reading heartbeats, refreshing liveness, firing timers and sending server
//! heartbeats all run on memory the loop already holds.
//!
//! A counting global allocator proves it. It counts only the server's
//! threads (every event loop's, run here through `Server::into_loops`), so
//! the test's own clients do not blur the count.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use wsbeat::protocol::frame::OpCode;

struct Counting;

static SERVER_ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static IS_SERVER: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// wrapper only bumps a counter (a const-initialised thread local and an
// atomic, neither of which allocates).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if IS_SERVER.with(Cell::get) {
            SERVER_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if IS_SERVER.with(Cell::get) {
            SERVER_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The counter is the process's: its runs (one loop, two loops) take turns.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn idle_heartbeating_connections_do_not_allocate() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let cfg = test_config(wsbeat::Config {
        heartbeat_interval: Duration::from_millis(50),
        heartbeat_timeout: Duration::from_secs(5),
        server_heartbeat: wsbeat::config::ServerHeartbeat::Both,
        ..Default::default()
    });
    let server = wsbeat::Server::bind(cfg).unwrap();
    let addr = server.local_addr();
    let stats = server.stats();
    let handle = server.handle();
    let loops = server.into_loops();
    assert_eq!(loops.len(), threads());
    let running: Vec<_> = loops
        .into_iter()
        .map(|l| {
            std::thread::spawn(move || {
                IS_SERVER.with(|c| c.set(true));
                l.run()
            })
        })
        .collect();
    let mut clients: Vec<Raw> = (0..50)
        .map(|i| Raw::open(addr, &format!("/?client_id=idle-{i}")))
        .collect();
    wait_until("all online", || stats.clients_online() == 50);

    let beat = |clients: &mut Vec<Raw>, for_how_long: Duration| {
        let t = Instant::now();
        while t.elapsed() < for_how_long {
            for c in clients.iter_mut() {
                c.send_frame(true, OpCode::Text, b"heartbeat");
                c.send_frame(true, OpCode::Pong, b"");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // Warm up: buffers reach their working size.
    beat(&mut clients, Duration::from_millis(500));
    let before = SERVER_ALLOCS.load(Ordering::Relaxed);
    // Steady state: heartbeats in, pings and text heartbeats out, timers
    // firing every 50 ms for each connection.
    beat(&mut clients, Duration::from_secs(1));
    let after = SERVER_ALLOCS.load(Ordering::Relaxed);
    assert!(before > 0, "the counter does not see the server threads");
    // Every loop holds some of the clients, so every loop was measured.
    assert!(
        stats.loop_connections().iter().all(|&n| n > 0),
        "{:?}",
        stats.loop_connections()
    );
    assert_eq!(after - before, 0, "allocations on the steady-state path");
    // And the heartbeats did arrive: everyone is still online.
    assert_eq!(stats.clients_online(), 50);
    // The clients read what the server sent them (pings and text heartbeats).
    for c in clients.iter_mut() {
        let f = c.read_frame().unwrap();
        assert!(matches!(f.opcode, OpCode::Ping | OpCode::Text));
    }
    // Stop it, so the next run counts only its own server.
    drop(clients);
    wait_until("all gone", || stats.connections_open() == 0);
    handle.shutdown().unwrap();
    for t in running {
        t.join().unwrap().unwrap();
    }
}

crate::also_with_two_loops!(idle_heartbeating_connections_do_not_allocate,);
