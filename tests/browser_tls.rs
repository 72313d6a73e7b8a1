//! A real browser over `wss://`: headless Chromium (the Debian package),
//! driven by playwright-core from `tests/browser/`, connects to `wsbeat
//! --tls-cert … --tls-key …` with a certificate made here, names itself with
//! heartbeats, gets a push sent through the admin API and closes cleanly.
//!
//! Nothing is skipped: without chromium, node or `tests/browser/node_modules`
//! the test fails saying to run `scripts/install-test-deps.sh`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use common::script::Script;
use common::tls::{WssServer, start_wss};
use common::*;

/// What scripts/install-test-deps.sh installs, and the path the script runs.
const CHROMIUM: &str = "/usr/bin/chromium";
const ID: &str = "browser-1";
/// Launching Chromium on a busy two-core machine can take a while; every
/// later step gets [`DEADLINE`].
const BROWSER_START: Duration = Duration::from_secs(60);
/// The node script's own limit: past it, it closes the browser and exits.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Fails at once, saying what to do, when something the test needs from
/// outside Cargo is missing (instead of a timeout further on).
fn require_browser_deps() {
    let mut missing = Vec::new();
    if !Path::new(CHROMIUM).is_file() {
        missing.push(format!("{CHROMIUM} (Debian package chromium)"));
    }
    let node = Command::new("node").arg("--version").stdin(Stdio::null()).output();
    if !node.is_ok_and(|o| o.status.success()) {
        missing.push("node (>= 20) on PATH".to_string());
    }
    let playwright = browser_dir().join("node_modules/playwright-core/package.json");
    if !playwright.is_file() {
        missing.push(format!("{} (npm ci in tests/browser)", playwright.display()));
    }
    assert!(
        missing.is_empty(),
        "the browser test needs {}: run scripts/install-test-deps.sh (scripts/test.sh does)",
        missing.join(", ")
    );
}

/// `tests/browser/wss_heartbeat_push.mjs` running under node.
fn start_script(s: &WssServer) -> Script {
    Script::spawn(
        Command::new("node")
            .current_dir(browser_dir())
            .arg("wss_heartbeat_push.mjs")
            .arg("--url")
            .arg(format!("wss://localhost:{}/", s.addr().port()))
            .arg("--cert")
            .arg(&s.files.cert)
            .args(["--id", ID, "--chromium", CHROMIUM, "--heartbeat-ms", "200"])
            .arg("--timeout-ms")
            .arg(SCRIPT_TIMEOUT.as_millis().to_string()),
    )
}

/// The next JSON line from the script, within `limit`; an `error` event,
/// silence or an exit fails the test with the script's stderr.
fn next(script: &mut Script, limit: Duration) -> serde_json::Value {
    let line = match script.lines.recv_timeout(limit) {
        Ok(line) => line,
        Err(RecvTimeoutError::Timeout) => panic!(
            "no word from the browser script within {limit:?}; its stderr:\n{}",
            script.stderr()
        ),
        Err(RecvTimeoutError::Disconnected) => {
            let status = script.wait_exit();
            panic!(
                "the browser script ended ({status}) without a result; its stderr:\n{}",
                script.stderr()
            )
        }
    };
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: not JSON from the browser script: {line}"));
    assert_ne!(
        v["event"],
        "error",
        "the browser script failed: {}\nits stderr:\n{}",
        v["error"],
        script.stderr()
    );
    v
}

#[test]
fn chromium_heartbeats_over_wss_and_gets_a_push() {
    require_browser_deps();
    // Text heartbeats, which a page can see (pings it cannot), often enough
    // for one to arrive while the test runs.
    let s = start_wss(&["--server-heartbeat", "text", "--heartbeat-interval", "200ms"]);
    let mut script = start_script(&s);

    let first = next(&mut script, BROWSER_START);
    assert_eq!(first["event"], "heartbeat-sent", "{first}");
    // The URL carries no client_id: the id is known from the heartbeat alone.
    let client = wait_listed(s.admin(), ID);
    assert_eq!(client["id"], ID, "{client}");
    assert!(client["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{client}");
    let (connected, seen) = (
        client["connected_at_ms"].as_u64().unwrap(),
        client["last_seen_ms"].as_u64().unwrap(),
    );
    assert!(seen >= connected, "{client}");
    assert!(metric(s.admin(), "wsbeat_heartbeats_received_total") >= 1);

    let text = "pushed over wss: κόσμε ✓";
    push_text(s.admin(), ID, text);

    let done = next(&mut script, DEADLINE);
    assert_eq!(done["event"], "done", "{done}");
    assert_eq!(done["messages"], serde_json::json!([text]), "{done}");
    assert!(done["serverHeartbeats"].as_u64().unwrap() >= 1, "{done}");
    assert!(done["heartbeatsSent"].as_u64().unwrap() >= 1, "{done}");
    assert_eq!(
        done["close"],
        serde_json::json!({"code": 1000, "reason": "", "wasClean": true}),
        "{done}"
    );
    assert!(
        done["userAgent"].as_str().unwrap().contains("HeadlessChrome/"),
        "{done}"
    );
    let status = script.wait_exit();
    assert!(
        status.success(),
        "node exited with {status}; its stderr:\n{}",
        script.stderr()
    );

    // The page's close frame took the client offline, and Chromium trusted
    // the certificate on its first handshake (by its key: see the script).
    wait_until(&format!("{ID} offline"), || client_info(s.admin(), ID).status == 404);
    assert_eq!(metric(s.admin(), "wsbeat_tls_handshake_failures_total"), 0);
}
