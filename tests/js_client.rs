//! The JavaScript client, `clients/js/wsbeat-client.mjs`: its unit tests
//! (`node --test clients/js/test/unit/`), then the client against the real
//! binary, in Node (`clients/js/test/node_client.mjs`) and in headless
//! Chromium (`tests/browser/js_client.mjs`, playwright-core). Both scripts
//! take JSON commands on stdin and print the clients' events as JSON lines.
//!
//! Nothing is skipped: without node, chromium or `tests/browser/node_modules`
//! a test fails saying to run `scripts/install-test-deps.sh`.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::script::Script;
use common::*;

const CHROMIUM: &str = "/usr/bin/chromium";
/// Launching Chromium on a busy two-core machine can take a while.
const BROWSER_START: Duration = Duration::from_secs(60);
/// How long a client that must not reconnect is watched: many times its
/// reconnect delay (see [`fast_retry`]).
const NO_RECONNECT_WATCH: Duration = Duration::from_millis(1500);

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn require(browser: bool) {
    let mut missing = Vec::new();
    let node = Command::new("node").arg("--version").stdin(Stdio::null()).output();
    if !node.is_ok_and(|o| o.status.success()) {
        missing.push("node (>= 20) on PATH".to_string());
    }
    if browser {
        if !Path::new(CHROMIUM).is_file() {
            missing.push(format!("{CHROMIUM} (Debian package chromium)"));
        }
        let playwright = repo().join("tests/browser/node_modules/playwright-core/package.json");
        if !playwright.is_file() {
            missing.push(format!("{} (npm ci in tests/browser)", playwright.display()));
        }
    }
    assert!(
        missing.is_empty(),
        "the JavaScript client tests need {}: run scripts/install-test-deps.sh (scripts/test.sh does)",
        missing.join(", ")
    );
}

/// Options that make a wrongful reconnect show up at once.
fn fast_retry(id: &str) -> Value {
    json!({"id": id, "heartbeatInterval": 200, "minReconnectDelay": 20, "maxReconnectDelay": 100})
}

/// A node script holding WsbeatClients, driven over stdin. Dropping it
/// closes stdin, on which it closes its clients (and browser) and exits;
/// one that does not within [`DEADLINE`] is killed.
struct Driver {
    script: Script,
    /// Every event read so far, in order.
    seen: Vec<Value>,
}

impl Driver {
    fn node() -> Driver {
        require(false);
        let mut cmd = Command::new("node");
        cmd.current_dir(repo())
            .arg("--experimental-websocket")
            .arg("clients/js/test/node_client.mjs");
        Driver::start(cmd, DEADLINE)
    }

    fn chromium() -> Driver {
        require(true);
        let mut cmd = Command::new("node");
        cmd.current_dir(repo().join("tests/browser")).args([
            "js_client.mjs",
            "--chromium",
            CHROMIUM,
            "--timeout-ms",
            "180000",
        ]);
        Driver::start(cmd, BROWSER_START)
    }

    fn start(mut cmd: Command, ready_within: Duration) -> Driver {
        let mut d = Driver {
            script: Script::spawn(&mut cmd),
            seen: Vec::new(),
        };
        let ready = d.next(ready_within).expect("the client script's ready line");
        assert_eq!(ready["event"], "ready", "{ready}");
        d
    }

    fn cmd(&mut self, v: Value) {
        let stdin = self.script.stdin.as_mut().unwrap();
        writeln!(stdin, "{v}").expect("write to the client script");
        stdin.flush().unwrap();
    }

    fn new_client(&mut self, name: &str, url: &str, options: Value) {
        self.cmd(json!({"cmd": "new", "client": name, "url": url, "options": options}));
    }

    /// The next line within `limit`, or `None`; an `error` line, a request
    /// leaving the page or an exit fails the test with the script's stderr.
    fn next(&mut self, limit: Duration) -> Option<Value> {
        let line = match self.script.lines.recv_timeout(limit) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => return None,
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.script.child.wait().expect("wait for node");
                panic!(
                    "the client script ended ({status}); events: {:?}\nits stderr:\n{}",
                    self.seen,
                    self.script.stderr()
                )
            }
        };
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: not JSON: {line}"));
        assert!(
            v["event"] != "error" && v["event"] != "blocked",
            "the client script: {v}\nits stderr:\n{}",
            self.script.stderr()
        );
        self.seen.push(v.clone());
        Some(v)
    }

    /// Reads events until one of `client` with every field of `want`;
    /// fails after `limit`.
    fn expect_within(&mut self, client: &str, want: Value, limit: Duration) -> Value {
        let t = Instant::now();
        loop {
            let left = limit.saturating_sub(t.elapsed());
            let Some(v) = self.next(left) else {
                panic!(
                    "no {want} from {client} within {limit:?}; events so far: {:?}\nstderr:\n{}",
                    self.seen,
                    self.script.stderr()
                );
            };
            let fits = want.as_object().unwrap().iter().all(|(k, w)| &v[k] == w);
            if v["client"] == client && fits {
                return v;
            }
        }
    }

    fn expect(&mut self, client: &str, want: Value) -> Value {
        self.expect_within(client, want, DEADLINE)
    }

    /// Like [`expect`](Self::expect), but also finds an event read before
    /// (two pages report in no fixed order).
    fn saw(&mut self, client: &str, want: Value) -> Value {
        let fits = |v: &Value| v["client"] == client && want.as_object().unwrap().iter().all(|(k, w)| &v[k] == w);
        match self.seen.iter().find(|v| fits(v)) {
            Some(v) => v.clone(),
            None => self.expect(client, want),
        }
    }

    /// Asserts that `client` says nothing for `watch` (it must stay closed).
    fn assert_quiet(&mut self, client: &str, watch: Duration) {
        let t = Instant::now();
        while let Some(v) = self.next(watch.saturating_sub(t.elapsed())) {
            assert_ne!(v["client"], client, "{client} was to stay closed: {v}");
        }
    }

    /// Every message `client` handed to its listeners so far.
    fn messages(&self, client: &str) -> Vec<String> {
        self.seen
            .iter()
            .filter(|v| v["client"] == client && v["event"] == "message")
            .map(|v| v["data"].as_str().unwrap().to_string())
            .collect()
    }
}

fn url(p: &Proc) -> String {
    format!("ws://{}/", p.addr)
}

fn signal(p: &Proc, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &p.child.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{sig}");
}

/// Resumes a stopped server however the test ends.
struct Resume<'a>(&'a Proc);

impl Drop for Resume<'_> {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.child.id().to_string()])
            .status();
    }
}

/// A server whose text heartbeats a page can see, five times a second,
/// which evicts a client that does not heartbeat itself within 3 s (a
/// margin for a machine busy launching Chromium), and echoes.
fn chatty_server() -> Proc {
    let mut c = wsbeat_on_free_ports();
    c.args(["--server-heartbeat", "text", "--heartbeat-interval", "200ms"]);
    c.args(["--liveness", "heartbeat", "--heartbeat-timeout", "3s", "--echo"]);
    start_binary(c)
}

/// Open, heartbeats (the server's hidden, its own keeping the client listed
/// where only heartbeats count), a push, an echo, then a kick: closed for
/// good.
fn open_heartbeat_push_kick(mut d: Driver, id: &str) {
    let s = chatty_server();
    d.new_client("a", &url(&s), fast_retry(id));
    d.expect("a", json!({"event": "open"}));
    assert_eq!(wait_listed(s.admin, id)["id"], id);

    // Past the --heartbeat-timeout on the client's heartbeats alone.
    let peer = client_info(s.admin, id).json()["peer"].clone();
    wait_until("25 client heartbeats (5 s)", || {
        metric(s.admin, "wsbeat_heartbeats_received_total") >= 25
    });
    let info = client_info(s.admin, id).json();
    assert_eq!(info["peer"], peer, "the same connection: {info}; events: {:?}", d.seen);

    push_text(s.admin, id, "pushed: κόσμε ✓");
    d.expect("a", json!({"event": "message", "data": "pushed: κόσμε ✓"}));
    d.cmd(json!({"cmd": "send", "client": "a", "data": "echo me"}));
    d.expect("a", json!({"event": "sent", "ok": true}));
    d.expect("a", json!({"event": "message", "data": "echo me"}));
    // Dozens of server heartbeats came; none reached the listeners.
    assert!(metric(s.admin, "wsbeat_heartbeats_sent_total") >= 10);
    assert_eq!(d.messages("a"), ["pushed: κόσμε ✓", "echo me"]);
    let opens = d.seen.iter().filter(|v| v["event"] == "open").count();
    assert_eq!(opens, 1, "{:?}", d.seen);

    let r = http(s.admin, "DELETE", &format!("/clients/{id}"), "", b"go away");
    assert_eq!(r.status, 200, "{}", r.text());
    d.expect("a", json!({"event": "state", "state": "closed"}));
    let closed = d.expect("a", json!({"event": "close"}));
    assert_eq!(
        closed,
        json!({"client": "a", "event": "close", "code": 4003, "reason": "go away", "willReconnect": false})
    );
    d.assert_quiet("a", NO_RECONNECT_WATCH);
    assert_eq!(client_info(s.admin, id).status, 404);
    assert_eq!(metric(s.admin, "wsbeat_connections_open"), 0);
}

/// Two clients (tabs) with one id: the newer takes it, the older gets 4001
/// and stays closed instead of fighting back.
fn same_id_twice(mut d: Driver, id: &str) {
    let s = chatty_server();
    d.new_client("older", &url(&s), fast_retry(id));
    d.expect("older", json!({"event": "open"}));
    let first = wait_listed(s.admin, id);
    d.new_client("newer", &url(&s), fast_retry(id));
    d.saw("newer", json!({"event": "open"}));
    let closed = d.saw("older", json!({"event": "close"}));
    assert_eq!(closed["code"], 4001, "{closed}");
    assert_eq!(closed["willReconnect"], false, "{closed}");
    d.assert_quiet("older", NO_RECONNECT_WATCH);
    let now = wait_listed(s.admin, id);
    assert_ne!(now["peer"], first["peer"], "the newer connection holds the id: {now}");
    assert_eq!(metric(s.admin, "wsbeat_connections_open"), 1);
    push_text(s.admin, id, "to the newer");
    d.expect("newer", json!({"event": "message", "data": "to the newer"}));
    assert!(d.messages("older").is_empty(), "{:?}", d.seen);
}

#[test]
fn unit_tests_pass() {
    require(false);
    let out = Command::new("node")
        .current_dir(repo())
        .args(["--test", "clients/js/test/unit/"])
        .stdin(Stdio::null())
        .output()
        .expect("run node --test");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "node --test clients/js/test/unit/ failed:\n{text}"
    );
    assert!(text.contains("# fail 0"), "{text}");
}

#[test]
fn node_open_heartbeat_push_kick() {
    open_heartbeat_push_kick(Driver::node(), "node-1");
}

#[test]
fn node_same_id_twice_older_stays_closed() {
    same_id_twice(Driver::node(), "node-twice");
}

#[test]
fn node_reconnects_to_a_restarted_server() {
    let mut d = Driver::node();
    let first = start_binary(wsbeat_on_free_ports());
    let addr = first.addr;
    d.new_client("a", &url(&first), fast_retry("restarted"));
    d.expect("a", json!({"event": "open"}));
    wait_listed(first.admin, "restarted");

    drop(first); // SIGKILL: no close frame, the TCP connection just ends
    d.expect("a", json!({"event": "state", "state": "reconnecting"}));
    let closed = d.expect("a", json!({"event": "close"}));
    assert_eq!(closed["willReconnect"], true, "{closed}");

    // A new server on the same port; the client finds it by itself.
    let mut c = wsbeat_command();
    c.args(["--listen", &addr.to_string(), "--admin-listen", "127.0.0.1:0"]);
    let second = start_binary(c);
    assert_eq!(second.addr, addr);
    d.expect("a", json!({"event": "open"}));
    assert_eq!(wait_listed(second.admin, "restarted")["id"], "restarted");
    push_text(second.admin, "restarted", "after the restart");
    d.expect("a", json!({"event": "message", "data": "after the restart"}));
}

#[test]
fn node_detects_a_frozen_server_and_reconnects_after_it_resumes() {
    let mut d = Driver::node();
    let mut c = wsbeat_on_free_ports();
    c.args(["--server-heartbeat", "text", "--heartbeat-interval", "200ms"]);
    let s = start_binary(c);
    let silence = Duration::from_millis(1000);
    let mut options = fast_retry("frozen");
    options["silenceTimeout"] = json!(silence.as_millis() as u64);
    d.new_client("a", &url(&s), options);
    d.expect("a", json!({"event": "open"}));
    wait_listed(s.admin, "frozen");

    // Frozen: the TCP connection stays up, nothing comes.
    signal(&s, "STOP");
    let resume = Resume(&s);
    let stopped = Instant::now();
    d.expect("a", json!({"event": "state", "state": "reconnecting"}));
    let closed = d.expect("a", json!({"event": "close"}));
    let took = stopped.elapsed();
    assert_eq!(
        closed,
        json!({"client": "a", "event": "close", "code": 1006, "reason": "silence timeout", "willReconnect": true})
    );
    // The last server heartbeat came at most 200 ms before the stop; the
    // client checks at least once a second. A second more for a busy machine.
    assert!(
        took <= silence + Duration::from_millis(2000),
        "detected {took:?} after SIGSTOP"
    );
    assert!(
        took >= silence - Duration::from_millis(250),
        "silence detected too early: {took:?}"
    );

    drop(resume); // SIGCONT
    d.expect("a", json!({"event": "open"}));
    wait_listed(s.admin, "frozen");
    // The new connection holds the id; the old one is gone.
    wait_until("one connection", || metric(s.admin, "wsbeat_connections_open") == 1);
    push_text(s.admin, "frozen", "awake");
    d.expect("a", json!({"event": "message", "data": "awake"}));
}

#[test]
fn chromium_open_heartbeat_push_kick() {
    open_heartbeat_push_kick(Driver::chromium(), "chromium-1");
}

#[test]
fn chromium_two_tabs_same_id_older_stays_closed() {
    same_id_twice(Driver::chromium(), "chromium-twice");
}
