//! What the admin API may ask of a loop ([`Backend`]), answered from its
//! connection table, registry and counters.

use super::connections::Connections;
use crate::admin::{Backend, ClientInfo};
use crate::handler::{Command, Outgoing};
use crate::metrics::{self, Gauges};
use crate::presence::ConnId;

/// The loop as the admin API sees it while it serves one request.
pub(super) struct LoopBackend<'a> {
    pub conns: &'a mut Connections,
    /// Scratch space for running the commands an admin action causes.
    pub running: &'a mut Vec<Command>,
    /// Set when one of those commands asked the server to shut down.
    pub shutdown: &'a mut bool,
    /// Admin-side numbers for `/metrics`.
    pub admin_connections: usize,
    pub sse_subscribers: usize,
    pub admin_requests: u64,
}

impl LoopBackend<'_> {
    fn client_info(&self, id: &str, conn: ConnId) -> Option<ClientInfo> {
        let c = &self.conns.table[self.conns.live(conn)?];
        let cx = &self.conns.cx;
        Some(ClientInfo {
            id: id.to_string(),
            peer: c.io.peer_addr().ok()?,
            connected_at_ms: cx.wall_ms(c.connected_at()),
            last_seen_ms: cx.wall_ms(c.last_seen()),
        })
    }

    /// Runs what the action queued (e.g. a handler reacting to a kick).
    fn settle(&mut self) {
        *self.shutdown |= self.conns.run_deferred(self.running);
    }
}

impl Backend for LoopBackend<'_> {
    fn client(&self, id: &str) -> Option<ClientInfo> {
        let conn = self.conns.cx.registry.get(id)?;
        self.client_info(id, conn)
    }

    fn clients_page(&self, after: Option<&str>, limit: usize) -> (usize, Vec<ClientInfo>, bool) {
        let registry = &self.conns.cx.registry;
        let mut page: Vec<ClientInfo> = registry
            .page(after, limit + 1)
            .filter_map(|(id, conn)| self.client_info(id, conn))
            .collect();
        let more = page.len() > limit;
        page.truncate(limit);
        (registry.len(), page, more)
    }

    fn push(&mut self, id: &str, msg: Outgoing) -> bool {
        let ok = self.conns.push(id, &msg);
        self.settle();
        ok
    }

    fn broadcast(&mut self, msg: Outgoing) -> usize {
        let n = self.conns.broadcast(&msg);
        self.settle();
        n
    }

    fn kick(&mut self, id: &str, reason: &str) -> bool {
        let ok = self.conns.kick(id, reason);
        self.settle();
        ok
    }

    fn metrics(&self) -> String {
        let table = &self.conns.table;
        // One pass over the connections per scrape keeps the hot path free
        // of bookkeeping.
        let (mut buffering, mut buffered) = (0, 0);
        for (_, c) in table.iter() {
            let b = c.buffered_bytes();
            buffering += usize::from(b > 0);
            buffered += b;
        }
        metrics::render(
            &self.conns.cx.metrics,
            Gauges {
                connections_open: table.len(),
                clients_online: self.conns.cx.registry.len(),
                sse_subscribers: self.sse_subscribers,
                admin_connections: self.admin_connections,
                admin_requests: self.admin_requests,
                connections_buffering: buffering,
                buffered_bytes: buffered,
            },
        )
    }
}
