//! A broadcast to every open session of a table, sent a slice at a time so
//! that no turn of a loop spends more than its budget on it (heartbeats and
//! evictions wait for the turn to end). The frame is encoded once and its
//! bytes shared, by every loop.

use std::sync::Arc;

use super::{After, Context, Session};
use crate::handler::PeerAddr;

/// Sessions checked between two looks at the clock.
const CLOCK_EVERY: usize = 64;

/// A table of sessions a [`Fanout`] can walk: the server's connection
/// table, or the simulation's.
pub trait Sessions {
    type Io: PeerAddr;
    /// One past the highest slot that has ever held a session.
    fn slots(&self) -> usize;
    /// The session in `slot`, if any, with the context it acts on.
    fn session(&mut self, slot: usize) -> Option<(&mut Session<Self::Io>, &mut Context)>;
    /// Carries out a session's verdict (writes its output, or drops it).
    fn carry_out(&mut self, slot: usize, after: After);
}

/// A broadcast in progress on one table.
pub struct Fanout {
    frame: Arc<[u8]>,
    next: usize,
}

impl Fanout {
    pub fn new(frame: Arc<[u8]>) -> Fanout {
        Fanout { frame, next: 0 }
    }

    /// Sends to the next sessions until every slot was visited (true) or
    /// `out_of_time` says the turn's budget is spent (false; call again next
    /// turn). Sessions that open after the broadcast began may or may not
    /// get it, as with any broadcast.
    pub fn step(&mut self, table: &mut impl Sessions, mut out_of_time: impl FnMut() -> bool) -> bool {
        let mut visited = 0;
        while self.next < table.slots() {
            let slot = self.next;
            self.next += 1;
            if let Some((s, cx)) = table.session(slot)
                && let Some(after) = s.push_encoded(cx, &self.frame)
            {
                table.carry_out(slot, after);
            }
            visited += 1;
            if visited % CLOCK_EVERY == 0 && out_of_time() {
                return self.next >= table.slots();
            }
        }
        true
    }
}
