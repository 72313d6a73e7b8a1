//! The server: the event loop and everything it does with sockets. The
//! connections' logic is the sans-IO `crate::session`; this module moves
//! bytes, owns the sockets and the loop.
//!
//! - `event_loop.rs`: `Server`, start-up, the poll loop, dispatch, shutdown
//! - `listener.rs`: binding, accepting, refusing with 503
//! - `connections.rs`: WebSocket sockets ↔ sessions: reads, writes, drops
//! - `commands.rs`: push, broadcast, kick, replacement, on the loop
//! - `admin_conns.rs`: admin API sockets, answered through `backend.rs`
//! - `token.rs`: what a `mio::Token` names
//! - `handle.rs`: reaching the loop from other threads

mod admin_conns;
mod backend;
mod commands;
mod connections;
mod event_loop;
mod fd_limit;
pub mod handle;
mod listener;
mod token;

pub use event_loop::{Server, Stats};
pub use fd_limit::raise_fd_limit;
