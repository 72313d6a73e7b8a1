//! wsbeat: a WebSocket server for very many long-lived connections.
//!
//! Clients connect, heartbeat and name themselves; the server pings them,
//! knows who is online, evicts the dead, and lets a backend push to any
//! client by id. The protocol core ([`protocol`]) and each connection's state
//! machine ([`session`]) are sans-IO: they take bytes and the time and return
//! decisions. The [`Server`] owns the sockets and the event loops — one per
//! [`Config::threads`], loop 0 on the thread that calls [`Server::run`], each
//! owning the connections it was given.
//!
//! The `wsbeat` binary is this, with the default [`NoopHandler`]:
//!
//! ```no_run
//! let cfg = wsbeat::Config {
//!     listen: "127.0.0.1:8181".parse()?,
//!     echo: true,
//!     ..Default::default()
//! };
//! let server = wsbeat::Server::bind(cfg)?;
//! println!("listening on {}", server.local_addr());
//! server.run()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! An embedding program implements [`Handler`] to see connections open,
//! heartbeat, send messages and close, and uses a [`Handle`] to reach the
//! loops from other threads:
//!
//! ```no_run
//! use wsbeat::{AppMessage, Config, ConnInfo, Control, Handler, OfflineReason, Server};
//!
//! /// Answers every text message, and says goodbye in the log.
//! struct Echo;
//!
//! impl Handler for Echo {
//!     fn on_message(&mut self, conn: &ConnInfo<'_>, msg: AppMessage<'_>, ctl: &mut Control) {
//!         if let AppMessage::Text(t) = msg {
//!             ctl.send(conn.conn, format!("{} said {t}", conn.id.unwrap_or("someone")));
//!         }
//!     }
//!     fn on_close(&mut self, conn: &ConnInfo<'_>, reason: OfflineReason, _ctl: &mut Control) {
//!         println!("{:?} left: {}", conn.id, reason.as_str());
//!     }
//! }
//!
//! let cfg = Config {
//!     admin_listen: None,
//!     handle_signals: false,
//!     ..Default::default()
//! };
//! let server = Server::with_handler(cfg, Echo)?;
//! let handle = server.handle();
//! let loop_thread = std::thread::spawn(move || server.run());
//!
//! // From any thread: push to a client by id, broadcast, kick, stop.
//! handle.send("device-42", "hello")?;
//! handle.broadcast(vec![1u8, 2, 3])?;
//! handle.kick("device-13", "banned")?;
//! handle.shutdown()?;
//! loop_thread.join().map_err(|_| "the loop thread panicked")??;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod forward;
pub mod handler;
pub mod http_client;
pub mod metrics;
pub mod presence;
pub mod process_stats;
pub mod protocol;
pub mod server;
pub mod session;
pub mod timer;
pub mod tls;

pub use config::Config;
pub use handler::{AppMessage, ConnId, ConnInfo, Control, Handler, NoopHandler, Outgoing};
pub use presence::{OfflineReason, PresenceEvent};
pub use server::handle::{Handle, ServerGone};
pub use server::{EventLoop, Server, Stats, raise_fd_limit};
