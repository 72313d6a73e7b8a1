//! What the admin API may ask of the server ([`Backend`]), answered by the
//! admin loop from its own connections and, for the other loops', by asking
//! them (`links.rs`).

use std::collections::HashMap;
use std::sync::Arc;

use super::connections::Connections;
use super::links::{Answer, LoopNumbers, Question};
use crate::admin::{Backend, ClientInfo};
use crate::handler::{Command, Outgoing};
use crate::metrics::{self, Gauges};
use crate::presence::ConnId;

/// The server as the admin API sees it while the admin loop serves one
/// request.
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

/// What the admin API shows of the clients `wanted` that are on this loop.
pub(super) fn client_infos(conns: &Connections, wanted: &[(Arc<str>, ConnId)]) -> Vec<ClientInfo> {
    wanted
        .iter()
        .filter_map(|(id, conn)| {
            let c = &conns.table[conns.live(*conn)?];
            Some(ClientInfo {
                id: id.to_string(),
                peer: c.io.peer_addr().ok()?,
                connected_at_ms: conns.cx.wall_ms(c.connected_at()),
                last_seen_ms: conns.cx.wall_ms(c.last_seen()),
            })
        })
        .collect()
}

/// This loop's share of `/metrics`. One pass over the connections per
/// scrape keeps the hot path free of bookkeeping.
pub(super) fn loop_numbers(conns: &Connections) -> LoopNumbers {
    let (mut buffering, mut buffered) = (0, 0);
    for (_, c) in conns.table.iter() {
        let b = c.buffered_bytes();
        buffering += usize::from(b > 0);
        buffered += b;
    }
    LoopNumbers {
        metrics: conns.cx.metrics.clone(),
        connections_open: conns.table.len(),
        connections_buffering: buffering,
        buffered_bytes: buffered,
    }
}

impl LoopBackend<'_> {
    /// Client infos for `wanted` (in its order), asking each loop for its own.
    fn infos(&self, wanted: Vec<(Arc<str>, ConnId)>) -> Vec<ClientInfo> {
        let me = self.conns.loop_index;
        let mut by_loop: HashMap<usize, Vec<(Arc<str>, ConnId)>> = HashMap::new();
        for (id, conn) in &wanted {
            by_loop.entry(conn.loop_index()).or_default().push((id.clone(), *conn));
        }
        let mut found: HashMap<String, ClientInfo> = HashMap::new();
        for (l, part) in by_loop {
            let infos = if l == me {
                client_infos(self.conns, &part)
            } else {
                match self.conns.shared.ask(l, Question::Clients(part)) {
                    Some(Answer::Clients(infos)) => infos,
                    _ => Vec::new(),
                }
            };
            found.extend(infos.into_iter().map(|c| (c.id.clone(), c)));
        }
        wanted.iter().filter_map(|(id, _)| found.remove(&**id)).collect()
    }

    /// Runs what the action queued (e.g. a handler reacting to a kick).
    fn settle(&mut self) {
        *self.shutdown |= self.conns.run_deferred(self.running);
    }
}

impl Backend for LoopBackend<'_> {
    fn client(&self, id: &str) -> Option<ClientInfo> {
        let conn = self.conns.cx.registry.lookup(id)?;
        self.infos(vec![(id.into(), conn)]).pop()
    }

    fn clients_page(&self, after: Option<&str>, limit: usize) -> (usize, Vec<ClientInfo>, bool) {
        let registry = &self.conns.cx.registry;
        let total = registry.len();
        let mut page = self.infos(registry.page(after, limit + 1));
        let more = page.len() > limit;
        page.truncate(limit);
        (total, page, more)
    }

    fn push(&mut self, id: &str, msg: Outgoing) -> bool {
        let ok = self.conns.push(id, msg);
        self.settle();
        ok
    }

    fn broadcast(&mut self, msg: Outgoing) -> usize {
        let mut frame = Vec::new();
        msg.encode(&mut frame);
        let frame: Arc<[u8]> = frame.into();
        let me = self.conns.loop_index;
        let mut recipients = 0;
        for l in 0..self.conns.shared.loops.len() {
            recipients += if l == me {
                self.conns.start_fanout(frame.clone())
            } else {
                match self.conns.shared.ask(l, Question::Broadcast(frame.clone())) {
                    Some(Answer::Recipients(n)) => n,
                    _ => 0,
                }
            };
        }
        self.settle();
        recipients
    }

    fn kick(&mut self, id: &str, reason: &str) -> bool {
        let ok = self.conns.kick(id, reason);
        self.settle();
        ok
    }

    fn metrics(&self) -> String {
        let me = self.conns.loop_index;
        let loops: Vec<LoopNumbers> = (0..self.conns.shared.loops.len())
            .map(|l| {
                if l == me {
                    loop_numbers(self.conns)
                } else {
                    match self.conns.shared.ask(l, Question::Numbers) {
                        Some(Answer::Numbers(n)) => *n,
                        _ => LoopNumbers::default(),
                    }
                }
            })
            .collect();
        let mut total = metrics::Metrics::default();
        for n in &loops {
            total.add(&n.metrics);
        }
        metrics::render(
            &total,
            Gauges {
                connections_open: loops.iter().map(|n| n.connections_open).sum(),
                clients_online: self.conns.cx.registry.len(),
                sse_subscribers: self.sse_subscribers,
                admin_connections: self.admin_connections,
                admin_requests: self.admin_requests,
                connections_buffering: loops.iter().map(|n| n.connections_buffering).sum(),
                buffered_bytes: loops.iter().map(|n| n.buffered_bytes).sum(),
                loop_connections: loops.iter().map(|n| n.connections_open).collect(),
            },
        )
    }
}
