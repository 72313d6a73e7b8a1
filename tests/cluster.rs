//! The cluster (SPEC §9 and §5): `wsbeat` processes sharing one real
//! `redis-server`, the admin API of any node speaking for all of them
//! (listing, paging, pushing, broadcasting, kicking, `/nodes`, `/events`),
//! ids unique across nodes under both `--duplicate-id` modes (also when the
//! same id arrives on two nodes at the same instant), and heartbeats that
//! cost Redis nothing.
//!
//! Node B always runs two event loops, so what crosses nodes also crosses
//! loops there.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Barrier;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::cluster::{Node, within};
use common::redis::RedisServer;
use common::*;
use serde_json::{Value, json};
use wsbeat::protocol::frame::OpCode;

/// SPEC §9: every admin answer comes within 2 s, wherever the client is.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// How long `/nodes` may take to show new counts: they travel in the lease
/// value, rewritten every lease/3 (≈ 0.66 s); generous for a loaded machine.
const COUNTS_WITHIN: Duration = Duration::from_secs(5);

const NODE_IDS: [&str; 3] = ["A", "B", "C"];

const OCTETS: &str = "Content-Type: application/octet-stream\r\n";

// Admin API.

/// One admin request to `node`, which must be answered within 2 s.
fn call(node: &Node, method: &str, target: &str, extra: &str, body: &[u8]) -> Response {
    let t = Instant::now();
    let r = http(node.admin(), method, target, extra, body);
    let took = t.elapsed();
    assert!(took < ANSWER_WITHIN, "{method} {target} on {}: {took:?}", node.id);
    r
}

/// A `GET` that must answer 200 with JSON.
fn get_json(node: &Node, target: &str) -> Value {
    let r = call(node, "GET", target, "", b"");
    assert_eq!(r.status, 200, "GET {target} on {}: {}", node.id, r.text());
    r.json()
}

fn status(node: &Node, method: &str, target: &str) -> u16 {
    call(node, method, target, "", b"").status
}

/// `(id, node)` of each CLIENT of a `/clients` page.
fn listed(page: &Value) -> Vec<(String, String)> {
    page["clients"]
        .as_array()
        .unwrap_or_else(|| panic!("no clients in {page}"))
        .iter()
        .map(|c| (c["id"].as_str().unwrap().into(), c["node"].as_str().unwrap().into()))
        .collect()
}

/// Every client `node` lists, following `next` with pages of `limit`.
fn page_through(node: &Node, limit: usize, total: usize) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    let mut target = format!("/clients?limit={limit}");
    loop {
        let page = get_json(node, &target);
        assert_eq!(page["total"], total, "{target} on {}: {page}", node.id);
        let ids = listed(&page);
        match page["next"].as_str() {
            Some(next) => {
                assert_eq!(ids.len(), limit, "{target} on {}: {page}", node.id);
                assert_eq!(
                    Some(next),
                    ids.last().map(|c| c.0.as_str()),
                    "next is the page's last id"
                );
                target = format!("/clients?limit={limit}&after={next}");
            }
            None => {
                seen.extend(ids);
                return seen;
            }
        }
        seen.extend(ids);
        assert!(seen.len() < total, "paging on {} does not end: {seen:?}", node.id);
    }
}

// WebSocket clients.

/// The next data frame (server heartbeats skipped), as (opcode, payload).
fn next_message(raw: &mut Raw) -> (OpCode, Vec<u8>) {
    let f = raw.read_non_heartbeat().expect("connection closed before a message");
    assert!(f.fin, "{f:?}");
    (f.opcode, f.payload)
}

/// The client's side of a normal close: code 1000, the echo, then EOF.
fn close_normally(raw: &mut Raw) {
    raw.send_frame(true, OpCode::Close, &1000u16.to_be_bytes());
    assert_eq!(raw.read_close(), 1000);
    raw.wait_closed();
}

/// The client's side of a close the server started: echo its code, then
/// the server drops the connection.
fn answer_close(raw: &mut Raw, code: u16) {
    raw.send_frame(true, OpCode::Close, &code.to_be_bytes());
    raw.wait_closed();
}

// Presence events.

/// Opens `/events` on `node` and waits until the node records presence
/// changes for it, so none made afterwards is missed.
fn subscribe(node: &Node) -> Events {
    let events = Events::open(node.admin());
    wait_until("the /events subscription", || {
        metric(node.admin(), "wsbeat_events_subscribers") == 1
    });
    events
}

/// The next event must be `kind` for `id` on `node`, with `reason`.
fn expect_event(events: &mut Events, kind: &str, id: &str, reason: Option<&str>, node: &str) {
    let (e, d) = events.next();
    assert_eq!(
        (e.as_str(), d["id"].as_str(), d["reason"].as_str(), d["node"].as_str()),
        (kind, Some(id), reason, Some(node)),
        "{e} {d}"
    );
    assert!(d["at_ms"].as_u64().unwrap() > 1_700_000_000_000, "{d}");
}

/// The same next event on every stream.
fn expect_everywhere(streams: &mut [Events], kind: &str, id: &str, reason: Option<&str>, node: &str) {
    for s in streams {
        expect_event(s, kind, id, reason, node);
    }
}

// Clusters.

/// Node B has two event loops; the others one.
fn start_node(redis: &RedisServer, id: &str, extra: &[&str]) -> Node {
    let mut flags = extra.to_vec();
    if id == "B" {
        flags.extend(["--threads", "2"]);
    }
    Node::start(&redis.url(), id, &flags)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A client and what the admin API must say of it.
struct Client {
    id: String,
    /// Index of its node in `Cluster::nodes`.
    node: usize,
    raw: Raw,
    /// Its address as the server sees it.
    peer: String,
    /// Unix ms just before connecting and just after the upgrade.
    opened: (u64, u64),
}

impl Client {
    fn connect(nodes: &[Node], node: usize, id: &str) -> Client {
        let before = now_ms();
        let raw = nodes[node].client(id);
        let opened = (before, now_ms());
        Client {
            id: id.into(),
            node,
            peer: raw.s.local_addr().unwrap().to_string(),
            raw,
            opened,
        }
    }
}

/// Nodes A, B, C on one Redis, with client `a` on A, `b` on B, `c` on C,
/// each known to every node. Dropped clients first, then nodes, then Redis.
struct Cluster {
    clients: Vec<Client>,
    nodes: Vec<Node>,
    _redis: RedisServer,
}

impl Cluster {
    fn three_with_a_client_each() -> Cluster {
        let redis = RedisServer::start();
        let nodes: Vec<Node> = NODE_IDS.iter().map(|id| start_node(&redis, id, &[])).collect();
        let clients: Vec<Client> = ["a", "b", "c"]
            .iter()
            .enumerate()
            .map(|(i, id)| Client::connect(&nodes, i, id))
            .collect();
        // `/clients/ID` of a client elsewhere goes by Redis's record of who
        // holds it: once every node answers for every id, every claim landed.
        for node in &nodes {
            for c in &clients {
                wait_until(&format!("{} known on {}", c.id, node.id), || {
                    node.holder(&c.id).as_deref() == Some(NODE_IDS[c.node])
                });
            }
        }
        Cluster {
            clients,
            nodes,
            _redis: redis,
        }
    }
}

/// Nodes A and B in `--duplicate-id` `mode`, and `/events` of each.
fn two_nodes(redis: &RedisServer, mode: &str) -> ([Node; 2], [Events; 2]) {
    let flags = ["--duplicate-id", mode];
    let nodes = [start_node(redis, "A", &flags), start_node(redis, "B", &flags)];
    let streams = [subscribe(&nodes[0]), subscribe(&nodes[1])];
    (nodes, streams)
}

// Any node speaks for the cluster.

#[test]
fn every_node_lists_every_client_in_id_order() {
    let cl = Cluster::three_with_a_client_each();
    let everyone = [("a", "A"), ("b", "B"), ("c", "C")].map(|(i, n)| (i.to_string(), n.to_string()));
    for node in &cl.nodes {
        let all = get_json(node, "/clients");
        assert_eq!((&all["total"], &all["next"]), (&json!(3), &Value::Null), "{all}");
        assert_eq!(listed(&all), everyone, "from {}", node.id);
        assert_eq!(page_through(node, 1, 3), everyone, "paged from {}", node.id);

        // One node's clients, whether that node is asked or another.
        for (i, only) in NODE_IDS.iter().enumerate() {
            let page = get_json(node, &format!("/clients?node={only}"));
            assert_eq!(page["total"], 1, "?node={only} on {}: {page}", node.id);
            assert_eq!(listed(&page), [everyone[i].clone()], "?node={only} on {}", node.id);
        }
        let nobody = get_json(node, "/clients?node=Z");
        assert_eq!(nobody, json!({"total": 0, "clients": [], "next": null}));

        for c in &cl.clients {
            let info = get_json(node, &format!("/clients/{}", c.id));
            assert_eq!(info["id"], c.id.as_str(), "{info}");
            assert_eq!(info["node"], NODE_IDS[c.node], "{} from {}: {info}", c.id, node.id);
            assert_eq!(info["peer"], c.peer.as_str(), "{info}");
            let at = info["connected_at_ms"].as_u64().unwrap();
            // The server reads its clock once per loop turn: a little slack.
            assert!(
                (c.opened.0 - 100..=c.opened.1 + 100).contains(&at),
                "{} connected at {at}, outside {:?}",
                c.id,
                c.opened
            );
            assert!(info["last_seen_ms"].as_u64().unwrap() >= at, "{info}");
        }
        assert_eq!(status(node, "GET", "/clients/nobody"), 404);
    }
}

/// Pages merge every node's clients: ids alternating between two nodes,
/// with every character an id may hold and the longest id, come out in id
/// order once each, whatever the page size.
#[test]
fn pages_interleave_the_nodes_clients_by_id() {
    let redis = RedisServer::start();
    let nodes = [start_node(&redis, "A", &[]), start_node(&redis, "B", &[])];
    let mut ids: Vec<String> = (0..7).map(|i| format!("p{i}")).collect();
    ids.extend(["Az09._~:@-".to_string(), "L".repeat(128)]);
    let mut clients: Vec<Raw> = ids.iter().enumerate().map(|(i, id)| nodes[i % 2].client(id)).collect();
    let mut want: Vec<(String, String)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), NODE_IDS[i % 2].to_string()))
        .collect();
    want.sort();
    for n in &nodes {
        for id in &ids {
            wait_until("every id known everywhere", || n.holder(id).is_some());
        }
    }
    for n in &nodes {
        for limit in [1, 2, 4, 9, 10] {
            assert_eq!(page_through(n, limit, ids.len()), want, "limit {limit} on {}", n.id);
        }
    }
    // The unusual ids travel between nodes too.
    for (i, id) in ids.iter().enumerate().skip(7) {
        let from = &nodes[1 - i % 2];
        let r = call(from, "POST", &format!("/clients/{id}/messages"), "", b"odd");
        assert_eq!(
            (r.status, r.json()),
            (202, json!({"queued": true, "node": NODE_IDS[i % 2]}))
        );
        assert_eq!(next_message(&mut clients[i]), (OpCode::Text, b"odd".to_vec()));
    }
}

#[test]
fn pushes_reach_a_client_on_any_node_from_any_node() {
    let mut cl = Cluster::three_with_a_client_each();
    for (from, node) in cl.nodes.iter().enumerate() {
        for (to, client) in cl.clients.iter_mut().enumerate() {
            let target = format!("/clients/{}/messages", client.id);
            let queued = json!({"queued": true, "node": NODE_IDS[client.node]});

            let text = format!("from {} to {}", node.id, client.id);
            let r = call(node, "POST", &target, "", text.as_bytes());
            assert_eq!((r.status, r.json()), (202, queued.clone()), "{target} on {}", node.id);
            assert_eq!(next_message(&mut client.raw), (OpCode::Text, text.into_bytes()));

            // Not UTF-8, and a newline (the field separator between nodes).
            let bytes = vec![0xff, 0x00, from as u8, to as u8, 0x80, b'\n'];
            let r = call(node, "POST", &target, OCTETS, &bytes);
            assert_eq!((r.status, r.json()), (202, queued), "binary {target} on {}", node.id);
            assert_eq!(next_message(&mut client.raw), (OpCode::Binary, bytes));
        }
        let r = call(node, "POST", "/clients/nobody/messages", "", b"lost");
        assert_eq!(r.status, 404, "{}", r.text());
        assert!(r.json()["error"].is_string(), "{}", r.text());
        let r = call(node, "POST", "/clients/nobody/messages", OCTETS, b"\x01");
        assert_eq!(r.status, 404, "{}", r.text());
    }
}

#[test]
fn a_broadcast_from_any_node_reaches_every_client() {
    let mut cl = Cluster::three_with_a_client_each();
    // Recipients: this node's connections; nodes: every node reached.
    let answer = json!({"recipients": 1, "nodes": 3});
    for node in &cl.nodes {
        let body = format!("to everyone from {}", node.id);
        let r = call(node, "POST", "/broadcast", "", body.as_bytes());
        assert_eq!((r.status, r.json()), (202, answer.clone()));
        for c in &mut cl.clients {
            assert_eq!(
                next_message(&mut c.raw),
                (OpCode::Text, body.clone().into_bytes()),
                "{}",
                c.id
            );
        }
    }
    let r = call(&cl.nodes[1], "POST", "/broadcast", OCTETS, b"\x00\xfe");
    assert_eq!((r.status, r.json()), (202, answer));
    for c in &mut cl.clients {
        assert_eq!(
            next_message(&mut c.raw),
            (OpCode::Binary, b"\x00\xfe".to_vec()),
            "{}",
            c.id
        );
    }
}

#[test]
fn a_kick_from_another_node_closes_4003_and_frees_the_id() {
    let mut cl = Cluster::three_with_a_client_each();
    let mut events = subscribe(&cl.nodes[1]);
    let r = call(&cl.nodes[0], "DELETE", "/clients/c", "", b"moved to another shard");
    assert_eq!((r.status, r.json()), (200, json!({"kicked": "c", "node": "C"})));
    let c = &mut cl.clients[2].raw;
    assert_eq!(c.read_close_with_reason(), (4003, "moved to another shard".into()));
    answer_close(c, 4003);

    // C let go of it before it sent the close: no node names it now.
    for node in &cl.nodes {
        assert_eq!(status(node, "GET", "/clients/c"), 404, "from {}", node.id);
        let all = get_json(node, "/clients");
        assert_eq!(
            (listed(&all).len(), &all["total"]),
            (2, &json!(2)),
            "from {}: {all}",
            node.id
        );
    }
    // Pushes and kicks go by Redis's record, which C updates just after.
    for node in &cl.nodes {
        wait_until("pushes to c refused", || {
            call(node, "POST", "/clients/c/messages", "", b"x").status == 404
        });
        assert_eq!(status(node, "DELETE", "/clients/c"), 404, "from {}", node.id);
    }
    // B's stream (which may have caught the tail of the clients' online
    // events): offline, kicked, on C.
    let (kind, data) = loop {
        let (kind, data) = events.next();
        if kind != "online" {
            break (kind, data);
        }
    };
    assert_eq!(
        (kind.as_str(), &data["id"], &data["reason"], &data["node"]),
        ("offline", &json!("c"), &json!("kicked"), &json!("C")),
        "{data}"
    );
    // The others are untouched.
    let r = call(&cl.nodes[2], "POST", "/clients/a/messages", "", b"still here");
    assert_eq!(r.status, 202);
    assert_eq!(
        next_message(&mut cl.clients[0].raw),
        (OpCode::Text, b"still here".to_vec())
    );
}

#[test]
fn nodes_lists_every_live_node_with_its_counts() {
    let mut cl = Cluster::three_with_a_client_each();
    // (id, clients, connections) per node, as listed.
    let counts = |nodes: &Value| -> Vec<(String, u64, u64)> {
        let list = nodes["nodes"].as_array().unwrap_or_else(|| panic!("{nodes}"));
        list.iter()
            .map(|n| {
                let id = n["id"].as_str().unwrap().to_string();
                (id, n["clients"].as_u64().unwrap(), n["connections"].as_u64().unwrap())
            })
            .collect()
    };
    let want = |on_c: u64| {
        vec![
            ("A".to_string(), 1, 1),
            ("B".to_string(), 1, 1),
            ("C".to_string(), on_c, on_c),
        ]
    };
    for node in &cl.nodes {
        let mut last = Value::Null;
        let ok = within(COUNTS_WITHIN, || {
            last = get_json(node, "/nodes");
            counts(&last) == want(1)
        });
        assert!(ok, "/nodes on {}: {last}", node.id);
        let now = now_ms();
        for n in last["nodes"].as_array().unwrap() {
            assert_eq!(n["self"], n["id"] == node.id.as_str(), "/nodes on {}: {n}", node.id);
            let seen = n["last_seen_ms"].as_u64().unwrap();
            assert!(now.abs_diff(seen) < 5_000, "/nodes on {}: {n}, now {now}", node.id);
        }
        assert_eq!(metric(node.admin(), "wsbeat_cluster_up"), 1);
        wait_until("three nodes counted", || {
            metric(node.admin(), "wsbeat_cluster_nodes") == 3
        });
    }
    // C's client leaves: every node sees C's counts drop.
    close_normally(&mut cl.clients[2].raw);
    for node in &cl.nodes {
        let mut last = Value::Null;
        let ok = within(COUNTS_WITHIN, || {
            last = get_json(node, "/nodes");
            counts(&last) == want(0)
        });
        assert!(ok, "/nodes on {} after c left: {last}", node.id);
    }
}

#[test]
fn events_on_any_node_stream_the_whole_cluster() {
    let redis = RedisServer::start();
    let nodes = [start_node(&redis, "A", &[]), start_node(&redis, "B", &[])];
    let mut streams = [subscribe(&nodes[0]), subscribe(&nodes[1])];
    for (i, id) in [(1, "e1"), (0, "e2")] {
        let mut c = nodes[i].client(id);
        expect_everywhere(&mut streams, "online", id, None, NODE_IDS[i]);
        close_normally(&mut c);
        expect_everywhere(&mut streams, "offline", id, Some("closed"), NODE_IDS[i]);
    }
}

// Duplicate ids across nodes.

/// Every node names `node` as the holder of `id`, and lists only it. Right
/// after a 4001/4002 arrives, not eventually: the closed connection's node
/// let go of the id before it sent the close.
fn held_everywhere(nodes: &[Node], id: &str, node: &str) {
    for n in nodes {
        assert_eq!(n.holder(id).as_deref(), Some(node), "{id} from {}", n.id);
        let page = get_json(n, "/clients");
        assert_eq!(
            listed(&page),
            [(id.to_string(), node.to_string())],
            "from {}: {page}",
            n.id
        );
    }
}

/// A push from every node reaches `raw`, which was not closed (a close
/// frame would come before the message).
fn pushes_reach(nodes: &[Node], id: &str, raw: &mut Raw, node: &str) {
    for n in nodes {
        let r = call(n, "POST", &format!("/clients/{id}/messages"), "", n.id.as_bytes());
        assert_eq!((r.status, r.json()), (202, json!({"queued": true, "node": node})));
        assert_eq!(next_message(raw), (OpCode::Text, n.id.clone().into_bytes()));
    }
}

#[test]
fn replace_closes_the_older_connection_on_the_other_node_with_4001() {
    let redis = RedisServer::start();
    let (nodes, mut streams) = two_nodes(&redis, "replace");
    let mut first = nodes[0].client("x");
    // Published by the claim itself: Redis has it.
    expect_everywhere(&mut streams, "online", "x", None, "A");

    let mut second = nodes[1].client("x");
    assert_eq!(
        first.read_close_with_reason(),
        (4001, "replaced by a newer connection".into())
    );
    expect_everywhere(&mut streams, "offline", "x", Some("replaced"), "A");
    expect_everywhere(&mut streams, "online", "x", None, "B");
    held_everywhere(&nodes, "x", "B");
    pushes_reach(&nodes, "x", &mut second, "B");

    // And back: A's old connection left nothing behind in the way.
    let mut third = nodes[0].client("x");
    assert_eq!(second.read_close(), 4001);
    expect_everywhere(&mut streams, "offline", "x", Some("replaced"), "B");
    expect_everywhere(&mut streams, "online", "x", None, "A");
    held_everywhere(&nodes, "x", "A");
    pushes_reach(&nodes, "x", &mut third, "A");

    close_normally(&mut third);
    expect_everywhere(&mut streams, "offline", "x", Some("closed"), "A");
}

#[test]
fn reject_closes_the_newer_connection_on_the_other_node_with_4002() {
    let redis = RedisServer::start();
    let (nodes, mut streams) = two_nodes(&redis, "reject");
    let mut first = nodes[0].client("x");
    expect_everywhere(&mut streams, "online", "x", None, "A");

    let mut refused = nodes[1].client("x");
    assert_eq!(
        refused.read_close_with_reason(),
        (4002, "client id already in use".into())
    );
    held_everywhere(&nodes, "x", "A");
    pushes_reach(&nodes, "x", &mut first, "A");

    // The refused connection never showed: the next event is the keeper
    // leaving. Then the id is free for B.
    close_normally(&mut first);
    expect_everywhere(&mut streams, "offline", "x", Some("closed"), "A");
    let mut later = nodes[1].client("x");
    expect_everywhere(&mut streams, "online", "x", None, "B");
    held_everywhere(&nodes, "x", "B");
    pushes_reach(&nodes, "x", &mut later, "B");
}

/// An id a client names in a heartbeat, not at the handshake, is claimed
/// across nodes the same way.
#[test]
fn an_id_named_in_a_heartbeat_is_unique_across_nodes_too() {
    for mode in ["replace", "reject"] {
        let redis = RedisServer::start();
        let (nodes, mut streams) = two_nodes(&redis, mode);
        let mut first = nodes[0].client("h");
        expect_everywhere(&mut streams, "online", "h", None, "A");

        let mut later = Raw::open(nodes[1].addr(), "/");
        later.send_frame(true, OpCode::Text, b"heartbeat:h");
        if mode == "replace" {
            assert_eq!(first.read_close(), 4001);
            expect_everywhere(&mut streams, "offline", "h", Some("replaced"), "A");
            expect_everywhere(&mut streams, "online", "h", None, "B");
            held_everywhere(&nodes, "h", "B");
            pushes_reach(&nodes, "h", &mut later, "B");
        } else {
            assert_eq!(
                later.read_close_with_reason(),
                (4002, "client id already in use".into())
            );
            held_everywhere(&nodes, "h", "A");
            pushes_reach(&nodes, "h", &mut first, "A");
        }
    }
}

/// Two connections of `id`, on `addrs[0]` and `addrs[1]`, upgraded at the
/// same instant: both TCP connections are open first, then two threads
/// released together send the upgrade requests.
fn upgrade_at_once(addrs: [SocketAddr; 2], id: &str) -> [Raw; 2] {
    let mut pair = addrs.map(Raw::connect);
    let request = upgrade_request(&format!("/?client_id={id}"), "");
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        for c in pair.iter_mut() {
            let (barrier, request) = (&barrier, &request);
            s.spawn(move || {
                barrier.wait();
                c.send(request.as_bytes());
                let head = c.read_http_head();
                assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
            });
        }
    });
    pair
}

/// Waits for one of `pair` to get a close frame; its index, code and
/// reason. Reads both with short timeouts, so neither is favoured.
fn first_closed(pair: &mut [Raw; 2]) -> (usize, u16, String) {
    for c in pair.iter_mut() {
        c.s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
    }
    let t = Instant::now();
    let found = 'found: loop {
        assert!(t.elapsed() < DEADLINE, "neither connection was closed");
        for (i, c) in pair.iter_mut().enumerate() {
            match c.read_frame_nowait() {
                Some(f) if f.opcode == OpCode::Close => {
                    let reason = String::from_utf8(f.payload[2..].to_vec()).unwrap();
                    break 'found (i, f.close_code().unwrap(), reason);
                }
                Some(f) if f.opcode == OpCode::Ping => {}
                Some(f) => panic!("connection {i} got {f:?} before any close"),
                None => {}
            }
        }
    };
    for c in pair.iter_mut() {
        c.s.set_read_timeout(Some(DEADLINE)).unwrap();
    }
    found
}

/// 20 rounds of a fresh id upgrading on A and on B at once: exactly one
/// connection is closed, with the mode's code; the other holds the id on
/// every node, gets what is pushed to it, is never closed by the server,
/// and both streams tell it in Redis's order.
fn duplicate_race(mode: &str) {
    let redis = RedisServer::start();
    let (nodes, mut streams) = two_nodes(&redis, mode);
    let (code, reason) = match mode {
        "replace" => (4001, "replaced by a newer connection"),
        _ => (4002, "client id already in use"),
    };
    let mut wins = BTreeMap::new();
    for round in 0..20 {
        let id = format!("race-{round}");
        let mut pair = upgrade_at_once([nodes[0].addr(), nodes[1].addr()], &id);
        let (closed, got_code, got_reason) = first_closed(&mut pair);
        assert_eq!((got_code, got_reason.as_str()), (code, reason), "{mode} {id}");
        let kept = 1 - closed;
        let (kept_node, closed_node) = (NODE_IDS[kept], NODE_IDS[closed]);
        *wins.entry(kept_node).or_insert(0) += 1;

        held_everywhere(&nodes, &id, kept_node);
        pushes_reach(&nodes, &id, &mut pair[kept], kept_node);

        // Replace: the first claim Redis ran bound it, the second took it
        // over. Reject: the second was refused and never showed.
        if mode == "replace" {
            expect_everywhere(&mut streams, "online", &id, None, closed_node);
            expect_everywhere(&mut streams, "offline", &id, Some("replaced"), closed_node);
        }
        expect_everywhere(&mut streams, "online", &id, None, kept_node);
        // A close of its own is answered with 1000, not a late 4001/4002.
        close_normally(&mut pair[kept]);
        expect_everywhere(&mut streams, "offline", &id, Some("closed"), kept_node);
    }
    // Which node wins is the race's; shown with --nocapture.
    eprintln!("{mode}: rounds kept per node {wins:?}");
}

#[test]
fn replace_race_across_nodes_keeps_exactly_one() {
    duplicate_race("replace");
}

#[test]
fn reject_race_across_nodes_keeps_exactly_one() {
    duplicate_race("reject");
}

// Heartbeats.

/// Redis calls per command, without the test's own (`INFO`, `CONFIG`).
fn node_calls(redis: &RedisServer) -> BTreeMap<String, u64> {
    let mut calls = redis.command_calls();
    calls.retain(|name, _| !name.starts_with("info") && !name.starts_with("config"));
    calls
}

/// SPEC §9: a client heartbeat costs no Redis command.
///
/// The node's own timers keep talking to Redis (lease renewal every lease/3;
/// epoch check, probe and reaping about every second; the subscriber's
/// PINGs; and the commands their scripts run), so "no command at all"
/// cannot be asserted. Instead a window with 200 heartbeats is compared with
/// an idle window of about the same length, scaled to it. A periodic task
/// fires ⌊w/p⌋ or ⌈w/p⌉ times in a window of length w, so the windows may
/// differ by a firing of each task either way: the margin is two firings of
/// all of them (about 20 commands; 6 of any one). A command per heartbeat
/// would add 200; the test checks its margin stays well below that.
#[test]
fn heartbeats_cost_no_redis_command() {
    const HEARTBEATS: u64 = 200;
    const WINDOW: Duration = Duration::from_secs(1);
    let redis = RedisServer::start();
    // One node (less noise), two loops with a client each.
    let node = start_node(&redis, "B", &[]);
    let mut clients = [node.client("hb-0"), node.client("hb-1")];
    for id in ["hb-0", "hb-1"] {
        let key = format!("wsbeat:id:{id}");
        wait_until("the id registered in Redis", || {
            redis.cmd(&["GET", &key]).as_str().is_some()
        });
    }
    for l in 0..2 {
        let gauge = format!("wsbeat_loop_connections{{loop=\"{l}\"}}");
        assert_eq!(metric(node.admin(), &gauge), 1, "one client per loop");
    }
    let received = || metric(node.admin(), "wsbeat_heartbeats_received_total");

    redis.config_resetstat();
    let t = Instant::now();
    std::thread::sleep(WINDOW);
    let idle = node_calls(&redis);
    let idle_window = t.elapsed();

    let before = received();
    redis.config_resetstat();
    let t = Instant::now();
    for i in 0..HEARTBEATS {
        // Plain, and with the id already bound: neither is news for Redis.
        let (c, text) = match i % 2 {
            0 => (&mut clients[0], "heartbeat"),
            _ => (&mut clients[1], "heartbeat:hb-1"),
        };
        c.send_frame(true, OpCode::Text, text.as_bytes());
    }
    wait_until("every heartbeat counted", || received() == before + HEARTBEATS);
    std::thread::sleep(WINDOW.saturating_sub(t.elapsed()));
    let busy = node_calls(&redis);
    let busy_window = t.elapsed();

    let scale = busy_window.as_secs_f64() / idle_window.as_secs_f64();
    let allowed = |idle_calls: u64, margin: u64| (idle_calls as f64 * scale).ceil() as u64 + margin;
    let idle_total: u64 = idle.values().sum();
    let busy_total: u64 = busy.values().sum();
    let total_allowed = allowed(idle_total, 20);
    assert!(
        total_allowed < HEARTBEATS / 2,
        "the idle window ({idle_total} commands in {idle_window:?}) is too noisy to tell"
    );
    let report = format!("idle {idle_window:?}: {idle:?}\nheartbeats {busy_window:?}: {busy:?}");
    assert!(busy_total <= total_allowed, "{busy_total} > {total_allowed}\n{report}");
    for (name, &n) in &busy {
        let was = idle.get(name).copied().unwrap_or(0);
        assert!(n <= allowed(was, 6), "{name}: {n} calls\n{report}");
    }
    assert_eq!(busy.get("eval"), None, "{report}");

    // Still bound after all that.
    let r = call(&node, "POST", "/clients/hb-1/messages", "", b"ok");
    assert_eq!(r.status, 202);
    assert_eq!(next_message(&mut clients[1]), (OpCode::Text, b"ok".to_vec()));
}

// Leaving.

/// A node that stops gracefully (SIGTERM) leaves at once, not when its lease
/// runs out: its clients get 1001 and go offline with reason `shutdown` on
/// the other nodes' streams, it drops out of `/nodes`, it exits 0, and its
/// node id is free for the next process at once.
#[test]
fn a_node_that_stops_gracefully_leaves_the_cluster_at_once() {
    let redis = RedisServer::start();
    let mut a = start_node(&redis, "A", &[]);
    let b = start_node(&redis, "B", &[]);
    let mut stream = subscribe(&b);
    let mut x = a.client("x");
    expect_event(&mut stream, "online", "x", None, "A");
    let t = Instant::now();
    a.signal("TERM");
    assert_eq!(x.read_close(), 1001);
    answer_close(&mut x, 1001);
    expect_event(&mut stream, "offline", "x", Some("shutdown"), "A");
    assert!(
        within(Duration::from_secs(5), || a.proc.child.try_wait().unwrap().is_some()),
        "A did not exit"
    );
    assert!(a.proc.child.try_wait().unwrap().unwrap().success());
    let nodes: Vec<String> = get_json(&b, "/nodes")["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(nodes, ["B"], "A gave up its lease as it left");
    // Well inside the 2 s lease: A left, it was not found dead.
    assert!(t.elapsed() < Duration::from_millis(1900), "{:?}", t.elapsed());
    assert_eq!(b.holder("x"), None);
    let a = start_node(&redis, "A", &[]);
    let _x = a.client("x");
    wait_until("x back on the new A", || b.holder("x").as_deref() == Some("A"));
}
