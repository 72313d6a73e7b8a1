//! Forwarding (SPEC §13): client messages and presence events POSTed to the
//! backend in batches, in order, retried while it is down, within a bounded
//! buffer. The loops hand over what a turn produced with one call; one
//! helper thread does the HTTP.

mod body;
mod buffer;
mod sender;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::http_client;
use crate::presence::{ConnId, PresenceEvent};
use buffer::Buffer;
use sender::{Http, Sender, lock, wait, wait_timeout};

/// `--forward*`.
#[derive(Clone)]
pub struct ForwardSettings {
    /// `http://` or `https://`.
    pub url: String,
    /// Added to every request (`--forward-header "K: V"`), e.g. authorization.
    pub headers: Vec<(String, String)>,
    /// Bytes of items waiting or in flight; past it the oldest are dropped.
    pub buffer: usize,
    /// One request, connect to last byte; past it the batch is retried.
    pub timeout: Duration,
}

impl std::fmt::Debug for ForwardSettings {
    /// Header values and the URL's credentials are typically secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardSettings")
            .field("url", &crate::http_client::shown_url(&self.url))
            .field("headers", &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .field("buffer", &self.buffer)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// One thing to forward.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    Message {
        id: Option<Arc<str>>,
        conn: ConnId,
        binary: bool,
        data: Box<[u8]>,
        /// Unix ms.
        at_ms: u64,
    },
    Event(PresenceEvent),
}

/// Counters for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForwardStats {
    /// Items the backend acknowledged.
    pub delivered: u64,
    /// Items dropped past the buffer (or refused by the backend as too large
    /// on their own).
    pub dropped: u64,
    /// Requests answered 2xx.
    pub requests_ok: u64,
    /// Requests that failed (status, timeout, connection) and were retried,
    /// and those answered 413 (their batch split in halves).
    pub requests_failed: u64,
    /// Bytes waiting or in flight now.
    pub buffered_bytes: u64,
}

/// The forwarding thread and its buffer.
///
/// One request at a time, so batches arrive in push order; a failed one is
/// retried (same items, nothing jumping ahead) with backoff from 100 ms to
/// 5 s until a 2xx; a 413 splits it in halves (a single item refused so is
/// dropped). Past `buffer` bytes the oldest waiting items are dropped, never
/// the batch in flight (see `buffer.rs`). Dropping it stops it
/// without waiting for the backend.
pub struct Forwarder {
    shared: Arc<Shared>,
    /// `None` once stopped (joined, or left to end on its own).
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// What the loops, the thread and `stop` share.
pub(crate) struct Shared {
    state: Mutex<State>,
    /// The thread waits on it: items pushed, stop asked.
    wake: Condvar,
    /// `stop` waits on it: the thread ended.
    done: Condvar,
    counters: Counters,
}

struct State {
    buffer: Buffer,
    /// Set by `stop`: deliver until then, then end.
    stop_by: Option<Instant>,
    /// The thread is in a request (that `stop` may not wait for past its
    /// deadline).
    in_request: bool,
    /// The thread ended; pushes are dropped.
    done: bool,
}

#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    dropped: AtomicU64,
    requests_ok: AtomicU64,
    requests_failed: AtomicU64,
    buffered_bytes: AtomicU64,
}

/// Longest `stop` bound honoured: past it `Instant` arithmetic could
/// overflow, and no shutdown means to wait that long.
const MAX_STOP_WITHIN: Duration = Duration::from_secs(24 * 3600);

fn invalid(what: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, what)
}

impl Forwarder {
    /// Starts the thread. `node`: this node's id, sent with every batch.
    pub fn start(settings: &ForwardSettings, node: Arc<str>) -> std::io::Result<Forwarder> {
        // Checked here so that a typo fails start-up rather than every
        // request forever. The URL itself is not repeated: it may hold a
        // secret.
        http_client::check_url(&settings.url).map_err(|e| invalid(format!("forward URL: {e}")))?;
        let headers = settings
            .headers
            .iter()
            .map(|(k, v)| http_client::check_header(k, v).map_err(|e| invalid(format!("forward header: {e}"))))
            .collect::<std::io::Result<Vec<_>>>()?;
        let agent = http_client::agent(settings.timeout, 1);
        let http = Http {
            agent,
            url: settings.url.clone(),
            headers,
            timeout: settings.timeout,
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                buffer: Buffer::new(settings.buffer),
                stop_by: None,
                in_request: false,
                done: false,
            }),
            wake: Condvar::new(),
            done: Condvar::new(),
            counters: Counters::default(),
        });
        let mut sender = Sender::new(Arc::clone(&shared), http, node);
        let thread = std::thread::Builder::new()
            .name("wsbeat-forward".into())
            .spawn(move || sender.run())?;
        Ok(Forwarder {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Takes `items` (leaving it empty, its capacity kept), in order, without
    /// waiting for the network. After [`stop`](Self::stop) they are dropped
    /// (and counted).
    pub fn push(&self, items: &mut Vec<Item>) {
        if items.is_empty() {
            return;
        }
        let c = &self.shared.counters;
        let mut st = lock(&self.shared.state);
        if st.done {
            drop(st);
            c.dropped.fetch_add(items.len() as u64, Ordering::Relaxed);
            items.clear();
            return;
        }
        let dropped = st.buffer.push(items);
        c.buffered_bytes.store(st.buffer.bytes() as u64, Ordering::Relaxed);
        drop(st);
        if dropped > 0 {
            c.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        self.shared.wake.notify_one();
    }

    pub fn stats(&self) -> ForwardStats {
        let c = &self.shared.counters;
        ForwardStats {
            delivered: c.delivered.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            requests_ok: c.requests_ok.load(Ordering::Relaxed),
            requests_failed: c.requests_failed.load(Ordering::Relaxed),
            buffered_bytes: c.buffered_bytes.load(Ordering::Relaxed),
        }
    }

    /// Starts stopping without waiting: what is buffered is sent (retried
    /// without long backoffs) until `deadline`, then the thread ends — as
    /// soon as the buffer is empty, so call it once nothing more will be
    /// pushed (later pushes are dropped and counted). A later deadline than
    /// one already set changes nothing.
    pub fn finish_by(&self, deadline: Instant) {
        let mut st = lock(&self.shared.state);
        if st.stop_by.is_none_or(|by| deadline < by) {
            st.stop_by = Some(deadline);
        }
        drop(st);
        self.shared.wake.notify_all();
    }

    /// Sends what is buffered for up to `within`, then ends the thread.
    /// What is left then is dropped (and counted). A request still in flight
    /// at the deadline is not waited for: the thread ends after it, on its
    /// own. A second call returns at once (or shortens the deadline).
    pub fn stop(&self, within: Duration) {
        let deadline = Instant::now() + within.min(MAX_STOP_WITHIN);
        self.finish_by(deadline);
        let mut st = lock(&self.shared.state);
        let mut finished = false;
        loop {
            if st.done {
                finished = true;
                break;
            }
            let by = st.stop_by.unwrap_or(deadline);
            let now = Instant::now();
            if now < by {
                st = wait_timeout(&self.shared.done, st, by - now);
            } else if st.in_request {
                break;
            } else {
                // Past the deadline and not in a request: the thread sees the
                // deadline at once and ends.
                st = wait(&self.shared.done, st);
            }
        }
        drop(st);
        let thread = lock(&self.thread).take();
        match thread {
            // Done: the join is immediate. A panic there was already
            // reported by the panic hook.
            Some(thread) if finished => drop(thread.join()),
            Some(_) => log::debug!("forward: a request is still in flight at the deadline; not waiting for it"),
            None => {}
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop(Duration::ZERO);
    }
}
