//! The library API: a `Handler` sees every connection's life, and its
//! `Control` acts on the server from inside a callback.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::*;
use wsbeat::protocol::frame::OpCode;
use wsbeat::{AppMessage, ConnInfo, Control, Handler, OfflineReason};

#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Open(Option<String>),
    Heartbeat(Option<String>),
    Text(Option<String>, String),
    Binary(Option<String>, Vec<u8>),
    Close(Option<String>, OfflineReason),
}

struct Recorder(mpsc::Sender<Seen>);

fn id(c: &ConnInfo<'_>) -> Option<String> {
    c.id.map(str::to_string)
}

impl Handler for Recorder {
    fn on_open(&mut self, conn: &ConnInfo<'_>, _ctl: &mut Control) {
        self.0.send(Seen::Open(id(conn))).unwrap();
    }
    fn on_heartbeat(&mut self, conn: &ConnInfo<'_>, _ctl: &mut Control) {
        self.0.send(Seen::Heartbeat(id(conn))).unwrap();
    }
    fn on_message(&mut self, conn: &ConnInfo<'_>, msg: AppMessage<'_>, ctl: &mut Control) {
        match msg {
            AppMessage::Text(t) => {
                self.0.send(Seen::Text(id(conn), t.to_string())).unwrap();
                // Reply to the sender, and tell everyone.
                ctl.send(conn.conn, format!("you said {t}"));
                if t == "kick me" {
                    ctl.kick(conn.id.unwrap(), "as you wish");
                }
            }
            AppMessage::Binary(b) => self.0.send(Seen::Binary(id(conn), b.to_vec())).unwrap(),
        }
    }
    fn on_close(&mut self, conn: &ConnInfo<'_>, reason: OfflineReason, _ctl: &mut Control) {
        self.0.send(Seen::Close(id(conn), reason)).unwrap();
    }
}

#[test]
fn handler_sees_open_heartbeat_message_and_close() {
    let (tx, rx) = mpsc::channel();
    let server = wsbeat::Server::with_handler(
        test_config(wsbeat::Config {
            heartbeat_timeout: Duration::from_secs(30),
            ..Default::default()
        }),
        Recorder(tx),
    )
    .unwrap();
    let s = spawn_server(server);
    let next = || rx.recv_timeout(DEADLINE).unwrap();

    let mut c = Raw::open(s.addr, "/");
    assert_eq!(next(), Seen::Open(None));
    c.send_frame(true, OpCode::Text, b"heartbeat:lib-1");
    assert_eq!(next(), Seen::Heartbeat(Some("lib-1".into())));
    c.send_frame(true, OpCode::Text, b"hello");
    assert_eq!(next(), Seen::Text(Some("lib-1".into()), "hello".into()));
    assert_eq!(c.read_non_heartbeat().unwrap().payload, b"you said hello");
    c.send_frame(true, OpCode::Binary, &[1, 2]);
    assert_eq!(next(), Seen::Binary(Some("lib-1".into()), vec![1, 2]));
    c.send_frame(true, OpCode::Close, &1000u16.to_be_bytes());
    assert_eq!(next(), Seen::Close(Some("lib-1".into()), OfflineReason::Closed));

    let mut k = Raw::open(s.addr, "/?client_id=lib-2");
    assert_eq!(next(), Seen::Open(Some("lib-2".into())));
    k.send_frame(true, OpCode::Text, b"kick me");
    assert_eq!(next(), Seen::Text(Some("lib-2".into()), "kick me".into()));
    assert_eq!(next(), Seen::Close(Some("lib-2".into()), OfflineReason::Kicked));
    assert_eq!(k.read_non_heartbeat().unwrap().payload, b"you said kick me");
    assert_eq!(k.read_close_with_reason(), (4003, "as you wish".into()));

    // A replaced connection is reported once, with its reason.
    let _old = Raw::open(s.addr, "/?client_id=lib-3");
    assert_eq!(next(), Seen::Open(Some("lib-3".into())));
    let _new = Raw::open(s.addr, "/?client_id=lib-3");
    assert_eq!(next(), Seen::Open(Some("lib-3".into())));
    assert_eq!(next(), Seen::Close(Some("lib-3".into()), OfflineReason::Replaced));
    assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
}

crate::also_with_two_loops!(handler_sees_open_heartbeat_message_and_close,);

/// Every callback, in the order the loop made them.
#[derive(Debug, PartialEq, Eq)]
enum Call {
    Open(Option<String>),
    Bind(Option<String>),
    Heartbeat(Option<String>),
    Text(Option<String>, String),
    Close(Option<String>, OfflineReason),
}

struct BindRecorder(mpsc::Sender<Call>);

impl Handler for BindRecorder {
    fn on_open(&mut self, conn: &ConnInfo<'_>, _ctl: &mut Control) {
        self.0.send(Call::Open(id(conn))).unwrap();
    }
    fn on_bind(&mut self, conn: &ConnInfo<'_>, _ctl: &mut Control) {
        self.0.send(Call::Bind(id(conn))).unwrap();
    }
    fn on_heartbeat(&mut self, conn: &ConnInfo<'_>, _ctl: &mut Control) {
        self.0.send(Call::Heartbeat(id(conn))).unwrap();
    }
    fn on_message(&mut self, conn: &ConnInfo<'_>, msg: AppMessage<'_>, _ctl: &mut Control) {
        if let AppMessage::Text(t) = msg {
            self.0.send(Call::Text(id(conn), t.to_string())).unwrap();
        }
    }
    fn on_close(&mut self, conn: &ConnInfo<'_>, reason: OfflineReason, _ctl: &mut Control) {
        self.0.send(Call::Close(id(conn), reason)).unwrap();
    }
}

/// `on_bind` comes once per connection that gets an id: right after
/// `on_open` for `?client_id=`, right before `on_heartbeat` for the first
/// heartbeat naming one; never without an id, never again for the same id.
/// Each "no call here" is shown by the next call being a later one (the
/// calls of one connection come in order), not by waiting for nothing.
#[test]
fn on_bind_is_called_once_when_the_id_is_bound() {
    let (tx, rx) = mpsc::channel();
    let server = wsbeat::Server::with_handler(
        test_config(wsbeat::Config {
            heartbeat_timeout: Duration::from_secs(30),
            ..Default::default()
        }),
        BindRecorder(tx),
    )
    .unwrap();
    let s = spawn_server(server);
    let next = || rx.recv_timeout(DEADLINE).unwrap();
    let some = |s: &str| Some(s.to_string());

    // The id with the upgrade: open, then bind.
    let mut q = Raw::open(s.addr, "/?client_id=bind-q");
    assert_eq!(next(), Call::Open(some("bind-q")));
    assert_eq!(next(), Call::Bind(some("bind-q")));
    // A heartbeat naming the same id, and a plain one: no second bind.
    q.send_frame(true, OpCode::Text, b"heartbeat:bind-q");
    assert_eq!(next(), Call::Heartbeat(some("bind-q")));
    q.send_frame(true, OpCode::Text, b"heartbeat");
    assert_eq!(next(), Call::Heartbeat(some("bind-q")));
    q.send_frame(true, OpCode::Text, b"after");
    assert_eq!(next(), Call::Text(some("bind-q"), "after".into()));
    q.send_frame(true, OpCode::Close, &1000u16.to_be_bytes());
    assert_eq!(next(), Call::Close(some("bind-q"), OfflineReason::Closed));

    // No id at all: heartbeats and messages, never a bind.
    let mut anon = Raw::open(s.addr, "/");
    assert_eq!(next(), Call::Open(None));
    anon.send_frame(true, OpCode::Text, b"heartbeat");
    assert_eq!(next(), Call::Heartbeat(None));
    anon.send_frame(true, OpCode::Text, b"anonymous");
    assert_eq!(next(), Call::Text(None, "anonymous".into()));
    anon.send_frame(true, OpCode::Close, &1000u16.to_be_bytes());
    assert_eq!(next(), Call::Close(None, OfflineReason::Closed));

    // The id from the first heartbeat naming it: bind (with the id set),
    // then that heartbeat; the same heartbeat again binds nothing.
    let mut h = Raw::open(s.addr, "/");
    assert_eq!(next(), Call::Open(None));
    h.send_frame(true, OpCode::Text, b"before");
    assert_eq!(next(), Call::Text(None, "before".into()));
    h.send_frame(true, OpCode::Text, b"heartbeat:bind-h");
    assert_eq!(next(), Call::Bind(some("bind-h")));
    assert_eq!(next(), Call::Heartbeat(some("bind-h")));
    h.send_frame(true, OpCode::Text, b"heartbeat:bind-h");
    assert_eq!(next(), Call::Heartbeat(some("bind-h")));
    h.send_frame(true, OpCode::Text, b"heartbeat");
    assert_eq!(next(), Call::Heartbeat(some("bind-h")));
    h.send_frame(true, OpCode::Text, b"named");
    assert_eq!(next(), Call::Text(some("bind-h"), "named".into()));
    h.send_frame(true, OpCode::Close, &1000u16.to_be_bytes());
    assert_eq!(next(), Call::Close(some("bind-h"), OfflineReason::Closed));
    assert_eq!(h.read_close(), 1000);
}

/// With `--duplicate-id reject`, a connection refused the id it asked for
/// (in the query or a heartbeat) gets no `on_bind`; it is closed with 4002.
#[test]
fn on_bind_is_not_called_for_a_refused_id() {
    let (tx, rx) = mpsc::channel();
    let server = wsbeat::Server::with_handler(
        test_config(wsbeat::Config {
            heartbeat_timeout: Duration::from_secs(30),
            duplicate_id: wsbeat::config::DuplicateId::Reject,
            ..Default::default()
        }),
        BindRecorder(tx),
    )
    .unwrap();
    let s = spawn_server(server);
    let next = || rx.recv_timeout(DEADLINE).unwrap();
    let some = |s: &str| Some(s.to_string());

    let mut holder = Raw::open(s.addr, "/?client_id=bind-dup");
    assert_eq!(next(), Call::Open(some("bind-dup")));
    assert_eq!(next(), Call::Bind(some("bind-dup")));

    // In the query: opened without the id, then closed.
    let mut q = Raw::open(s.addr, "/?client_id=bind-dup");
    assert_eq!(next(), Call::Open(None));
    assert_eq!(next(), Call::Close(None, OfflineReason::Error));
    assert_eq!(q.read_close_with_reason(), (4002, "client id already in use".into()));

    // In a heartbeat: no bind, no heartbeat, closed.
    let mut h = Raw::open(s.addr, "/");
    assert_eq!(next(), Call::Open(None));
    h.send_frame(true, OpCode::Text, b"heartbeat:bind-dup");
    assert_eq!(next(), Call::Close(None, OfflineReason::Error));
    assert_eq!(h.read_close(), 4002);

    // The holder keeps it, bound once.
    holder.send_frame(true, OpCode::Text, b"still mine");
    assert_eq!(next(), Call::Text(some("bind-dup"), "still mine".into()));
}

crate::also_with_two_loops!(
    on_bind_is_called_once_when_the_id_is_bound,
    on_bind_is_not_called_for_a_refused_id,
);

/// An embedding program without signal handling reloads the certificate
/// through its handle: a bad file keeps the pair in use, and both outcomes
/// are counted.
#[test]
fn a_handle_reloads_the_tls_certificate() {
    let dir = std::env::temp_dir().join(format!("wsbeat-lib-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write_pair = || {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(dir.join("cert.pem"), ck.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
    };
    write_pair();
    let files = wsbeat::tls::TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    let s = spawn(wsbeat::Config {
        tls: Some(files),
        ..Default::default()
    });
    let reloads = |result: &str| metric(s.admin, &format!("wsbeat_tls_reloads_total{{result=\"{result}\"}}"));
    write_pair();
    assert!(s.handle.reload_tls().unwrap());
    std::fs::write(dir.join("key.pem"), b"not a key").unwrap();
    let e = s.handle.reload_tls().unwrap_err();
    assert_eq!(e.flag, "--tls-key");
    assert_eq!((reloads("ok"), reloads("error")), (1, 1));
    let _ = std::fs::remove_dir_all(&dir);

    // Without TLS there is nothing to reload.
    let plain = spawn(wsbeat::Config::default());
    assert!(!plain.handle.reload_tls().unwrap());
}
