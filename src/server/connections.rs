//! The WebSocket connections of a loop: their sockets in a slab, moving
//! bytes between sockets and sessions (`crate::session`), and dropping a
//! connection when its session or its socket says so.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use mio::net::TcpStream;
use mio::{Interest, Registry};
use slab::Slab;

use super::links::Shared;
use super::token::conn_token;
use crate::presence::{ConnId, OfflineReason};
use crate::session::{After, Context, Drained, Fanout, Session, Sessions};

/// Reads per connection per readiness event before others get their turn.
const MAX_READS_PER_EVENT: usize = 16;

pub(super) type Conn = Session<TcpStream>;

/// Whether a connection is still there after an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub(super) enum Fate {
    Alive,
    Dropped,
}

/// Every WebSocket connection of the loop and what their sessions share.
pub(super) struct Connections {
    pub table: Slab<Conn>,
    pub cx: Context,
    /// This loop's index among the process's loops.
    pub loop_index: usize,
    pub shared: Arc<Shared>,
    /// The poller's registry, for write interest.
    registry: Registry,
    next_generation: u32,
    /// One past the highest slot ever used: where a broadcast's walk ends.
    high_water: usize,
    /// Broadcasts in progress, oldest first.
    pub fanouts: VecDeque<Fanout>,
    /// When this turn's time for broadcasts is up (set by the first one).
    pub fanout_until: Option<std::time::Instant>,
    /// Messages for single clients that wait for the broadcasts in progress.
    pub behind_fanouts: Vec<crate::handler::Command>,
}

impl Connections {
    pub fn new(cx: Context, loop_index: usize, shared: Arc<Shared>, registry: Registry, capacity: usize) -> Self {
        Connections {
            table: Slab::with_capacity(capacity),
            cx,
            loop_index,
            shared,
            registry,
            next_generation: 0,
            high_water: 0,
            fanouts: VecDeque::new(),
            fanout_until: None,
            behind_fanouts: Vec::new(),
        }
    }

    /// Takes an accepted socket, already counted in this loop's `assigned`:
    /// registers it and starts its session.
    pub fn insert(&mut self, mut stream: TcpStream) -> io::Result<()> {
        let generation = self.next_generation;
        self.next_generation = generation.wrapping_add(1) & ConnId::GENERATION_MASK;
        let entry = self.table.vacant_entry();
        let slot = entry.key();
        let id = ConnId::new(slot, self.loop_index, generation);
        if let Err(e) = self.registry.register(&mut stream, conn_token(id), Interest::READABLE) {
            self.forget_one();
            return Err(e);
        }
        entry.insert(Session::accept(stream, id, &mut self.cx));
        self.high_water = self.high_water.max(slot + 1);
        Ok(())
    }

    /// A connection of this loop is gone (or never came): one less to count.
    fn forget_one(&self) {
        self.shared.loops[self.loop_index]
            .assigned
            .fetch_sub(1, Ordering::Relaxed);
    }

    /// The slot of connection `id`, if it is still the one in it.
    pub fn live(&self, id: ConnId) -> Option<usize> {
        let slot = id.slot();
        self.table.get(slot).filter(|c| c.id() == id).map(|_| slot)
    }

    /// The slot named by a mio token, if its connection is still the one
    /// the token was made for.
    pub fn live_token(&self, slot: usize, token: mio::Token) -> Option<usize> {
        self.table
            .get(slot)
            .filter(|c| conn_token(c.id()) == token)
            .map(|_| slot)
    }

    pub fn on_event(&mut self, idx: usize, readable: bool, hangup: bool, writable: bool, rbuf: &mut [u8]) {
        if writable && self.on_writable(idx) == Fate::Dropped {
            return;
        }
        if readable {
            self.on_readable(idx, hangup, rbuf);
        }
    }

    /// Reads and hands to the session what the connection sent. `hangup`:
    /// the event also reported the peer's FIN or a reset, which raise no
    /// further event, so read on until the socket says so.
    fn on_readable(&mut self, idx: usize, hangup: bool, rbuf: &mut [u8]) {
        for _ in 0..MAX_READS_PER_EVENT {
            let conn = &mut self.table[idx];
            let n = match conn.io.read(rbuf) {
                Ok(0) => {
                    let (reason, why) = conn.on_eof();
                    self.drop_conn(idx, reason, why);
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.drop_conn(idx, OfflineReason::Error, "read error");
                    return;
                }
            };
            self.cx.metrics.bytes_received += n as u64;
            let after = conn.on_bytes(&mut self.cx, &mut rbuf[..n]);
            if self.apply(idx, after) == Fate::Dropped {
                return;
            }
            // A short read drained the socket: with edge-triggered readiness
            // the next byte to arrive raises a new event, so another read
            // now would only return WouldBlock. Not so for a FIN or a reset
            // reported with this event: only a read shows it.
            if n < rbuf.len() && !hangup {
                return;
            }
        }
        // Read budget spent with data still waiting: come back next turn
        // rather than starve the other connections. Re-registering re-arms
        // the edge so the remaining bytes raise a new event.
        let want_write = self.table[idx].want_write;
        let _ = self.set_interest(idx, want_write);
    }

    fn on_writable(&mut self, idx: usize) -> Fate {
        let conn = &mut self.table[idx];
        if conn.backlog() > 0 {
            let (io, unsent) = conn.io_and_unsent();
            match write_some(io, unsent) {
                Ok(n) => {
                    conn.wrote_unsent(n);
                    self.cx.metrics.bytes_sent += n as u64;
                }
                Err(_) => {
                    self.drop_conn(idx, OfflineReason::Error, "write error");
                    return Fate::Dropped;
                }
            }
        }
        self.after_write(idx)
    }

    /// Carries out a session's verdict: drop the connection, or write what
    /// the session produced (in `cx.out`).
    pub fn apply(&mut self, idx: usize, after: After) -> Fate {
        match after {
            After::Close(..) => {
                self.cx.out.clear();
                // The session has already left; closing the descriptor
                // removes it from the poll set.
                self.table.remove(idx);
                self.forget_one();
                Fate::Dropped
            }
            After::Keep => self.flush(idx),
        }
    }

    /// Writes what the session produced (in `cx.out`), keeps what the socket
    /// does not take, and runs what must happen once output drains.
    fn flush(&mut self, idx: usize) -> Fate {
        let conn = &mut self.table[idx];
        if !self.cx.out.is_empty() {
            let written = write_some(&mut conn.io, &self.cx.out);
            match written {
                Ok(n) => {
                    self.cx.metrics.bytes_sent += n as u64;
                    if n < self.cx.out.len() {
                        conn.keep_unsent(&self.cx.out[n..]);
                    }
                    self.cx.out.clear();
                }
                Err(_) => {
                    self.cx.out.clear();
                    self.drop_conn(idx, OfflineReason::Error, "write error");
                    return Fate::Dropped;
                }
            }
        }
        self.after_write(idx)
    }

    fn after_write(&mut self, idx: usize) -> Fate {
        let conn = &mut self.table[idx];
        if conn.backlog() > 0 {
            return if conn.want_write {
                Fate::Alive
            } else {
                self.set_interest(idx, true)
            };
        }
        let drained = conn.on_drained();
        if conn.want_write && self.set_interest(idx, false) == Fate::Dropped {
            return Fate::Dropped;
        }
        let conn = &mut self.table[idx];
        match drained {
            Drained::Close => {
                self.drop_conn(idx, OfflineReason::Closed, "closed");
                Fate::Dropped
            }
            Drained::ShutWrite => {
                let _ = conn.io.shutdown(Shutdown::Write);
                Fate::Alive
            }
            Drained::Nothing => Fate::Alive,
        }
    }

    /// (Re-)registers the connection for readability, and writability when
    /// `write` (which also re-arms an edge that was not consumed).
    fn set_interest(&mut self, idx: usize, write: bool) -> Fate {
        let conn = &mut self.table[idx];
        let interest = if write {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        conn.want_write = write;
        let token = conn_token(conn.id());
        if self.registry.reregister(&mut conn.io, token, interest).is_err() {
            self.drop_conn(idx, OfflineReason::Error, "reregister failed");
            return Fate::Dropped;
        }
        Fate::Alive
    }

    /// Drops a connection for a reason of its socket's (or the loop's).
    pub fn drop_conn(&mut self, idx: usize, reason: OfflineReason, why: &str) {
        let mut conn = self.table.remove(idx);
        self.forget_one();
        conn.gone(&mut self.cx, reason, why);
        // Closing the descriptor removes it from the poll set.
    }

    /// Runs a session's timer.
    pub fn on_timer(&mut self, idx: usize) {
        let after = self.table[idx].on_timer(&mut self.cx);
        let _ = self.apply(idx, after);
    }
}

impl Sessions for Connections {
    type Io = TcpStream;

    fn slots(&self) -> usize {
        self.high_water
    }

    fn session(&mut self, slot: usize) -> Option<(&mut Conn, &mut Context)> {
        let Connections { table, cx, .. } = self;
        table.get_mut(slot).map(|s| (s, cx))
    }

    fn carry_out(&mut self, slot: usize, after: After) {
        let _ = self.apply(slot, after);
    }
}

/// Writes as much of `buf` as the socket takes without blocking.
pub(super) fn write_some<W: Write>(w: &mut W, buf: &[u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match w.write(&buf[done..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}
