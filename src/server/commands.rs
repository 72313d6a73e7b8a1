//! Commands on the loop — from handlers (`Control`), the library `Handle`,
//! the admin API and replacements: push, broadcast, kick, close a replaced
//! connection. Each one is a session call whose verdict the connection
//! table carries out.

use log::info;

use super::connections::{Connections, Fate};
use crate::handler::{Command, ConnId, Outgoing};
use crate::presence::OfflineReason;

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

    /// True for a shutdown request, which is the server's to carry out.
    fn execute(&mut self, c: Command) -> bool {
        match c {
            Command::Replaced(id) => {
                if let Some(idx) = self.live(id) {
                    let after = self.table[idx].replaced(&mut self.cx);
                    let _ = self.apply(idx, after);
                }
            }
            Command::SendConn(id, msg) => {
                self.send_conn(id, &msg);
            }
            Command::SendId(id, msg) => {
                self.push(&id, &msg);
            }
            Command::Broadcast(msg) => {
                self.broadcast(&msg);
            }
            Command::Kick(id, reason) => {
                self.kick(&id, &reason);
            }
            Command::Shutdown => return true,
        }
        false
    }

    /// Queues a message for connection `id`; false if it is not open.
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

    /// Queues a message for the client with id `id`; false if it is not
    /// online.
    pub fn push(&mut self, id: &str, msg: &Outgoing) -> bool {
        match self.cx.registry.get(id) {
            Some(conn) => self.send_conn(conn, msg),
            None => false,
        }
    }

    /// Sends to every open connection (one frame encoded once); how many.
    pub fn broadcast(&mut self, msg: &Outgoing) -> usize {
        let mut frame = Vec::new();
        msg.encode(&mut frame);
        let idxs: Vec<usize> = self.table.iter().map(|(k, _)| k).collect();
        let mut sent = 0;
        for idx in idxs {
            if let Some(after) = self.table[idx].push_encoded(&mut self.cx, &frame) {
                sent += 1;
                let _: Fate = self.apply(idx, after);
            }
        }
        sent
    }

    /// Closes client `id` with 4003; false if it is not online.
    pub fn kick(&mut self, id: &str, reason: &str) -> bool {
        let Some(idx) = self.cx.registry.get(id).and_then(|c| self.live(c)) else {
            return false;
        };
        let conn = &mut self.table[idx];
        info!("kicked {id} ({})", conn.peer());
        let after = conn.close(&mut self.cx, 4003, reason, OfflineReason::Kicked);
        let _ = self.apply(idx, after);
        true
    }

    /// Starts closing every connection: 1001 for the open ones, dropped in
    /// the handshake; the others are already closing.
    pub fn shut_down_all(&mut self) {
        let idxs: Vec<usize> = self.table.iter().map(|(k, _)| k).collect();
        for idx in idxs {
            let after = self.table[idx].shut_down(&mut self.cx);
            let _ = self.apply(idx, after);
        }
    }
}
