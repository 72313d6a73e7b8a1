//! A chat room on wsbeat, as an embedding example.
//!
//! Every text message is broadcast to everyone with the sender's id; people
//! joining (with a heartbeat that names them) and leaving are announced;
//! lines typed on the server's stdin go out as announcements through a
//! `Handle`, from another thread.
//!
//! ```sh
//! cargo run --example chat -- 127.0.0.1:9000
//! # then, e.g. with websocat:  websocat 'ws://127.0.0.1:9000/?client_id=ann'
//! ```

use wsbeat::{AppMessage, Config, ConnInfo, Control, Handler, OfflineReason, Server};

struct Chat;

impl Handler for Chat {
    fn on_open(&mut self, conn: &ConnInfo<'_>, ctl: &mut Control) {
        if conn.id.is_none() {
            ctl.send(conn.conn, "welcome: send `heartbeat:NAME` to pick a name");
        }
    }

    fn on_bind(&mut self, conn: &ConnInfo<'_>, ctl: &mut Control) {
        // Whether the name came with the upgrade or in a heartbeat.
        if let Some(id) = conn.id {
            ctl.broadcast(format!("* {id} joined"));
        }
    }

    fn on_heartbeat(&mut self, _conn: &ConnInfo<'_>, _ctl: &mut Control) {
        // Heartbeats keep the connection alive; nothing to say about them.
    }

    fn on_message(&mut self, conn: &ConnInfo<'_>, msg: AppMessage<'_>, ctl: &mut Control) {
        if let AppMessage::Text(text) = msg {
            let who = conn.id.unwrap_or("anonymous");
            ctl.broadcast(format!("{who}: {text}"));
        }
    }

    fn on_close(&mut self, conn: &ConnInfo<'_>, reason: OfflineReason, ctl: &mut Control) {
        if let Some(id) = conn.id {
            ctl.broadcast(format!("* {id} left ({})", reason.as_str()));
        }
    }
}

fn main() -> std::io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let listen = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9000".to_string());
    let cfg = Config {
        listen: listen.parse().expect("an address such as 127.0.0.1:9000"),
        admin_listen: None,
        ..Default::default()
    };
    let server = Server::with_handler(cfg, Chat)?;
    let handle = server.handle();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines().map_while(Result::ok) {
            if handle.broadcast(format!("[server] {line}")).is_err() {
                break;
            }
        }
    });
    server.run()
}
