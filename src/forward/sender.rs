//! The forwarding thread: takes batches from the buffer, POSTs them one at a
//! time, retries with backoff, and accounts for what was settled.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{info, warn};
use ureq::http::{HeaderName, HeaderValue};

use super::Shared;
use super::body::encode;
use super::buffer::{InFlight, Outcome};

/// Requests start at least this far apart, unless a whole batch waits: items
/// of a busy second travel ~100 per request rather than one each.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_millis(10);
pub(crate) const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Response bodies are read (so the connection can be reused) up to this,
/// and thrown away.
const RESPONSE_LIMIT: u64 = 64 * 1024;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the state consistent between its
    // statements (counters and queues move together, nothing panics midway).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn wait<'a, T>(cv: &Condvar, g: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    cv.wait(g).unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn wait_timeout<'a, T>(cv: &Condvar, g: MutexGuard<'a, T>, d: Duration) -> MutexGuard<'a, T> {
    match cv.wait_timeout(g, d) {
        Ok((g, _)) => g,
        Err(e) => e.into_inner().0,
    }
}

/// The HTTP side: one agent (keep-alive pool), the checked URL and headers.
pub(crate) struct Http {
    pub agent: ureq::Agent,
    pub url: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub timeout: Duration,
}

impl Http {
    /// One POST; `timeout` overrides the agent's when shutting down.
    fn post(&self, body: &[u8], timeout: Option<Duration>) -> Result<u16, ureq::Error> {
        let mut req = self.agent.post(&self.url).header("content-type", "application/json");
        for (k, v) in &self.headers {
            req = req.header(k.clone(), v.clone());
        }
        if let Some(t) = timeout {
            req = req.config().timeout_global(Some(t)).build();
        }
        let mut resp = req.send(body)?;
        let status = resp.status().as_u16();
        // The status is what counts; an error reading the rest only costs
        // the connection its reuse.
        let mut reader = resp.body_mut().with_config().limit(RESPONSE_LIMIT).reader();
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
        Ok(status)
    }
}

/// What to make of a status.
pub(crate) fn outcome(status: u16) -> Outcome {
    match status {
        200..=299 => Outcome::Accepted,
        413 => Outcome::TooLarge,
        _ => Outcome::Failed,
    }
}

/// The longest wait between attempts once a stop was asked for.
const STOP_RETRY: Duration = Duration::from_millis(100);

/// Exponential backoff from [`BACKOFF_MIN`] to [`BACKOFF_MAX`], ±20% so
/// that nodes restarted together do not retry in step.
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub fn new() -> Backoff {
        Backoff { next: BACKOFF_MIN }
    }

    pub fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }

    /// The next delay, with `seed` the jitter source.
    pub fn delay(&mut self, seed: u64) -> Duration {
        let base = self.next;
        self.next = base.saturating_mul(2).min(BACKOFF_MAX);
        // Spread the seed's bits (a clock's low bits may be coarse), then
        // scale to 0..=400 per mille.
        let permille = (seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % 401;
        let factor = 800 + permille as u32;
        (base * factor / 1000).min(BACKOFF_MAX)
    }
}

fn clock_seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()) ^ d.as_secs())
}

/// Failing or not, for one warning per outage and one line at recovery.
struct Health {
    /// Since when, failed requests, `dropped` counter then.
    outage: Option<(Instant, u64, u64)>,
}

/// The thread's own state. Dropping it (the thread ending, even by a panic)
/// counts what was not delivered and tells [`stop`](super::Forwarder::stop).
pub(crate) struct Sender {
    pub shared: Arc<Shared>,
    pub http: Http,
    pub node: Arc<str>,
    batch: InFlight,
    body: Vec<u8>,
    scratch: String,
    backoff: Backoff,
    health: Health,
    last_start: Option<Instant>,
}

impl Sender {
    pub fn new(shared: Arc<Shared>, http: Http, node: Arc<str>) -> Sender {
        Sender {
            shared,
            http,
            node,
            batch: InFlight::default(),
            body: Vec::new(),
            scratch: String::new(),
            backoff: Backoff::new(),
            health: Health { outage: None },
            last_start: None,
        }
    }

    /// Until stopped and everything is sent, or the stop deadline passes.
    pub fn run(&mut self) {
        let shared = Arc::clone(&self.shared);
        loop {
            // 1. Something to send, or the end.
            let stop_by = {
                let mut st = lock(&shared.state);
                loop {
                    let now = Instant::now();
                    if st.stop_by.is_some_and(|by| now >= by) {
                        return;
                    }
                    if !self.batch.is_empty() {
                        break;
                    }
                    if st.buffer.waiting_len() == 0 {
                        if st.stop_by.is_some() {
                            return;
                        }
                        st = wait(&shared.wake, st);
                        continue;
                    }
                    let gap_until = self.last_start.map(|t| t + MIN_INTERVAL);
                    if let Some(until) = gap_until
                        && st.stop_by.is_none()
                        && !st.buffer.batch_ready()
                        && now < until
                    {
                        st = wait_timeout(&shared.wake, st, until - now);
                        continue;
                    }
                    self.batch.load(&mut st.buffer);
                }
                // stop() must not wait past its deadline for this request.
                st.in_request = true;
                st.stop_by
            };

            // 2. The request, without the lock.
            self.body.clear();
            encode(&self.node, self.batch.next(), &mut self.body, &mut self.scratch);
            let start = Instant::now();
            self.last_start = Some(start);
            // When stopping, the request may not outlive the deadline.
            let timeout = stop_by.map(|by| by.saturating_duration_since(start).min(self.http.timeout));
            let result = self.http.post(&self.body, timeout);
            let outcome = match &result {
                Ok(status) => outcome(*status),
                Err(_) => Outcome::Failed,
            };
            let items = self.batch.next_len();
            let settled = self.batch.settle(outcome);

            // 3. Accounting.
            let c = &shared.counters;
            let mut st = lock(&shared.state);
            st.in_request = false;
            st.buffer.release(settled.bytes);
            c.buffered_bytes.store(st.buffer.bytes() as u64, Ordering::Relaxed);
            c.delivered.fetch_add(settled.delivered, Ordering::Relaxed);
            c.dropped.fetch_add(settled.refused, Ordering::Relaxed);
            if outcome == Outcome::Accepted {
                c.requests_ok.fetch_add(1, Ordering::Relaxed);
            } else {
                c.requests_failed.fetch_add(1, Ordering::Relaxed);
            }
            let (waiting, bytes) = (st.buffer.waiting_len(), st.buffer.bytes());
            // Logging can block (a stalled stderr): never with the lock that
            // the loops' pushes take.
            drop(st);
            if settled.refused > 0 {
                warn!("forward: the backend refused an item as too large (413) even alone; dropped");
            }
            if outcome != Outcome::Failed {
                self.backoff.reset();
                if let Some((since, failures, dropped_then)) = self.health.outage.take() {
                    let dropped = c.dropped.load(Ordering::Relaxed).saturating_sub(dropped_then);
                    info!(
                        "forward: backend answering again after {failures} failed requests in {:.1}s; \
                         {dropped} items dropped meanwhile, {waiting} waiting",
                        since.elapsed().as_secs_f64(),
                    );
                }
                continue;
            }
            match &mut self.health.outage {
                Some((_, failures, _)) => *failures += 1,
                None => {
                    let why = match &result {
                        Ok(status) => format!("status {status}"),
                        Err(e) => e.to_string(),
                    };
                    warn!(
                        "forward: backend failing ({why}); retrying a batch of {items} items with backoff, \
                         {waiting} more waiting ({bytes} bytes buffered)",
                    );
                    self.health.outage = Some((start, 1, c.dropped.load(Ordering::Relaxed)));
                }
            }
            let mut st = lock(&shared.state);
            // The backoff: woken early only by stop(), bounded by its deadline.
            let mut until = Instant::now() + self.backoff.delay(clock_seed());
            loop {
                if st.stop_by.is_some() {
                    // Stopping: what is left gets retried before the deadline
                    // rather than after a backoff that may outlast it.
                    until = until.min(Instant::now() + STOP_RETRY);
                }
                let limit = st.stop_by.map_or(until, |by| by.min(until));
                let now = Instant::now();
                if now >= limit {
                    break;
                }
                st = wait_timeout(&shared.wake, st, limit - now);
            }
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let (held, bytes) = self.batch.abandon();
        let mut st = lock(&self.shared.state);
        st.buffer.release(bytes);
        let lost = held + st.buffer.clear_waiting();
        st.done = true;
        let c = &self.shared.counters;
        c.dropped.fetch_add(lost, Ordering::Relaxed);
        c.buffered_bytes.store(0, Ordering::Relaxed);
        drop(st);
        self.shared.done.notify_all();
        if lost > 0 {
            warn!("forward: {lost} items not delivered by shutdown; dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(outcome(200), Outcome::Accepted);
        assert_eq!(outcome(204), Outcome::Accepted);
        assert_eq!(outcome(299), Outcome::Accepted);
        assert_eq!(outcome(413), Outcome::TooLarge);
        for s in [100, 301, 302, 304, 307, 400, 401, 404, 429, 500, 503] {
            assert_eq!(outcome(s), Outcome::Failed, "{s}");
        }
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter() {
        let mut b = Backoff::new();
        let mut base = BACKOFF_MIN;
        for seed in 0..12u64 {
            let d = b.delay(seed.wrapping_mul(7919));
            assert!(
                d >= base * 8 / 10 && d <= (base * 12 / 10).min(BACKOFF_MAX),
                "{d:?} for {base:?}"
            );
            base = (base * 2).min(BACKOFF_MAX);
        }
        assert!(b.delay(3) >= BACKOFF_MAX * 8 / 10);
        b.reset();
        assert!(b.delay(u64::MAX) <= BACKOFF_MIN * 12 / 10);
        // Not all in step.
        let delays: std::collections::HashSet<_> = (0..50u64)
            .map(|s| {
                let mut b = Backoff::new();
                b.delay(s)
            })
            .collect();
        assert!(delays.len() > 10);
    }
}
