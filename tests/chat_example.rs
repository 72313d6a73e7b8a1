//! `examples/chat.rs`, end to end: the real example process on a free port,
//! real WebSocket clients (tungstenite), and its stdin.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// Generous: the test waits for events, never for wall-clock speed.
const DEADLINE: Duration = Duration::from_secs(20);

type Client = WebSocket<MaybeTlsStream<TcpStream>>;

/// Builds the example and returns its executable.
///
/// Cargo sets `CARGO_BIN_EXE_<name>` for `[[bin]]` targets only, and
/// `cargo test --test chat_example` does not build examples. So the test asks
/// the cargo running it (`CARGO`, set by cargo for tests; the one that built
/// this test as a fallback) to build the example for the same manifest and
/// profile, and takes the executable's path from cargo's JSON messages rather
/// than guessing `target/<profile>/examples/chat` (which `CARGO_TARGET_DIR`,
/// `--target` or a custom profile would move). The library is already built
/// for this test, so this compiles and links the example only; when it is up
/// to date, it takes well under a second. Cargo's own lock orders it with any
/// other build in the same target directory.
fn build_example() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    // This test runs from `<target dir>/<profile dir>/deps/`; the profile
    // directory names the profile (`dev` builds into `debug`).
    let exe = std::env::current_exe().expect("test executable");
    let profile = exe
        .parent()
        .and_then(|deps| deps.parent())
        .and_then(|dir| dir.file_name())
        .and_then(|name| name.to_str())
        .map(|name| if name == "debug" { "dev" } else { name })
        .unwrap_or("dev")
        .to_string();
    let out = Command::new(cargo)
        .args(["build", "--example", "chat", "--message-format=json-render-diagnostics"])
        .args(["--profile", &profile])
        .arg("--manifest-path")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .stdin(Stdio::null())
        .output()
        .expect("run cargo build --example chat");
    assert!(
        out.status.success(),
        "cargo build --example chat failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact" && v["target"]["name"] == "chat")
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("no executable for the chat example in cargo's output:\n{stdout}"))
}

/// The example running; killed (and reaped) when dropped, also when the
/// test fails.
struct Chat {
    child: Child,
    stdin: ChildStdin,
    addr: String,
}

impl Drop for Chat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port free a moment ago (bound on port 0, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts the example on a free port and waits for its "listening" log
/// line. Another process could take the port between its release and the
/// example's bind: the example then exits, and another port is tried.
fn start_chat() -> Chat {
    let exe = build_example();
    for _ in 0..5 {
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new(&exe)
            .arg(&addr)
            .env("RUST_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the chat example");
        let mut child = child;
        let stdin = child.stdin.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let chat = Chat { child, stdin, addr };
        // Its log is read to the end (so it never blocks on a full pipe);
        // the lines go to the test's output and to the channel.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("chat: {line}");
                let _ = tx.send(line);
            }
        });
        let wanted = format!("listening on ws://{}", chat.addr);
        loop {
            match rx.recv_timeout(DEADLINE) {
                Ok(line) if line.contains(&wanted) => return chat,
                Ok(_) => continue,
                // The log ended: it exited (the port was taken?); try another.
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("the chat example did not start within {DEADLINE:?}"),
            }
        }
    }
    panic!("the chat example could not listen on any of 5 free ports");
}

fn connect(chat: &Chat, query: &str) -> Client {
    let (ws, _) = tungstenite::connect(format!("ws://{}/{query}", chat.addr)).expect("connect");
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(DEADLINE)).unwrap();
    }
    ws
}

/// The next text message (pings are answered by tungstenite and skipped).
fn next_text(ws: &mut Client) -> String {
    loop {
        match ws.read().expect("a message within the deadline") {
            Message::Text(t) => return t.to_string(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn chat_announces_joins_by_query_and_heartbeat_messages_leaves_and_stdin() {
    let mut chat = start_chat();

    // Named with the upgrade: everyone (ann herself, for now) hears it.
    let mut ann = connect(&chat, "?client_id=ann");
    assert_eq!(next_text(&mut ann), "* ann joined");

    // Anonymous: welcomed alone (ann hears nothing of it)...
    let mut bob = connect(&chat, "");
    assert_eq!(next_text(&mut bob), "welcome: send `heartbeat:NAME` to pick a name");
    // ... then named by a heartbeat: announced to everyone, like ann.
    bob.send(Message::text("heartbeat:bob")).unwrap();
    assert_eq!(next_text(&mut ann), "* bob joined");
    assert_eq!(next_text(&mut bob), "* bob joined");
    // A heartbeat repeating the name announces nothing: the next thing
    // both hear is the message that follows it.
    bob.send(Message::text("heartbeat:bob")).unwrap();

    bob.send(Message::text("hi")).unwrap();
    assert_eq!(next_text(&mut ann), "bob: hi");
    assert_eq!(next_text(&mut bob), "bob: hi");
    ann.send(Message::text("hello bob")).unwrap();
    assert_eq!(next_text(&mut ann), "ann: hello bob");
    assert_eq!(next_text(&mut bob), "ann: hello bob");

    // A line on the example's stdin goes to everyone.
    writeln!(chat.stdin, "maintenance at noon").unwrap();
    chat.stdin.flush().unwrap();
    assert_eq!(next_text(&mut ann), "[server] maintenance at noon");
    assert_eq!(next_text(&mut bob), "[server] maintenance at noon");

    // Bob leaves with a close handshake.
    bob.close(None).unwrap();
    loop {
        match bob.read() {
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("closing: {e}"),
        }
    }
    assert_eq!(next_text(&mut ann), "* bob left (closed)");

    // Still serving.
    writeln!(chat.stdin, "bye").unwrap();
    chat.stdin.flush().unwrap();
    assert_eq!(next_text(&mut ann), "[server] bye");
    assert!(chat.child.try_wait().unwrap().is_none(), "the example exited");
}
