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

/// Waits until `done` holds for the log, or panics with it.
fn wait_log(p: &Proc, what: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let t = Instant::now();
    loop {
        let log = p.log.lock().unwrap().clone();
        if done(&log) {
            return log;
        }
        assert!(t.elapsed() < DEADLINE, "{what}: {log:#?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn refused(p: &Proc, request: &str, status: u16) {
    let mut r = Raw::connect(p.addr);
    r.send(request.as_bytes());
    assert_eq!(read_response(&mut r).status, status, "{request}");
}

/// Refused upgrades log at info with the reason and the offending value, at
/// most 10 lines a second per loop, and the count of the lines left out.
#[test]
fn refusals_are_logged_with_the_offending_value_and_rate_limited() {
    let p = start_proc(&[
        "--threads",
        "1",
        "--path",
        "/ws",
        "--allowed-origins",
        "https://a.example",
    ]);
    let refusals = |log: &[String]| log.iter().filter(|l| l.contains("upgrade refused")).count();
    refused(&p, &upgrade_request("/ws", "Origin: https://evil.example\r\n"), 403);
    refused(&p, &upgrade_request("/elsewhere", ""), 404);
    refused(&p, &upgrade_request("/ws?token=secret&client_id=no%20spaces", ""), 400);
    let log = wait_log(&p, "three refusals", |log| refusals(log) == 3);
    let lines: Vec<&String> = log.iter().filter(|l| l.contains("upgrade refused")).collect();
    assert!(lines.iter().all(|l| l.contains(" INFO ")), "{lines:#?}");
    assert!(lines[0].contains("403 origin not allowed") && lines[0].contains("origin \"https://evil.example\""));
    assert!(
        lines[1].contains("404") && lines[1].contains("path \"/elsewhere\""),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].contains("invalid client id: 1 to 128 bytes") && lines[2].contains("client_id \"no%20spaces\""),
        "{}",
        lines[2]
    );
    // The query is not logged: it may carry a token.
    assert!(!log.iter().any(|l| l.contains("secret")), "{log:#?}");

    // A flood: far fewer lines than refusals, and after a quiet second the
    // next line is preceded by the count of those left out.
    let t = Instant::now();
    let flood = 100;
    for _ in 0..flood {
        refused(&p, &upgrade_request("/elsewhere", ""), 404);
    }
    let secs = t.elapsed().as_secs() + 1;
    std::thread::sleep(Duration::from_millis(1100));
    refused(&p, &upgrade_request("/elsewhere", ""), 404);
    let suppressed = |log: &[String]| -> usize {
        log.iter()
            .filter_map(|l| l.split("refusals: ").nth(1))
            .map(|l| l.split(' ').next().unwrap().parse::<usize>().unwrap())
            .sum()
    };
    let total = 3 + flood + 1;
    let log = wait_log(&p, "every refusal logged or counted", |log| {
        refusals(log) + suppressed(log) == total
    });
    assert!(suppressed(&log) > 0, "{log:#?}");
    assert!(log.last().unwrap().contains("upgrade refused"), "{log:#?}");
    // The flood's lines: at most 10 in each second it spanned.
    assert!(refusals(&log) - 4 <= 10 * secs as usize + 10, "{log:#?}");
}

/// `--admin-listen off`: no admin listener, the WebSocket endpoint serves.
#[test]
fn admin_listen_off_runs_without_the_admin_api() {
    use std::io::BufRead;
    use std::process::Stdio;
    let mut child = wsbeat()
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "off"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut addr = None;
    let mut seen = Vec::new();
    for line in lines.by_ref().map_while(Result::ok).take(50) {
        if let Some(a) = line.split("listening on ws://").nth(1) {
            addr = Some(a.trim().parse::<std::net::SocketAddr>().unwrap());
        }
        let off = line.contains("admin API off");
        seen.push(line);
        if off {
            break;
        }
    }
    let served = addr.map(|a| {
        let mut ws = connect(a, "client_id=alone");
        ws.close(None).is_ok()
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(seen.last().is_some_and(|l| l.contains("admin API off")), "{seen:#?}");
    assert!(!seen.iter().any(|l| l.contains("admin API on")), "{seen:#?}");
    assert_eq!(served, Some(true));
}

/// Boolean variables take the usual spellings; a wrong one names the variable.
#[test]
fn boolean_variables_take_the_usual_spellings() {
    for on in ["1", "true", "yes", "on"] {
        let mut cmd = wsbeat_on_free_ports();
        cmd.env("WSBEAT_ECHO", on);
        let p = start_binary(cmd);
        let mut ws = connect(p.addr, "");
        ws.send(tungstenite::Message::text("hello")).unwrap();
        assert_eq!(read_text(&mut ws), "hello", "WSBEAT_ECHO={on}");
    }
    for off in ["0", "false", "no", "off"] {
        let mut cmd = wsbeat_on_free_ports();
        cmd.env("WSBEAT_ECHO", off).env("WSBEAT_ADMIN_TLS", off);
        start_binary(cmd);
    }
    for (var, flag) in [("WSBEAT_ECHO", "--echo"), ("WSBEAT_ADMIN_TLS", "--admin-tls")] {
        let out = wsbeat().env(var, "maybe").output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("'maybe' for {var} ({flag})")), "{err}");
    }
}

crate::also_with_two_loops!(
    sigterm_closes_clients_with_1001_and_exits_0_in_time,
    sigint_with_no_clients_exits_at_once,
    a_second_signal_exits_without_waiting,
    a_public_admin_listener_without_a_token_is_refused,
    environment_variables_configure_and_flags_beat_them,
);
