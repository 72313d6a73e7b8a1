//! Hierarchical timing wheel for connection timeouts.
//!
//! The server keeps up to a million connections, each with one pending
//! timer (handshake deadline, then the next server heartbeat or liveness
//! deadline, then the close grace period), re-armed about once per
//! heartbeat interval: frames never touch it, liveness is re-checked when it
//! fires. A binary heap would make every re-arm `O(log n)` and cancellation
//! awkward, so this is a hashed hierarchical timing wheel (Varghese & Lauck
//! 1987, in the shape tokio uses).
//!
//! # Design
//!
//! * Time is a caller-supplied `u64` of milliseconds on some monotonic
//!   clock; the wheel never reads a clock itself, which keeps it
//!   deterministic and testable. Resolution is 1 ms.
//! * There are `LEVELS` (11) levels of 64 slots. Level `L` slots are
//!   `64^L` ms wide. A timer goes to the level of the highest 6-bit digit
//!   in which its deadline differs from `elapsed` (the time the wheel has
//!   been processed up to), in the slot given by that digit of the
//!   deadline. So the deadline and `elapsed` agree on every digit above
//!   the level, and the slot lies strictly ahead of `elapsed`.
//! * Eleven levels cover 66 bits, i.e. every `u64` deadline, so nothing
//!   ever has to be clamped into the top level. With the classic six
//!   levels (2^36 ms) a clamped timer must be re-cascaded every 2^36 ms of
//!   advanced time, and one jump to `u64::MAX` would cost 2^28 rounds; the
//!   extra levels cost 1.3 KiB per wheel and remove that case entirely.
//!   In practice only levels 0..=3 (up to ~4.6 hours) see traffic.
//! * Each level has an `occupied: u64` bitmap. The next slot to expire is
//!   the lowest set bit of the lowest non-empty level (lower levels always
//!   expire earlier), found with `trailing_zeros`; empty slots and empty
//!   stretches of time are never visited.
//! * Expiring a slot moves `elapsed` to the slot's start and re-files
//!   each entry: those now due go to the `pending` list, the rest drop to
//!   a strictly lower level. `poll` hands out `pending` one at a time.
//! * Entries live in one `Vec` arena with an intrusive free list; every
//!   slot (and `pending`) is an intrusive doubly-linked list of `u32`
//!   indices, so linking and unlinking are O(1) and, once the arena has
//!   grown, scheduling never allocates.
//! * A [`TimerKey`] is the arena index plus a per-entry generation that
//!   is bumped whenever the entry is freed, so stale keys are detected
//!   even after the entry has been reused.
//!
//! # Complexity
//!
//! * `schedule`, `cancel`, `reset`, `deadline`, `len`: O(1).
//! * `next_expiry`: O(levels), a few word operations.
//! * `poll`: amortised O(1) per returned timer plus O(levels) per call;
//!   each timer is re-filed at most once per level on its way down, and
//!   advancing time by any amount costs only the slots that actually hold
//!   timers (proportional to timers expired or cascaded, never to elapsed
//!   milliseconds or to the total number of timers).
//!
//! # Memory
//!
//! An entry is 24 bytes of bookkeeping plus the payload, rounded up to a
//! multiple of 8: **32 bytes per timer for `T = u64`** (checked by a
//! test), plus whatever spare capacity the arena `Vec` holds (none with
//! [`TimerWheel::with_capacity`] sized right). The wheel itself is about
//! 2.9 KiB. `Option<TimerKey>` is 8 bytes.
//!
//! # Ordering
//!
//! Timers scheduled into the future come out of `poll` in deadline order.
//! Timers scheduled at or before the already-processed time go straight
//! to the ready list and come out before anything later, but in no
//! particular order among themselves.

use std::fmt;
use std::num::{NonZeroU32, NonZeroU64};

/// Bits of the deadline consumed per level (64 slots).
const SLOT_BITS: u32 = 6;
const SLOTS: usize = 1 << SLOT_BITS;
const SLOT_MASK: u64 = SLOTS as u64 - 1;
/// Enough levels for `LEVELS * SLOT_BITS >= 64`, so every `u64` fits.
const LEVELS: usize = 11;
/// Bucket index of the list of expired-but-not-yet-returned timers.
const PENDING: usize = LEVELS * SLOTS;
const BUCKETS: usize = PENDING + 1;
/// End-of-list marker; also the one index the arena never hands out.
const NIL: u32 = u32::MAX;
/// Multiplier that moves a generation into the high half of a key.
const GEN_UNIT: NonZeroU64 = NonZeroU64::new(1 << 32).unwrap(); // cannot fail: a non-zero constant, checked at compile time

/// Handle to a scheduled timer.
///
/// Carries the arena index and the entry's generation, so a key whose
/// timer already fired or was cancelled is harmless even after its
/// storage has been reused. Non-zero so that `Option<TimerKey>` stays
/// 8 bytes in per-connection state.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerKey(NonZeroU64);

impl TimerKey {
    fn new(index: u32, generation: NonZeroU32) -> Self {
        // generation >= 1, so the product is >= 2^32 and cannot saturate
        // (generation < 2^32).
        TimerKey(NonZeroU64::from(generation).saturating_mul(GEN_UNIT) | u64::from(index))
    }

    fn index(self) -> u32 {
        self.0.get() as u32
    }

    fn generation(self) -> u32 {
        (self.0.get() >> 32) as u32
    }
}

impl fmt::Debug for TimerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TimerKey({}v{})", self.index(), self.generation())
    }
}

/// A live timer. `bucket` is stored rather than recomputed so unlinking
/// never depends on how far `elapsed` has moved.
struct Node<T> {
    deadline: u64,
    value: T,
    next: u32,
    prev: u32,
    generation: NonZeroU32,
    bucket: u16,
}

/// An enum rather than `Option<T>` inside `Node`: the discriminant then
/// fits in the node's padding (niche in `generation`), saving 8 bytes per
/// entry for `T = u64`.
enum Entry<T> {
    Occupied(Node<T>),
    /// The generation survives vacancy so the next occupant gets a fresh
    /// one and old keys stay stale.
    Vacant {
        next_free: u32,
        generation: NonZeroU32,
    },
}

/// A hierarchical timing wheel holding timers with payload `T`.
pub struct TimerWheel<T> {
    entries: Vec<Entry<T>>,
    free_head: u32,
    /// List heads: `level * 64 + slot`, then `PENDING`.
    heads: [u32; BUCKETS],
    occupied: [u64; LEVELS],
    /// Time up to which slots have been expired. Every timer in a slot
    /// has a deadline > `elapsed`; every timer in `pending` one <= it.
    elapsed: u64,
    /// Largest time ever passed in; `elapsed <= now`. Kept apart from
    /// `elapsed` because `poll` may stop expiring early to return a timer.
    now: u64,
    /// Lower bound on the deadlines in `pending` (cancellation may leave
    /// it too low, which only makes `next_expiry` conservative).
    pending_min: u64,
    len: usize,
    /// Entries re-filed by slot expiry; lets tests check that advancing
    /// time costs what the module docs claim.
    #[cfg(test)]
    refiled: u64,
}

impl<T> TimerWheel<T> {
    /// Creates an empty wheel whose current time is `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        Self::with_capacity(now_ms, 0)
    }

    /// Like [`new`](Self::new), but pre-sizes the arena so the first
    /// `cap` concurrent timers do not allocate.
    pub fn with_capacity(now_ms: u64, cap: usize) -> Self {
        TimerWheel {
            entries: Vec::with_capacity(cap),
            free_head: NIL,
            heads: [NIL; BUCKETS],
            occupied: [0; LEVELS],
            elapsed: now_ms,
            now: now_ms,
            pending_min: now_ms,
            len: 0,
            #[cfg(test)]
            refiled: 0,
        }
    }

    /// Number of live (scheduled, not yet returned or cancelled) timers.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The latest time the wheel has been told about; a timer with a
    /// deadline at or before this is returned by the next `poll`s.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Deadline of a live timer, `None` if the key is stale.
    pub fn deadline(&self, key: TimerKey) -> Option<u64> {
        self.live(key).map(|n| n.deadline)
    }

    /// Schedules `value` to fire at `deadline_ms`. A deadline at or before
    /// the current time fires on the next `poll`.
    ///
    /// # Panics
    ///
    /// Only if more than `u32::MAX - 1` timers are live at once (over
    /// 128 GiB of entries), where allocation would fail anyway.
    pub fn schedule(&mut self, deadline_ms: u64, value: T) -> TimerKey {
        let (index, generation) = self.alloc(deadline_ms, value);
        self.file(index, deadline_ms);
        self.len += 1;
        TimerKey::new(index, generation)
    }

    /// Cancels a timer and gives its payload back. O(1). A stale key
    /// returns `None` and changes nothing.
    pub fn cancel(&mut self, key: TimerKey) -> Option<T> {
        self.live(key)?;
        let index = key.index();
        self.unlink(index);
        let node = self.release(index)?;
        self.len -= 1;
        Some(node.value)
    }

    /// Points the timer in `slot` at `deadline_ms`: moves it if it is still
    /// pending, else schedules a new one for `value` and stores its key. The
    /// one-timer-per-owner pattern (a connection, an admin connection).
    pub fn rearm(&mut self, slot: &mut Option<TimerKey>, deadline_ms: u64, value: T) {
        if let Some(key) = *slot
            && self.reset(key, deadline_ms)
        {
            return;
        }
        *slot = Some(self.schedule(deadline_ms, value));
    }

    /// Moves a live timer to a new deadline, keeping its key, which saves
    /// the caller from storing a new key on every re-arm. Returns `false`
    /// (and does nothing) for a stale key.
    pub fn reset(&mut self, key: TimerKey, deadline_ms: u64) -> bool {
        if self.live(key).is_none() {
            return false;
        }
        let index = key.index();
        self.unlink(index);
        if let Some(node) = self.node_mut(index) {
            node.deadline = deadline_ms;
        }
        self.file(index, deadline_ms);
        true
    }

    /// Returns one timer with deadline <= `now_ms`, or `None` once there
    /// are none. Call repeatedly until `None` to drain everything due.
    /// An `now_ms` earlier than a previous one is treated as the latest.
    pub fn poll(&mut self, now_ms: u64) -> Option<(TimerKey, T)> {
        self.poll_node(now_ms)
            .map(|(index, node)| (TimerKey::new(index, node.generation), node.value))
    }

    /// Like [`poll`](Self::poll), with the timer's deadline instead of its
    /// key (how late it fires is `now_ms` minus the deadline).
    pub fn poll_due(&mut self, now_ms: u64) -> Option<(u64, T)> {
        self.poll_node(now_ms).map(|(_, node)| (node.deadline, node.value))
    }

    fn poll_node(&mut self, now_ms: u64) -> Option<(u32, Node<T>)> {
        self.now = self.now.max(now_ms);
        loop {
            let head = self.heads[PENDING];
            if head != NIL {
                self.unlink(head);
                let node = self.release(head)?;
                self.len -= 1;
                return Some((head, node));
            }
            match self.next_slot() {
                Some((bucket, start)) if start <= self.now => self.expire_slot(bucket, start),
                _ => {
                    // Nothing starts at or before `now`, so every filed
                    // timer keeps its place when `elapsed` jumps forward.
                    self.elapsed = self.now;
                    return None;
                }
            }
        }
    }

    /// Earliest time at which `poll` may return something; `None` if the
    /// wheel is empty. Never later than the true earliest deadline; may be
    /// earlier (the start of the slot holding it, so by less than that
    /// slot's width and less than the time left), in which case polling
    /// then only cascades, and asking again gives a tighter answer; this
    /// happens at most once per level. Right after `poll` has returned
    /// `None` (and before new timers are scheduled) the result is > `now()`.
    /// O(levels).
    pub fn next_expiry(&self) -> Option<u64> {
        if self.heads[PENDING] != NIL {
            return Some(self.pending_min);
        }
        self.next_slot().map(|(_, start)| start)
    }

    fn live(&self, key: TimerKey) -> Option<&Node<T>> {
        self.node(key.index())
            .filter(|n| n.generation.get() == key.generation())
    }

    fn node(&self, index: u32) -> Option<&Node<T>> {
        match self.entries.get(index as usize) {
            Some(Entry::Occupied(node)) => Some(node),
            _ => None,
        }
    }

    fn node_mut(&mut self, index: u32) -> Option<&mut Node<T>> {
        match self.entries.get_mut(index as usize) {
            Some(Entry::Occupied(node)) => Some(node),
            _ => None,
        }
    }

    /// Takes an entry off the free list (or grows the arena) and fills
    /// it, unlinked.
    fn alloc(&mut self, deadline: u64, value: T) -> (u32, NonZeroU32) {
        let index = self.free_head;
        if let Some(entry) = self.entries.get_mut(index as usize)
            && let Entry::Vacant { next_free, generation } = *entry
        {
            *entry = Entry::Occupied(Node {
                deadline,
                value,
                next: NIL,
                prev: NIL,
                generation,
                bucket: 0,
            });
            self.free_head = next_free;
            return (index, generation);
        }
        let index = match u32::try_from(self.entries.len()) {
            Ok(i) if i != NIL => i,
            _ => panic!("TimerWheel: too many live timers"),
        };
        self.entries.push(Entry::Occupied(Node {
            deadline,
            value,
            next: NIL,
            prev: NIL,
            generation: NonZeroU32::MIN,
            bucket: 0,
        }));
        (index, NonZeroU32::MIN)
    }

    /// Frees an (already unlinked) entry, bumping its generation so every
    /// outstanding key to it goes stale.
    fn release(&mut self, index: u32) -> Option<Node<T>> {
        let entry = self.entries.get_mut(index as usize)?;
        let Entry::Occupied(node) = entry else {
            return None;
        };
        let generation = node.generation.checked_add(1).unwrap_or(NonZeroU32::MIN);
        let old = std::mem::replace(
            entry,
            Entry::Vacant {
                next_free: self.free_head,
                generation,
            },
        );
        self.free_head = index;
        match old {
            Entry::Occupied(node) => Some(node),
            Entry::Vacant { .. } => None,
        }
    }

    /// Bucket for `deadline` relative to `elapsed`: the level of the
    /// highest differing 6-bit digit, the slot given by that digit.
    fn bucket_for(elapsed: u64, deadline: u64) -> usize {
        if deadline <= elapsed {
            return PENDING;
        }
        let level = (63 - (elapsed ^ deadline).leading_zeros()) / SLOT_BITS;
        let slot = (deadline >> (level * SLOT_BITS)) & SLOT_MASK;
        level as usize * SLOTS + slot as usize
    }

    fn file(&mut self, index: u32, deadline: u64) {
        self.link(index, Self::bucket_for(self.elapsed, deadline), deadline);
    }

    fn link(&mut self, index: u32, bucket: usize, deadline: u64) {
        let head = self.heads[bucket];
        if let Some(node) = self.node_mut(index) {
            node.bucket = bucket as u16;
            node.prev = NIL;
            node.next = head;
        }
        if let Some(node) = self.node_mut(head) {
            node.prev = index;
        }
        self.heads[bucket] = index;
        if bucket == PENDING {
            self.pending_min = if head == NIL {
                deadline
            } else {
                self.pending_min.min(deadline)
            };
        } else {
            self.occupied[bucket / SLOTS] |= 1 << (bucket % SLOTS);
        }
    }

    fn unlink(&mut self, index: u32) {
        let Some(node) = self.node(index) else {
            return;
        };
        let (bucket, prev, next) = (node.bucket as usize, node.prev, node.next);
        match self.node_mut(prev) {
            Some(p) => p.next = next,
            None => self.heads[bucket] = next,
        }
        if let Some(n) = self.node_mut(next) {
            n.prev = prev;
        }
        if bucket < PENDING && self.heads[bucket] == NIL {
            self.occupied[bucket / SLOTS] &= !(1 << (bucket % SLOTS));
        }
    }

    /// The next non-empty slot and the time it starts. The lowest
    /// non-empty level always wins: a level-`L` slot ends no later than
    /// the current level-`L+1` slot, and every occupied slot lies strictly
    /// ahead of `elapsed` in its level.
    fn next_slot(&self) -> Option<(usize, u64)> {
        let level = self.occupied.iter().position(|&o| o != 0)?;
        let slot = u64::from(self.occupied[level].trailing_zeros());
        let shift = level as u32 * SLOT_BITS;
        let start = (((self.elapsed >> shift) & !SLOT_MASK) | slot) << shift;
        debug_assert!(start > self.elapsed);
        Some((level * SLOTS + slot as usize, start))
    }

    /// Advances `elapsed` to `start` and re-files the slot's timers: each
    /// one is either due (to `pending`) or lands on a strictly lower level.
    fn expire_slot(&mut self, bucket: usize, start: u64) {
        self.elapsed = start;
        let mut index = std::mem::replace(&mut self.heads[bucket], NIL);
        self.occupied[bucket / SLOTS] &= !(1 << (bucket % SLOTS));
        while let Some(node) = self.node(index) {
            let (next, deadline) = (node.next, node.deadline);
            self.file(index, deadline);
            #[cfg(test)]
            {
                self.refiled += 1;
            }
            index = next;
        }
    }
}

impl<T> fmt::Debug for TimerWheel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerWheel")
            .field("len", &self.len)
            .field("now", &self.now)
            .field("elapsed", &self.elapsed)
            .field("next_expiry", &self.next_expiry())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    fn drain<T>(w: &mut TimerWheel<T>, now: u64) -> Vec<(TimerKey, T)> {
        std::iter::from_fn(|| w.poll(now)).collect()
    }

    fn drain_values<T>(w: &mut TimerWheel<T>, now: u64) -> Vec<T> {
        drain(w, now).into_iter().map(|(_, v)| v).collect()
    }

    #[test]
    fn sizes() {
        assert_eq!(std::mem::size_of::<Entry<u64>>(), 32);
        assert_eq!(std::mem::size_of::<Option<TimerKey>>(), 8);
    }

    #[test]
    fn fires_in_order_across_levels() {
        let base = 1_000_003;
        let offsets = [
            0,
            1,
            2,
            63,
            64,
            65,
            4095,
            4096,
            4097,
            262_143,
            262_144,
            3_600_000,
            (1 << 30) + 7,
            (1 << 36) + 5,
            (1 << 42) + 1,
            (1 << 50) + 3,
        ];
        let mut w = TimerWheel::new(base);
        // Insert in scrambled order so fire order cannot come from insertion.
        for &off in offsets.iter().rev().step_by(2).chain(offsets.iter().step_by(2)) {
            w.schedule(base + off, base + off);
        }
        assert_eq!(w.len(), offsets.len());
        // Step exactly to each deadline: nothing early, the right one on time.
        for &off in &offsets {
            let d = base + off;
            if d > base {
                assert_eq!(drain_values(&mut w, d - 1), Vec::<u64>::new());
                assert!(w.next_expiry().unwrap() <= d);
            }
            assert_eq!(drain_values(&mut w, d), vec![d]);
        }
        assert!(w.is_empty());
        assert_eq!(w.next_expiry(), None);

        // One big jump returns everything in deadline order.
        let mut w = TimerWheel::new(base);
        for &off in offsets.iter().rev() {
            w.schedule(base + off, base + off);
        }
        let got = drain_values(&mut w, u64::MAX);
        let want: Vec<u64> = offsets.iter().map(|o| base + o).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn same_deadline_all_fire() {
        let mut w = TimerWheel::new(0);
        for i in 0..100u32 {
            w.schedule(5000, i);
        }
        assert_eq!(drain(&mut w, 4999).len(), 0);
        let mut got = drain_values(&mut w, 5000);
        got.sort_unstable();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn cancel_and_len() {
        let mut w = TimerWheel::new(10);
        let a = w.schedule(20, "a");
        let b = w.schedule(5000, "b");
        let c = w.schedule(5, "c"); // already due
        assert_eq!(w.len(), 3);
        assert_eq!(w.deadline(b), Some(5000));
        assert_eq!(w.cancel(b), Some("b"));
        assert_eq!(w.len(), 2);
        assert_eq!(w.cancel(b), None);
        assert_eq!(w.deadline(b), None);
        assert_eq!(w.cancel(c), Some("c"));
        assert_eq!(w.next_expiry(), Some(20));
        assert_eq!(drain(&mut w, 1 << 40).len(), 1);
        assert_eq!(w.cancel(a), None, "fired key is stale");
        assert!(w.is_empty());
    }

    #[test]
    fn stale_key_after_reuse() {
        let mut w = TimerWheel::new(0);
        let a = w.schedule(100, 1);
        assert_eq!(w.cancel(a), Some(1));
        let b = w.schedule(200, 2);
        assert_eq!(a.index(), b.index(), "entry is reused");
        assert_ne!(a, b);
        assert_eq!(w.cancel(a), None);
        assert_eq!(w.deadline(a), None);
        assert!(!w.reset(a, 5));
        assert_eq!(w.len(), 1);
        assert_eq!(w.deadline(b), Some(200));

        // Fire b, reuse the entry again: both old keys are stale.
        let (k, v) = w.poll(200).unwrap();
        assert_eq!((k, v), (b, 2));
        let c = w.schedule(300, 3);
        assert_eq!(c.index(), b.index());
        assert_eq!(w.cancel(b), None);
        assert_eq!(w.cancel(a), None);
        assert_eq!(w.cancel(c), Some(3));
    }

    #[test]
    fn generation_wraps_without_zero() {
        let g = NonZeroU32::MAX.checked_add(1).unwrap_or(NonZeroU32::MIN);
        assert_eq!(g, NonZeroU32::MIN);
        let k = TimerKey::new(NIL - 1, NonZeroU32::MAX);
        assert_eq!((k.index(), k.generation()), (NIL - 1, u32::MAX));
    }

    #[test]
    fn deadline_in_past_and_now() {
        let mut w = TimerWheel::new(1000);
        w.schedule(5, 'a');
        w.schedule(1000, 'b');
        w.schedule(0, 'c');
        w.schedule(1001, 'd');
        assert_eq!(w.next_expiry(), Some(0));
        let mut got = drain_values(&mut w, 1000);
        got.sort_unstable();
        assert_eq!(got, vec!['a', 'b', 'c']);
        assert_eq!(w.next_expiry(), Some(1001));
    }

    #[test]
    fn time_never_goes_backwards() {
        let mut w = TimerWheel::new(0);
        assert!(w.poll(10_000).is_none());
        // An earlier `now` is the latest one, so this is already due.
        w.schedule(9_000, 1);
        assert_eq!(w.poll(10).map(|(_, v)| v), Some(1));
        w.schedule(10_001, 2);
        assert!(w.poll(3).is_none());
        assert_eq!(w.now(), 10_000);
        assert_eq!(w.poll(10_001).map(|(_, v)| v), Some(2));
    }

    #[test]
    fn due_between_elapsed_and_now() {
        // poll stops expiring slots early to return a timer; a timer then
        // scheduled between that point and `now` must still fire.
        let mut w = TimerWheel::new(0);
        w.schedule(100, 1);
        w.schedule(5000, 2);
        assert_eq!(w.poll(10_000).map(|(_, v)| v), Some(1));
        w.schedule(9_999, 3);
        w.schedule(10_000, 4);
        w.schedule(10_001, 5);
        assert!(w.next_expiry().unwrap() <= 5000);
        assert_eq!(drain_values(&mut w, 0), vec![2, 3, 4]);
        assert_eq!(w.next_expiry(), Some(10_001));
    }

    #[test]
    fn u64_max_deadline() {
        let mut w = TimerWheel::new(0);
        let k = w.schedule(u64::MAX, 'x');
        w.schedule(u64::MAX - 1, 'y');
        assert!(w.next_expiry().unwrap() < u64::MAX);
        assert!(w.poll(u64::MAX - 2).is_none());
        assert_eq!(w.deadline(k), Some(u64::MAX));
        assert_eq!(drain_values(&mut w, u64::MAX - 1), vec!['y']);
        assert_eq!(w.next_expiry(), Some(u64::MAX));
        assert_eq!(drain_values(&mut w, u64::MAX), vec!['x']);
        // At the end of time everything is due immediately.
        w.schedule(u64::MAX, 'z');
        w.schedule(3, 'w');
        assert_eq!(drain(&mut w, 0).len(), 2);
        assert!(w.refiled <= 2 * LEVELS as u64);

        let mut w = TimerWheel::new(u64::MAX);
        w.schedule(u64::MAX, ());
        assert_eq!(w.next_expiry(), Some(u64::MAX));
        assert!(w.poll(u64::MAX).is_some());
    }

    #[test]
    fn big_jumps_are_cheap() {
        let hour = 3_600_000;
        let day = 24 * hour;
        let mut w = TimerWheel::with_capacity(0, 10_001);
        for i in 0..10_000u64 {
            w.schedule(30 * day + i, i);
        }
        w.schedule(10, u64::MAX);
        // Hours of empty time cost nothing; only the one early timer moves.
        let mut t = 0;
        for _ in 0..(24 * 7) {
            t += hour;
            for (_, v) in drain(&mut w, t) {
                assert_eq!(v, u64::MAX);
            }
        }
        assert!(w.refiled <= LEVELS as u64, "refiled {}", w.refiled);
        assert_eq!(w.len(), 10_000);
        // Cascading is bounded by levels per timer, not by elapsed time.
        assert_eq!(drain(&mut w, 31 * day).len(), 10_000);
        assert!(w.refiled <= 10_001 * LEVELS as u64);
        // An empty wheel jumps anywhere for free.
        assert!(w.poll(u64::MAX / 2).is_none());
        assert_eq!(w.next_expiry(), None);
    }

    #[test]
    fn next_expiry_tracks_slots() {
        let mut w = TimerWheel::new(0);
        assert_eq!(w.next_expiry(), None);
        w.schedule(100, ());
        // Level 1 slot 1 starts at 64: conservative but not late.
        assert_eq!(w.next_expiry(), Some(64));
        assert!(w.poll(64).is_none());
        assert_eq!(w.next_expiry(), Some(100));
        assert!(w.poll(99).is_none());
        assert!(w.poll(100).is_some());
        assert_eq!(w.next_expiry(), None);

        let mut w = TimerWheel::new(5);
        w.schedule(7, ());
        w.schedule(1_000_000, ());
        assert_eq!(w.next_expiry(), Some(7));
        w.schedule(2, ());
        assert_eq!(w.next_expiry(), Some(2));
    }

    #[test]
    fn reset_moves_timer() {
        let mut w = TimerWheel::new(0);
        let k = w.schedule(1000, 'a');
        assert!(w.reset(k, 50));
        assert_eq!(w.deadline(k), Some(50));
        assert_eq!(w.next_expiry(), Some(50));
        assert!(w.reset(k, 70_000));
        assert!(w.poll(60_000).is_none());
        assert!(w.reset(k, 0)); // into the past: due now
        assert_eq!(w.poll(60_000), Some((k, 'a')));
        assert!(!w.reset(k, 1));
        assert!(w.is_empty());
    }

    #[test]
    fn reuses_entries_without_growth() {
        let mut w = TimerWheel::with_capacity(0, 64);
        let cap = w.entries.capacity();
        let mut t = 0;
        for round in 0..1000u64 {
            let keys: Vec<_> = (0..64).map(|i| w.schedule(t + i * 37, round)).collect();
            for k in keys.iter().step_by(2) {
                assert_eq!(w.cancel(*k), Some(round));
            }
            t += 64 * 37;
            assert_eq!(drain(&mut w, t).len(), 32);
        }
        assert_eq!(w.entries.len(), 64);
        assert_eq!(w.entries.capacity(), cap);
    }

    /// xorshift64*: deterministic, dependency-free randomness.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Reference model: live timers by id and by (deadline, id).
    #[derive(Default)]
    struct Model {
        live: BTreeMap<u64, (TimerKey, u64)>,
        order: BTreeSet<(u64, u64)>,
    }

    impl Model {
        fn remove(&mut self, id: u64) -> Option<(TimerKey, u64)> {
            let (key, d) = self.live.remove(&id)?;
            self.order.remove(&(d, id));
            Some((key, d))
        }

        fn earliest(&self) -> Option<u64> {
            self.order.first().map(|&(d, _)| d)
        }
    }

    fn check_fired(model: &mut Model, now: u64, key: TimerKey, id: u64) {
        let (k, d) = model.remove(id).expect("fired a timer twice or unknown");
        assert_eq!(k, key);
        assert!(d <= now, "fired {d} at {now}");
    }

    fn run_sequence(seed: u64, ops: usize) {
        let mut rng = Rng(seed);
        let start = match rng.below(4) {
            0 => 0,
            1 => rng.below(1 << 20),
            2 => rng.next() >> rng.below(64),
            _ => u64::MAX - rng.below(1 << 34),
        };
        let mut w = TimerWheel::new(start);
        let mut now = start;
        let mut model = Model::default();
        let mut issued: Vec<(u64, TimerKey)> = Vec::new();
        let mut next_id = 0u64;

        for _ in 0..ops {
            match rng.below(100) {
                0..45 => {
                    let deadline = match rng.below(100) {
                        0..10 => now.saturating_sub(rng.below(1 << 20)),
                        10..15 => now,
                        15..60 => now.saturating_add(rng.below(1 << 12)),
                        60..92 => now.saturating_add(rng.below(1 << 30)),
                        92..96 => now.saturating_add(rng.next() >> rng.below(64)),
                        _ => u64::MAX - rng.below(3),
                    };
                    let id = next_id;
                    next_id += 1;
                    let key = w.schedule(deadline, id);
                    assert_eq!(w.deadline(key), Some(deadline));
                    model.live.insert(id, (key, deadline));
                    model.order.insert((deadline, id));
                    issued.push((id, key));
                }
                45..65 if !issued.is_empty() => {
                    let (id, key) = issued[rng.below(issued.len() as u64) as usize];
                    let expect = model.remove(id).map(|_| id);
                    assert_eq!(w.cancel(key), expect);
                    assert_eq!(w.deadline(key), None);
                }
                65..70 if !issued.is_empty() => {
                    let (id, key) = issued[rng.below(issued.len() as u64) as usize];
                    let deadline = now.saturating_add(rng.below(1 << 16)).saturating_sub(1 << 8);
                    let live = model.remove(id).is_some();
                    assert_eq!(w.reset(key, deadline), live);
                    if live {
                        model.live.insert(id, (key, deadline));
                        model.order.insert((deadline, id));
                    }
                }
                70..75 => {
                    // A single poll: must return a due timer iff one exists.
                    let arg = now.saturating_add(rng.below(100));
                    now = now.max(arg);
                    match w.poll(arg) {
                        Some((key, id)) => check_fired(&mut model, now, key, id),
                        None => assert!(model.earliest().is_none_or(|d| d > now)),
                    }
                }
                _ => {
                    let arg = match rng.below(100) {
                        0..20 => now,
                        20..50 => now.saturating_add(rng.below(64)),
                        50..75 => now.saturating_add(rng.below(1 << 16)),
                        75..93 => now.saturating_add(rng.below(1 << 32)),
                        93..99 => now.saturating_sub(rng.below(1 << 20)),
                        _ => now.saturating_add(rng.next() >> rng.below(64)),
                    };
                    now = now.max(arg);
                    let mut fired = BTreeSet::new();
                    while let Some((key, id)) = w.poll(arg) {
                        check_fired(&mut model, now, key, id);
                        fired.insert(id);
                    }
                    assert!(w.poll(arg).is_none());
                    // Everything due was returned (check_fired removed it).
                    assert!(model.earliest().is_none_or(|d| d > now));
                    // Fully drained: next_expiry is in the future, no later
                    // than the earliest deadline and within its slot width.
                    if let Some(d) = model.earliest() {
                        let ne = w.next_expiry().unwrap();
                        assert!(ne > now && ne <= d, "now {now} ne {ne} d {d}");
                        let level = (63 - (now ^ d).leading_zeros()) / SLOT_BITS;
                        assert!(d - ne < 1 << (level * SLOT_BITS));
                    }
                }
            }
            assert_eq!(w.len(), model.live.len());
            assert_eq!(w.now(), now);
            match (w.next_expiry(), model.earliest()) {
                (None, None) => {}
                (Some(ne), Some(d)) => assert!(ne <= d, "ne {ne} > earliest {d}"),
                other => panic!("next_expiry/model mismatch: {other:?}"),
            }
        }

        // The end of time returns everything that is left.
        while let Some((key, id)) = w.poll(u64::MAX) {
            check_fired(&mut model, u64::MAX, key, id);
        }
        assert!(model.live.is_empty());
        assert!(w.is_empty());
        assert_eq!(w.next_expiry(), None);
    }

    #[test]
    fn model_random_sequences() {
        let mut seeds = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..3000 {
            run_sequence(seeds.next() | 1, 300);
        }
    }
}
