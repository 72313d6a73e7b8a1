//! wsbeat: a WebSocket server for very many long-lived connections.
//!
//! The protocol core ([`protocol`]) is sans-IO: it takes bytes and returns
//! decisions. The [`Server`] owns the sockets, the timers and the loop.
//!
//! ```no_run
//! let cfg = wsbeat::Config {
//!     listen: "127.0.0.1:0".parse().unwrap(),
//!     echo: true,
//!     ..Default::default()
//! };
//! let server = wsbeat::Server::bind(cfg)?;
//! println!("listening on {}", server.local_addr());
//! server.run()?;
//! # Ok::<(), std::io::Error>(())
//! ```

#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod protocol;
pub mod server;
pub mod timer;

pub use config::Config;
pub use server::{Server, Stats};
