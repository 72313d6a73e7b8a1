//! What the admin API may ask of the server ([`Backend`]), answered by the
//! admin loop from its own connections and, for the other loops', by asking
//! them (`links.rs`).

use std::collections::HashMap;
use std::sync::Arc;

use super::connections::Connections;
use super::links::{Answer, LoopMsg, LoopNumbers, Question, Shared};
use crate::admin::{Backend, ClientInfo, ClusterState, NodeInfo, RemoteOp, Unavailable};
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
                node: conns.cx.cfg.node_id.clone().unwrap_or_default(),
                peer: c.io.peer_addr().ok()?,
                connected_at_ms: conns.cx.wall_ms(c.connected_at()),
                last_seen_ms: conns.cx.wall_ms(c.last_seen()),
            })
        })
        .collect()
}

/// Client infos for `wanted` (in its order), asking every loop holding some
/// of them at once; `here`, the loop running this if any, answers for its
/// own without asking itself. `Unavailable` when a loop did not answer in
/// time.
pub(super) fn loop_client_infos(
    shared: &Shared,
    wanted: &[(Arc<str>, ConnId)],
    here: Option<(usize, &Connections)>,
) -> Result<Vec<ClientInfo>, Unavailable> {
    let mut by_loop: HashMap<usize, Vec<(Arc<str>, ConnId)>> = HashMap::new();
    for (id, conn) in wanted {
        by_loop.entry(conn.loop_index()).or_default().push((id.clone(), *conn));
    }
    let mut found: HashMap<String, ClientInfo> = HashMap::new();
    if let Some((me, conns)) = here
        && let Some(local) = by_loop.remove(&me)
    {
        found.extend(client_infos(conns, &local).into_iter().map(|c| (c.id.clone(), c)));
    }
    let questions = by_loop
        .into_iter()
        .map(|(l, part)| (l, Question::Clients(part)))
        .collect();
    for answer in shared.ask_all(questions) {
        match answer {
            Some(Answer::Clients(infos)) => found.extend(infos.into_iter().map(|c| (c.id.clone(), c))),
            _ => return Err(Unavailable),
        }
    }
    Ok(wanted.iter().filter_map(|(id, _)| found.remove(&**id)).collect())
}

/// This loop's share of `/metrics`. One pass over the connections per
/// scrape keeps the hot path free of bookkeeping.
pub(super) fn loop_numbers(conns: &Connections) -> LoopNumbers {
    let (mut buffering, mut buffered) = (0, 0);
    for (slot, c) in conns.table.iter() {
        let b = c.buffered_bytes() + conns.tls_buffered(slot);
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
    /// Client infos for `wanted` (in its order), asking every other loop for
    /// its own at once. `None` when a loop did not answer in time.
    fn infos(&self, wanted: &[(Arc<str>, ConnId)]) -> Result<Vec<ClientInfo>, Unavailable> {
        let here = Some((self.conns.loop_index, &*self.conns));
        loop_client_infos(&self.conns.shared, wanted, here)
    }

    /// The other loops' indexes.
    fn others(&self) -> impl Iterator<Item = usize> + use<> {
        let me = self.conns.loop_index;
        (0..self.conns.shared.loops.len()).filter(move |&l| l != me)
    }

    /// Runs what the action queued (e.g. a handler reacting to a kick).
    fn settle(&mut self) {
        *self.shutdown |= self.conns.run_deferred(self.running);
    }
}

impl Backend for LoopBackend<'_> {
    fn node(&self) -> &str {
        self.conns.cx.cfg.node_id.as_deref().unwrap_or_default()
    }

    fn cluster(&self) -> ClusterState {
        match &self.conns.shared.cluster {
            None => ClusterState::Single,
            Some(c) if c.is_up() => ClusterState::Up,
            Some(_) => ClusterState::Down,
        }
    }

    fn node_info(&self) -> NodeInfo {
        let shared = &self.conns.shared;
        NodeInfo {
            id: self.node().to_string(),
            clients: shared.directory.len(),
            connections: shared.connections_open(),
            last_seen_ms: self.conns.cx.wall_ms(self.conns.cx.now()),
            is_self: true,
        }
    }

    fn remote(&mut self, op: RemoteOp, waiter: (ConnId, u64)) {
        let Some(cluster) = &self.conns.shared.cluster else {
            return;
        };
        let shared = Arc::downgrade(&self.conns.shared);
        cluster.submit(
            op,
            Box::new(move |result| {
                if let Some(shared) = shared.upgrade() {
                    shared.send(0, LoopMsg::AdminReply(waiter, result));
                }
            }),
        );
    }

    fn client(&self, id: &str) -> Result<Option<ClientInfo>, Unavailable> {
        let Some(conn) = self.conns.cx.registry.lookup(id) else {
            return Ok(None);
        };
        Ok(self.infos(&[(id.into(), conn)])?.pop())
    }

    fn clients_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(usize, Vec<ClientInfo>, Option<String>), Unavailable> {
        let registry = &self.conns.cx.registry;
        let total = registry.len();
        let mut raw = registry.page(after, limit + 1);
        // Whether more follow is the directory's to say: a client that left
        // while the loops were asked is no reason to stop paging.
        let more = raw.len() > limit;
        raw.truncate(limit);
        let next = if more {
            raw.last().map(|(id, _)| id.to_string())
        } else {
            None
        };
        let page = self.infos(&raw)?;
        Ok((total, page, next))
    }

    fn push(&mut self, id: &str, msg: Outgoing) -> bool {
        let ok = self.conns.push(id, msg);
        self.settle();
        ok
    }

    fn broadcast(&mut self, msg: Outgoing) -> Result<usize, Unavailable> {
        let mut frame = Vec::new();
        msg.encode(&mut frame);
        let frame: Arc<[u8]> = frame.into();
        let questions = self.others().map(|l| (l, Question::Broadcast(frame.clone()))).collect();
        let mut recipients = self.conns.start_fanout(frame);
        for answer in self.conns.shared.ask_all(questions) {
            // A loop that did not answer in time has the frame queued all
            // the same and sends it: a 503 would invite a second broadcast.
            // Only its count is missing from the answer.
            if let Some(Answer::Recipients(n)) = answer {
                recipients += n;
            }
        }
        self.settle();
        Ok(recipients)
    }

    fn kick(&mut self, id: &str, reason: &str) -> bool {
        let ok = self.conns.kick(id, reason);
        self.settle();
        ok
    }

    fn metrics(&self) -> Result<String, Unavailable> {
        let questions = self.others().map(|l| (l, Question::Numbers)).collect();
        let mut ordered = Vec::new();
        for answer in self.conns.shared.ask_all(questions) {
            match answer {
                Some(Answer::Numbers(n)) => ordered.push(*n),
                // Zeros would read as a counter reset: say so instead.
                _ => return Err(Unavailable),
            }
        }
        // The other loops answered in loop order; this one goes in its place.
        ordered.insert(self.conns.loop_index, loop_numbers(self.conns));
        let mut total = metrics::Metrics::default();
        for n in &ordered {
            total.add(&n.metrics);
        }
        Ok(metrics::render(
            &total,
            Gauges {
                connections_open: ordered.iter().map(|n| n.connections_open).sum(),
                clients_online: self.conns.cx.registry.len(),
                sse_subscribers: self.sse_subscribers,
                admin_connections: self.admin_connections,
                admin_requests: self.admin_requests,
                connections_buffering: ordered.iter().map(|n| n.connections_buffering).sum(),
                buffered_bytes: ordered.iter().map(|n| n.buffered_bytes).sum(),
                loop_connections: ordered.iter().map(|n| n.connections_open).collect(),
                cluster: self.conns.shared.cluster.as_ref().map(|c| (c.is_up(), c.nodes())),
                forward: self.conns.shared.forwarder.as_ref().map(|f| f.stats()),
                process: crate::process_stats::read_now(),
                tls_reloads: self.conns.shared.tls.as_ref().map(|_| {
                    let r = &self.conns.shared.tls_reloads;
                    [
                        r[0].load(std::sync::atomic::Ordering::Relaxed),
                        r[1].load(std::sync::atomic::Ordering::Relaxed),
                    ]
                }),
            },
        ))
    }
}
