//! TLS for the WebSocket listener (`wss://`) and the admin API (SPEC §10),
//! with rustls and the aws-lc-rs provider. TLS is a transport under the
//! unchanged protocol core: the loop moves ciphertext, a [`TlsLink`] turns
//! it into plaintext for the session and the session's output back into
//! records. Like `protocol/`, nothing here touches a socket or imports the
//! rest of the crate.

mod config;
mod link;
#[cfg(test)]
mod tests;

pub use config::{ALPN_HTTP11, LoadError, TlsCerts, TlsFiles};
pub use link::{Failure, Received, TlsLink};
