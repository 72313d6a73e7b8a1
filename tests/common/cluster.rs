//! Cluster nodes for tests: `wsbeat` processes with `--cluster` pointing at
//! a real `redis-server` (see `redis.rs`), each killed when dropped.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use wsbeat::protocol::frame::OpCode;

use super::{DEADLINE, Events, Proc, Raw, Response, http, start_binary, wsbeat_command};

/// The lease cluster tests run with: short, so a dead node is noticed fast.
pub const LEASE: Duration = Duration::from_secs(2);

/// A node process.
pub struct Node {
    pub id: String,
    pub proc: Proc,
}

impl Node {
    /// Starts node `id` on `redis_url` with `extra` flags, waiting until it
    /// is ready (its cluster up).
    pub fn start(redis_url: &str, id: &str, extra: &[&str]) -> Node {
        let n = Node::spawn(redis_url, id, extra);
        n.wait_ready(true);
        n
    }

    /// Starts it without waiting for the cluster.
    pub fn spawn(redis_url: &str, id: &str, extra: &[&str]) -> Node {
        let mut cmd = wsbeat_command();
        cmd.args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--cluster", redis_url, "--node-id", id])
            .args(["--node-lease", &format!("{}ms", LEASE.as_millis())])
            .args(extra);
        Node {
            id: id.to_string(),
            proc: start_binary(cmd),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.proc.addr
    }

    pub fn admin(&self) -> SocketAddr {
        self.proc.admin
    }

    /// Waits until `/readyz` says `ready` (or, with `false`, 503).
    pub fn wait_ready(&self, ready: bool) {
        let want = if ready { 200 } else { 503 };
        let t = Instant::now();
        loop {
            let status = http(self.admin(), "GET", "/readyz", "", b"").status;
            if status == want {
                return;
            }
            assert!(t.elapsed() < DEADLINE, "node {} never answered /readyz {want}", self.id);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A client with id `client_id` connected to this node.
    pub fn client(&self, client_id: &str) -> Raw {
        Raw::open(self.addr(), &format!("/?client_id={client_id}"))
    }

    /// The node `/clients/ID` names from this node's admin API, if online.
    pub fn holder(&self, client_id: &str) -> Option<String> {
        let r = http(self.admin(), "GET", &format!("/clients/{client_id}"), "", b"");
        match r.status {
            200 => Some(r.json()["node"].as_str().unwrap_or_default().to_string()),
            404 => None,
            s => panic!("GET /clients/{client_id} on {}: {s} {}", self.id, r.text()),
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &self.proc.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} {}", self.id);
    }
}

/// Waits until `cond` holds, checking every 20 ms, up to `limit`; false if
/// it never did.
pub fn within(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if t.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// Admin API, clients and events, as the cluster tests use them.

/// A `GET` of `path` on `node`'s admin API, whatever it answers.
pub fn get(node: &Node, path: &str) -> Response {
    http(node.admin(), "GET", path, "", b"")
}

/// Whether `node`'s `/readyz` answers 200 now.
pub fn is_ready(node: &Node) -> bool {
    get(node, "/readyz").status == 200
}

/// The node `asked`'s `/clients/ID` names; `None` for a 404 and, unlike
/// [`Node::holder`], for any other answer too (a 503 while the cluster
/// comes back), so it can be polled.
pub fn holder_of(asked: &Node, id: &str) -> Option<String> {
    let r = get(asked, &format!("/clients/{id}"));
    (r.status == 200).then(|| r.json()["node"].as_str().unwrap_or_default().to_string())
}

/// Pushes the text `body` to client `id` through `via`'s admin API.
pub fn push(via: &Node, id: &str, body: &str) -> Response {
    http(
        via.admin(),
        "POST",
        &format!("/clients/{id}/messages"),
        "",
        body.as_bytes(),
    )
}

/// The next message that is not a server heartbeat, as text.
pub fn read_text(raw: &mut Raw) -> String {
    let f = raw.read_non_heartbeat().expect("a message, not a closed connection");
    assert_eq!(f.opcode, OpCode::Text, "{f:?}");
    String::from_utf8(f.payload).unwrap()
}

/// Reads one event and checks its kind, id, reason and node.
pub fn expect_event(ev: &mut Events, kind: &str, id: &str, reason: Option<&str>, node: &str) -> Value {
    let (k, d) = ev.next();
    assert_eq!(
        (k.as_str(), d["id"].as_str(), d["reason"].as_str(), d["node"].as_str()),
        (kind, Some(id), reason, Some(node)),
        "{d}"
    );
    d
}

/// The ids a `/nodes` answer lists, in its order; it must be a 200.
pub fn node_ids(nodes: &Response) -> Vec<String> {
    assert_eq!(nodes.status, 200, "{}", nodes.text());
    nodes.json()["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect()
}
