//! The server: event loop, connections, registry.

mod connection;
mod event_loop;
pub mod registry;

pub use event_loop::{Server, Stats};
