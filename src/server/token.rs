//! What a `mio::Token` names: the loop's own sources, or a connection
//! (WebSocket or admin) by its slot and generation.
//!
//! A token that outlives its connection (a late event in the same batch)
//! must never reach the connection that reuses the slot, so tokens carry the
//! generation too, as many of its bits as fit: all 22 on a 64-bit target,
//! 10 on a 32-bit one (whose tables then hold at most 2^20 slots).

use mio::Token;

use crate::presence::ConnId;

/// The top bit marks the loop's own sources.
const OWN: usize = 1 << (usize::BITS - 1);
/// The next bit marks admin connections.
const ADMIN: usize = 1 << (usize::BITS - 2);
const SLOT_BITS: u32 = if usize::BITS >= 64 { 32 } else { 20 };
const GEN_BITS: u32 = usize::BITS - 2 - SLOT_BITS;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Source {
    Listener,
    AdminListener,
    Waker,
    Signals,
    /// A WebSocket connection; compare with [`conn_token`] of the one in the
    /// slot before serving it.
    Conn(usize),
    /// An admin connection, likewise with [`admin_token`].
    Admin(usize),
}

impl Source {
    pub(super) fn token(self) -> Token {
        Token(match self {
            Source::Listener => OWN,
            Source::AdminListener => OWN + 1,
            Source::Waker => OWN + 2,
            Source::Signals => OWN + 3,
            Source::Conn(slot) => slot,
            Source::Admin(slot) => ADMIN | slot,
        })
    }

    pub(super) fn of(token: Token) -> Source {
        let t = token.0;
        let slot = t & ((1 << SLOT_BITS) - 1);
        match t {
            _ if t == OWN => Source::Listener,
            _ if t == OWN + 1 => Source::AdminListener,
            _ if t == OWN + 2 => Source::Waker,
            _ if t == OWN + 3 => Source::Signals,
            _ if t & ADMIN != 0 => Source::Admin(slot),
            _ => Source::Conn(slot),
        }
    }
}

fn with_generation(id: ConnId) -> usize {
    let generation = id.generation() as usize & ((1 << GEN_BITS) - 1);
    generation << SLOT_BITS | (id.slot() & ((1 << SLOT_BITS) - 1))
}

/// The token of WebSocket connection `id`.
pub(super) fn conn_token(id: ConnId) -> Token {
    Token(with_generation(id))
}

/// The token of admin connection `id`.
pub(super) fn admin_token(id: ConnId) -> Token {
    Token(ADMIN | with_generation(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_keep_the_generation() {
        for (slot, generation) in [(0, 0), (7, 1), (123_456, ConnId::GENERATION_MASK)] {
            let id = ConnId::new(slot, 3, generation);
            assert_eq!(Source::of(conn_token(id)), Source::Conn(slot));
            assert_eq!(Source::of(admin_token(id)), Source::Admin(slot));
            // The same slot in a later generation gets another token.
            assert_ne!(
                conn_token(id),
                conn_token(ConnId::new(slot, 3, generation.wrapping_add(1)))
            );
        }
        let own = [Source::Listener, Source::AdminListener, Source::Waker, Source::Signals];
        for s in own {
            assert_eq!(Source::of(s.token()), s);
        }
    }
}
