//! The cluster when things fail (SPEC §9): a node killed, cut off or
//! stopped, Redis killed or restarted empty, an id taken on two nodes while
//! Redis was away, and start-up with bad flags, a taken node id or no Redis
//! yet. Real `wsbeat` processes and a real `redis-server`, one per test.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::cluster::{LEASE, Node, expect_event, get, holder_of, is_ready, node_ids, push, read_text, within};
use common::redis::RedisServer;
use common::{DEADLINE, Events, Raw, Response, http, read_response, run_to_exit, start_binary, wsbeat_on_free_ports};
use serde_json::Value;
use wsbeat::protocol::frame::OpCode;

/// An id held on two nodes, a node back from a partition, a node whose
/// Redis came back: each is settled within this (SPEC §9).
const SETTLE: Duration = Duration::from_secs(5);

/// A dead node's clients go offline within its lease + 2 s.
fn lost_within() -> Duration {
    LEASE + Duration::from_secs(2)
}

/// Waits at most `limit` for a close frame (skipping anything else); its
/// code and when it came, or `None` if none came in time.
fn close_within(raw: &mut Raw, limit: Duration) -> Option<(u16, Duration)> {
    let t = Instant::now();
    loop {
        let left = limit.checked_sub(t.elapsed())?;
        raw.s
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match raw.read_frame_nowait() {
            Some(f) if f.opcode == OpCode::Close => return Some((f.close_code().unwrap_or(0), t.elapsed())),
            Some(_) => {}
            None => return None,
        }
    }
}

/// Asserts that `raw` gets a close frame with `code` within `limit`;
/// returns how long it took.
fn expect_close(raw: &mut Raw, code: u16, limit: Duration, what: &str) -> Duration {
    match close_within(raw, limit) {
        Some((got, took)) => {
            assert_eq!(got, code, "{what}: close code");
            took
        }
        None => panic!("{what}: no close frame within {limit:?}"),
    }
}

/// The next presence event about one of `ids`, skipping others.
fn next_about(ev: &mut Events, ids: &[&str]) -> (String, Value) {
    loop {
        let (kind, data) = ev.next();
        if ids.iter().any(|id| data["id"] == *id) {
            return (kind, data);
        }
    }
}

/// SPEC §9: the clients of a dead node go offline with reason `node_lost`
/// within `--node-lease` + 2 s, once per id, and their ids are free.
#[test]
fn a_killed_node_s_clients_go_offline_once_within_the_lease_and_their_ids_are_free() {
    let redis = RedisServer::start();
    let a = Node::start(&redis.url(), "A", &[]);
    let b = Node::start(&redis.url(), "B", &[]);
    let mut ev = Events::open(b.admin());
    let _x = a.client("x");
    let _y = a.client("y");
    // B hears of both through Redis before A dies.
    let mut online = Vec::new();
    for _ in 0..2 {
        let (kind, d) = next_about(&mut ev, &["x", "y"]);
        assert_eq!((kind.as_str(), d["node"].as_str()), ("online", Some("A")), "{d}");
        online.push(d["id"].as_str().unwrap().to_string());
    }
    online.sort();
    assert_eq!(online, ["x", "y"]);

    let killed = Instant::now();
    a.signal("KILL");
    let mut lost = Vec::new();
    for _ in 0..2 {
        // Nothing else happens in this cluster meanwhile: the very next
        // events are these two.
        let (kind, d) = ev.next();
        let took = killed.elapsed();
        assert_eq!(
            (kind.as_str(), d["reason"].as_str(), d["node"].as_str()),
            ("offline", Some("node_lost"), Some("A")),
            "{d}"
        );
        assert!(
            took <= lost_within(),
            "{d} came {took:?} after the kill, over {:?}",
            lost_within()
        );
        eprintln!("offline {} node_lost after {took:?}", d["id"]);
        lost.push(d["id"].as_str().unwrap().to_string());
    }
    lost.sort();
    assert_eq!(lost, ["x", "y"], "each id once");

    // The ids are free: x connects on B, and Redis agrees (its online event
    // is B's, with no replacement or second node_lost before it).
    let mut x = b.client("x");
    expect_event(&mut ev, "online", "x", None, "B");
    assert_eq!(holder_of(&b, "x").as_deref(), Some("B"));
    assert_eq!(holder_of(&b, "y"), None, "y left with A");
    assert_eq!(push(&b, "x", "hello x").status, 202);
    assert_eq!(read_text(&mut x), "hello x");
    // A marker: the next event is z's, so nothing more came about x or y.
    let _z = b.client("z");
    expect_event(&mut ev, "online", "z", None, "B");

    assert_eq!(node_ids(&get(&b, "/nodes")), ["B"], "live nodes only");
    let clients = get(&b, "/clients").json();
    assert_eq!(clients["total"], 2, "{clients}");
}

/// SPEC §9: with Redis gone the node serves its own clients (upgrades,
/// heartbeats, eviction, local pushes and kicks), answers what needs
/// another node with 503 "cluster unavailable" at once, and says so on
/// /readyz and in its metrics while /healthz stays 200.
#[test]
fn with_redis_killed_a_node_serves_its_own_clients_and_refuses_remote_operations_at_once() {
    let mut redis = RedisServer::start();
    // Short heartbeat timings on A, to see heartbeats and eviction work
    // without Redis.
    let a = Node::start(
        &redis.url(),
        "A",
        &["--heartbeat-interval", "300ms", "--heartbeat-timeout", "1500ms"],
    );
    let b = Node::start(&redis.url(), "B", &[]);
    let _b1 = b.client("b1");
    assert!(
        within(DEADLINE, || holder_of(&a, "b1").as_deref() == Some("B")),
        "A never saw B's client"
    );

    let killed = Instant::now();
    redis.kill();
    assert!(
        within(Duration::from_secs(2), || get(&a, "/readyz").status == 503),
        "A still ready 2 s after Redis died"
    );
    eprintln!("A not ready {:?} after Redis died", killed.elapsed());
    let readyz = get(&a, "/readyz");
    assert_eq!(readyz.json()["error"], "cluster unavailable");
    assert_eq!(get(&a, "/healthz").status, 200);
    let metrics = get(&a, "/metrics").text();
    assert!(metrics.contains("\nwsbeat_cluster_up 0\n"), "{metrics}");

    // Upgrades, heartbeats and eviction: `live` heartbeats and stays,
    // `mute` does not and is evicted (4000).
    let t = Instant::now();
    let mut live = a.client("live");
    let mut mute = a.client("mute");
    // Until mute is evicted and live has lived past the timeout, live
    // heartbeats every 250 ms.
    let mut evicted = None;
    while evicted.is_none() || t.elapsed() < Duration::from_millis(2000) {
        live.send_frame(true, OpCode::Text, b"heartbeat");
        match evicted {
            None => evicted = close_within(&mut mute, Duration::from_millis(250)).map(|(code, _)| code),
            Some(_) => std::thread::sleep(Duration::from_millis(250)),
        }
        assert!(t.elapsed() < DEADLINE, "mute was never evicted");
    }
    assert_eq!(evicted, Some(4000), "mute's eviction");
    assert_eq!(holder_of(&a, "live").as_deref(), Some("A"));
    let here = get(&a, "/clients?node=A").json();
    assert_eq!(here["total"], 1, "this node's own clients: {here}");

    // A local push and a local kick.
    let pushed = push(&a, "live", "still here");
    assert_eq!(pushed.status, 202, "{}", pushed.text());
    assert_eq!(pushed.json()["node"], "A");
    assert_eq!(read_text(&mut live), "still here");
    let kicked = http(a.admin(), "DELETE", "/clients/live", "", b"bye");
    assert_eq!(kicked.status, 200, "{}", kicked.text());
    assert_eq!(live.read_close(), 4003);

    // What needs another node: 503 at once.
    for (method, path, body) in [
        ("POST", "/clients/b1/messages", &b"to b1"[..]),
        ("GET", "/clients/b1", b""),
        ("DELETE", "/clients/b1", b""),
        ("GET", "/clients", b""),
        ("GET", "/nodes", b""),
        ("POST", "/broadcast", b"to all"),
    ] {
        let t = Instant::now();
        let r = http(a.admin(), method, path, "", body);
        let took = t.elapsed();
        assert_eq!(r.status, 503, "{method} {path}: {}", r.text());
        assert_eq!(r.json()["error"], "cluster unavailable", "{method} {path}");
        assert!(took < Duration::from_millis(500), "{method} {path} took {took:?}");
    }
}

/// SPEC §9: after Redis comes back (here: empty), each node registers its
/// clients and subscriptions again within 5 s; the admin API then speaks
/// for the whole cluster again.
#[test]
fn after_redis_restarts_empty_both_nodes_register_again_within_5_s() {
    let mut redis = RedisServer::start();
    let a = Node::start(&redis.url(), "A", &[]);
    let b = Node::start(&redis.url(), "B", &[]);
    let mut a1 = a.client("a1");
    let _a2 = a.client("a2");
    let mut b1 = b.client("b1");
    let _b2 = b.client("b2");
    // Registered, as Redis shows it: no remote lookup before the restart,
    // so no worker holds a connection to the old Redis (that case is
    // `after_redis_restarts_remote_operations_work_once_the_nodes_are_ready_again`).
    let registered = |id: &str| redis.cmd(&["EXISTS", &format!("wsbeat:id:{id}")]).as_int() == Some(1);
    assert!(within(DEADLINE, || ["a1", "a2", "b1", "b2"]
        .iter()
        .all(|id| registered(id))));

    redis.restart();
    let restarted = Instant::now();
    // Ready is not enough (a node may not have noticed yet): each must find
    // the other's clients in the new Redis, which only their registering
    // again puts there; and /clients and /nodes speak for both.
    let listed = |page: &Response| -> Vec<(String, String)> {
        page.json()["clients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["id"].as_str().unwrap().into(), c["node"].as_str().unwrap().into()))
            .collect()
    };
    let all = [("a1", "A"), ("a2", "A"), ("b1", "B"), ("b2", "B")].map(|(i, n)| (i.to_string(), n.to_string()));
    let back = within(SETTLE, || {
        let page = get(&a, "/clients");
        let nodes = get(&b, "/nodes");
        is_ready(&a)
            && is_ready(&b)
            && ["b1", "b2"].iter().all(|id| holder_of(&a, id).as_deref() == Some("B"))
            && ["a1", "a2"].iter().all(|id| holder_of(&b, id).as_deref() == Some("A"))
            && page.status == 200
            && page.json()["total"] == 4
            && listed(&page) == all
            && nodes.status == 200
            && node_ids(&nodes) == ["A", "B"]
    });
    let took = restarted.elapsed();
    assert!(
        back,
        "not registered again {took:?} after Redis restarted: /clients on A {}, /nodes on B {}",
        get(&a, "/clients").text(),
        get(&b, "/nodes").text()
    );
    eprintln!("both nodes registered again {took:?} after Redis restarted");

    let r = push(&a, "b1", "across");
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["node"], "B");
    assert_eq!(read_text(&mut b1), "across");

    // Duplicate ids across nodes again: a1 on B replaces A's.
    let mut a1_on_b = b.client("a1");
    expect_close(&mut a1, 4001, SETTLE, "A's a1, replaced from B");
    assert!(within(SETTLE, || holder_of(&a, "a1").as_deref() == Some("B")));
    assert_eq!(push(&a, "a1", "moved").status, 202);
    assert_eq!(read_text(&mut a1_on_b), "moved");
}

/// Redis connections a node may hold besides its command thread's and its
/// subscriber's: one per worker (`WORKERS` in src/cluster/mod.rs), each
/// opened on its first job.
const NODE_WORKERS: usize = 4;

/// Connections open on `redis` (this query's own included).
fn redis_connections(redis: &RedisServer) -> usize {
    redis.cmd(&["CLIENT", "LIST"]).as_string().unwrap().lines().count()
}

/// `n` lookups of `id` on `asked` at once: each one's status, time and body.
fn lookups_at_once(asked: &[(&Node, &str)], n: usize) -> Vec<(u16, Duration, String)> {
    let lookups: Vec<_> = asked
        .iter()
        .flat_map(|&(node, id)| std::iter::repeat_n((node.admin(), id.to_string()), n))
        .map(|(admin, id)| {
            std::thread::spawn(move || {
                let t = Instant::now();
                let r = http(admin, "GET", &format!("/clients/{id}"), "", b"");
                (r.status, t.elapsed(), r.text())
            })
        })
        .collect();
    lookups.into_iter().map(|l| l.join().unwrap()).collect()
}

/// Remote lookups, [`NODE_WORKERS`] at once from one node, then from the
/// other, until Redis shows every worker of both nodes holding a
/// connection (a job goes to whichever worker is free: concurrent ones
/// spread over them).
fn use_every_worker(redis: &RedisServer, a: &Node, b: &Node) {
    // Each node's command thread, subscriber and workers, and this query.
    let all = 1 + 2 * (2 + NODE_WORKERS);
    let t = Instant::now();
    while redis_connections(redis) < all {
        assert!(
            t.elapsed() < DEADLINE,
            "Redis never had {all} connections: {}",
            redis.cmd(&["CLIENT", "LIST"]).as_string().unwrap()
        );
        // One direction at a time: see the test below.
        for (asked, id) in [(a, "b1"), (b, "a1")] {
            for (status, took, body) in lookups_at_once(&[(asked, id)], NODE_WORKERS) {
                assert_eq!(status, 200, "a lookup before the restart, in {took:?}: {body}");
            }
        }
    }
}

/// SPEC §9: the admin API of any node speaks for the cluster, every answer
/// within 2 s. Lookups that need the other node, a few at once on each of
/// two healthy nodes, must all be answered.
#[test]
fn remote_lookups_on_two_nodes_at_once_are_all_answered() {
    let redis = RedisServer::start();
    let a = Node::start(&redis.url(), "A", &[]);
    let b = Node::start(&redis.url(), "B", &[]);
    let _a1 = a.client("a1");
    let _b1 = b.client("b1");
    assert!(within(DEADLINE, || {
        holder_of(&a, "b1").as_deref() == Some("B") && holder_of(&b, "a1").as_deref() == Some("A")
    }));
    // One side at a time is fine.
    for (asked, id) in [(&a, "b1"), (&b, "a1")] {
        for (status, took, body) in lookups_at_once(&[(asked, id)], NODE_WORKERS) {
            assert_eq!(status, 200, "{id} on {}, alone, in {took:?}: {body}", asked.id);
        }
    }
    // Both at once, more than their workers (the admin API takes them all).
    let results = lookups_at_once(&[(&a, "b1"), (&b, "a1")], 2 * NODE_WORKERS);
    let failed: Vec<String> = results
        .iter()
        .filter(|(status, _, _)| *status != 200)
        .map(|(status, took, body)| format!("{status} in {took:?}: {}", body.trim()))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} lookups failed with both nodes asking at once:\n{}",
        failed.len(),
        results.len(),
        failed.join("\n")
    );
}

/// SPEC §9: once back, a node re-registers and its operations that need
/// other nodes work again. Each node's workers held connections to the old
/// Redis; once both nodes are ready again and registered in the new Redis,
/// remote lookups in both directions must answer 200 at once, not 503
/// (nor wait for an answer that never comes).
#[test]
fn after_redis_restarts_remote_operations_work_once_the_nodes_are_ready_again() {
    let mut redis = RedisServer::start();
    let a = Node::start(&redis.url(), "A", &[]);
    let b = Node::start(&redis.url(), "B", &[]);
    let _a1 = a.client("a1");
    let _b1 = b.client("b1");
    use_every_worker(&redis, &a, &b);
    assert_eq!(holder_of(&a, "b1").as_deref(), Some("B"));
    assert_eq!(holder_of(&b, "a1").as_deref(), Some("A"));

    redis.restart();
    let restarted = Instant::now();
    // Ready, and registered again in the new Redis (which starts empty).
    let key_exists = |key: &str| redis.cmd(&["EXISTS", key]).as_int() == Some(1);
    assert!(
        within(SETTLE, || is_ready(&a)
            && is_ready(&b)
            && ["wsbeat:lease:A", "wsbeat:lease:B", "wsbeat:id:a1", "wsbeat:id:b1"]
                .iter()
                .all(|k| key_exists(k))),
        "not registered again within {SETTLE:?}"
    );
    eprintln!("both registered again {:?} after the restart", restarted.elapsed());
    let mut failures = Vec::new();
    for i in 0..2 * NODE_WORKERS {
        for (asked, id, holder) in [(&a, "b1", "B"), (&b, "a1", "A")] {
            let t = Instant::now();
            let r = get(asked, &format!("/clients/{id}"));
            let took = t.elapsed();
            let node = (r.status == 200).then(|| r.json()["node"].as_str().unwrap_or_default().to_string());
            if node.as_deref() != Some(holder) || took > Duration::from_millis(500) {
                failures.push(format!(
                    "#{i} GET /clients/{id} on {}: {} in {took:?}: {}",
                    asked.id,
                    r.status,
                    r.text().trim()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "remote lookups failed after both nodes were ready again:\n{}",
        failures.join("\n")
    );
}

/// `dup` connects on A, then on B (newer; a tie in connect time goes to the
/// greater node id, B, too) while Redis is down; Redis comes back empty.
/// With `stopped`, that node is frozen (SIGSTOP) until the other one is
/// ready again, so the nodes register in a known order. The id must be
/// settled within 5 s the way `mode` settles it live: `replace` keeps B's
/// (A's gets 4001), `reject` keeps A's (B's gets 4002).
fn an_id_held_twice_during_an_outage_is_settled(mode: &str, stopped: Option<&str>) {
    let mut redis = RedisServer::start();
    let flags = ["--duplicate-id", mode];
    let a = Node::start(&redis.url(), "A", &flags);
    let b = Node::start(&redis.url(), "B", &flags);
    redis.kill();
    a.wait_ready(false);
    b.wait_ready(false);
    // B's binds after A's (each node stamps a bind with the wall clock of
    // its loop's turn), or in the same millisecond, which counts as B's
    // being newer too.
    let mut on_a = a.client("dup");
    let mut on_b = b.client("dup");
    assert_eq!(
        holder_of(&a, "dup").as_deref(),
        Some("A"),
        "A's own, while Redis is down"
    );
    assert_eq!(
        holder_of(&b, "dup").as_deref(),
        Some("B"),
        "B's own, while Redis is down"
    );

    let (frozen, other) = match stopped {
        Some("A") => (Some(&a), &b),
        Some("B") => (Some(&b), &a),
        None => (None, &a),
        Some(n) => panic!("no node {n}"),
    };
    if let Some(n) = frozen {
        n.signal("STOP");
    }
    redis.restart();
    if let Some(n) = frozen {
        assert!(within(SETTLE, || is_ready(other)), "{} not ready again", other.id);
        n.signal("CONT");
    }
    let (winner, loser_conn, winner_conn, code) = match mode {
        "replace" => ("B", &mut on_a, &mut on_b, 4001),
        "reject" => ("A", &mut on_b, &mut on_a, 4002),
        _ => panic!("mode {mode}"),
    };
    let took = expect_close(
        loser_conn,
        code,
        SETTLE,
        &format!("{mode}: the connection that must give up dup"),
    );
    eprintln!("{mode} (frozen: {stopped:?}): the loser got {code} after {took:?}");
    assert!(
        within(SETTLE, || {
            holder_of(&a, "dup").as_deref() == Some(winner) && holder_of(&b, "dup").as_deref() == Some(winner)
        }),
        "{mode}: /clients/dup does not name {winner} on both nodes: A says {:?}, B says {:?}",
        holder_of(&a, "dup"),
        holder_of(&b, "dup")
    );
    // The winner's connection is alive and reachable from either node.
    for via in [&a, &b] {
        let r = push(via, "dup", &format!("via {}", via.id));
        assert_eq!(r.status, 202, "{}", r.text());
        assert_eq!(r.json()["node"], winner);
        assert_eq!(read_text(winner_conn), format!("via {}", via.id));
    }
}

#[test]
fn replace_an_id_held_twice_during_an_outage_keeps_the_newer() {
    an_id_held_twice_during_an_outage_is_settled("replace", None);
}

#[test]
fn reject_an_id_held_twice_during_an_outage_keeps_the_older() {
    an_id_held_twice_during_an_outage_is_settled("reject", None);
}

/// The older holder (A) registers last: it finds B's newer claim.
#[test]
fn replace_settles_when_the_older_holder_registers_last() {
    an_id_held_twice_during_an_outage_is_settled("replace", Some("A"));
}

/// The newer holder (B) registers last.
#[test]
fn replace_settles_when_the_newer_holder_registers_last() {
    an_id_held_twice_during_an_outage_is_settled("replace", Some("B"));
}

#[test]
fn reject_settles_when_the_older_holder_registers_last() {
    an_id_held_twice_during_an_outage_is_settled("reject", Some("A"));
}

#[test]
fn reject_settles_when_the_newer_holder_registers_last() {
    an_id_held_twice_during_an_outage_is_settled("reject", Some("B"));
}

/// A node cut off (SIGSTOP) past its lease is dead to the others: its
/// clients go `node_lost` and their ids are free. When it comes back it
/// registers again: an id taken elsewhere meanwhile is settled (replace:
/// the newer, elsewhere, keeps it), one nobody took is its own again.
#[test]
fn a_partitioned_node_comes_back_settles_its_ids_and_registers_the_rest() {
    let redis = RedisServer::start();
    let a = Node::start(&redis.url(), "A", &[]);
    let b = Node::start(&redis.url(), "B", &[]);
    let mut ev = Events::open(b.admin());
    let mut p_on_a = a.client("p");
    let mut q = a.client("q");
    for _ in 0..2 {
        let (kind, d) = next_about(&mut ev, &["p", "q"]);
        assert_eq!((kind.as_str(), d["node"].as_str()), ("online", Some("A")), "{d}");
    }

    let stopped = Instant::now();
    a.signal("STOP");
    let mut lost = Vec::new();
    for _ in 0..2 {
        let d = ev.next().1;
        let took = stopped.elapsed();
        assert_eq!(
            (d["reason"].as_str(), d["node"].as_str()),
            (Some("node_lost"), Some("A")),
            "{d}"
        );
        assert!(took <= lost_within(), "{d} came {took:?} after SIGSTOP");
        lost.push(d["id"].as_str().unwrap().to_string());
    }
    lost.sort();
    assert_eq!(lost, ["p", "q"]);
    let mut p_on_b = b.client("p");
    expect_event(&mut ev, "online", "p", None, "B");

    let resumed = Instant::now();
    a.signal("CONT");
    let took = expect_close(&mut p_on_a, 4001, SETTLE, "A's older p after A came back");
    eprintln!("A's p replaced {took:?} after SIGCONT");
    assert!(
        within(SETTLE, || {
            holder_of(&a, "p").as_deref() == Some("B")
                && holder_of(&b, "p").as_deref() == Some("B")
                && holder_of(&b, "q").as_deref() == Some("A")
        }),
        "{:?} after SIGCONT: p on A {:?}, p on B {:?}, q on B {:?}",
        resumed.elapsed(),
        holder_of(&a, "p"),
        holder_of(&b, "p"),
        holder_of(&b, "q")
    );
    eprintln!("A registered again {:?} after SIGCONT", resumed.elapsed());
    // q is A's again for everyone: online (node A) on B's stream, and
    // reachable from B. p stays B's, with no event taking it away.
    let (kind, d) = next_about(&mut ev, &["q", "p"]);
    assert_eq!(
        (kind.as_str(), d["id"].as_str(), d["node"].as_str()),
        ("online", Some("q"), Some("A")),
        "{d}"
    );
    assert_eq!(push(&b, "q", "welcome back").status, 202);
    assert_eq!(read_text(&mut q), "welcome back");
    assert_eq!(push(&a, "p", "to B's p").status, 202);
    assert_eq!(read_text(&mut p_on_b), "to B's p");
    assert_eq!(node_ids(&get(&b, "/nodes")), ["A", "B"]);
    // A marker: up to its online event, nothing more about p or q (A's
    // closing its old p must not take B's p offline).
    let _marker = b.client("marker");
    let (kind, d) = next_about(&mut ev, &["p", "q", "marker"]);
    assert_eq!((kind.as_str(), d["id"].as_str()), ("online", Some("marker")), "{d}");
}

/// SPEC §1 and §9: a bad cluster flag stops start-up with exit code 2 and
/// one line naming the flag.
#[test]
fn bad_cluster_flags_exit_2_with_one_line_naming_the_flag() {
    let base = ["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"];
    for (flag, value) in [
        ("--cluster", "not-a-url"),
        ("--cluster", "http://x"),
        ("--node-id", "bad id!"),
        ("--node-lease", "10ms"),
    ] {
        let mut args = base.to_vec();
        args.extend([flag, value]);
        if flag != "--cluster" {
            // Valid otherwise, so the flag under test is what fails.
            args.extend(["--cluster", "redis://127.0.0.1:1/"]);
        }
        let (code, stderr) = run_to_exit(&args);
        assert_eq!(code, Some(2), "{flag} {value}: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{flag} {value}: {stderr}");
        assert!(lines[0].contains(flag), "{flag} {value}: {stderr}");
    }
}

/// SPEC §9: start-up exits 1 when a live node holds the node id; the live
/// node is not disturbed.
#[test]
fn a_node_id_held_by_a_live_node_is_refused_at_start_up() {
    let redis = RedisServer::start();
    let a = Node::start(&redis.url(), "A", &[]);
    let lease = format!("{}ms", LEASE.as_millis());
    let (code, stderr) = run_to_exit(&[
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--cluster",
        &redis.url(),
        "--node-id",
        "A",
        "--node-lease",
        &lease,
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("--node-id") && stderr.contains("held by a live node"),
        "{stderr}"
    );
    // A fixed wait, to show that nothing happens: had the refused process
    // taken A's lease, A's next renewal (every lease/3) would fail and A
    // would no longer be ready.
    std::thread::sleep(LEASE);
    assert!(is_ready(&a));
    assert_eq!(node_ids(&get(&a, "/nodes")), ["A"]);
}

/// SPEC §9: Redis unreachable at start-up is not fatal: the node serves its
/// own clients, is not ready, retries with backoff (without logging every
/// retry), and once Redis is there it is ready and its clients registered
/// within 5 s.
#[test]
fn a_node_started_before_redis_serves_locally_and_joins_once_redis_is_up() {
    // A port nobody listens on (yet).
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("redis://127.0.0.1:{port}/");
    let started = Instant::now();
    let mut cmd = wsbeat_on_free_ports();
    cmd.args(["--cluster", &url, "--node-id", "C"])
        .args(["--node-lease", &format!("{}ms", LEASE.as_millis())]);
    let proc = start_binary(cmd);
    let log = proc.log.clone();
    let c = Node { id: "C".into(), proc };

    let readyz = get(&c, "/readyz");
    assert_eq!(readyz.status, 503, "{}", readyz.text());
    assert_eq!(readyz.json()["error"], "cluster unavailable");
    assert_eq!(get(&c, "/healthz").status, 200);
    let mut early = c.client("early");
    assert_eq!(push(&c, "early", "local").status, 202);
    assert_eq!(read_text(&mut early), "local");
    assert_eq!(get(&c, "/clients").status, 503, "the cluster's clients need Redis");

    // A fixed wait, only so that several retries (100 ms, 200 ms, 400 ms,
    // 800 ms, ...) have failed before Redis comes: the log must not have a
    // line per retry.
    if let Some(rest) = Duration::from_millis(3200).checked_sub(started.elapsed()) {
        std::thread::sleep(rest);
    }
    let _redis = RedisServer::start_on(port);
    let up = Instant::now();
    assert!(within(SETTLE, || is_ready(&c)), "not ready 5 s after Redis came");
    eprintln!("ready {:?} after Redis came up", up.elapsed());

    // Its client is registered: another node finds it.
    let d = Node::start(&url, "D", &[]);
    assert!(
        within(SETTLE, || holder_of(&d, "early").as_deref() == Some("C")),
        "D does not find C's client"
    );
    assert_eq!(push(&d, "early", "from D").status, 202);
    assert_eq!(read_text(&mut early), "from D");

    let log = log.lock().unwrap().clone();
    let warnings: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("unreachable") || l.contains("Redis failed"))
        .collect();
    eprintln!("warnings about Redis: {warnings:#?}");
    assert!(!warnings.is_empty(), "no warning that Redis is unreachable: {log:#?}");
    assert!(warnings.len() <= 2, "a warning per retry: {warnings:#?}");
}

/// SPEC §9 (every answer within 2 s) and §5 (keep-alive, pipelining): a
/// node that is alive by its lease and subscribed, yet answers nothing (it
/// is stopped), costs a request that needs it a 503 within 2 s; requests
/// pipelined behind it on the same connection wait for it and are then
/// answered, in order.
#[test]
fn a_stalled_node_costs_a_503_within_2_s_and_pipelined_requests_behind_it_are_answered_in_order() {
    let redis = RedisServer::start();
    let a = Node::start(&redis.url(), "A", &[]);
    let b = Node::start(&redis.url(), "B", &[]);
    let _a1 = a.client("a1");
    let _b1 = b.client("b1");
    assert!(
        within(DEADLINE, || holder_of(&a, "b1").as_deref() == Some("B")),
        "A never saw B's client"
    );
    let mut conn = Raw::connect(a.admin());

    b.signal("STOP");
    let sent = Instant::now();
    conn.send(
        b"GET /clients/b1 HTTP/1.1\r\nHost: admin\r\n\r\n\
          GET /clients/a1 HTTP/1.1\r\nHost: admin\r\n\r\n\
          GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n",
    );
    let first = read_response(&mut conn);
    let first_took = sent.elapsed();
    let second = read_response(&mut conn);
    let third = read_response(&mut conn);
    let all_took = sent.elapsed();
    // Before any assertion, so that B is not left stopped.
    b.signal("CONT");
    eprintln!("pipelined behind a stopped node: the first answer after {first_took:?}, all three after {all_took:?}");

    assert_eq!(first.status, 503, "{}", first.text());
    assert_eq!(first.json()["error"], "cluster unavailable");
    assert!(first_took < Duration::from_secs(2), "the 503 took {first_took:?}");
    assert_eq!(second.status, 200, "{}", second.text());
    assert_eq!(
        (second.json()["id"].as_str(), second.json()["node"].as_str()),
        (Some("a1"), Some("A")),
        "{}",
        second.text()
    );
    assert_eq!((third.status, third.text().trim()), (200, "ok"));
    assert!(all_took < Duration::from_secs(2), "all three took {all_took:?}");

    // The connection is still good, and B comes back: b1 is B's again (its
    // lease may have run out while it was stopped; it then registers again).
    conn.send(b"GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n");
    assert_eq!(read_response(&mut conn).status, 200);
    assert!(
        within(SETTLE, || is_ready(&b) && holder_of(&a, "b1").as_deref() == Some("B")),
        "b1 not B's again after SIGCONT"
    );
}

/// README, cluster notes: `202` for a push to another node means Redis
/// handed it to that node's subscription. A stopped node's subscription is
/// still open, so the push is accepted at once, and the node delivers it,
/// once, when it continues (Redis had written it to its socket).
#[test]
fn a_push_to_a_stopped_node_is_accepted_and_delivered_once_it_continues() {
    let redis = RedisServer::start();
    let a = Node::start(&redis.url(), "A", &[]);
    let b = Node::start(&redis.url(), "B", &[]);
    let mut b1 = b.client("b1");
    assert!(
        within(DEADLINE, || holder_of(&a, "b1").as_deref() == Some("B")),
        "A never saw B's client"
    );

    b.signal("STOP");
    let t = Instant::now();
    let r = push(&a, "b1", "sent while B was stopped");
    let took = t.elapsed();
    b.signal("CONT");
    eprintln!("push to a stopped node answered {} after {took:?}", r.status);
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({"queued": true, "node": "B"}));
    assert!(took < Duration::from_millis(500), "took {took:?}");

    assert_eq!(read_text(&mut b1), "sent while B was stopped");
    // Once: the next message is the next push.
    assert_eq!(push(&a, "b1", "after").status, 202);
    assert_eq!(read_text(&mut b1), "after");
}
