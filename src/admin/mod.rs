//! The admin HTTP API: routing of parsed requests to the server through a
//! narrow `Backend` trait, and the Server-Sent Events format. Sockets and
//! buffers stay in the event loop; this module only turns a request into
//! bytes of response.

pub mod http;

use std::net::SocketAddr;

use serde_json::json;

use crate::handler::Outgoing;
use crate::presence::{ConnId, PresenceEvent};
use crate::protocol::heartbeat::is_valid_client_id;
use http::{Method, Request};

/// Default and largest page of `GET /clients`.
pub const DEFAULT_PAGE: usize = 1000;
pub const MAX_PAGE: usize = 10_000;

/// A client as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    pub id: String,
    /// The node holding it (`--node-id`).
    pub node: String,
    pub peer: SocketAddr,
    pub connected_at_ms: u64,
    pub last_seen_ms: u64,
}

impl ClientInfo {
    /// Written by hand to keep the documented key order; ids hold only
    /// characters that need no escaping in JSON.
    fn write_json(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = write!(
            out,
            r#"{{"id":"{}","node":"{}","peer":"{}","connected_at_ms":{},"last_seen_ms":{}}}"#,
            self.id, self.node, self.peer, self.connected_at_ms, self.last_seen_ms
        );
    }

    /// The same, as a JSON value (for answers between nodes).
    pub fn to_value(&self) -> serde_json::Value {
        json!({
            "id": self.id,
            "node": self.node,
            "peer": self.peer.to_string(),
            "connected_at_ms": self.connected_at_ms,
            "last_seen_ms": self.last_seen_ms,
        })
    }

    /// Reads what [`to_value`](Self::to_value) wrote; `None` if malformed.
    pub fn from_value(v: &serde_json::Value) -> Option<ClientInfo> {
        let id = v["id"].as_str()?;
        let node = v["node"].as_str()?;
        if !is_valid_client_id(id.as_bytes()) || !crate::config::is_valid_node_id(node) {
            return None;
        }
        Some(ClientInfo {
            id: id.to_string(),
            node: node.to_string(),
            peer: v["peer"].as_str()?.parse().ok()?,
            connected_at_ms: v["connected_at_ms"].as_u64()?,
            last_seen_ms: v["last_seen_ms"].as_u64()?,
        })
    }

    fn json(&self) -> String {
        let mut s = String::new();
        self.write_json(&mut s);
        s
    }
}

/// A part of the server that had to answer did not in time (an event loop
/// busy past the admin API's deadline): the request gets `503`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unavailable;

/// A node as `GET /nodes` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: String,
    pub clients: usize,
    pub connections: usize,
    pub last_seen_ms: u64,
    pub is_self: bool,
}

/// Whether operations that need other nodes can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClusterState {
    /// No cluster: this node is the whole server.
    #[default]
    Single,
    Up,
    /// Redis is unreachable (or the subscription unproven): only what this
    /// node holds can be served.
    Down,
}

/// A request only other nodes can complete. It is answered later, off the
/// event loop, with a [`RemoteResult`]; the admin connection waits for it.
#[derive(Debug)]
pub enum RemoteOp {
    /// A client this node does not hold.
    Client {
        id: String,
    },
    Push {
        id: String,
        msg: Outgoing,
    },
    Kick {
        id: String,
        reason: String,
    },
    /// Sent to this node's `here` connections already; now the others.
    Broadcast {
        msg: Outgoing,
        here: usize,
    },
    /// A page of every node's clients (or of `node`'s).
    Page {
        after: Option<String>,
        limit: usize,
        node: Option<String>,
    },
    Nodes,
}

/// How a [`RemoteOp`] ended.
#[derive(Debug)]
pub enum RemoteResult {
    Client(Option<ClientInfo>),
    /// Pushed to, or kicked on, this node; `None`: no live node holds it.
    Delivered(Option<String>),
    Broadcast {
        recipients: usize,
        nodes: usize,
    },
    Page {
        total: usize,
        clients: Vec<ClientInfo>,
        next: Option<String>,
    },
    Nodes(Vec<NodeInfo>),
    /// Redis or a node needed did not answer in time.
    Unavailable,
}

/// What the admin API may ask of the server.
pub(crate) trait Backend {
    /// This node's id.
    fn node(&self) -> &str;
    fn cluster(&self) -> ClusterState;
    /// This node, as `/nodes` lists it.
    fn node_info(&self) -> NodeInfo;
    fn client(&self, id: &str) -> Result<Option<ClientInfo>, Unavailable>;
    /// Total online here, up to `limit` of this node's clients after
    /// `after` in id order, and the id to page on from when more follow.
    fn clients_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(usize, Vec<ClientInfo>, Option<String>), Unavailable>;
    /// Queues `msg` for client `id`; false when it is not online here.
    fn push(&mut self, id: &str, msg: Outgoing) -> bool;
    /// Queues `msg` for every open connection of this node; how many.
    fn broadcast(&mut self, msg: Outgoing) -> Result<usize, Unavailable>;
    /// Closes client `id` with 4003; false when it is not online here.
    fn kick(&mut self, id: &str, reason: &str) -> bool;
    fn metrics(&self) -> Result<String, Unavailable>;
    /// Starts `op` off the loop; its result comes back to the admin
    /// connection `waiter` (its id and request number) later.
    fn remote(&mut self, op: RemoteOp, waiter: (ConnId, u64));
}

/// What the connection does after a request was answered.
#[derive(Debug)]
pub(crate) enum Routed {
    /// The response is in `out`.
    Done,
    /// The response head of an event stream is in `out`; the connection is
    /// now a `/events` subscriber.
    Events,
    /// Nothing is in `out` yet: the answer needs other nodes. The caller
    /// runs the operation and writes its result with [`write_remote`].
    Remote(RemoteOp, Reply),
}

/// How to write a response that comes later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub keep_alive: bool,
    pub head: bool,
}

pub(crate) struct Settings<'a> {
    pub token: Option<&'a str>,
}

const JSON: &str = "application/json";

fn json_response(out: &mut Vec<u8>, status: u16, v: &serde_json::Value, keep_alive: bool) {
    let body = serde_json::to_vec(v).unwrap_or_default();
    http::write_response(out, status, JSON, &[], &body, keep_alive);
}

fn error(out: &mut Vec<u8>, status: u16, message: &str, keep_alive: bool) {
    http::write_json_error(out, status, message, &[], keep_alive);
}

fn unavailable(out: &mut Vec<u8>, keep_alive: bool) {
    error(out, 503, "an event loop did not answer in time; try again", keep_alive);
}

fn cluster_unavailable(out: &mut Vec<u8>, keep_alive: bool) {
    error(out, 503, "cluster unavailable", keep_alive);
}

fn not_online(out: &mut Vec<u8>, keep_alive: bool) {
    error(out, 404, "client not online", keep_alive);
}

/// Writes the response to a [`Routed::Remote`] request.
pub(crate) fn write_remote(out: &mut Vec<u8>, op_result: RemoteResult, reply: Reply) {
    let start = out.len();
    let ka = reply.keep_alive;
    match op_result {
        RemoteResult::Unavailable => cluster_unavailable(out, ka),
        RemoteResult::Client(Some(c)) => http::write_response(out, 200, JSON, &[], c.json().as_bytes(), ka),
        RemoteResult::Client(None) | RemoteResult::Delivered(None) => not_online(out, ka),
        // The two deliveries differ by their method; the caller knows which.
        RemoteResult::Delivered(Some(node)) => json_response(out, 202, &json!({ "queued": true, "node": node }), ka),
        RemoteResult::Broadcast { recipients, nodes } => {
            json_response(out, 202, &json!({ "recipients": recipients, "nodes": nodes }), ka)
        }
        RemoteResult::Page { total, clients, next } => write_page(out, total, &clients, next, ka),
        RemoteResult::Nodes(nodes) => write_nodes(out, &nodes, ka),
    }
    if reply.head {
        strip_body(out, start);
    }
}

/// What a parked request needs to know to word its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Awaiting {
    /// A kick of this id (`Delivered` means kicked there).
    Kick(String),
    /// A broadcast already sent to this many connections here.
    Broadcast(usize),
    Other,
}

impl Awaiting {
    pub fn of(op: &RemoteOp) -> Awaiting {
        match op {
            RemoteOp::Kick { id, .. } => Awaiting::Kick(id.clone()),
            RemoteOp::Broadcast { here, .. } => Awaiting::Broadcast(*here),
            _ => Awaiting::Other,
        }
    }
}

/// Writes the answer to the remote operation `awaiting` is about.
pub(crate) fn write_awaited(out: &mut Vec<u8>, awaiting: &Awaiting, op_result: RemoteResult, reply: Reply) {
    match (awaiting, op_result) {
        (Awaiting::Kick(id), RemoteResult::Delivered(Some(node))) => {
            json_response(out, 200, &json!({ "kicked": id, "node": node }), reply.keep_alive)
        }
        // This node's connections have it already: say so (a 503 would
        // invite a retry that delivers it twice here).
        (Awaiting::Broadcast(here), RemoteResult::Unavailable) => write_remote(
            out,
            RemoteResult::Broadcast {
                recipients: *here,
                nodes: 1,
            },
            reply,
        ),
        (_, other) => write_remote(out, other, reply),
    }
}

fn write_page(out: &mut Vec<u8>, total: usize, clients: &[ClientInfo], next: Option<String>, ka: bool) {
    let mut body = format!(r#"{{"total":{total},"clients":["#);
    for (i, c) in clients.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        c.write_json(&mut body);
    }
    // Ids hold only characters that need no escaping in JSON.
    match next {
        Some(next) => body.push_str(&format!(r#"],"next":"{next}"}}"#)),
        None => body.push_str(r#"],"next":null}"#),
    }
    http::write_response(out, 200, JSON, &[], body.as_bytes(), ka);
}

fn write_nodes(out: &mut Vec<u8>, nodes: &[NodeInfo], ka: bool) {
    let list: Vec<serde_json::Value> = nodes
        .iter()
        .map(|n| {
            json!({
                "id": n.id,
                "clients": n.clients,
                "connections": n.connections,
                "last_seen_ms": n.last_seen_ms,
                "self": n.is_self,
            })
        })
        .collect();
    json_response(out, 200, &json!({ "nodes": list }), ka);
}

/// HEAD: the same head as GET (Content-Length included), no body.
fn strip_body(out: &mut Vec<u8>, start: usize) {
    if let Some(i) = out[start..].windows(4).position(|w| w == b"\r\n\r\n") {
        out.truncate(start + i + 4);
    }
}

fn method_not_allowed(out: &mut Vec<u8>, allow: &str, keep_alive: bool) {
    http::write_json_error(out, 405, "method not allowed", &[("Allow", allow)], keep_alive);
}

/// Answers one request, appending the response to `out`.
pub(crate) fn route(
    req: &Request<'_>,
    settings: &Settings<'_>,
    backend: &mut dyn Backend,
    out: &mut Vec<u8>,
) -> Routed {
    let start = out.len();
    let head = req.method == Method::Head;
    let routed = route_inner(req, settings, backend, out);
    if head && matches!(routed, Routed::Done) {
        strip_body(out, start);
    }
    routed
}

fn route_inner(req: &Request<'_>, settings: &Settings<'_>, backend: &mut dyn Backend, out: &mut Vec<u8>) -> Routed {
    let ka = req.keep_alive;
    let get = matches!(req.method, Method::Get | Method::Head);
    if req.path == "/healthz" {
        if !get {
            method_not_allowed(out, "GET, HEAD", ka);
        } else {
            http::write_response(out, 200, "text/plain; charset=utf-8", &[], b"ok\n", ka);
        }
        return Routed::Done;
    }
    if req.path == "/readyz" {
        // Open like /healthz: load balancers ask it.
        if !get {
            method_not_allowed(out, "GET, HEAD", ka);
        } else if backend.cluster() == ClusterState::Down {
            cluster_unavailable(out, ka);
        } else {
            http::write_response(out, 200, "text/plain; charset=utf-8", &[], b"ready\n", ka);
        }
        return Routed::Done;
    }
    if let Some(token) = settings.token {
        let presented = req.authorization.and_then(http::bearer_token);
        if !presented.is_some_and(|p| http::constant_time_eq(p, token.as_bytes())) {
            http::write_json_error(
                out,
                401,
                "missing or wrong bearer token",
                &[("WWW-Authenticate", "Bearer realm=\"wsbeat\"")],
                ka,
            );
            return Routed::Done;
        }
    }
    let segments: Vec<&str> = req.path.split('/').skip(1).collect();
    let cluster = backend.cluster();
    let later = Reply {
        keep_alive: ka,
        head: req.method == Method::Head,
    };
    match segments.as_slice() {
        ["nodes"] => {
            if !get {
                method_not_allowed(out, "GET, HEAD", ka);
            } else {
                match cluster {
                    ClusterState::Single => write_nodes(out, &[backend.node_info()], ka),
                    ClusterState::Up => return Routed::Remote(RemoteOp::Nodes, later),
                    ClusterState::Down => cluster_unavailable(out, ka),
                }
            }
        }
        ["metrics"] => {
            if !get {
                method_not_allowed(out, "GET, HEAD", ka);
            } else {
                match backend.metrics() {
                    Ok(body) => http::write_response(
                        out,
                        200,
                        "text/plain; version=0.0.4; charset=utf-8",
                        &[],
                        body.as_bytes(),
                        ka,
                    ),
                    Err(Unavailable) => unavailable(out, ka),
                }
            }
        }
        ["events"] => {
            if req.method != Method::Get {
                method_not_allowed(out, "GET", ka);
            } else {
                out.extend_from_slice(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\n\r\n: wsbeat presence events\n\n",
                );
                return Routed::Events;
            }
        }
        ["broadcast"] => {
            if req.method != Method::Post {
                method_not_allowed(out, "POST", ka);
            } else {
                match message_body(req) {
                    // Not even locally: a retry must not deliver twice here.
                    Ok(_) if cluster == ClusterState::Down => cluster_unavailable(out, ka),
                    Ok(msg) => {
                        let remote = (cluster == ClusterState::Up).then(|| msg.clone());
                        match backend.broadcast(msg) {
                            Ok(here) => match remote {
                                Some(msg) => return Routed::Remote(RemoteOp::Broadcast { msg, here }, later),
                                None => json_response(out, 202, &json!({ "recipients": here, "nodes": 1 }), ka),
                            },
                            Err(Unavailable) => unavailable(out, ka),
                        }
                    }
                    Err(e) => error(out, 400, e, ka),
                }
            }
        }
        ["clients"] => {
            if !get {
                method_not_allowed(out, "GET, HEAD", ka);
                return Routed::Done;
            }
            let limit = match http::query_param(req.query, "limit") {
                None => DEFAULT_PAGE,
                Some(Ok(v)) => match v.parse::<usize>() {
                    Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
                    _ => {
                        error(out, 400, "limit must be a whole number from 1 to 10000", ka);
                        return Routed::Done;
                    }
                },
                Some(Err(())) => {
                    error(out, 400, "malformed limit", ka);
                    return Routed::Done;
                }
            };
            let after = match http::query_param(req.query, "after") {
                None => None,
                Some(Ok(v)) => Some(v),
                Some(Err(())) => {
                    error(out, 400, "malformed after", ka);
                    return Routed::Done;
                }
            };
            let node = match http::query_param(req.query, "node") {
                None => None,
                Some(Ok(v)) if crate::config::is_valid_node_id(&v) => Some(v),
                Some(_) => {
                    error(out, 400, "malformed node", ka);
                    return Routed::Done;
                }
            };
            let only_here = node.as_deref() == Some(backend.node());
            match cluster {
                ClusterState::Up if !only_here => {
                    return Routed::Remote(RemoteOp::Page { after, limit, node }, later);
                }
                ClusterState::Down if !only_here => {
                    cluster_unavailable(out, ka);
                    return Routed::Done;
                }
                // On a single node, another node's clients are none.
                ClusterState::Single if node.is_some() && !only_here => {
                    write_page(out, 0, &[], None, ka);
                    return Routed::Done;
                }
                _ => {}
            }
            let Ok((total, clients, next)) = backend.clients_page(after.as_deref(), limit) else {
                unavailable(out, ka);
                return Routed::Done;
            };
            write_page(out, total, &clients, next, ka);
        }
        ["clients", raw_id] | ["clients", raw_id, "messages"] => {
            let Some(id) = decode_id(raw_id) else {
                error(out, 400, "invalid client id", ka);
                return Routed::Done;
            };
            if segments.len() == 3 {
                if req.method != Method::Post {
                    method_not_allowed(out, "POST", ka);
                    return Routed::Done;
                }
                match message_body(req) {
                    Ok(msg) => {
                        let remote = (cluster == ClusterState::Up).then(|| msg.clone());
                        if backend.push(&id, msg) {
                            let node = backend.node().to_string();
                            json_response(out, 202, &json!({ "queued": true, "node": node }), ka);
                        } else {
                            match (cluster, remote) {
                                (ClusterState::Down, _) => cluster_unavailable(out, ka),
                                (_, Some(msg)) => return Routed::Remote(RemoteOp::Push { id, msg }, later),
                                _ => not_online(out, ka),
                            }
                        }
                    }
                    Err(e) => error(out, 400, e, ka),
                }
                return Routed::Done;
            }
            match req.method {
                Method::Get | Method::Head => match backend.client(&id) {
                    Ok(Some(c)) => http::write_response(out, 200, JSON, &[], c.json().as_bytes(), ka),
                    Ok(None) => match cluster {
                        ClusterState::Up => return Routed::Remote(RemoteOp::Client { id }, later),
                        ClusterState::Down => cluster_unavailable(out, ka),
                        ClusterState::Single => not_online(out, ka),
                    },
                    Err(Unavailable) => unavailable(out, ka),
                },
                Method::Delete => {
                    let Ok(reason) = std::str::from_utf8(req.body) else {
                        error(out, 400, "the reason (request body) must be UTF-8", ka);
                        return Routed::Done;
                    };
                    if reason.len() > 123 {
                        error(out, 400, "the reason (request body) must be at most 123 bytes", ka);
                    } else if backend.kick(&id, reason) {
                        let node = backend.node().to_string();
                        json_response(out, 200, &json!({ "kicked": id, "node": node }), ka);
                    } else {
                        match cluster {
                            ClusterState::Up => {
                                let reason = reason.to_string();
                                return Routed::Remote(RemoteOp::Kick { id, reason }, later);
                            }
                            ClusterState::Down => cluster_unavailable(out, ka),
                            ClusterState::Single => not_online(out, ka),
                        }
                    }
                }
                _ => method_not_allowed(out, "GET, HEAD, DELETE", ka),
            }
        }
        _ => error(out, 404, "no such endpoint", ka),
    }
    Routed::Done
}

/// A client id from a path segment: percent-decoded, then held to the same
/// rules as heartbeat ids.
fn decode_id(raw: &str) -> Option<String> {
    let bytes = http::percent_decode(raw.as_bytes())?;
    if !is_valid_client_id(&bytes) {
        return None;
    }
    String::from_utf8(bytes).ok()
}

/// The message a push or broadcast carries: binary for
/// `application/octet-stream`, else text (which must be UTF-8).
fn message_body(req: &Request<'_>) -> Result<Outgoing, &'static str> {
    let binary = req.content_type.is_some_and(|ct| {
        let essence = ct.split(|&b| b == b';').next().unwrap_or_default();
        let essence = essence.trim_ascii();
        essence.eq_ignore_ascii_case(b"application/octet-stream")
    });
    if binary {
        Ok(Outgoing::Binary(req.body.to_vec()))
    } else {
        match std::str::from_utf8(req.body) {
            Ok(t) => Ok(Outgoing::Text(t.to_string())),
            Err(_) => Err("a text message must be UTF-8 (send application/octet-stream for binary)"),
        }
    }
}

/// Appends one presence event in the `text/event-stream` format. Online
/// events carry `"reason": null`; `node` is the node it happened on.
pub(crate) fn write_event(out: &mut Vec<u8>, ev: &PresenceEvent, node: &str) {
    use std::io::Write;
    // Ids and node ids hold only characters that need no escaping in JSON.
    let _ = match ev {
        PresenceEvent::Online { id, at_ms } => write!(
            out,
            "event: online\ndata: {{\"id\":\"{id}\",\"reason\":null,\"at_ms\":{at_ms},\"node\":\"{node}\"}}\n\n"
        ),
        PresenceEvent::Offline { id, reason, at_ms } => write!(
            out,
            "event: offline\ndata: {{\"id\":\"{id}\",\"reason\":\"{}\",\"at_ms\":{at_ms},\"node\":\"{node}\"}}\n\n",
            reason.as_str()
        ),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presence::OfflineReason;

    #[derive(Default)]
    struct Fake {
        online: Vec<String>,
        pushed: Vec<(String, Outgoing)>,
        kicked: Vec<(String, String)>,
        broadcasts: Vec<Outgoing>,
        cluster: ClusterState,
    }

    fn info(id: &str) -> ClientInfo {
        ClientInfo {
            id: id.to_string(),
            node: "n1".to_string(),
            peer: "127.0.0.1:5000".parse().unwrap(),
            connected_at_ms: 1,
            last_seen_ms: 2,
        }
    }

    impl Backend for Fake {
        fn node(&self) -> &str {
            "n1"
        }
        fn cluster(&self) -> ClusterState {
            self.cluster
        }
        fn node_info(&self) -> NodeInfo {
            NodeInfo {
                id: "n1".into(),
                clients: self.online.len(),
                connections: self.online.len(),
                last_seen_ms: 7,
                is_self: true,
            }
        }
        fn client(&self, id: &str) -> Result<Option<ClientInfo>, Unavailable> {
            Ok(self.online.iter().find(|c| *c == id).map(|c| info(c)))
        }
        fn clients_page(
            &self,
            after: Option<&str>,
            limit: usize,
        ) -> Result<(usize, Vec<ClientInfo>, Option<String>), Unavailable> {
            let mut ids = self.online.clone();
            ids.sort();
            let rest: Vec<_> = ids.iter().filter(|i| after.is_none_or(|a| i.as_str() > a)).collect();
            let page: Vec<ClientInfo> = rest.iter().take(limit).map(|i| info(i)).collect();
            let next = (rest.len() > limit)
                .then(|| page.last().map(|c| c.id.clone()))
                .flatten();
            Ok((ids.len(), page, next))
        }
        fn push(&mut self, id: &str, msg: Outgoing) -> bool {
            let on = self.online.iter().any(|c| c == id);
            if on {
                self.pushed.push((id.to_string(), msg));
            }
            on
        }
        fn broadcast(&mut self, msg: Outgoing) -> Result<usize, Unavailable> {
            self.broadcasts.push(msg);
            Ok(self.online.len())
        }
        fn kick(&mut self, id: &str, reason: &str) -> bool {
            let on = self.online.iter().any(|c| c == id);
            if on {
                self.kicked.push((id.to_string(), reason.to_string()));
            }
            on
        }
        fn metrics(&self) -> Result<String, Unavailable> {
            Ok("wsbeat_up 1\n".into())
        }
        fn remote(&mut self, _op: RemoteOp, _waiter: (ConnId, u64)) {}
    }

    fn req<'a>(method: Method, target: &'a str, body: &'a [u8]) -> Request<'a> {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        Request {
            method,
            path,
            query,
            content_type: None,
            authorization: None,
            keep_alive: true,
            body,
        }
    }

    fn call(fake: &mut Fake, token: Option<&str>, r: &Request<'_>) -> (u16, String) {
        let mut out = Vec::new();
        assert!(!matches!(
            route(r, &Settings { token }, fake, &mut out),
            Routed::Remote(..)
        ));
        let text = String::from_utf8(out).unwrap();
        let status = text[9..12].parse().unwrap();
        (status, text)
    }

    fn body(resp: &str) -> serde_json::Value {
        serde_json::from_str(resp.split_once("\r\n\r\n").unwrap().1).unwrap()
    }

    #[test]
    fn statuses() {
        let mut f = Fake {
            online: vec!["b".into(), "a".into(), "c".into()],
            ..Default::default()
        };
        let long_id = format!("/clients/{}", "a".repeat(129));
        let cases: Vec<(Request<'_>, u16)> = vec![
            (req(Method::Get, "/healthz", b""), 200),
            (req(Method::Post, "/healthz", b""), 405),
            (req(Method::Get, "/metrics", b""), 200),
            (req(Method::Get, "/clients", b""), 200),
            (req(Method::Get, "/clients?limit=0", b""), 400),
            (req(Method::Get, "/clients?limit=10001", b""), 400),
            (req(Method::Get, "/clients?limit=x", b""), 400),
            (req(Method::Get, "/clients?after=%zz", b""), 400),
            (req(Method::Get, "/clients/a", b""), 200),
            (req(Method::Get, "/clients/zz", b""), 404),
            (req(Method::Get, "/clients/bad%20id", b""), 400),
            (req(Method::Get, &long_id, b""), 400),
            (req(Method::Put, "/clients/a", b""), 405),
            (req(Method::Post, "/clients/a/messages", b"hi"), 202),
            (req(Method::Post, "/clients/zz/messages", b"hi"), 404),
            (req(Method::Post, "/clients/a/messages", b"\xff"), 400),
            (req(Method::Get, "/clients/a/messages", b""), 405),
            (req(Method::Post, "/broadcast", b"all"), 202),
            (req(Method::Get, "/broadcast", b""), 405),
            (req(Method::Delete, "/clients/a", b"bye"), 200),
            (req(Method::Delete, "/clients/zz", b""), 404),
            (req(Method::Delete, "/clients/b", &[b'x'; 124]), 400),
            (req(Method::Get, "/nope", b""), 404),
            (req(Method::Get, "/clients/a/b/c", b""), 404),
            (req(Method::Other, "/clients", b""), 405),
        ];
        for (r, want) in &cases {
            let (got, text) = call(&mut f, None, r);
            assert_eq!(got, *want, "{:?} {} -> {text}", r.method, r.path);
            if got >= 400 {
                assert!(body(&text)["error"].is_string(), "{text}");
            }
            if got == 405 {
                assert!(text.contains("\r\nAllow: "), "{text}");
            }
        }
        assert_eq!(f.pushed, vec![("a".to_string(), Outgoing::Text("hi".into()))]);
        assert_eq!(f.kicked, vec![("a".to_string(), "bye".to_string())]);
        assert_eq!(f.broadcasts, vec![Outgoing::Text("all".into())]);
    }

    #[test]
    fn binary_push_by_content_type() {
        let mut f = Fake {
            online: vec!["a".into()],
            ..Default::default()
        };
        let mut r = req(Method::Post, "/clients/a/messages", b"\xff\x00");
        r.content_type = Some(b"Application/Octet-Stream; x=y");
        assert_eq!(call(&mut f, None, &r).0, 202);
        assert_eq!(f.pushed[0].1, Outgoing::Binary(vec![0xff, 0]));
    }

    #[test]
    fn paging() {
        let mut f = Fake {
            online: (0..25).map(|i| format!("c{i:02}")).collect(),
            ..Default::default()
        };
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let target = match &after {
                Some(a) => format!("/clients?limit=10&after={a}"),
                None => "/clients?limit=10".to_string(),
            };
            let (status, text) = call(&mut f, None, &req(Method::Get, &target, b""));
            assert_eq!(status, 200);
            let v = body(&text);
            assert_eq!(v["total"], 25);
            for c in v["clients"].as_array().unwrap() {
                seen.push(c["id"].as_str().unwrap().to_string());
                assert_eq!(c["peer"], "127.0.0.1:5000");
            }
            match v["next"].as_str() {
                Some(n) => after = Some(n.to_string()),
                None => break,
            }
        }
        let want: Vec<_> = (0..25).map(|i| format!("c{i:02}")).collect();
        assert_eq!(seen, want);
    }

    #[test]
    fn token() {
        let mut f = Fake::default();
        let (s, text) = call(&mut f, Some("sekret"), &req(Method::Get, "/metrics", b""));
        assert_eq!(s, 401);
        assert!(text.contains("\r\nWWW-Authenticate: Bearer"));
        let mut r = req(Method::Get, "/metrics", b"");
        r.authorization = Some(b"Bearer wrong");
        assert_eq!(call(&mut f, Some("sekret"), &r).0, 401);
        r.authorization = Some(b"Bearer sekret");
        assert_eq!(call(&mut f, Some("sekret"), &r).0, 200);
        // /healthz stays open.
        assert_eq!(call(&mut f, Some("sekret"), &req(Method::Get, "/healthz", b"")).0, 200);
    }

    #[test]
    fn head_has_no_body() {
        let mut f = Fake::default();
        let (s, text) = call(&mut f, None, &req(Method::Head, "/healthz", b""));
        assert_eq!(s, 200);
        assert!(text.ends_with("\r\n\r\n"), "{text}");
        assert!(text.contains("Content-Length: 3\r\n"));
    }

    #[test]
    fn event_format() {
        let mut out = Vec::new();
        write_event(
            &mut out,
            &PresenceEvent::Offline {
                id: "dev-1".into(),
                reason: OfflineReason::HeartbeatTimeout,
                at_ms: 42,
            },
            "n2",
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "event: offline\ndata: {\"id\":\"dev-1\",\"reason\":\"heartbeat_timeout\",\"at_ms\":42,\"node\":\"n2\"}\n\n"
        );
    }

    /// With a cluster, what this node cannot answer becomes a remote
    /// operation; while Redis is down it is 503 at once, and what is here
    /// is still served here.
    #[test]
    fn cluster_routing() {
        let mut f = Fake {
            online: vec!["a".into()],
            cluster: ClusterState::Up,
            ..Default::default()
        };
        let remote = |f: &mut Fake, r: &Request<'_>| {
            let mut out = Vec::new();
            match route(r, &Settings { token: None }, f, &mut out) {
                Routed::Remote(op, _) => Some(op),
                _ => None,
            }
        };
        assert!(matches!(
            remote(&mut f, &req(Method::Get, "/clients/zz", b"")),
            Some(RemoteOp::Client { .. })
        ));
        assert!(remote(&mut f, &req(Method::Get, "/clients/a", b"")).is_none());
        assert!(matches!(
            remote(&mut f, &req(Method::Post, "/clients/zz/messages", b"x")),
            Some(RemoteOp::Push { .. })
        ));
        assert!(matches!(
            remote(&mut f, &req(Method::Delete, "/clients/zz", b"")),
            Some(RemoteOp::Kick { .. })
        ));
        assert!(matches!(
            remote(&mut f, &req(Method::Post, "/broadcast", b"x")),
            Some(RemoteOp::Broadcast { here: 1, .. })
        ));
        assert!(matches!(
            remote(&mut f, &req(Method::Get, "/clients", b"")),
            Some(RemoteOp::Page { .. })
        ));
        assert!(remote(&mut f, &req(Method::Get, "/clients?node=n1", b"")).is_none());
        assert!(matches!(
            remote(&mut f, &req(Method::Get, "/nodes", b"")),
            Some(RemoteOp::Nodes)
        ));
        assert_eq!(call(&mut f, None, &req(Method::Get, "/readyz", b"")).0, 200);

        f.cluster = ClusterState::Down;
        f.broadcasts.clear();
        for (r, want) in [
            (req(Method::Get, "/clients/zz", b""), 503),
            (req(Method::Get, "/clients/a", b""), 200),
            (req(Method::Post, "/clients/a/messages", b"x"), 202),
            (req(Method::Post, "/clients/zz/messages", b"x"), 503),
            (req(Method::Post, "/broadcast", b"x"), 503),
            (req(Method::Get, "/clients", b""), 503),
            (req(Method::Get, "/clients?node=n1", b""), 200),
            (req(Method::Get, "/nodes", b""), 503),
            (req(Method::Get, "/readyz", b""), 503),
            (req(Method::Get, "/healthz", b""), 200),
        ] {
            let (got, text) = call(&mut f, None, &r);
            assert_eq!(got, want, "{} -> {text}", r.path);
            if got == 503 {
                assert_eq!(body(&text)["error"], "cluster unavailable");
            }
        }
        assert!(f.broadcasts.is_empty(), "no local half of a broadcast that answers 503");
    }
}
