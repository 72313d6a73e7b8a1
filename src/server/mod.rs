//! The server: the event loops and everything they do with sockets. The
//! connections' logic is the sans-IO `crate::session`; this module moves
//! bytes, owns the sockets and the loops.
//!
//! - `launch.rs`: `Server`, start-up, one `EventLoop` per thread, `Stats`
//! - `event_loop.rs`: one loop: poll, dispatch, timers, shutdown
//! - `links.rs`: what loops share and how they reach each other
//! - `listener.rs`: binding, accepting (for every loop), refusing with 503
//! - `connections.rs`: WebSocket sockets <-> sessions: reads, writes, drops
//! - `commands.rs`: push, broadcast, kick, replacement, routed to their loop
//! - `admin_conns.rs`: admin API sockets, answered through `backend.rs`
//! - `token.rs`: what a `mio::Token` names
//! - `handle.rs`: reaching the loops from other threads
//! - `fd_limit.rs`: raising the open-file limit to fit `--max-connections`

mod admin_conns;
mod backend;
mod cluster_node;
mod commands;
mod connections;
mod event_loop;
mod fd_limit;
pub mod handle;
mod launch;
mod links;
mod listener;
mod token;

pub use event_loop::EventLoop;
pub use fd_limit::raise_fd_limit;
pub use launch::{Server, Stats};
