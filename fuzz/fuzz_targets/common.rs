//! Helpers shared by the fuzz targets (each target has `mod common;`): owned copies of decoder
//! output, read boundaries taken from the input, a driver that feeds a byte stream to a `Decoder`
//! read by read as the server does, and a plain reference model of RFC 6455 framing to check the
//! decoder against.
#![allow(dead_code)]

use wsbeat::protocol::message::{Decoder, Limits, Message};

/// What the decoder produced, as an owned value: a message, or the close code of the error that
/// ended decoding (always the last event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
    Error(u16),
}

/// The bytes a message points at (the reason, for a close frame).
fn payload_of<'a>(m: &Message<'a>) -> &'a [u8] {
    match *m {
        Message::Text(t) => t.as_bytes(),
        Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => b,
        Message::Close(Some((_, r))) => r.as_bytes(),
        Message::Close(None) => &[],
    }
}

pub fn own(m: &Message<'_>) -> Event {
    match *m {
        Message::Text(t) => Event::Text(t.to_owned()),
        Message::Binary(b) => Event::Binary(b.to_vec()),
        Message::Ping(b) => Event::Ping(b.to_vec()),
        Message::Pong(b) => Event::Pong(b.to_vec()),
        Message::Close(c) => Event::Close(c.map(|(c, r)| (c, r.to_owned()))),
    }
}

/// Splits `0..len` into reads whose sizes are `sizes[i] + 1`, taken cyclically (1 to 256 bytes
/// each); one read of everything when `sizes` is empty.
pub fn reads(len: usize, sizes: &[u8]) -> Vec<std::ops::Range<usize>> {
    if sizes.is_empty() {
        return std::iter::once(0..len).collect();
    }
    let mut out = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < len {
        let n = (sizes[i % sizes.len()] as usize + 1).min(len - at);
        out.push(at..at + n);
        at += n;
        i += 1;
    }
    out
}

/// Index of the read that holds stream offset `off`.
pub fn read_of(reads: &[std::ops::Range<usize>], off: usize) -> usize {
    reads
        .iter()
        .position(|r| r.contains(&off))
        .expect("offset inside the stream")
}

/// The result of feeding a stream to one decoder.
#[derive(Debug)]
pub struct Run {
    pub events: Vec<Event>,
    /// Per event: whether its (non-empty) payload was handed out from the read buffer itself
    /// (zero-copy); `None` for an empty payload or an error.
    pub borrowed: Vec<Option<bool>>,
    /// Per event: the read during which it came out.
    pub read_index: Vec<usize>,
    /// `Decoder::take_fragment_done()` after each read was fully decoded.
    pub fragment_done: Vec<bool>,
    /// `Decoder::is_idle()` at the end (after the last `Ok((_, None))`, or after the error).
    pub idle: bool,
}

impl Run {
    pub fn error(&self) -> Option<u16> {
        match self.events.last() {
            Some(Event::Error(c)) => Some(*c),
            _ => None,
        }
    }
}

/// Feeds `stream` to a new decoder in the given reads, the way the server's read loop does: each
/// read is decoded in place, `decode` is called again on what is left after each message, and a
/// `None` means the read was used up. Stops at the first error.
pub fn decode_stream(stream: &[u8], reads: &[std::ops::Range<usize>], limits: &Limits) -> Run {
    let mut dec = Decoder::new();
    let mut run = Run {
        events: Vec::new(),
        borrowed: Vec::new(),
        read_index: Vec::new(),
        fragment_done: Vec::new(),
        idle: true,
    };
    for (ri, r) in reads.iter().enumerate() {
        let mut buf = stream[r.clone()].to_vec();
        let len = buf.len();
        let base = buf.as_ptr() as usize;
        let mut pos = 0;
        // Every message needs a 6-byte masked header, so this bounds the calls per read.
        let mut budget = len / 2 + 2;
        loop {
            assert!(budget > 0, "decoder keeps returning messages without consuming input");
            budget -= 1;
            match dec.decode(&mut buf[pos..], limits) {
                Ok((used, Some(m))) => {
                    assert!(used <= len - pos, "consumed {used} of {} bytes", len - pos);
                    pos += used;
                    let p = payload_of(&m);
                    let borrowed = (!p.is_empty()).then(|| {
                        let a = p.as_ptr() as usize;
                        a >= base && a + p.len() <= base + len
                    });
                    run.events.push(own(&m));
                    run.borrowed.push(borrowed);
                    run.read_index.push(ri);
                }
                Ok((used, None)) => {
                    assert_eq!(pos + used, len, "Ok(None) must mean the whole read was consumed");
                    break;
                }
                Err(e) => {
                    run.events.push(Event::Error(e.code));
                    run.borrowed.push(None);
                    run.read_index.push(ri);
                    run.idle = dec.is_idle();
                    return run;
                }
            }
        }
        run.fragment_done.push(dec.take_fragment_done());
        assert_eq!(dec.is_idle(), dec.heap_bytes() == 0);
    }
    run.idle = dec.is_idle();
    run
}

// ---------------------------------------------------------------------------------------------
// Reference model: RFC 6455 §5 as a server reads it, written plainly and independently of
// wsbeat's frame.rs and message.rs. It sees the whole stream at once.

/// A frame header as the model reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub fin: bool,
    pub opcode: u8,
    pub mask: [u8; 4],
    pub len: u64,
    pub header_len: usize,
}

/// Parses a client frame header at the start of `b`: `Ok(None)` while it is incomplete, `Err(())`
/// (close code 1002) as soon as the bytes present prove it bad. The first two bytes are judged
/// alone (reserved bits, opcode, control-frame rules); length encoding and the mask bit once the
/// whole header is there.
pub fn model_header(b: &[u8]) -> Result<Option<Header>, ()> {
    if b.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (b[0], b[1]);
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0F;
    if b0 & 0x70 != 0 || !matches!(opcode, 0x0 | 0x1 | 0x2 | 0x8 | 0x9 | 0xA) {
        return Err(());
    }
    let control = opcode >= 0x8;
    let len7 = b1 & 0x7F;
    if control && (!fin || len7 > 125) {
        return Err(());
    }
    let masked = b1 & 0x80 != 0;
    let ext = match len7 {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let header_len = 2 + ext + if masked { 4 } else { 0 };
    if b.len() < header_len {
        return Ok(None);
    }
    let len = match ext {
        0 => len7 as u64,
        2 => {
            let l = (b[2] as u64) << 8 | b[3] as u64;
            if l < 126 {
                return Err(());
            }
            l
        }
        _ => {
            let l = b[2..10].iter().fold(0u64, |a, &x| a << 8 | x as u64);
            if !(1 << 16..1 << 63).contains(&l) {
                return Err(());
            }
            l
        }
    };
    if !masked {
        return Err(());
    }
    let m = 2 + ext;
    Ok(Some(Header {
        fin,
        opcode,
        mask: [b[m], b[m + 1], b[m + 2], b[m + 3]],
        len,
        header_len,
    }))
}

/// RFC 6455 §7.4.1 codes plus the IANA registry (1012–1014), and the private/registered ranges.
pub fn close_code_ok(code: u16) -> bool {
    (1000..=1003).contains(&code) || (1007..=1014).contains(&code) || (3000..=4999).contains(&code)
}

/// A close frame's payload as an event: empty, or a valid code and a UTF-8 reason.
pub fn model_close(p: &[u8]) -> Event {
    match p.len() {
        0 => Event::Close(None),
        1 => Event::Error(1002),
        _ => {
            let code = u16::from_be_bytes([p[0], p[1]]);
            if !close_code_ok(code) {
                return Event::Error(1002);
            }
            match std::str::from_utf8(&p[2..]) {
                Ok(r) => Event::Close(Some((code, r.to_owned()))),
                Err(_) => Event::Error(1007),
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// A data frame that does not end its message.
    Fragment,
    /// A data frame that ends its message.
    Message,
    Control,
}

/// Where an event's payload lay in the stream.
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    /// Stream offset of the (last) frame's header.
    pub frame_start: usize,
    /// Stream range of the payload (of the last frame, for a fragmented message; the whole
    /// payload, code included, for a close frame).
    pub start: usize,
    pub end: usize,
    /// The message was assembled from more than one frame.
    pub fragmented: bool,
}

#[derive(Debug)]
pub struct Model {
    pub events: Vec<Event>,
    /// Per non-error event.
    pub origins: Vec<Origin>,
    /// Stream offset just past each completed frame, and what it completed.
    pub completed: Vec<(usize, Done)>,
    /// No error, and the stream ends exactly after a frame with no fragmented message open.
    pub at_boundary: bool,
}

pub fn model(stream: &[u8], limits: &Limits) -> Model {
    let max = limits.max_message_size as u64;
    let mut m = Model {
        events: Vec::new(),
        origins: Vec::new(),
        completed: Vec::new(),
        at_boundary: false,
    };
    // (is text, bytes so far, number of frames) of the fragmented message being assembled.
    let mut msg: Option<(bool, Vec<u8>, usize)> = None;
    let mut pos = 0;
    loop {
        let h = match model_header(&stream[pos..]) {
            Err(()) => {
                m.events.push(Event::Error(1002));
                return m;
            }
            Ok(None) => {
                m.at_boundary = pos == stream.len() && msg.is_none();
                return m;
            }
            Ok(Some(h)) => h,
        };
        let control = h.opcode >= 0x8;
        let seq_error = match h.opcode {
            0x0 => match &msg {
                None => Some(1002),
                Some((_, b, _)) if b.len() as u64 + h.len > max => Some(1009),
                Some(_) => None,
            },
            0x1 | 0x2 if msg.is_some() => Some(1002),
            0x1 | 0x2 if h.len > max => Some(1009),
            _ => None,
        };
        if let Some(code) = seq_error {
            m.events.push(Event::Error(code));
            return m;
        }
        let frame_start = pos;
        pos += h.header_len;
        let take = (stream.len() - pos).min(h.len as usize);
        let payload: Vec<u8> = stream[pos..pos + take]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ h.mask[i % 4])
            .collect();
        let start = pos;
        pos += take;
        let complete = take as u64 == h.len;
        if control {
            if !complete {
                return m;
            }
            m.completed.push((pos, Done::Control));
            let ev = match h.opcode {
                0x9 => Event::Ping(payload),
                0xA => Event::Pong(payload),
                _ => model_close(&payload),
            };
            let err = matches!(ev, Event::Error(_));
            m.events.push(ev);
            if err {
                return m;
            }
            m.origins.push(Origin {
                frame_start,
                start,
                end: pos,
                fragmented: false,
            });
            continue;
        }
        let (text, buf, frames) = msg.get_or_insert_with(|| (h.opcode == 0x1, Vec::new(), 0));
        buf.extend_from_slice(&payload);
        *frames += 1;
        // A text message fails as soon as its bytes so far cannot be the start of valid UTF-8.
        if *text && std::str::from_utf8(buf).is_err_and(|e| e.error_len().is_some()) {
            m.events.push(Event::Error(1007));
            return m;
        }
        if !complete {
            return m;
        }
        if !h.fin {
            m.completed.push((pos, Done::Fragment));
            continue;
        }
        m.completed.push((pos, Done::Message));
        let (text, buf, frames) = msg.take().expect("message state");
        let ev = if text {
            match String::from_utf8(buf) {
                Ok(s) => Event::Text(s),
                Err(_) => {
                    m.events.push(Event::Error(1007));
                    return m;
                }
            }
        } else {
            Event::Binary(buf)
        };
        m.events.push(ev);
        m.origins.push(Origin {
            frame_start,
            start,
            end: pos,
            fragmented: frames > 1,
        });
    }
}

/// Checks the decoder's outputs in `run` against the model, for a stream split into `reads`.
pub fn check_against_model(run: &Run, m: &Model, reads: &[std::ops::Range<usize>], what: &str) {
    assert_eq!(run.events, m.events, "{what}: messages differ from the reference model");
    if run.error().is_some() {
        return;
    }
    // `is_idle()` holds exactly when the stream ended on a frame boundary outside any
    // fragmented message: nothing partial is held then, and something always is otherwise.
    assert_eq!(run.idle, m.at_boundary, "{what}: is_idle() at the end of the stream");
    // Zero-copy (message.rs): a single-frame message or control frame that arrives whole, header
    // and payload in one read, is handed out from that read's buffer; a fragmented message, or a
    // payload split across reads, comes from the decoder's own memory. (A frame whose header
    // alone was split may go either way.)
    for (i, (o, b)) in m.origins.iter().zip(&run.borrowed).enumerate() {
        if let Some(b) = *b {
            let last = read_of(reads, o.end - 1);
            if o.fragmented || read_of(reads, o.start) != last {
                assert!(!b, "{what}: event {i} (origin {o:?}) handed out from a read buffer");
            } else if read_of(reads, o.frame_start) == last {
                assert!(b, "{what}: event {i} (origin {o:?}) arrived whole but was copied");
            }
        }
    }
    // take_fragment_done() after a read: never without a non-final data frame completed in that
    // read; and always when one was, unless its message also completed in that same read.
    for (ri, r) in reads.iter().enumerate() {
        let mut frag = false;
        let mut pending = false;
        for &(end, done) in &m.completed {
            if end > r.start && end <= r.end {
                match done {
                    Done::Fragment => {
                        frag = true;
                        pending = true;
                    }
                    Done::Message => pending = false,
                    Done::Control => {}
                }
            }
        }
        let got = run.fragment_done[ri];
        assert!(
            !got || frag,
            "{what}: fragment_done after read {ri} with no fragment in it"
        );
        assert!(got || !pending, "{what}: fragment completed in read {ri} not reported");
    }
}

/// An owned `parse_heartbeat` result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Beat {
    Not,
    Plain,
    WithId(String),
    InvalidId,
}

/// The heartbeat grammar (see protocol/heartbeat.rs), independently: after trimming ASCII white
/// space, `heartbeat`, or `heartbeat` then `:` or white space then a client id.
pub fn model_heartbeat(text: &str) -> Beat {
    let t = text.trim_matches(|c: char| c.is_ascii_whitespace());
    let Some(rest) = t.strip_prefix("heartbeat") else {
        return Beat::Not;
    };
    let id = match rest.as_bytes().first() {
        None => return Beat::Plain,
        Some(b':') => &rest[1..],
        Some(c) if c.is_ascii_whitespace() => rest.trim_start_matches(|c: char| c.is_ascii_whitespace()),
        Some(_) => return Beat::Not,
    };
    let ok = (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._~:@-".contains(&b));
    if ok {
        Beat::WithId(id.to_owned())
    } else {
        Beat::InvalidId
    }
}

/// Checks that `head` is one complete HTTP/1.1 response head with `status`, parsed by httparse
/// (an independent parser), and returns its headers as (lower-case name, value) and the head length.
pub fn parse_response(out: &[u8], status: u16) -> (Vec<(String, Vec<u8>)>, usize) {
    assert!(out.starts_with(b"HTTP/1.1 "), "response does not start with HTTP/1.1");
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(out) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!(
            "response is not valid HTTP: {other:?}: {:?}",
            String::from_utf8_lossy(out)
        ),
    };
    assert_eq!(resp.version, Some(1));
    assert_eq!(resp.code, Some(status));
    let hs = resp
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
        .collect();
    (hs, n)
}

pub fn header<'a>(hs: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    hs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice())
}
