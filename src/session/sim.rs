//! A simulation for connection counts this machine cannot open: sessions
//! held as the loop holds them (a slab, one [`Context`] with its timer wheel
//! and registry), driven through the same [`Session`] code the loop runs —
//! the upgrade request, heartbeat frames, timers — with no sockets (the
//! transport is `()`, and what a session writes is counted and dropped).
//!
//! It answers without a million file descriptors: how many bytes of
//! user-space state a connection costs, whether a heartbeat tick costs what
//! expires rather than what is registered, and (several simulations sharing
//! a directory, one per thread, each write costing a modelled socket call)
//! whether heartbeats and evictions keep their bound while a broadcast to
//! all of them runs. `benches/sim.rs` runs it with a million connections.

use std::sync::Arc;
use std::time::Duration;

use slab::Slab;

use super::{After, Context, Fanout, Session, Sessions};
use crate::config::Config;
use crate::handler::{Command, NoopHandler};
use crate::presence::{ConnId, Directory, OfflineReason, SharedRegistry};
use crate::protocol::frame::{self, OpCode};

/// What one advance of the clock did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// Timers that came due.
    pub fired: u64,
    /// Server heartbeats sent (pings).
    pub beats: u64,
    /// Sessions evicted for silence (closed with 4000; they leave the table
    /// when the close timeout passes, as clients that never answer do).
    pub evicted: u64,
    /// How late the latest heartbeat or eviction came after it was due, in
    /// ms of the simulated clock.
    pub max_late_ms: u64,
}

/// Sessions held in the server's own structures, without sockets: one
/// loop's worth. Several, sharing a directory, make a process of several
/// loops.
pub struct Simulation {
    table: Slab<Session<()>>,
    cx: Context,
    loop_index: usize,
    high_water: usize,
    /// A broadcast in progress.
    fanout: Option<Fanout>,
    /// A client's masked `heartbeat` frame, as it arrives off the wire.
    heartbeat_wire: Vec<u8>,
    /// The read buffer the loop would read into.
    rbuf: Vec<u8>,
    next_generation: u32,
    /// Commands being run.
    running: Vec<Command>,
    /// Time to spend per write, standing in for the socket's system call.
    send_cost: Duration,
}

fn evictions(cx: &Context) -> u64 {
    cx.metrics.evictions[OfflineReason::HeartbeatTimeout as usize]
}

impl Simulation {
    /// Room for `capacity` sessions, reserved as the server reserves it;
    /// heartbeat `interval_ms`, eviction after `timeout_ms` of silence.
    pub fn new(capacity: usize, interval_ms: u64, timeout_ms: u64) -> Self {
        Self::loop_of(0, Arc::new(SharedRegistry::new()), capacity, interval_ms, timeout_ms)
    }

    /// Loop `loop_index` of a process whose loops share `directory`.
    pub fn loop_of(
        loop_index: usize,
        directory: Arc<dyn Directory>,
        capacity: usize,
        interval_ms: u64,
        timeout_ms: u64,
    ) -> Self {
        let cfg = Config {
            heartbeat_interval: Duration::from_millis(interval_ms),
            heartbeat_timeout: Duration::from_millis(timeout_ms),
            admin_listen: None,
            handle_signals: false,
            ..Config::default()
        };
        let mut heartbeat_wire = Vec::new();
        frame::encode_frame_masked(
            &mut heartbeat_wire,
            true,
            OpCode::Text,
            b"heartbeat",
            [0x11, 0x22, 0x33, 0x44],
        );
        Simulation {
            table: Slab::with_capacity(capacity),
            cx: Context::new(cfg, directory, Box::new(NoopHandler), false, capacity),
            loop_index,
            high_water: 0,
            fanout: None,
            heartbeat_wire,
            rbuf: Vec::with_capacity(512),
            next_generation: 0,
            running: Vec::new(),
            send_cost: Duration::ZERO,
        }
    }

    /// Spends `cost` on every write from now on, as a socket's `write` would
    /// (about 1 µs on loopback): without it the simulation measures only
    /// the server's own work, which is a small part of a broadcast's.
    pub fn set_send_cost(&mut self, cost: Duration) {
        self.send_cost = cost;
    }

    pub fn now(&self) -> u64 {
        self.cx.now()
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    pub fn clients_online(&self) -> usize {
        self.cx.registry.len()
    }

    pub fn timers(&self) -> usize {
        self.cx.timers.len()
    }

    /// Hands `rbuf` to session `idx` as one read, and carries out its verdict.
    fn feed(&mut self, idx: usize) -> After {
        let after = self.table[idx].on_bytes(&mut self.cx, &mut self.rbuf);
        self.apply(idx, after);
        after
    }

    /// What the loop does with a verdict, minus the socket: what the session
    /// wrote is dropped, a closed session leaves the table, and presence
    /// events are handed out (to no one).
    fn apply(&mut self, idx: usize, after: After) {
        if !self.cx.out.is_empty() && !self.send_cost.is_zero() {
            let t = std::time::Instant::now();
            while t.elapsed() < self.send_cost {
                std::hint::spin_loop();
            }
        }
        self.cx.out.clear();
        self.cx.events.clear();
        if let After::Close(..) = after {
            self.table.remove(idx);
        }
        self.settle();
    }

    /// Runs queued commands the way the loop does for the ones a simulation
    /// can cause (a replaced duplicate id).
    fn settle(&mut self) {
        while !self.cx.ctl.commands.is_empty() {
            std::mem::swap(&mut self.running, &mut self.cx.ctl.commands);
            let mut batch = std::mem::take(&mut self.running);
            for c in batch.drain(..) {
                if let Command::Replaced(id) = c
                    && let Some(idx) = self.live(id)
                {
                    let after = self.table[idx].replaced(&mut self.cx);
                    self.apply(idx, after);
                }
            }
            self.running = batch;
        }
    }

    fn live(&self, id: ConnId) -> Option<usize> {
        self.table.get(id.slot()).filter(|s| s.id() == id).map(|_| id.slot())
    }

    /// A client connects and upgrades with `?client_id=ID` (the request goes
    /// through the session's handshake). Returns its handle for
    /// [`heartbeat`](Self::heartbeat).
    pub fn connect(&mut self, id: &str) -> usize {
        let generation = self.next_generation;
        self.next_generation = generation.wrapping_add(1) & ConnId::GENERATION_MASK;
        let entry = self.table.vacant_entry();
        let idx = entry.key();
        entry.insert(Session::accept(
            (),
            ConnId::new(idx, self.loop_index, generation),
            &mut self.cx,
        ));
        self.high_water = self.high_water.max(idx + 1);
        self.rbuf.clear();
        self.rbuf.extend_from_slice(b"GET /?client_id=");
        self.rbuf.extend_from_slice(id.as_bytes());
        self.rbuf.extend_from_slice(
            b" HTTP/1.1\r\nHost: sim\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        );
        self.feed(idx);
        idx
    }

    /// Session `idx` receives a client heartbeat frame through its decoder
    /// (which refreshes liveness; no timer is touched). False if it is gone
    /// or the frame was not taken as a heartbeat.
    pub fn heartbeat(&mut self, idx: usize) -> bool {
        if !self.table.contains(idx) {
            return false;
        }
        let before = self.cx.metrics.heartbeats_received;
        self.rbuf.clear();
        self.rbuf.extend_from_slice(&self.heartbeat_wire);
        self.feed(idx);
        self.cx.metrics.heartbeats_received == before + 1
    }

    /// Moves the clock to `to` (monotonic ms) and runs every timer that
    /// comes due, as the loop's timer step does.
    pub fn advance(&mut self, to: u64) -> Tick {
        self.cx.tick(to, to);
        let now = self.cx.now();
        let (beats, evicted) = (self.cx.metrics.heartbeats_sent, evictions(&self.cx));
        let mut fired = 0;
        let mut max_late_ms = 0;
        while let Some((due, id)) = self.cx.timers.poll_due(now) {
            fired += 1;
            max_late_ms = max_late_ms.max(now.saturating_sub(due));
            if let Some(idx) = self.live(id) {
                let after = self.table[idx].on_timer(&mut self.cx);
                self.apply(idx, after);
            }
        }
        Tick {
            fired,
            beats: self.cx.metrics.heartbeats_sent - beats,
            evicted: evictions(&self.cx) - evicted,
            max_late_ms,
        }
    }

    /// Starts a broadcast of `frame` to every open session (as the loop
    /// does: the bytes encoded once, shared).
    pub fn broadcast(&mut self, frame: Arc<[u8]>) {
        self.fanout = Some(Fanout::new(frame));
    }

    /// Sends the broadcast in progress until `out_of_time` says stop. True
    /// when it is done (or none is in progress).
    pub fn step_broadcast(&mut self, out_of_time: impl FnMut() -> bool) -> bool {
        let Some(mut f) = self.fanout.take() else {
            return true;
        };
        if f.step(self, out_of_time) {
            return true;
        }
        self.fanout = Some(f);
        false
    }

    /// Messages sent (broadcast frames and text heartbeats).
    pub fn messages_sent(&self) -> u64 {
        self.cx.metrics.messages_sent
    }

    /// Whether no session holds decoder state (an idle one should hold none).
    pub fn decoder_is_idle(&self) -> bool {
        self.table.iter().all(|(_, s)| s.decoder_is_idle())
    }

    /// Whether no session holds a buffer of any kind.
    pub fn buffers_are_empty(&self) -> bool {
        self.table.iter().all(|(_, s)| s.buffered_bytes() == 0)
    }

    #[doc(hidden)]
    pub fn conn_size() -> usize {
        std::mem::size_of::<Session<()>>()
    }

    #[doc(hidden)]
    pub fn decoder_size() -> usize {
        std::mem::size_of::<crate::protocol::message::Decoder>()
    }
}

impl Sessions for Simulation {
    type Io = ();

    fn slots(&self) -> usize {
        self.high_water
    }

    fn session(&mut self, slot: usize) -> Option<(&mut Session<()>, &mut Context)> {
        let Simulation { table, cx, .. } = self;
        table.get_mut(slot).map(|s| (s, cx))
    }

    fn carry_out(&mut self, slot: usize, after: After) {
        self.apply(slot, after);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeating_connections_stay_and_silent_ones_go_on_time() {
        let mut sim = Simulation::new(20_000, 30_000, 60_000);
        let idxs: Vec<usize> = (0..20_000).map(|i| sim.connect(&format!("device-{i:06}"))).collect();
        assert_eq!(
            (sim.len(), sim.clients_online(), sim.timers()),
            (20_000, 20_000, 20_000)
        );
        assert!(sim.buffers_are_empty());
        // Half of them heartbeat every 20 s for 3 minutes; the others stay silent.
        let mut evicted = 0;
        let mut beats = 0;
        for step in 1..=9 {
            for &i in idxs.iter().step_by(2) {
                assert!(sim.heartbeat(i));
            }
            let t = sim.advance(step * 20_000);
            evicted += t.evicted;
            beats += t.beats;
            if step * 20_000 < 60_000 {
                assert_eq!(t.evicted, 0, "evicted before the timeout");
            }
        }
        assert_eq!(evicted, 10_000);
        assert_eq!((sim.len(), sim.clients_online()), (10_000, 10_000));
        // Each connection got a ping every 30 s while it lived.
        assert!((10_000 * 5..=10_000 * 8).contains(&beats), "{beats}");
        assert!(sim.decoder_is_idle());
        // Everyone goes silent: all evicted one timeout after their last
        // beat, and gone once the close timeout (5 s) passes unanswered.
        let t = sim.advance(180_000 + 60_000);
        assert_eq!(t.evicted, 10_000);
        assert_eq!(sim.clients_online(), 0);
        sim.advance(180_000 + 60_000 + 5_000);
        assert!(sim.is_empty() && sim.clients_online() == 0 && sim.timers() == 0);
    }

    #[test]
    fn a_tick_costs_what_expires() {
        // Connections spread over one interval: a tick of 1% of the interval
        // fires about 1% of the timers, whatever the total.
        for n in [10_000usize, 100_000] {
            let mut sim = Simulation::new(n, 30_000, 60_000);
            for i in 0..n {
                sim.advance((i as u64 * 30_000) / n as u64);
                sim.connect(&format!("d{i}"));
            }
            let base = sim.now();
            // Keep everyone alive, then tick 1% of an interval ahead.
            for i in 0..n {
                sim.heartbeat(i);
            }
            let t = sim.advance(base + 300);
            let expected = n as u64 / 100;
            assert!(
                t.fired.abs_diff(expected) <= expected / 10 + 2,
                "n {n}: fired {}",
                t.fired
            );
        }
    }

    #[test]
    fn a_broadcast_in_slices_reaches_everyone_once() {
        let mut sim = Simulation::new(1000, 30_000, 60_000);
        for i in 0..1000 {
            sim.connect(&format!("d{i}"));
        }
        sim.broadcast(Arc::from(&b"\x81\x02hi"[..]));
        let mut steps = 0;
        // A budget of one look at the clock per step: 64 sessions a slice.
        while !sim.step_broadcast(|| true) {
            steps += 1;
        }
        assert_eq!(steps, 1000 / 64);
        assert_eq!(sim.messages_sent(), 1000);
    }

    #[test]
    fn a_duplicate_id_replaces_the_older_session() {
        let mut sim = Simulation::new(4, 30_000, 60_000);
        sim.connect("dup");
        sim.connect("dup");
        assert_eq!((sim.len(), sim.clients_online()), (2, 1));
        // The older one waits for the client's close, then goes.
        sim.advance(5_000);
        assert_eq!((sim.len(), sim.clients_online()), (1, 1));
    }
}
