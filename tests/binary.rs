//! The `wsbeat` binary: flags, exit codes, and that it serves.

use std::net::TcpListener;
use std::process::{Command, Stdio};

fn wsbeat() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wsbeat"));
    c.env_remove("RUST_LOG");
    c
}

#[test]
fn help_lists_flags_defaults_and_variables() {
    let out = wsbeat().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "--listen",
        "[default: 0.0.0.0:8181]",
        "WSBEAT_LISTEN",
        "--max-message-size",
        "[default: 1MiB]",
        "--echo",
        "WSBEAT_CLOSE_TIMEOUT",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
}

#[test]
fn a_bad_value_exits_2_with_one_line_naming_flag_and_value() {
    let out = wsbeat().args(["--close-timeout", "5x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("--close-timeout") && err.contains("5x") && err.contains("ms, s, m or h"),
        "{err}"
    );
    // The same through the environment.
    let out = wsbeat().env("WSBEAT_MAX_MESSAGE_SIZE", "lots").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("--max-message-size") && err.contains("lots"), "{err}");
}

#[test]
fn a_bad_variable_is_named_and_clap_keeps_its_hints() {
    let out = wsbeat().env("WSBEAT_HEARTBEAT_INTERVAL", "x").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("invalid value 'x' for WSBEAT_HEARTBEAT_INTERVAL (--heartbeat-interval)"),
        "{err}"
    );
    // The flag beats the variable, and is what the message names then.
    let out = wsbeat()
        .env("WSBEAT_HEARTBEAT_INTERVAL", "x")
        .args(["--heartbeat-interval", "y"])
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("'y' for '--heartbeat-interval") && !err.contains("WSBEAT_"),
        "{err}"
    );
    // Possible values and a similar flag, without the usage block.
    for (args, hint) in [
        (
            &["--server-heartbeat", "loud"][..],
            "possible values: ping, text, both, off",
        ),
        (&["--heartbeat-intervall", "1s"], "--heartbeat-interval"),
    ] {
        let out = wsbeat().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains(hint) && !err.contains("Usage:"), "{err}");
    }
}

#[test]
fn an_allowed_origin_with_a_path_is_refused_at_start_up() {
    for value in ["https://example.com/", "https://EXAMPLE.com/app"] {
        let out = wsbeat().args(["--allowed-origins", value]).output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(
            err.contains("--allowed-origins") && err.contains("an origin has no path: use https://example.com"),
            "{err}"
        );
    }
}

#[test]
fn a_bind_failure_exits_1_naming_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = wsbeat()
        .args(["--listen", &addr])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains(&addr), "{err}");
}

#[test]
fn threads_takes_1_to_256_from_the_flag_or_its_variable() {
    let help = wsbeat().arg("--help").output().unwrap();
    let text = String::from_utf8(help.stdout).unwrap();
    assert!(text.contains("--threads") && text.contains("WSBEAT_THREADS"), "{text}");
    for bad in ["0", "two", "257", "-1", ""] {
        let out = wsbeat().arg(format!("--threads={bad}")).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "--threads {bad:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains("--threads"), "{err}");
        let out = wsbeat().env("WSBEAT_THREADS", bad).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "WSBEAT_THREADS={bad:?}");
    }
}

#[test]
fn log_format_json_writes_one_object_per_line() {
    use std::io::BufRead;
    let mut child = wsbeat()
        .args([
            "--log-format",
            "json",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    // Read up to the line that says it listens, then stop the child before
    // any assertion can fail and leave it running.
    let mut seen = Vec::new();
    for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok).take(50) {
        let done = line.contains("listening on ws://127.0.0.1:");
        seen.push(line);
        if done {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        seen.last().is_some_and(|l| l.contains("listening on ws://")),
        "{seen:?}"
    );
    for line in &seen {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        for key in ["ts", "level", "target", "msg"] {
            assert!(v[key].is_string(), "{key} in {line}");
        }
    }
    assert!(seen.iter().any(|l| l.contains("\"level\":\"INFO\"")), "{seen:?}");
}
