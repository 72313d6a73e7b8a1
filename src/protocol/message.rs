//! Message assembly: frames in, messages out, with incremental UTF-8
//! validation and close-frame rules.
//!
//! The decoder is fed whatever bytes a read produced, in place (it unmasks
//! them where they lie). A frame that arrives whole is handed out straight
//! from the caller's buffer; only a frame split across reads, or a fragmented
//! message, makes the decoder allocate, and it gives that memory back as soon
//! as the message is complete. An idle connection's decoder is one null
//! pointer.

use super::ProtocolError;
use super::frame::{self, FrameHeader, OpCode};

/// A decoded message or control frame. Borrowed from the input buffer or from
/// the decoder; valid until the next call to [`Decoder::decode`].
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
    Ping(&'a [u8]),
    Pong(&'a [u8]),
    /// `None` when the close frame had no payload.
    Close(Option<(u16, &'a str)>),
}

/// Limits the decoder enforces.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest message after reassembly; checked on each frame header, before
    /// any payload byte is buffered.
    pub max_message_size: usize,
}

#[derive(Default)]
pub struct Decoder {
    partial: Option<Box<Partial>>,
}

/// State that exists only while a frame or a message spans several reads.
#[derive(Default)]
struct Partial {
    hdr: [u8; frame::MAX_HEADER_LEN],
    hdr_len: u8,
    frame: Option<FrameProgress>,
    /// Opcode of the message being assembled in `msg` (Text or Binary).
    msg_kind: Option<OpCode>,
    msg: Vec<u8>,
    /// `msg[..utf8_ok]` is known to be valid UTF-8.
    utf8_ok: usize,
    ctrl: Vec<u8>,
    msg_delivered: bool,
    ctrl_delivered: bool,
    /// A data frame that does not end its message was completed.
    fragment_done: bool,
}

impl Partial {
    fn is_idle(&self) -> bool {
        self.hdr_len == 0 && self.frame.is_none() && self.msg_kind.is_none() && self.ctrl.is_empty()
    }
}

#[derive(Clone, Copy)]
struct FrameProgress {
    opcode: OpCode,
    fin: bool,
    mask: [u8; 4],
    remaining: u64,
    offset: u64,
}

enum Emit {
    Input(OpCode, usize, usize),
    Msg(OpCode),
    Ctrl(OpCode),
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// True when no partial frame or message is held (no heap memory owned).
    pub fn is_idle(&self) -> bool {
        self.partial.is_none()
    }

    /// Whether a non-final data frame was completed since the last call: a
    /// complete frame proves the client alive even before its message ends.
    pub fn take_fragment_done(&mut self) -> bool {
        self.partial
            .as_deref_mut()
            .is_some_and(|p| std::mem::take(&mut p.fragment_done))
    }

    /// Bytes of heap memory the decoder holds (for metrics and tests).
    pub fn heap_bytes(&self) -> usize {
        self.partial
            .as_ref()
            .map(|p| std::mem::size_of::<Partial>() + p.msg.capacity() + p.ctrl.capacity())
            .unwrap_or(0)
    }

    /// Decodes from `input`, returning how many bytes were consumed and the
    /// next message, if one completed. When the message is `None`, all of
    /// `input` was consumed (kept as partial state as needed) and the caller
    /// should read more. After an error the connection must be failed; the
    /// decoder must not be fed again.
    pub fn decode<'a>(
        &'a mut self,
        input: &'a mut [u8],
        limits: &Limits,
    ) -> Result<(usize, Option<Message<'a>>), ProtocolError> {
        if let Some(p) = self.partial.as_deref_mut() {
            if p.msg_delivered {
                p.msg_delivered = false;
                p.msg_kind = None;
                p.utf8_ok = 0;
                p.msg.clear();
            }
            if p.ctrl_delivered {
                p.ctrl_delivered = false;
                p.ctrl.clear();
            }
            if p.is_idle() {
                self.partial = None;
            }
        }
        let mut pos = 0usize;
        let emit = loop {
            let mut fp = match self.partial.as_ref().and_then(|p| p.frame) {
                Some(fp) => fp,
                None => {
                    let Some((h, used)) = self.read_header(&input[pos..])? else {
                        return Ok((input.len(), None));
                    };
                    pos += used;
                    self.check_header(&h, limits)?;
                    FrameProgress {
                        opcode: h.opcode,
                        fin: h.fin,
                        mask: h.mask.unwrap_or_default(),
                        remaining: h.len,
                        offset: 0,
                    }
                }
            };
            let avail = (input.len() - pos) as u64;
            let in_message = self.partial.as_ref().is_some_and(|p| p.msg_kind.is_some());
            let ctrl_split = self.partial.as_ref().is_some_and(|p| !p.ctrl.is_empty());
            if fp.remaining <= avail
                && (fp.opcode.is_control() && !ctrl_split || !fp.opcode.is_control() && !in_message && fp.fin)
            {
                // Fast path: the whole frame is here and nothing is pending.
                let end = pos + fp.remaining as usize;
                frame::apply_mask(&mut input[pos..end], fp.mask, fp.offset as usize);
                if let Some(p) = self.partial.as_deref_mut() {
                    p.frame = None;
                }
                let start = pos;
                pos = end;
                break Emit::Input(fp.opcode, start, end);
            }
            // Slow path: buffer what is here.
            let take = fp.remaining.min(avail) as usize;
            let chunk = &mut input[pos..pos + take];
            frame::apply_mask(chunk, fp.mask, fp.offset as usize);
            pos += take;
            fp.remaining -= take as u64;
            fp.offset += take as u64;
            let p = self.partial.get_or_insert_with(Default::default);
            p.frame = if fp.remaining == 0 { None } else { Some(fp) };
            if fp.opcode.is_control() {
                p.ctrl.extend_from_slice(chunk);
                if fp.remaining == 0 {
                    break Emit::Ctrl(fp.opcode);
                }
            } else {
                if p.msg_kind.is_none() {
                    p.msg_kind = Some(fp.opcode);
                }
                p.msg.extend_from_slice(chunk);
                if p.msg_kind == Some(OpCode::Text) {
                    // Fail fast: an invalid byte is reported as soon as it
                    // arrives, even mid-frame.
                    match std::str::from_utf8(&p.msg[p.utf8_ok..]) {
                        Ok(_) => p.utf8_ok = p.msg.len(),
                        Err(e) if e.error_len().is_some() => return Err(ProtocolError::bad_utf8()),
                        Err(e) => p.utf8_ok += e.valid_up_to(),
                    }
                }
                if fp.remaining == 0 && !fp.fin {
                    p.fragment_done = true;
                }
                if fp.remaining == 0 && fp.fin {
                    if p.utf8_ok != p.msg.len() && p.msg_kind == Some(OpCode::Text) {
                        return Err(ProtocolError::bad_utf8());
                    }
                    break Emit::Msg(p.msg_kind.unwrap_or(OpCode::Binary));
                }
            }
            if fp.remaining > 0 {
                debug_assert_eq!(pos, input.len());
                return Ok((pos, None));
            }
        };
        let input: &'a [u8] = input;
        let (opcode, payload): (OpCode, &'a [u8]) = match emit {
            Emit::Input(op, s, e) => (op, &input[s..e]),
            Emit::Msg(op) => {
                // Only the slow path emits from `msg`, and it created `partial`;
                // should that ever not hold, fail the connection rather than panic.
                let Some(p) = self.partial.as_deref_mut() else {
                    return Err(ProtocolError::protocol("internal decoder state"));
                };
                p.msg_delivered = true;
                (op, &p.msg[..])
            }
            Emit::Ctrl(op) => {
                // Only the slow path emits from `ctrl`, and it created `partial`;
                // should that ever not hold, fail the connection rather than panic.
                let Some(p) = self.partial.as_deref_mut() else {
                    return Err(ProtocolError::protocol("internal decoder state"));
                };
                p.ctrl_delivered = true;
                (op, &p.ctrl[..])
            }
        };
        let msg = match opcode {
            OpCode::Text => {
                // Already validated when it came through `msg`; checked here
                // for the zero-copy path (std's validator is SIMD-fast).
                Message::Text(std::str::from_utf8(payload).map_err(|_| ProtocolError::bad_utf8())?)
            }
            OpCode::Binary | OpCode::Continuation => Message::Binary(payload),
            OpCode::Ping => Message::Ping(payload),
            OpCode::Pong => Message::Pong(payload),
            OpCode::Close => Message::Close(parse_close_payload(payload)?),
        };
        Ok((pos, Some(msg)))
    }

    fn read_header(&mut self, input: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        if let Some(p) = self.partial.as_deref_mut()
            && p.hdr_len > 0
        {
            let old = p.hdr_len as usize;
            let take = (frame::MAX_HEADER_LEN - old).min(input.len());
            p.hdr[old..old + take].copy_from_slice(&input[..take]);
            return match frame::parse_header(&p.hdr[..old + take])? {
                Some((h, hlen)) => {
                    p.hdr_len = 0;
                    Ok(Some((h, hlen - old)))
                }
                None => {
                    p.hdr_len = (old + take) as u8;
                    Ok(None)
                }
            };
        }
        match frame::parse_header(input)? {
            Some(x) => Ok(Some(x)),
            None => {
                if !input.is_empty() {
                    let p = self.partial.get_or_insert_with(Default::default);
                    p.hdr[..input.len()].copy_from_slice(input);
                    p.hdr_len = input.len() as u8;
                } else if self.partial.as_ref().is_some_and(|p| p.is_idle()) {
                    self.partial = None;
                }
                Ok(None)
            }
        }
    }

    fn check_header(&self, h: &FrameHeader, limits: &Limits) -> Result<(), ProtocolError> {
        let in_message = self.partial.as_ref().and_then(|p| p.msg_kind.map(|_| p.msg.len()));
        match h.opcode {
            OpCode::Continuation => match in_message {
                None => Err(ProtocolError::protocol(
                    "continuation frame without a message to continue",
                )),
                Some(len) if len as u64 + h.len > limits.max_message_size as u64 => Err(ProtocolError::too_big()),
                Some(_) => Ok(()),
            },
            OpCode::Text | OpCode::Binary => {
                if in_message.is_some() {
                    Err(ProtocolError::protocol("new data frame inside a fragmented message"))
                } else if h.len > limits.max_message_size as u64 {
                    Err(ProtocolError::too_big())
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }
}

/// Close codes a peer may send (RFC 6455 §7.4 and the IANA registry):
/// 1004–1006 and 1015 are reserved for local use, below 1000 and
/// 1016–2999 are unassigned, 5000 and up do not exist.
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Validates a close frame payload: empty, or a valid code followed by a
/// UTF-8 reason.
pub fn parse_close_payload(payload: &[u8]) -> Result<Option<(u16, &str)>, ProtocolError> {
    match payload.len() {
        0 => Ok(None),
        1 => Err(ProtocolError::protocol("close frame with a one-byte payload")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !is_valid_close_code(code) {
                return Err(ProtocolError::protocol("invalid close code"));
            }
            let reason = std::str::from_utf8(&payload[2..]).map_err(|_| ProtocolError::bad_utf8())?;
            Ok(Some((code, reason)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::encode_frame_masked;

    const LIMITS: Limits = Limits {
        max_message_size: 1 << 20,
    };
    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    #[derive(Debug, PartialEq, Eq, Clone)]
    enum Owned {
        Text(String),
        Binary(Vec<u8>),
        Ping(Vec<u8>),
        Pong(Vec<u8>),
        Close(Option<(u16, String)>),
        Error(u16),
    }

    fn own(m: Message<'_>) -> Owned {
        match m {
            Message::Text(t) => Owned::Text(t.to_owned()),
            Message::Binary(b) => Owned::Binary(b.to_vec()),
            Message::Ping(b) => Owned::Ping(b.to_vec()),
            Message::Pong(b) => Owned::Pong(b.to_vec()),
            Message::Close(c) => Owned::Close(c.map(|(c, r)| (c, r.to_owned()))),
        }
    }

    /// Feeds `bytes` in chunks of the given sizes (cycled), collecting
    /// everything up to and including the first error.
    fn run(bytes: &[u8], chunks: &[usize], limits: Limits) -> Vec<Owned> {
        let mut dec = Decoder::new();
        let mut out = Vec::new();
        let mut at = 0;
        let mut i = 0;
        while at < bytes.len() {
            let n = chunks[i % chunks.len()].max(1).min(bytes.len() - at);
            i += 1;
            let mut buf = bytes[at..at + n].to_vec();
            at += n;
            let mut pos = 0;
            loop {
                match dec.decode(&mut buf[pos..], &limits) {
                    Ok((used, Some(m))) => {
                        pos += used;
                        out.push(own(m));
                    }
                    Ok((used, None)) => {
                        assert_eq!(pos + used, buf.len());
                        break;
                    }
                    Err(e) => {
                        out.push(Owned::Error(e.code));
                        return out;
                    }
                }
            }
        }
        out
    }

    fn all_splits(bytes: &[u8], want: &[Owned]) {
        for chunk in [1usize, 2, 3, 5, 7, 13, 64, 1 << 20] {
            assert_eq!(run(bytes, &[chunk], LIMITS), want, "chunk size {chunk}");
        }
        assert_eq!(run(bytes, &[1, 9, 2, 30], LIMITS), want);
    }

    fn frame(fin: bool, op: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode_frame_masked(&mut v, fin, op, payload, MASK);
        v
    }

    #[test]
    fn rfc_hello_and_fragments() {
        // §5.7 masked "Hello".
        let hello = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
        all_splits(&hello, &[Owned::Text("Hello".into())]);
        let mut frag = frame(false, OpCode::Text, b"Hel");
        frag.extend(frame(true, OpCode::Continuation, b"lo"));
        all_splits(&frag, &[Owned::Text("Hello".into())]);
    }

    #[test]
    fn control_frames_between_fragments() {
        let mut b = frame(false, OpCode::Binary, b"ab");
        b.extend(frame(true, OpCode::Ping, b"p1"));
        b.extend(frame(false, OpCode::Continuation, b""));
        b.extend(frame(true, OpCode::Pong, b""));
        b.extend(frame(true, OpCode::Continuation, b"cd"));
        b.extend(frame(true, OpCode::Text, "añb".as_bytes()));
        b.extend(frame(true, OpCode::Close, &[0x03, 0xE8, b'o', b'k']));
        all_splits(
            &b,
            &[
                Owned::Ping(b"p1".to_vec()),
                Owned::Pong(vec![]),
                Owned::Binary(b"abcd".to_vec()),
                Owned::Text("añb".into()),
                Owned::Close(Some((1000, "ok".into()))),
            ],
        );
    }

    #[test]
    fn empty_messages_and_frames() {
        let mut b = frame(true, OpCode::Text, b"");
        b.extend(frame(false, OpCode::Text, b""));
        b.extend(frame(false, OpCode::Continuation, b""));
        b.extend(frame(true, OpCode::Continuation, b""));
        b.extend(frame(true, OpCode::Close, b""));
        all_splits(
            &b,
            &[Owned::Text("".into()), Owned::Text("".into()), Owned::Close(None)],
        );
    }

    #[test]
    fn sequencing_violations() {
        let cont = frame(true, OpCode::Continuation, b"x");
        all_splits(&cont, &[Owned::Error(1002)]);
        let mut b = frame(false, OpCode::Text, b"a");
        b.extend(frame(true, OpCode::Text, b"b"));
        all_splits(&b, &[Owned::Error(1002)]);
        let mut b = frame(false, OpCode::Binary, b"a");
        b.extend(frame(true, OpCode::Binary, b"b"));
        all_splits(&b, &[Owned::Error(1002)]);
    }

    #[test]
    fn utf8_fails_fast_mid_frame() {
        // Valid prefix, then an invalid byte; the rest of the frame never
        // arrives. The error must come from the bytes already seen.
        let payload = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64";
        let whole = frame(true, OpCode::Text, payload);
        let cut = &whole[..2 + 4 + 14]; // header + mask + up to the surrogate's 3rd byte
        for chunk in [1usize, 4, 100] {
            assert_eq!(run(cut, &[chunk], LIMITS), vec![Owned::Error(1007)], "chunk {chunk}");
        }
        all_splits(&whole, &[Owned::Error(1007)]);
    }

    #[test]
    fn utf8_across_fragments_and_truncated_at_end() {
        let s = "κόσμε€𝄞";
        let bytes = s.as_bytes();
        for cut in 0..=bytes.len() {
            let mut b = frame(false, OpCode::Text, &bytes[..cut]);
            b.extend(frame(true, OpCode::Continuation, &bytes[cut..]));
            all_splits(&b, &[Owned::Text(s.into())]);
        }
        // A message that ends inside a character.
        let mut b = frame(false, OpCode::Text, &bytes[..2]);
        b.extend(frame(true, OpCode::Continuation, &bytes[2..bytes.len() - 1]));
        all_splits(&b, &[Owned::Error(1007)]);
        // Same, but as a single frame (zero-copy path).
        all_splits(
            &frame(true, OpCode::Text, &bytes[..bytes.len() - 1]),
            &[Owned::Error(1007)],
        );
    }

    #[test]
    fn size_limit_checked_before_buffering() {
        let limits = Limits { max_message_size: 10 };
        // A 2^40-byte frame header: refused from the header alone.
        let mut b = vec![0x82, 0xFF, 0, 0, 0x01, 0, 0, 0, 0, 0];
        b.extend_from_slice(&MASK);
        assert_eq!(run(&b, &[b.len()], limits), vec![Owned::Error(1009)]);
        // Fragments adding up past the limit.
        let mut b = frame(false, OpCode::Binary, &[0; 6]);
        b.extend(frame(true, OpCode::Continuation, &[0; 5]));
        assert_eq!(run(&b, &[3], limits), vec![Owned::Error(1009)]);
        // Exactly at the limit is fine.
        let mut b = frame(false, OpCode::Binary, &[0; 6]);
        b.extend(frame(true, OpCode::Continuation, &[0; 4]));
        assert_eq!(run(&b, &[3], limits), vec![Owned::Binary(vec![0; 10])]);
    }

    #[test]
    fn many_small_fragments() {
        let mut b = frame(false, OpCode::Binary, &[1; 64]);
        for _ in 0..1000 {
            b.extend(frame(false, OpCode::Continuation, &[1; 64]));
        }
        b.extend(frame(true, OpCode::Continuation, &[1; 64]));
        assert_eq!(run(&b, &[4096], LIMITS), vec![Owned::Binary(vec![1; 64 * 1002])]);
    }

    #[test]
    fn close_payload_rules() {
        type Case<'a> = (&'a [u8], Result<Option<u16>, u16>);
        let cases: &[Case] = &[
            (b"", Ok(None)),
            (&[0x03], Err(1002)),
            (&[0x03, 0xE8], Ok(Some(1000))),
            (&[0x03, 0xE9], Ok(Some(1001))),
            (&[0x03, 0xEB], Ok(Some(1003))),
            (&[0x03, 0xEC], Err(1002)), // 1004
            (&[0x03, 0xED], Err(1002)), // 1005
            (&[0x03, 0xEE], Err(1002)), // 1006
            (&[0x03, 0xEF], Ok(Some(1007))),
            (&[0x03, 0xF3], Ok(Some(1011))),
            (&[0x03, 0xF7], Err(1002)), // 1015
            (&[0x03, 0xF8], Err(1002)), // 1016
            (&[0x00, 0x00], Err(1002)),
            (&[0x03, 0xE7], Err(1002)), // 999
            (&[0x07, 0xD0], Err(1002)), // 2000
            (&[0x0B, 0xB7], Err(1002)), // 2999
            (&[0x0B, 0xB8], Ok(Some(3000))),
            (&[0x13, 0x87], Ok(Some(4999))),
            (&[0x13, 0x88], Err(1002)), // 5000
            (&[0xFF, 0xFF], Err(1002)),
            (&[0x03, 0xE8, 0xFF], Err(1007)),
        ];
        for (payload, want) in cases {
            let got = parse_close_payload(payload)
                .map(|c| c.map(|(c, _)| c))
                .map_err(|e| e.code);
            assert_eq!(&got, want, "{payload:?}");
        }
    }

    #[test]
    fn idle_after_messages_owns_nothing() {
        let mut b = frame(false, OpCode::Text, b"he");
        b.extend(frame(true, OpCode::Continuation, b"llo"));
        b.extend(frame(true, OpCode::Ping, b"x"));
        let mut dec = Decoder::new();
        // Split mid-frame so state is allocated, then complete.
        let (a, rest) = b.split_at(5);
        let mut a = a.to_vec();
        let mut rest = rest.to_vec();
        assert!(matches!(dec.decode(&mut a, &LIMITS), Ok((5, None))));
        assert!(!dec.is_idle());
        let mut pos = 0;
        let mut seen = 0;
        loop {
            let (used, m) = dec.decode(&mut rest[pos..], &LIMITS).unwrap();
            pos += used;
            if m.is_none() {
                break;
            }
            seen += 1;
        }
        assert_eq!(seen, 2);
        assert!(dec.is_idle());
        assert_eq!(dec.heap_bytes(), 0);
    }
}
