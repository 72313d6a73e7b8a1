//! A simulation of the server's state for connection counts this machine
//! cannot open: the loop's own connection table, registry and timer wheel,
//! driven through the sans-IO core with no sockets (the transport is `()`,
//! and frames the server would send are encoded into a scratch buffer and
//! counted).
//!
//! It answers two questions without a million file descriptors: how many
//! bytes of user-space state a connection costs, and whether a heartbeat
//! tick costs what expires rather than what is registered. `benches/sim.rs`
//! runs it with a million connections.

use std::sync::Arc;

use slab::Slab;

use super::connection::{Conn, Phase};
use super::registry::{Bind, DuplicateId, Registry};
use crate::protocol::frame::{self, OpCode};
use crate::protocol::heartbeat::{Due, Heartbeat, Schedule, parse_heartbeat};
use crate::protocol::message::{Decoder, Limits, Message};
use crate::timer::TimerWheel;

/// What one advance of the clock did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// Timers that came due.
    pub fired: u64,
    /// Server heartbeats encoded (pings).
    pub beats: u64,
    /// Connections evicted for silence.
    pub evicted: u64,
}

/// Connections held in the server's own structures, without sockets.
pub struct Simulation {
    conns: Slab<Conn<()>>,
    registry: Registry,
    timers: TimerWheel<u64>,
    schedule: Schedule,
    now: u64,
    /// What the server would write; cleared after each frame.
    scratch: Vec<u8>,
    /// A client's masked `heartbeat` frame, as it arrives off the wire.
    heartbeat_wire: Vec<u8>,
    /// The read buffer the loop would read it into.
    rbuf: Vec<u8>,
    limits: Limits,
    next_generation: u64,
}

impl Simulation {
    /// Room for `capacity` connections, reserved as the server reserves it;
    /// heartbeat `interval_ms`, eviction after `timeout_ms` of silence.
    pub fn new(capacity: usize, interval_ms: u64, timeout_ms: u64) -> Self {
        let mut heartbeat_wire = Vec::new();
        frame::encode_frame_masked(
            &mut heartbeat_wire,
            true,
            OpCode::Text,
            b"heartbeat",
            [0x11, 0x22, 0x33, 0x44],
        );
        Simulation {
            conns: Slab::with_capacity(capacity),
            registry: Registry::new(),
            timers: TimerWheel::with_capacity(0, capacity),
            schedule: Schedule {
                interval: interval_ms,
                timeout: timeout_ms,
                beats: true,
            },
            now: 0,
            scratch: Vec::with_capacity(64),
            rbuf: vec![0; heartbeat_wire.len()],
            heartbeat_wire,
            limits: Limits {
                max_message_size: 1 << 20,
            },
            next_generation: 0,
        }
    }

    pub fn now(&self) -> u64 {
        self.now
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    pub fn clients_online(&self) -> usize {
        self.registry.len()
    }

    pub fn timers(&self) -> usize {
        self.timers.len()
    }

    /// A connection that has upgraded with `?client_id=ID`, as the loop
    /// holds it. Returns its handle for [`heartbeat`](Self::heartbeat).
    pub fn connect(&mut self, id: &str) -> usize {
        let entry = self.conns.vacant_entry();
        let idx = entry.key();
        let token = (self.next_generation << 32) | idx as u64;
        self.next_generation = (self.next_generation + 1) & 0x3FFF_FFFF;
        let mut conn = Conn::new((), token, self.now);
        conn.phase = Phase::Open;
        conn.opened = true;
        let id: Arc<str> = id.into();
        if self.registry.bind(&id, token, DuplicateId::Replace) == Bind::Bound {
            conn.client_id = Some(id);
        }
        let (next_beat, wake_at) = self.schedule.start(self.now);
        conn.next_beat = next_beat;
        conn.timer = Some(self.timers.schedule(wake_at, token));
        entry.insert(conn);
        idx
    }

    /// Connection `idx` sends a heartbeat: the frame goes through the
    /// connection's decoder and the heartbeat parser, and refreshes liveness
    /// (no timer is touched). False if the connection is gone.
    pub fn heartbeat(&mut self, idx: usize) -> bool {
        let Some(conn) = self.conns.get_mut(idx) else {
            return false;
        };
        self.rbuf.copy_from_slice(&self.heartbeat_wire);
        match conn.decoder.decode(&mut self.rbuf, &self.limits) {
            Ok((_, Some(Message::Text(t)))) if parse_heartbeat(t) == Heartbeat::Plain => {
                conn.last_seen = self.now;
                true
            }
            other => unreachable!("a heartbeat frame decodes as one: {other:?}"),
        }
    }

    /// Moves the clock to `to` (monotonic ms) and runs every timer that
    /// comes due, as the loop's timer step does.
    pub fn advance(&mut self, to: u64) -> Tick {
        self.now = self.now.max(to);
        let mut tick = Tick::default();
        while let Some((_, token)) = self.timers.poll(self.now) {
            tick.fired += 1;
            let idx = (token & 0xFFFF_FFFF) as usize;
            let Some(conn) = self.conns.get_mut(idx).filter(|c| c.token == token) else {
                continue;
            };
            conn.timer = None;
            match self.schedule.on_timer(self.now, conn.last_seen, conn.next_beat) {
                Due::Evict => {
                    tick.evicted += 1;
                    let conn = self.conns.remove(idx);
                    if let Some(id) = &conn.client_id {
                        self.registry.unbind(id, conn.token);
                    }
                }
                Due::Wait {
                    beat,
                    next_beat,
                    wake_at,
                } => {
                    conn.next_beat = next_beat;
                    if beat {
                        // The transport is nothing: encode what would be
                        // written, count it, drop it.
                        frame::encode_frame(&mut self.scratch, OpCode::Ping, b"");
                        self.scratch.clear();
                        tick.beats += 1;
                    }
                    conn.timer = Some(self.timers.schedule(wake_at, conn.token));
                }
            }
        }
        tick
    }

    /// Whether no connection holds decoder state (an idle connection should
    /// hold none).
    pub fn decoder_is_idle(&self) -> bool {
        self.conns.iter().all(|(_, c)| c.decoder.is_idle())
    }

    #[doc(hidden)]
    pub fn conn_size() -> usize {
        std::mem::size_of::<Conn<()>>()
    }

    #[doc(hidden)]
    pub fn decoder_size() -> usize {
        std::mem::size_of::<Decoder>()
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
        // Everyone goes silent: all gone one timeout after their last beat.
        let t = sim.advance(180_000 + 60_000);
        assert_eq!(t.evicted, 10_000);
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
}
