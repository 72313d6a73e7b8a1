//! The admin HTTP API: routing of parsed requests to the server through a
//! narrow `Backend` trait, and the Server-Sent Events format. Sockets and
//! buffers stay in the event loop; this module only turns a request into
//! bytes of response.

pub mod http;

use std::net::SocketAddr;

use serde_json::json;

use crate::handler::Outgoing;
use crate::presence::PresenceEvent;
use crate::protocol::heartbeat::is_valid_client_id;
use http::{Method, Request};

/// Default and largest page of `GET /clients`.
pub const DEFAULT_PAGE: usize = 1000;
pub const MAX_PAGE: usize = 10_000;

/// A client as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    pub id: String,
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
            r#"{{"id":"{}","peer":"{}","connected_at_ms":{},"last_seen_ms":{}}}"#,
            self.id, self.peer, self.connected_at_ms, self.last_seen_ms
        );
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

/// What the admin API may ask of the server.
pub(crate) trait Backend {
    fn client(&self, id: &str) -> Result<Option<ClientInfo>, Unavailable>;
    /// Total online, up to `limit` clients after `after` in id order, and
    /// the id to page on from when more follow.
    fn clients_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(usize, Vec<ClientInfo>, Option<String>), Unavailable>;
    /// Queues `msg` for client `id`; false when it is not online.
    fn push(&mut self, id: &str, msg: Outgoing) -> bool;
    /// Queues `msg` for every open connection; how many.
    fn broadcast(&mut self, msg: Outgoing) -> Result<usize, Unavailable>;
    /// Closes client `id` with 4003; false when it is not online.
    fn kick(&mut self, id: &str, reason: &str) -> bool;
    fn metrics(&self) -> Result<String, Unavailable>;
}

/// What the connection does after a request was answered.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Routed {
    /// The response is in `out`.
    Done,
    /// The response head of an event stream is in `out`; the connection is
    /// now a `/events` subscriber.
    Events,
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
    if head && routed == Routed::Done {
        // HEAD: the same head as GET (Content-Length included), no body.
        if let Some(i) = out[start..].windows(4).position(|w| w == b"\r\n\r\n") {
            out.truncate(start + i + 4);
        }
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
    match segments.as_slice() {
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
                    Ok(msg) => match backend.broadcast(msg) {
                        Ok(n) => json_response(out, 202, &json!({ "recipients": n }), ka),
                        Err(Unavailable) => unavailable(out, ka),
                    },
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
            let Ok((total, clients, next)) = backend.clients_page(after.as_deref(), limit) else {
                unavailable(out, ka);
                return Routed::Done;
            };
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
                        if backend.push(&id, msg) {
                            json_response(out, 202, &json!({ "queued": true }), ka);
                        } else {
                            error(out, 404, "client not online", ka);
                        }
                    }
                    Err(e) => error(out, 400, e, ka),
                }
                return Routed::Done;
            }
            match req.method {
                Method::Get | Method::Head => match backend.client(&id) {
                    Ok(Some(c)) => http::write_response(out, 200, JSON, &[], c.json().as_bytes(), ka),
                    Ok(None) => error(out, 404, "client not online", ka),
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
                        json_response(out, 200, &json!({ "kicked": id }), ka);
                    } else {
                        error(out, 404, "client not online", ka);
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
/// events carry `"reason": null`.
pub(crate) fn write_event(out: &mut Vec<u8>, ev: &PresenceEvent) {
    use std::io::Write;
    let _ = match ev {
        PresenceEvent::Online { id, at_ms } => write!(
            out,
            "event: online\ndata: {{\"id\":\"{id}\",\"reason\":null,\"at_ms\":{at_ms}}}\n\n"
        ),
        PresenceEvent::Offline { id, reason, at_ms } => write!(
            out,
            "event: offline\ndata: {{\"id\":\"{id}\",\"reason\":\"{}\",\"at_ms\":{at_ms}}}\n\n",
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
    }

    fn info(id: &str) -> ClientInfo {
        ClientInfo {
            id: id.to_string(),
            peer: "127.0.0.1:5000".parse().unwrap(),
            connected_at_ms: 1,
            last_seen_ms: 2,
        }
    }

    impl Backend for Fake {
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
        route(r, &Settings { token }, fake, &mut out);
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
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "event: offline\ndata: {\"id\":\"dev-1\",\"reason\":\"heartbeat_timeout\",\"at_ms\":42}\n\n"
        );
    }
}
