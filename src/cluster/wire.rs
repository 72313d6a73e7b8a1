//! What nodes say to each other over Redis pub/sub, as bytes. Sans-IO:
//! encoders and a parser that never panics on what arrives (a channel can
//! be published to by anyone who reaches Redis).
//!
//! A message is `\n`-separated fields, the last of which may be a body of
//! any bytes. Ids and node ids never hold `\n` (their alphabets exclude
//! it), so the split is unambiguous. The Lua scripts write presence events
//! in the same form.

use std::sync::Arc;

use crate::config::is_valid_node_id;
use crate::handler::Outgoing;
use crate::presence::{OfflineReason, PresenceEvent};
use crate::protocol::heartbeat::is_valid_client_id;

/// Keys and channels, all under one prefix.
pub const PREFIX: &str = "wsbeat:";

pub fn id_key(id: &str) -> String {
    format!("{PREFIX}id:{id}")
}
pub fn ids_key(node: &str) -> String {
    format!("{PREFIX}ids:{node}")
}
pub fn lease_key(node: &str) -> String {
    format!("{PREFIX}lease:{node}")
}
pub fn reap_key(node: &str) -> String {
    format!("{PREFIX}reap:{node}")
}
pub const NODES_KEY: &str = "wsbeat:nodes";
pub const EPOCH_KEY: &str = "wsbeat:epoch";
/// Presence events of every node.
pub const EVENTS_CHANNEL: &str = "wsbeat:events";
/// Broadcasts from any node.
pub const BROADCAST_CHANNEL: &str = "wsbeat:broadcast";
/// Messages for one node.
pub fn node_channel(node: &str) -> String {
    format!("{PREFIX}to:{node}")
}

/// A question one node asks another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// The CLIENT of this id, if that node holds it.
    Client(String),
    /// Its count of clients and up to `limit` of them after `after`.
    Page { after: Option<String>, limit: usize },
}

/// A message on a node's own channel.
#[derive(Debug, PartialEq, Eq)]
pub enum Directed<'a> {
    /// A newer connection elsewhere took `id` from connection `conn` here:
    /// close it with 4001.
    Replaced {
        id: &'a str,
        conn: u64,
    },
    /// Reject mode, settling after an outage: the older connection
    /// elsewhere keeps `id`; close connection `conn` here with 4002.
    Rejected {
        id: &'a str,
        conn: u64,
    },
    Push {
        id: &'a str,
        msg: Outgoing,
    },
    Kick {
        id: &'a str,
        reason: &'a str,
    },
    /// This node's own probe, proving its subscription end to end.
    Probe(u64),
    Request {
        from: &'a str,
        req: u64,
        query: Query,
    },
    Reply {
        req: u64,
        body: &'a [u8],
    },
}

fn join(fields: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(fields.iter().map(|f| f.len() + 1).sum());
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        out.extend_from_slice(f);
    }
    out
}

fn kind_and_body(msg: &Outgoing) -> (&'static [u8], &[u8]) {
    match msg {
        Outgoing::Text(t) => (b"t", t.as_bytes()),
        Outgoing::Binary(b) => (b"b", b),
    }
}

pub fn encode_push(id: &str, msg: &Outgoing) -> Vec<u8> {
    let (kind, body) = kind_and_body(msg);
    join(&[b"push", id.as_bytes(), kind, body])
}

pub fn encode_kick(id: &str, reason: &str) -> Vec<u8> {
    join(&[b"kick", id.as_bytes(), reason.as_bytes()])
}

pub fn encode_probe(seq: u64) -> Vec<u8> {
    join(&[b"probe", seq.to_string().as_bytes()])
}

pub fn encode_request(from: &str, req: u64, query: &Query) -> Vec<u8> {
    let req = req.to_string();
    match query {
        Query::Client(id) => join(&[b"req", from.as_bytes(), req.as_bytes(), b"client", id.as_bytes()]),
        Query::Page { after, limit } => join(&[
            b"req",
            from.as_bytes(),
            req.as_bytes(),
            b"page",
            limit.to_string().as_bytes(),
            after.as_deref().unwrap_or("").as_bytes(),
        ]),
    }
}

pub fn encode_reply(req: u64, body: &[u8]) -> Vec<u8> {
    join(&[b"reply", req.to_string().as_bytes(), body])
}

/// A broadcast from node `from`.
pub fn encode_broadcast(from: &str, msg: &Outgoing) -> Vec<u8> {
    let (kind, body) = kind_and_body(msg);
    join(&[from.as_bytes(), kind, body])
}

/// Splits off the first `n` fields; the rest (possibly empty) is the last.
fn fields(bytes: &[u8], n: usize) -> Option<Vec<&[u8]>> {
    let mut out = Vec::with_capacity(n + 1);
    let mut rest = bytes;
    for _ in 0..n {
        let i = rest.iter().position(|&b| b == b'\n')?;
        out.push(&rest[..i]);
        rest = &rest[i + 1..];
    }
    out.push(rest);
    Some(out)
}

fn text(b: &[u8]) -> Option<&str> {
    std::str::from_utf8(b).ok()
}

/// A client id, held to the heartbeat rules (it is written into JSON and
/// event streams unescaped).
fn client_id(b: &[u8]) -> Option<&str> {
    is_valid_client_id(b).then(|| text(b)).flatten()
}

/// A node id (`--node-id` rules).
fn node_id(b: &[u8]) -> Option<&str> {
    text(b).filter(|t| is_valid_node_id(t))
}

fn number(b: &[u8]) -> Option<u64> {
    text(b)?.parse().ok()
}

fn message(kind: &[u8], body: &[u8]) -> Option<Outgoing> {
    match kind {
        b"t" => Some(Outgoing::Text(text(body)?.to_string())),
        b"b" => Some(Outgoing::Binary(body.to_vec())),
        _ => None,
    }
}

/// Reads a message of a node's channel; `None` if it is none of ours.
pub fn parse_directed(bytes: &[u8]) -> Option<Directed<'_>> {
    let head = bytes.split(|&b| b == b'\n').next()?;
    match head {
        b"replaced" => {
            let f = fields(bytes, 2)?;
            Some(Directed::Replaced {
                id: client_id(f[1])?,
                conn: number(f[2])?,
            })
        }
        b"rejected" => {
            let f = fields(bytes, 2)?;
            Some(Directed::Rejected {
                id: client_id(f[1])?,
                conn: number(f[2])?,
            })
        }
        b"push" => {
            let f = fields(bytes, 3)?;
            Some(Directed::Push {
                id: client_id(f[1])?,
                msg: message(f[2], f[3])?,
            })
        }
        b"kick" => {
            let f = fields(bytes, 2)?;
            Some(Directed::Kick {
                id: client_id(f[1])?,
                // A close frame's reason: at most 123 bytes.
                reason: text(f[2]).filter(|r| r.len() <= 123)?,
            })
        }
        b"probe" => Some(Directed::Probe(number(fields(bytes, 1)?[1])?)),
        b"req" => {
            let f = fields(bytes, 4)?;
            let query = match f[3] {
                b"client" => Query::Client(client_id(f[4])?.to_string()),
                b"page" => {
                    let g = fields(f[4], 1)?;
                    let after = text(g[1])?;
                    if !after.is_empty() && !is_valid_client_id(after.as_bytes()) {
                        return None;
                    }
                    Query::Page {
                        limit: usize::try_from(number(g[0])?).ok()?,
                        after: (!after.is_empty()).then(|| after.to_string()),
                    }
                }
                _ => return None,
            };
            Some(Directed::Request {
                from: node_id(f[1])?,
                req: number(f[2])?,
                query,
            })
        }
        b"reply" => {
            let f = fields(bytes, 2)?;
            Some(Directed::Reply {
                req: number(f[1])?,
                body: f[2],
            })
        }
        _ => None,
    }
}

/// Reads a broadcast: who sent it, and what.
pub fn parse_broadcast(bytes: &[u8]) -> Option<(&str, Outgoing)> {
    let f = fields(bytes, 2)?;
    Some((node_id(f[0])?, message(f[1], f[2])?))
}

/// Reads a presence event as the scripts publish it:
/// `online\nNODE\nID\nAT_MS` or `offline\nNODE\nID\nREASON\nAT_MS`.
pub fn parse_event(bytes: &[u8]) -> Option<(Arc<str>, PresenceEvent)> {
    let head = bytes.split(|&b| b == b'\n').next()?;
    match head {
        b"online" => {
            let f = fields(bytes, 3)?;
            Some((
                node_id(f[1])?.into(),
                PresenceEvent::Online {
                    id: client_id(f[2])?.into(),
                    at_ms: number(f[3])?,
                },
            ))
        }
        b"offline" => {
            let f = fields(bytes, 4)?;
            Some((
                node_id(f[1])?.into(),
                PresenceEvent::Offline {
                    id: client_id(f[2])?.into(),
                    reason: OfflineReason::parse(text(f[3])?)?,
                    at_ms: number(f[4])?,
                },
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let bin = Outgoing::Binary(vec![0, b'\n', 255, b'\n']);
        let text = Outgoing::Text("two\nlines".into());
        assert_eq!(
            parse_directed(&encode_push("dev-1", &bin)),
            Some(Directed::Push {
                id: "dev-1",
                msg: bin.clone()
            })
        );
        assert_eq!(
            parse_directed(&encode_push("dev-1", &text)),
            Some(Directed::Push {
                id: "dev-1",
                msg: text.clone()
            })
        );
        assert_eq!(
            parse_directed(&encode_kick("a", "bye\nnow")),
            Some(Directed::Kick {
                id: "a",
                reason: "bye\nnow"
            })
        );
        assert_eq!(parse_directed(&encode_probe(7)), Some(Directed::Probe(7)));
        for query in [
            Query::Client("x".into()),
            Query::Page { after: None, limit: 10 },
            Query::Page {
                after: Some("c:1".into()),
                limit: 1,
            },
        ] {
            assert_eq!(
                parse_directed(&encode_request("n-1", 9, &query)),
                Some(Directed::Request {
                    from: "n-1",
                    req: 9,
                    query
                })
            );
        }
        assert_eq!(
            parse_directed(&encode_reply(3, b"{\"a\":\n1}")),
            Some(Directed::Reply {
                req: 3,
                body: b"{\"a\":\n1}"
            })
        );
        assert_eq!(parse_broadcast(&encode_broadcast("n", &bin)), Some(("n", bin)));
        assert_eq!(
            parse_directed(b"replaced\ndev\n123"),
            Some(Directed::Replaced { id: "dev", conn: 123 })
        );
        assert_eq!(
            parse_directed(b"rejected\ndev\n124"),
            Some(Directed::Rejected { id: "dev", conn: 124 })
        );
        assert_eq!(
            parse_event(b"offline\nn1\ndev\nnode_lost\n5"),
            Some((
                "n1".into(),
                PresenceEvent::Offline {
                    id: "dev".into(),
                    reason: OfflineReason::NodeLost,
                    at_ms: 5
                }
            ))
        );
        assert_eq!(
            parse_event(b"online\nn1\ndev\n6"),
            Some((
                "n1".into(),
                PresenceEvent::Online {
                    id: "dev".into(),
                    at_ms: 6
                }
            ))
        );
    }

    /// Whatever arrives, the parsers answer without panicking.
    #[test]
    fn garbage_is_refused() {
        for bad in [
            &b""[..],
            b"push",
            b"push\nid",
            b"push\nid\nx\nbody",
            b"push\nid\nt\n\xff",
            b"replaced\nid\nnot-a-number",
            b"req\nn\n1\nwhat\nx",
            b"req\nn\n1\npage\nten\n",
            b"probe\n-1",
            b"offline\nn\nid\nbored\n1",
            b"online\nn\"\nid\n1",
            b"online\nn\nid\r\n\n1",
            b"push\nbad id\nt\nx",
            b"req\nbad node\n1\nclient\nx",
            b"online\nn\nid",
            b"\n\n\n\n",
        ] {
            assert!(parse_directed(bad).is_none(), "{bad:?}");
            assert!(parse_event(bad).is_none(), "{bad:?}");
        }
        assert!(parse_broadcast(b"n\nq\nx").is_none());
    }
}
