//! The server: event loop, connections, registry.

mod admin_conn;
mod connection;
mod event_loop;
mod fd_limit;
pub mod handle;
pub mod handler;
pub mod registry;
pub mod sim;

pub use event_loop::{Server, Stats};
pub use fd_limit::raise_fd_limit;
