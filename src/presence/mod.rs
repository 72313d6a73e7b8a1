//! Who is online and how to reach them: the presence types every part of
//! the server shares (why a client left, the events subscribers see, what a
//! duplicate id does), the [`Directory`] interface every loop reaches ids
//! through, and its in-process form.
//!
//! Nothing here knows about sockets or the admin API (a [`ConnId`] names its
//! loop only as a number), so the server, the admin side and the
//! configuration can all depend on it.

mod directory;
mod registry;
mod types;

pub use directory::{Directory, SharedRegistry};
pub use registry::{Bind, Registry};
pub use types::{ConnId, DuplicateId, NodeEvent, OfflineReason, PresenceEvent};
