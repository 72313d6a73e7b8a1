//! The bounded FIFO between the loops and the sender thread, and the batch
//! the thread holds until the backend takes it (sans-IO).

use std::collections::VecDeque;

use super::Item;
use crate::presence::PresenceEvent;

/// Bytes counted per item on top of its data and id: the enum, its boxes,
/// the JSON around it.
pub(crate) const ITEM_OVERHEAD: usize = 64;
/// Items per request at most (SPEC §13).
pub(crate) const MAX_BATCH_ITEMS: usize = 1000;
/// Counted bytes per request at most, except that one item always goes
/// (a backend that refuses it answers 413, and it is dropped then).
pub(crate) const MAX_BATCH_BYTES: usize = 1 << 20;

/// What `item` counts against the buffer.
pub(crate) fn cost(item: &Item) -> usize {
    match item {
        Item::Message { id, data, .. } => ITEM_OVERHEAD
            .saturating_add(data.len())
            .saturating_add(id.as_ref().map_or(0, |id| id.len())),
        Item::Event(PresenceEvent::Online { id, .. } | PresenceEvent::Offline { id, .. }) => {
            ITEM_OVERHEAD.saturating_add(id.len())
        }
    }
}

/// Items waiting for the sender, and the bytes of the batch it holds.
///
/// Drop rule: after each item is appended, the oldest *waiting* items are
/// dropped until waiting + in flight fit the budget; the batch in flight is
/// never dropped (it may be half delivered, and a retry must resend exactly
/// it). So when the batch in flight fills the budget alone, the new items are
/// the ones dropped. Since a batch is only ever taken from items that fit,
/// waiting + in flight stay within the budget after every push, and memory
/// within the budget plus the caller's vector during one push.
pub(crate) struct Buffer {
    waiting: VecDeque<Item>,
    waiting_bytes: usize,
    in_flight_bytes: usize,
    budget: usize,
}

impl Buffer {
    pub fn new(budget: usize) -> Buffer {
        Buffer {
            waiting: VecDeque::new(),
            waiting_bytes: 0,
            in_flight_bytes: 0,
            budget,
        }
    }

    /// Appends `items` (draining it, its capacity kept) and returns how many
    /// waiting items were dropped to fit the budget.
    pub fn push(&mut self, items: &mut Vec<Item>) -> u64 {
        let mut dropped = 0;
        for item in items.drain(..) {
            self.waiting_bytes = self.waiting_bytes.saturating_add(cost(&item));
            self.waiting.push_back(item);
            // Trimmed per item, not once at the end, so a huge push never
            // holds more than the budget here either.
            while self.bytes() > self.budget {
                let Some(old) = self.waiting.pop_front() else {
                    break;
                };
                self.waiting_bytes = self.waiting_bytes.saturating_sub(cost(&old));
                dropped += 1;
            }
        }
        dropped
    }

    /// Moves the next batch (at most [`MAX_BATCH_ITEMS`] items and
    /// [`MAX_BATCH_BYTES`], at least one item if any wait) to the back of
    /// `out`; it counts as in flight until [`release`](Self::release)d.
    /// Returns how many items were moved.
    pub fn take_batch(&mut self, out: &mut VecDeque<Item>) -> usize {
        let mut taken = 0;
        let mut bytes = 0usize;
        while let Some(front) = self.waiting.front() {
            let c = cost(front);
            if taken > 0 && (taken >= MAX_BATCH_ITEMS || bytes.saturating_add(c) > MAX_BATCH_BYTES) {
                break;
            }
            let Some(item) = self.waiting.pop_front() else {
                break;
            };
            out.push_back(item);
            taken += 1;
            bytes = bytes.saturating_add(c);
        }
        self.waiting_bytes = self.waiting_bytes.saturating_sub(bytes);
        self.in_flight_bytes = self.in_flight_bytes.saturating_add(bytes);
        taken
    }

    /// A whole batch waits: no point waiting for more before sending.
    pub fn batch_ready(&self) -> bool {
        self.waiting.len() >= MAX_BATCH_ITEMS || self.waiting_bytes >= MAX_BATCH_BYTES
    }

    /// Items in flight that left (delivered or dropped), `bytes` of them.
    pub fn release(&mut self, bytes: usize) {
        self.in_flight_bytes = self.in_flight_bytes.saturating_sub(bytes);
    }

    /// Drops everything waiting; returns how many.
    pub fn clear_waiting(&mut self) -> u64 {
        let n = self.waiting.len() as u64;
        self.waiting.clear();
        self.waiting_bytes = 0;
        n
    }

    pub fn waiting_len(&self) -> usize {
        self.waiting.len()
    }

    /// Waiting plus in flight.
    pub fn bytes(&self) -> usize {
        self.waiting_bytes.saturating_add(self.in_flight_bytes)
    }
}

/// How the backend answered one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// 2xx.
    Accepted,
    /// 413: the request was too large, not the backend down.
    TooLarge,
    /// Anything else, a timeout, a connection error: retry the same.
    Failed,
}

/// What an answer settled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Settled {
    pub delivered: u64,
    /// Single items answered 413: they can never be delivered.
    pub refused: u64,
    /// Bytes of the settled items, to release from the buffer.
    pub bytes: usize,
}

/// The batch the sender holds: sent as one request, or after a 413 as
/// halves, then quarters..., always front first so that order is kept. New
/// items never join it; it is retried until every item is settled.
#[derive(Default)]
pub(crate) struct InFlight {
    items: VecDeque<Item>,
    /// Lengths of the requests still to send, from the front of `items`;
    /// the next one last.
    segments: Vec<usize>,
}

impl InFlight {
    /// Nothing held: time for a new batch.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Takes the next batch from `buffer` (when empty).
    pub fn load(&mut self, buffer: &mut Buffer) {
        if self.is_empty() {
            self.segments.clear();
            let n = buffer.take_batch(&mut self.items);
            if n > 0 {
                self.segments.push(n);
            }
        }
    }

    /// The items of the next request.
    pub fn next(&self) -> std::collections::vec_deque::Iter<'_, Item> {
        let n = self.segments.last().copied().unwrap_or(0).min(self.items.len());
        self.items.range(..n)
    }

    /// Items of the next request.
    pub fn next_len(&self) -> usize {
        self.next().len()
    }

    /// Applies the answer to the request made of [`next`](Self::next).
    pub fn settle(&mut self, outcome: Outcome) -> Settled {
        let mut settled = Settled::default();
        let Some(&n) = self.segments.last() else {
            return settled;
        };
        match outcome {
            Outcome::Failed => {}
            Outcome::Accepted => {
                self.segments.pop();
                let n = n.min(self.items.len());
                settled.bytes = self.items.drain(..n).map(|i| cost(&i)).sum();
                settled.delivered = n as u64;
            }
            Outcome::TooLarge if n > 1 => {
                self.segments.pop();
                // Second half first on the stack, so the first half goes next.
                self.segments.push(n - n / 2);
                self.segments.push(n / 2);
            }
            Outcome::TooLarge => {
                self.segments.pop();
                if let Some(item) = self.items.pop_front() {
                    settled.bytes = cost(&item);
                    settled.refused = 1;
                }
            }
        }
        if self.segments.is_empty() && !self.items.is_empty() {
            // The segments always add up to the items; should they not,
            // what is left is sent again rather than lost.
            self.segments.push(self.items.len());
        }
        settled
    }

    /// Empties it at shutdown: (items, bytes) not delivered.
    pub fn abandon(&mut self) -> (u64, usize) {
        self.segments.clear();
        let n = self.items.len() as u64;
        let bytes = self.items.drain(..).map(|i| cost(&i)).sum();
        (n, bytes)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::presence::ConnId;

    /// A message costing exactly `cost` bytes, told apart by `at_ms`.
    fn item(n: u64, cost: usize) -> Item {
        Item::Message {
            id: None,
            conn: ConnId::from_raw(1),
            binary: false,
            data: vec![b'x'; cost - ITEM_OVERHEAD].into(),
            at_ms: n,
        }
    }

    fn tags<'a>(items: impl Iterator<Item = &'a Item>) -> Vec<u64> {
        items
            .map(|i| match i {
                Item::Message { at_ms, .. } => *at_ms,
                Item::Event(_) => u64::MAX,
            })
            .collect()
    }

    #[test]
    fn costs() {
        assert_eq!(cost(&item(0, 100)), 100);
        let with_id = Item::Message {
            id: Some(Arc::from("abcd")),
            conn: ConnId::from_raw(1),
            binary: true,
            data: vec![0; 10].into(),
            at_ms: 0,
        };
        assert_eq!(cost(&with_id), 64 + 10 + 4);
        let event = Item::Event(PresenceEvent::Online {
            id: Arc::from("abc"),
            at_ms: 0,
        });
        assert_eq!(cost(&event), 64 + 3);
    }

    #[test]
    fn push_drains_and_keeps_capacity() {
        let mut b = Buffer::new(10_000);
        let mut v = Vec::with_capacity(32);
        v.extend((0..5).map(|n| item(n, 100)));
        assert_eq!(b.push(&mut v), 0);
        assert!(v.is_empty());
        assert!(v.capacity() >= 32);
        assert_eq!(b.bytes(), 500);
        assert_eq!(b.waiting_len(), 5);
    }

    #[test]
    fn overflow_drops_oldest_waiting() {
        let mut b = Buffer::new(500);
        let mut v: Vec<Item> = (0..8).map(|n| item(n, 100)).collect();
        assert_eq!(b.push(&mut v), 3);
        assert_eq!(b.bytes(), 500);
        let mut out = VecDeque::new();
        b.take_batch(&mut out);
        assert_eq!(tags(out.iter()), [3, 4, 5, 6, 7]);
    }

    #[test]
    fn in_flight_is_never_dropped() {
        let mut b = Buffer::new(500);
        let mut f = InFlight::default();
        let mut v: Vec<Item> = (0..3).map(|n| item(n, 100)).collect();
        b.push(&mut v);
        f.load(&mut b);
        assert_eq!(f.next_len(), 3);
        // 300 in flight: two more fit, the oldest waiting go first.
        let mut v: Vec<Item> = (10..15).map(|n| item(n, 100)).collect();
        assert_eq!(b.push(&mut v), 3);
        assert_eq!(b.bytes(), 500);
        assert_eq!(f.settle(Outcome::Failed), Settled::default());
        assert_eq!(tags(f.next()), [0, 1, 2]);
        // The batch in flight fills the budget alone: new items are dropped.
        let mut b = Buffer::new(250);
        let mut f = InFlight::default();
        let mut v = vec![item(0, 200)];
        b.push(&mut v);
        f.load(&mut b);
        let mut v = vec![item(1, 100), item(2, 100)];
        assert_eq!(b.push(&mut v), 2);
        assert_eq!(b.waiting_len(), 0);
        assert_eq!(b.bytes(), 200);
        // Settled: its bytes are released and new items fit again.
        let s = f.settle(Outcome::Accepted);
        assert_eq!((s.delivered, s.bytes), (1, 200));
        b.release(s.bytes);
        assert_eq!(b.bytes(), 0);
        let mut v = vec![item(3, 100)];
        assert_eq!(b.push(&mut v), 0);
    }

    #[test]
    fn an_item_over_the_budget_is_dropped() {
        let mut b = Buffer::new(150);
        let mut v = vec![item(0, 100), item(1, 200)];
        assert_eq!(b.push(&mut v), 2);
        assert_eq!(b.bytes(), 0);
        let mut b = Buffer::new(0);
        let mut v = vec![item(0, 64)];
        assert_eq!(b.push(&mut v), 1);
    }

    #[test]
    fn batches_are_limited_by_items() {
        let mut b = Buffer::new(usize::MAX);
        let mut v: Vec<Item> = (0..2500).map(|n| item(n, 64)).collect();
        b.push(&mut v);
        assert!(b.batch_ready());
        let mut out = VecDeque::new();
        assert_eq!(b.take_batch(&mut out), 1000);
        assert_eq!(tags(out.iter()).first(), Some(&0));
        out.clear();
        assert_eq!(b.take_batch(&mut out), 1000);
        assert_eq!(tags(out.iter()).first(), Some(&1000));
        assert!(!b.batch_ready());
        out.clear();
        assert_eq!(b.take_batch(&mut out), 500);
        out.clear();
        assert_eq!(b.take_batch(&mut out), 0);
        // All of it still counted in flight until released.
        assert_eq!(b.bytes(), 2500 * 64);
    }

    #[test]
    fn batches_are_limited_by_bytes_but_take_one_item() {
        let mut b = Buffer::new(usize::MAX);
        let third = MAX_BATCH_BYTES / 3;
        let mut v = vec![
            item(0, third),
            item(1, third),
            item(2, third),
            item(3, third),
            item(4, 3 * MAX_BATCH_BYTES),
            item(5, 100),
        ];
        b.push(&mut v);
        let mut out = VecDeque::new();
        assert_eq!(b.take_batch(&mut out), 3);
        out.clear();
        assert_eq!(b.take_batch(&mut out), 1);
        out.clear();
        // Too large alone, but sent alone all the same.
        assert_eq!(b.take_batch(&mut out), 1);
        assert_eq!(tags(out.iter()), [4]);
        out.clear();
        assert_eq!(b.take_batch(&mut out), 1);
    }

    #[test]
    fn too_large_splits_in_halves_in_order() {
        let mut b = Buffer::new(usize::MAX);
        let mut f = InFlight::default();
        let mut v: Vec<Item> = (0..5).map(|n| item(n, 100)).collect();
        b.push(&mut v);
        f.load(&mut b);
        assert_eq!(tags(f.next()), [0, 1, 2, 3, 4]);
        assert_eq!(f.settle(Outcome::TooLarge), Settled::default());
        assert_eq!(tags(f.next()), [0, 1]);
        // A failure in between retries the same half.
        assert_eq!(f.settle(Outcome::Failed), Settled::default());
        assert_eq!(tags(f.next()), [0, 1]);
        let s = f.settle(Outcome::Accepted);
        assert_eq!((s.delivered, s.refused, s.bytes), (2, 0, 200));
        assert_eq!(tags(f.next()), [2, 3, 4]);
        f.settle(Outcome::TooLarge);
        assert_eq!(tags(f.next()), [2]);
        // A single item refused is dropped.
        let s = f.settle(Outcome::TooLarge);
        assert_eq!((s.delivered, s.refused, s.bytes), (0, 1, 100));
        assert_eq!(tags(f.next()), [3, 4]);
        // New items wait behind the batch.
        let mut v = vec![item(9, 100)];
        b.push(&mut v);
        f.load(&mut b);
        assert_eq!(tags(f.next()), [3, 4]);
        let s = f.settle(Outcome::Accepted);
        assert_eq!(s.delivered, 2);
        assert!(f.is_empty());
        f.load(&mut b);
        assert_eq!(tags(f.next()), [9]);
    }

    #[test]
    fn abandon_counts_what_is_held() {
        let mut b = Buffer::new(usize::MAX);
        let mut f = InFlight::default();
        let mut v: Vec<Item> = (0..4).map(|n| item(n, 100)).collect();
        b.push(&mut v);
        f.load(&mut b);
        f.settle(Outcome::TooLarge);
        f.settle(Outcome::Accepted);
        assert_eq!(f.abandon(), (2, 200));
        assert!(f.is_empty());
        assert_eq!(f.settle(Outcome::Accepted), Settled::default());
    }
}
