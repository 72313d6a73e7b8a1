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
