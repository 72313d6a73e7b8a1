//! Commands on a loop — from handlers (`Control`), the library `Handle`,
//! the admin API, replacements and other loops: push, broadcast, kick,
//! close a replaced connection. A command about a connection of another
//! loop is sent there; one about a client id goes to the loop the
//! directory names. Each is then a session call whose verdict the
//! connection table carries out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use log::info;

use super::connections::Connections;
use super::links::LoopMsg;
use crate::handler::{Command, ConnId, Outgoing};
use crate::presence::OfflineReason;
use crate::session::Fanout;

/// The most a loop turn spends on broadcasts before it serves its sockets
/// and timers again.
pub(super) const FANOUT_BUDGET: Duration = Duration::from_millis(5);
/// Broadcasts a loop keeps in progress before it stops taking commands from
/// other threads (whose senders then wait: the queue is bounded).
pub(super) const MAX_PENDING_BROADCASTS: usize = 16;

impl Connections {
    /// Runs queued commands, including those the commands themselves queue
    /// (a kick's `on_close` may send, and so on). `running` is scratch space
    /// kept to reuse its capacity. True when one of them asked for shutdown.
    pub fn run_deferred(&mut self, running: &mut Vec<Command>) -> bool {
        let mut shutdown = false;
        while !self.cx.ctl.commands.is_empty() {
            std::mem::swap(running, &mut self.cx.ctl.commands);
            for c in running.drain(..) {
                shutdown |= self.execute(c);
            }
        }
        shutdown
    }

    /// Sends a command to the loop that must run it.
    fn forward(&self, to: usize, c: Command) {
        // A loop that has stopped takes nothing: the process is exiting.
        let _ = self.shared.send(to, LoopMsg::Command(c));
    }

    /// True for a shutdown request, which is the loop's to carry out.
    pub fn execute(&mut self, c: Command) -> bool {
        // A message for one client must not overtake a broadcast sent
        // before it: while one is in progress, they wait behind it.
        if !self.fanouts.is_empty() && matches!(c, Command::SendConn(..) | Command::SendId(..) | Command::Kick(..)) {
            self.behind_fanouts.push(c);
            return false;
        }
        match c {
            Command::Replaced(id) if id.loop_index() != self.loop_index => self.forward(id.loop_index(), c),
            Command::Replaced(id) => {
                if let Some(idx) = self.live(id) {
                    let after = self.table[idx].replaced(&mut self.cx);
                    let _ = self.apply(idx, after);
                }
            }
            Command::Rejected(id) if id.loop_index() != self.loop_index => self.forward(id.loop_index(), c),
            Command::Rejected(id) => {
                if let Some(idx) = self.live(id) {
                    let after = self.table[idx].rejected(&mut self.cx);
                    let _ = self.apply(idx, after);
                }
            }
            Command::SendConn(id, _) if id.loop_index() != self.loop_index => self.forward(id.loop_index(), c),
            Command::SendConn(id, msg) => {
                self.send_conn(id, &msg);
            }
            Command::SendId(id, msg) => {
                self.push(&id, msg);
            }
            Command::Broadcast(msg) => {
                self.broadcast(&msg);
            }
            Command::LocalBroadcast(frame) => {
                self.start_fanout(frame);
            }
            Command::Kick(id, reason) => {
                self.kick(&id, &reason);
            }
            Command::Shutdown => return true,
        }
        false
    }

    /// Queues a message for connection `id` of this loop; false if it is
    /// not open.
    fn send_conn(&mut self, id: ConnId, msg: &Outgoing) -> bool {
        let Some(idx) = self.live(id) else { return false };
        match self.table[idx].push(&mut self.cx, msg) {
            Some(after) => {
                let _ = self.apply(idx, after);
                true
            }
            None => false,
        }
    }

    /// Queues a message for the client with id `id`, on whichever loop holds
    /// it; false if it is not online.
    pub fn push(&mut self, id: &str, msg: Outgoing) -> bool {
        match self.cx.registry.lookup(id) {
            Some(conn) if conn.loop_index() == self.loop_index => self.send_conn(conn, &msg),
            Some(conn) => {
                self.forward(conn.loop_index(), Command::SendConn(conn, msg));
                true
            }
            None => false,
        }
    }

    /// Sends to every open connection of every loop (one frame, encoded
    /// once); how many this loop has.
    pub fn broadcast(&mut self, msg: &Outgoing) -> usize {
        let mut frame = Vec::new();
        msg.encode(&mut frame);
        let frame: Arc<[u8]> = frame.into();
        for other in (0..self.shared.loops.len()).filter(|&l| l != self.loop_index) {
            self.forward(other, Command::LocalBroadcast(frame.clone()));
        }
        self.start_fanout(frame)
    }

    /// Starts sending `frame` to this loop's open connections, within what
    /// is left of this turn's budget; how many were open.
    pub fn start_fanout(&mut self, frame: Arc<[u8]>) -> usize {
        let recipients = self.cx.open;
        self.fanouts.push_back(Fanout::new(frame));
        self.run_fanouts();
        recipients
    }

    /// Sends broadcasts in progress until this turn has spent
    /// [`FANOUT_BUDGET`] on them, whatever the number of broadcasts. True
    /// when some are left for the next turn. Commands that waited behind
    /// them run once they are done.
    pub fn run_fanouts(&mut self) -> bool {
        if self.fanouts.is_empty() {
            return false;
        }
        let deadline = *self.fanout_until.get_or_insert_with(|| Instant::now() + FANOUT_BUDGET);
        while let Some(mut f) = self.fanouts.pop_front() {
            if Instant::now() >= deadline || !f.step(self, || Instant::now() >= deadline) {
                self.fanouts.push_front(f);
                return true;
            }
        }
        let waiting = std::mem::take(&mut self.behind_fanouts);
        self.cx.ctl.commands.extend(waiting);
        false
    }

    /// A new turn: a new budget for broadcasts.
    pub fn new_turn(&mut self) {
        self.fanout_until = None;
    }

    /// Closes client `id` with 4003, on whichever loop holds it; false if it
    /// is not online.
    pub fn kick(&mut self, id: &str, reason: &str) -> bool {
        let Some(conn) = self.cx.registry.lookup(id) else {
            return false;
        };
        if conn.loop_index() != self.loop_index {
            self.forward(conn.loop_index(), Command::Kick(id.into(), reason.to_string()));
            return true;
        }
        let Some(idx) = self.live(conn) else { return false };
        let session = &mut self.table[idx];
        info!("kicked {id} ({})", session.peer());
        let after = session.close(&mut self.cx, 4003, reason, OfflineReason::Kicked);
        let _ = self.apply(idx, after);
        true
    }

    /// Starts closing every connection: 1001 for the open ones, dropped in
    /// the handshake; the others are already closing.
    pub fn shut_down_all(&mut self) {
        self.closing_all = true;
        let idxs: Vec<usize> = self.table.iter().map(|(k, _)| k).collect();
        for idx in idxs {
            let after = self.table[idx].shut_down(&mut self.cx);
            let _ = self.apply(idx, after);
        }
    }
}
