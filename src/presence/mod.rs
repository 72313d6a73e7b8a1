//! Who is online and how to reach them: the presence types every part of
//! the server shares (why a client left, the events subscribers see, what a
//! duplicate id does), and the in-process [`Registry`].
//!
//! Nothing here knows about sockets, loops or the admin API, so the server,
//! the admin side and the configuration can all depend on it.

mod registry;
mod types;

pub use registry::{Bind, Registry};
pub use types::{ConnId, DuplicateId, OfflineReason, PresenceEvent};
