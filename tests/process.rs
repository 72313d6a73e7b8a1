//! The `wsbeat` process: signals, graceful shutdown, start-up refusals, and
//! environment variables.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use wsbeat::protocol::frame::OpCode;

fn wsbeat() -> Command {
    wsbeat_command()
}

/// Starts the binary on free ports.
fn start_proc(extra: &[&str]) -> Proc {
    let mut cmd = wsbeat();
    cmd.args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(extra);
    start_binary(cmd)
}

fn signal(p: &Proc, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &p.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

/// Waits for the process to exit; its exit code and how long that took.
fn wait_exit(p: &mut Proc) -> (Option<i32>, Duration) {
    let t = Instant::now();
    loop {
        if let Some(st) = p.child.try_wait().unwrap() {
            return (st.code(), t.elapsed());
        }
        assert!(t.elapsed() < DEADLINE, "process did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn sigterm_closes_clients_with_1001_and_exits_0_in_time() {
    let mut p = start_proc(&["--shutdown-timeout", "1s"]);
    let mut polite = Raw::open(p.addr, "/?client_id=polite");
    let mut silent = Raw::open(p.addr, "/?client_id=silent");
    assert_eq!(http(p.admin, "GET", "/healthz", "", b"").status, 200);
    signal(&p, "-TERM");
    assert_eq!(polite.read_close_with_reason(), (1001, "server shutting down".into()));
    polite.send_frame(true, OpCode::Close, &1001u16.to_be_bytes());
    assert_eq!(silent.read_close(), 1001);
    // The silent one never answers: the process waits the shutdown timeout,
    // then exits 0.
    let (code, took) = wait_exit(&mut p);
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(4), "{took:?}");
    polite.wait_closed();
}

#[test]
fn sigint_with_no_clients_exits_at_once() {
    let mut p = start_proc(&["--shutdown-timeout", "30s"]);
    signal(&p, "-INT");
    let (code, took) = wait_exit(&mut p);
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn a_second_signal_exits_without_waiting() {
    let mut p = start_proc(&["--shutdown-timeout", "60s"]);
    let mut silent = Raw::open(p.addr, "/");
    signal(&p, "-TERM");
    assert_eq!(silent.read_close(), 1001);
    signal(&p, "-TERM");
    let (code, took) = wait_exit(&mut p);
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[test]
fn a_public_admin_listener_without_a_token_is_refused() {
    let out = wsbeat()
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("--admin-listen") && err.contains("--admin-token"), "{err}");
    // With a token it starts (checked by the token being required).
    let mut p = start_proc(&["--admin-token", "x"]);
    assert_eq!(http(p.admin, "GET", "/metrics", "", b"").status, 401);
    signal(&p, "-KILL");
    let _ = wait_exit(&mut p);
}

#[test]
fn environment_variables_configure_and_flags_beat_them() {
    // Read from the environment...
    let out = wsbeat().env("WSBEAT_MAX_CONNECTIONS", "0").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--max-connections"));
    // ...but a flag wins.
    let mut cmd = wsbeat();
    cmd.env("WSBEAT_MAX_CONNECTIONS", "0")
        .env("WSBEAT_ADMIN_TOKEN", "from-env")
        .args([
            "--max-connections",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ]);
    // Killed when dropped, also when an assertion fails.
    let p = start_binary(cmd);
    let admin = p.admin;
    // WSBEAT_ADMIN_TOKEN applied.
    assert_eq!(http(admin, "GET", "/metrics", "", b"").status, 401);
    assert_eq!(
        http(admin, "GET", "/metrics", "Authorization: Bearer from-env\r\n", b"").status,
        200
    );
}

crate::also_with_two_loops!(
    sigterm_closes_clients_with_1001_and_exits_0_in_time,
    sigint_with_no_clients_exits_at_once,
    a_second_signal_exits_without_waiting,
    a_public_admin_listener_without_a_token_is_refused,
    environment_variables_configure_and_flags_beat_them,
);
