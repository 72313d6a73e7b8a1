//! The server: event loop and connections.

mod connection;
mod event_loop;

pub use event_loop::Server;
