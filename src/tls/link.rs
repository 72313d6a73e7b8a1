//! One TLS connection, sans-IO, on rustls's unbuffered API: ciphertext in,
//! plaintext and records to send out, in buffers the caller owns.
//!
//! rustls's buffered API keeps a read buffer of its own (at least 4 KiB once
//! it has read) in every connection. Here the driver reads into its shared
//! buffer and hands the bytes in; the link keeps input only while a record
//! is split between reads, and output only while the socket is backed up.
//! An idle link is rustls's connection state (keys and record sequence
//! numbers) and two empty vectors.

use std::fmt;
use std::sync::Arc;

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus};
use rustls::{ProtocolVersion, ServerConfig};

/// How the connection failed: rustls's error, and whether the handshake
/// had completed.
#[derive(Debug)]
pub struct Failure {
    pub error: rustls::Error,
    pub established: bool,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.established {
            write!(f, "TLS error: {}", self.error)
        } else {
            write!(f, "TLS handshake failed: {}", self.error)
        }
    }
}

/// What a [`TlsLink::receive`] left behind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// The handshake completed with this input.
    pub established_now: bool,
    /// The client sent close_notify: no more plaintext will come.
    pub peer_closed: bool,
}

/// Per-record overhead bound (header, explicit nonce or content type, tag)
/// of every suite offered, used to size the output buffer in one go.
const RECORD_OVERHEAD: usize = 64;
const MAX_PLAINTEXT_RECORD: usize = 16 * 1024;
/// The most input kept between reads: one whole record, or the records of
/// one handshake message (rustls allows 64 KiB) in records of a sane size.
/// rustls keeps every record of a handshake message in the caller's buffer
/// until the message is whole, so a client sending one in 1-byte records
/// would otherwise make it hold ten times that.
pub const MAX_PARTIAL: usize = 64 * 1024 + MAX_PLAINTEXT_RECORD + 2048 + 5;

pub struct TlsLink {
    conn: UnbufferedServerConnection,
    /// Ciphertext of a record not complete yet, kept between reads (and
    /// handshake records rustls has yet to join into one message).
    partial: Vec<u8>,
    /// Ciphertext the transport did not take; sent before anything else.
    unsent: Vec<u8>,
    unsent_pos: usize,
    established: bool,
    peer_closed: bool,
    sent_close: bool,
    /// A failure was reported: nothing more is sent but the alert.
    failed: bool,
    /// Some input arrived (a connection that sent nothing at all is a TCP
    /// probe, not a failed handshake).
    received: bool,
}

impl fmt::Debug for TlsLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsLink")
            .field("established", &self.established)
            .field("partial", &self.partial.len())
            .field("unsent", &self.unsent())
            .finish_non_exhaustive()
    }
}

/// Where [`drive`] puts what it finds, and what it may send.
struct Sink<'a> {
    plain: &'a mut Vec<u8>,
    out: &'a mut Vec<u8>,
    /// Bytes of `out` written so far (`out` may be longer: its length is
    /// kept, so that a reused buffer is not zeroed again).
    out_len: usize,
    /// Application data to encrypt once the connection may send.
    send: Option<&'a [u8]>,
    close_notify: bool,
    established: bool,
    peer_closed: bool,
}

/// Runs the state machine over `incoming` until it wants more input (or
/// may send application data): returns how many bytes of `incoming` are
/// done with.
fn drive(conn: &mut UnbufferedServerConnection, incoming: &mut [u8], sink: &mut Sink) -> Result<usize, rustls::Error> {
    let mut used = 0;
    // Each pass either consumes input, produces output or stops; the bound
    // only guards against a state machine that would do neither.
    for _ in 0..10_000 {
        let UnbufferedStatus { mut discard, state } = conn.process_tls_records(&mut incoming[used..]);
        match state? {
            ConnectionState::ReadTraffic(mut records) => {
                while let Some(record) = records.next_record() {
                    let record = record?;
                    discard += record.discard;
                    sink.plain.extend_from_slice(record.payload);
                }
            }
            ConnectionState::EncodeTlsData(mut data) => {
                write_grown(sink.out, &mut sink.out_len, 1024, |buf| {
                    data.encode(buf).map_err(|e| match e {
                        EncodeError::InsufficientSize(InsufficientSizeError { required_size }) => Some(required_size),
                        _ => None,
                    })
                })?;
            }
            // The caller sends everything in `out` before anything later.
            ConnectionState::TransmitTlsData(data) => data.done(),
            ConnectionState::WriteTraffic(mut traffic) => {
                sink.established = true;
                if let Some(send) = sink.send.take() {
                    let room = send.len() + (send.len() / MAX_PLAINTEXT_RECORD + 1) * RECORD_OVERHEAD;
                    write_grown(sink.out, &mut sink.out_len, room, |buf| {
                        traffic.encrypt(send, buf).map_err(encrypt_room)
                    })?;
                }
                if std::mem::take(&mut sink.close_notify) {
                    write_grown(sink.out, &mut sink.out_len, RECORD_OVERHEAD, |buf| {
                        traffic.queue_close_notify(buf).map_err(encrypt_room)
                    })?;
                }
                return Ok(used + discard);
            }
            ConnectionState::BlockedHandshake | ConnectionState::Closed => return Ok(used + discard),
            ConnectionState::PeerClosed => sink.peer_closed = true,
            // Early data is not enabled (`max_early_data_size` is 0).
            _ => return Err(rustls::Error::General("unexpected TLS state".into())),
        }
        used += discard;
    }
    Err(rustls::Error::General("TLS state machine made no progress".into()))
}

fn encrypt_room(e: EncryptError) -> Option<usize> {
    match e {
        EncryptError::InsufficientSize(InsufficientSizeError { required_size }) => Some(required_size),
        _ => None,
    }
}

/// Runs rustls on a client's bytes so that a panic in it (a bug, but one
/// a client could trigger) fails this connection instead of taking down
/// the loop and every connection on it. The link is marked failed and
/// dropped; nothing of its state is used again. (Fuzzing builds abort on
/// panics, so the fuzzers still see them.)
fn guarded<T>(f: impl FnOnce() -> Result<T, rustls::Error>) -> Result<T, rustls::Error> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(rustls::Error::General("the TLS state machine failed".into())))
}

/// Keeps the input rustls has not consumed for the next read, in a buffer
/// of its own size (not the capacity of the read it came from), within
/// [`MAX_PARTIAL`].
fn keep_partial(partial: &mut Vec<u8>, rest: &[u8]) -> Result<(), rustls::Error> {
    if rest.len() > MAX_PARTIAL {
        return Err(rustls::Error::General("a handshake message in too many records".into()));
    }
    *partial = rest.to_vec();
    Ok(())
}

/// Lets `f` write into `out` after its first `*len` bytes, growing `out`
/// to the size `f` asks for; a buffer already long enough is not touched
/// (nor zeroed) before `f` writes.
fn write_grown(
    out: &mut Vec<u8>,
    len: &mut usize,
    first_guess: usize,
    mut f: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>,
) -> Result<(), rustls::Error> {
    let mut room = first_guess;
    for _ in 0..3 {
        if out.len() < *len + room {
            out.resize(*len + room, 0);
        }
        match f(&mut out[*len..]) {
            Ok(n) => {
                *len += n;
                return Ok(());
            }
            Err(Some(required)) if required > room => room = required,
            Err(_) => break,
        }
    }
    Err(rustls::Error::General("cannot encode a TLS record".into()))
}

impl TlsLink {
    pub fn new(config: Arc<ServerConfig>) -> Result<Self, rustls::Error> {
        Ok(TlsLink {
            conn: UnbufferedServerConnection::new(config)?,
            partial: Vec::new(),
            unsent: Vec::new(),
            unsent_pos: 0,
            established: false,
            peer_closed: false,
            sent_close: false,
            failed: false,
            received: false,
        })
    }

    /// The handshake has completed: application data flows.
    pub fn is_established(&self) -> bool {
        self.established
    }

    /// The client sent close_notify.
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// The client sent at least one byte.
    pub fn received_any(&self) -> bool {
        self.received
    }

    /// The negotiated protocol version, once known.
    pub fn version(&self) -> Option<ProtocolVersion> {
        self.conn.protocol_version()
    }

    /// The negotiated ALPN protocol, if the client offered ALPN.
    pub fn alpn(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    /// Takes ciphertext just read. Appends what it decrypts to `plain`, and
    /// the records to send (handshake messages, alerts) to `out`, which the
    /// caller sends before anything else. `data` is used as scratch space.
    pub fn receive(&mut self, data: &mut [u8], plain: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<Received, Failure> {
        let was_established = self.established;
        self.received |= !data.is_empty();
        if self.failed {
            return Err(Failure {
                error: rustls::Error::General("the connection failed".into()),
                established: self.established,
            });
        }
        if self.peer_closed {
            // Data after close_notify is ignored (RFC 8446 §6.1), not kept:
            // rustls reads no further once it has one.
            return Ok(Received {
                established_now: false,
                peer_closed: true,
            });
        }
        let mut sink = Sink {
            plain,
            out_len: out.len(),
            out,
            send: None,
            close_notify: false,
            established: false,
            peer_closed: false,
        };
        let result = if self.partial.is_empty() {
            // The common case: whole records in the read, no copy.
            guarded(|| drive(&mut self.conn, data, &mut sink))
                .and_then(|used| keep_partial(&mut self.partial, &data[used..]))
        } else {
            let mut input = std::mem::take(&mut self.partial);
            input.extend_from_slice(data);
            guarded(|| drive(&mut self.conn, &mut input, &mut sink))
                .and_then(|used| keep_partial(&mut self.partial, &input[used..]))
        };
        let (out_len, established, peer_closed) = (sink.out_len, sink.established, sink.peer_closed);
        // Also when this input ends in an error: a failure after the
        // client's Finished is a failure of an established connection.
        self.established |= established || !self.conn.is_handshaking();
        self.peer_closed |= peer_closed;
        if peer_closed {
            self.partial = Vec::new();
        }
        out.truncate(out_len);
        match result {
            Ok(()) => Ok(Received {
                established_now: self.established && !was_established,
                peer_closed,
            }),
            Err(error) => {
                self.partial = Vec::new();
                self.failed = true;
                // The alert is a courtesy: if asking for it fails, none.
                let _ = guarded(|| {
                    self.alert(out);
                    Ok(())
                });
                Err(Failure {
                    error,
                    established: self.established,
                })
            }
        }
    }

    /// After a failure: the alert rustls queued for the peer, if any. Only
    /// queued records are asked for: with nothing queued, rustls would go on
    /// to deframe, and its handshake deframer may still hold messages of the
    /// input it failed on, which it then slices out of the empty buffer
    /// given here (a panic).
    fn alert(&mut self, out: &mut Vec<u8>) {
        for _ in 0..4 {
            if !self.conn.wants_write() {
                return;
            }
            let status = self.conn.process_tls_records(&mut []);
            match status.state {
                Ok(ConnectionState::EncodeTlsData(mut data)) => {
                    let mut len = out.len();
                    let written = write_grown(out, &mut len, 256, |buf| {
                        data.encode(buf).map_err(|e| match e {
                            EncodeError::InsufficientSize(InsufficientSizeError { required_size }) => {
                                Some(required_size)
                            }
                            _ => None,
                        })
                    });
                    out.truncate(len);
                    if written.is_err() {
                        return;
                    }
                }
                Ok(ConnectionState::TransmitTlsData(data)) => data.done(),
                _ => return,
            }
        }
    }

    /// Encrypts `plain` (and, first, any record the state machine has to
    /// send) into `out` from its start, growing it as needed; returns the
    /// bytes written. `out`'s length is left as it is (at least the
    /// returned count), so that a reused buffer is not zeroed again.
    pub fn encrypt(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<usize, Failure> {
        self.send(Some(plain), false, out)
    }

    /// The close_notify alert (once), for a clean close.
    pub fn close_notify(&mut self, out: &mut Vec<u8>) -> Result<usize, Failure> {
        if self.sent_close || !self.established || self.failed {
            return Ok(0);
        }
        self.sent_close = true;
        self.send(None, true, out)
    }

    fn send(&mut self, plain: Option<&[u8]>, close_notify: bool, out: &mut Vec<u8>) -> Result<usize, Failure> {
        if !self.established || self.failed {
            return Err(Failure {
                error: if self.failed {
                    rustls::Error::General("the connection failed".into())
                } else {
                    rustls::Error::HandshakeNotComplete
                },
                established: self.established,
            });
        }
        let mut stray = Vec::new();
        let mut sink = Sink {
            plain: &mut stray,
            out,
            out_len: 0,
            send: plain,
            close_notify,
            established: false,
            peer_closed: false,
        };
        // What was left of the input is passed again: rustls may refer to
        // handshake records in it, and finds no whole record to consume.
        let mut input = std::mem::take(&mut self.partial);
        let result = guarded(|| drive(&mut self.conn, &mut input, &mut sink));
        let (len, unsent_app) = (sink.out_len, sink.send.is_some());
        if let Ok(used) = result {
            input.drain(..used);
        }
        if !input.is_empty() {
            self.partial = input;
        }
        if result.is_err() {
            self.failed = true;
        }
        let failed = |error| Failure {
            error,
            established: true,
        };
        match result {
            Err(e) => Err(failed(e)),
            // Input is only consumed by `receive`, so nothing may have been
            // decrypted here, and an established connection may send.
            Ok(_) if !stray.is_empty() || unsent_app => Err(failed(rustls::Error::General(
                "TLS state does not allow sending".into(),
            ))),
            Ok(_) => Ok(len),
        }
    }

    /// Ciphertext waiting for the transport.
    pub fn unsent(&self) -> &[u8] {
        &self.unsent[self.unsent_pos..]
    }

    /// The transport took `n` bytes of [`unsent`](Self::unsent); the
    /// buffer goes once it is empty.
    pub fn wrote_unsent(&mut self, n: usize) {
        self.unsent_pos = (self.unsent_pos + n).min(self.unsent.len());
        if self.unsent_pos == self.unsent.len() {
            self.unsent = Vec::new();
            self.unsent_pos = 0;
        }
    }

    /// Keeps ciphertext the transport did not take, after what waits.
    pub fn keep_unsent(&mut self, bytes: &[u8]) {
        if self.unsent_pos > 0 {
            self.unsent.drain(..self.unsent_pos);
            self.unsent_pos = 0;
        }
        self.unsent.extend_from_slice(bytes);
    }

    /// Heap bytes the link holds besides rustls's own state.
    pub fn buffered_bytes(&self) -> usize {
        self.partial.capacity() + self.unsent.capacity()
    }
}
