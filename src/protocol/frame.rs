//! RFC 6455 §5.2 frame headers: decode (client → server, masked) and encode
//! (server → client, unmasked; masked encoding exists for test clients and
//! load generators), plus in-place unmasking.

use super::ProtocolError;

/// Frame opcodes that RFC 6455 defines; every other value is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpCode {
    Continuation = 0x0,
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

impl OpCode {
    pub fn from_u8(v: u8) -> Option<OpCode> {
        Some(match v {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    pub fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    pub opcode: OpCode,
    /// `None` for unmasked frames (only ever produced by `parse_header_any`).
    pub mask: Option<[u8; 4]>,
    pub len: u64,
}

/// The longest header: 2 bytes + 8 bytes of length + 4 bytes of mask.
pub const MAX_HEADER_LEN: usize = 14;
/// Control frames carry at most 125 bytes (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Parses a client frame header from the start of `buf`.
///
/// Returns `Ok(None)` when `buf` holds only part of the header, and
/// `Ok(Some((header, header_len)))` otherwise. Every header-level rule of
/// RFC 6455 §5 that a server must enforce is checked here, before any payload
/// is looked at, so a hostile length never reaches an allocator.
pub fn parse_header(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
    match parse_header_any(buf)? {
        Some((h, _)) if h.mask.is_none() => Err(ProtocolError::protocol("unmasked client frame")),
        other => Ok(other),
    }
}

/// Like [`parse_header`] but accepts unmasked frames too (a client reading
/// server frames uses this).
pub fn parse_header_any(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let b0 = buf[0];
    let b1 = buf[1];
    if b0 & 0x70 != 0 {
        return Err(ProtocolError::protocol("reserved bits set without an extension"));
    }
    let opcode = OpCode::from_u8(b0 & 0x0F).ok_or(ProtocolError::protocol("reserved opcode"))?;
    let fin = b0 & 0x80 != 0;
    let masked = b1 & 0x80 != 0;
    let len7 = b1 & 0x7F;
    let ext = match len7 {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let hlen = 2 + ext + if masked { 4 } else { 0 };
    if opcode.is_control() {
        // Checked before the extended length is even read: a control frame
        // can never legally use one.
        if !fin {
            return Err(ProtocolError::protocol("fragmented control frame"));
        }
        if len7 > MAX_CONTROL_PAYLOAD as u8 {
            return Err(ProtocolError::protocol("control frame payload over 125 bytes"));
        }
    }
    if buf.len() < hlen {
        return Ok(None);
    }
    let len = match ext {
        0 => len7 as u64,
        2 => {
            let l = u16::from_be_bytes([buf[2], buf[3]]) as u64;
            if l < 126 {
                return Err(ProtocolError::protocol("non-minimal payload length"));
            }
            l
        }
        _ => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            let l = u64::from_be_bytes(b);
            if l >> 63 != 0 {
                return Err(ProtocolError::protocol("payload length with the high bit set"));
            }
            if l <= u16::MAX as u64 {
                return Err(ProtocolError::protocol("non-minimal payload length"));
            }
            l
        }
    };
    let mask = if masked {
        let m = 2 + ext;
        Some([buf[m], buf[m + 1], buf[m + 2], buf[m + 3]])
    } else {
        None
    };
    Ok(Some((FrameHeader { fin, opcode, mask, len }, hlen)))
}

/// Length of the header [`encode_header`] writes for a payload of `len`.
pub fn header_len(len: usize, masked: bool) -> usize {
    let base = if len < 126 {
        2
    } else if len <= u16::MAX as usize {
        4
    } else {
        10
    };
    base + if masked { 4 } else { 0 }
}

/// Appends a frame header (unmasked when `mask` is `None`) to `out`.
pub fn encode_header(out: &mut Vec<u8>, fin: bool, opcode: OpCode, len: usize, mask: Option<[u8; 4]>) {
    let b0 = (if fin { 0x80 } else { 0 }) | opcode as u8;
    let mbit = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.extend_from_slice(&[b0, mbit | len as u8]);
    } else if len <= u16::MAX as usize {
        let l = (len as u16).to_be_bytes();
        out.extend_from_slice(&[b0, mbit | 126, l[0], l[1]]);
    } else {
        out.extend_from_slice(&[b0, mbit | 127]);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    if let Some(m) = mask {
        out.extend_from_slice(&m);
    }
}

/// Appends a whole unmasked server frame.
pub fn encode_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    out.reserve(header_len(payload.len(), false) + payload.len());
    encode_header(out, true, opcode, payload.len(), None);
    out.extend_from_slice(payload);
}

/// Appends a whole masked client frame (tests, fuzzing and load generators).
pub fn encode_frame_masked(out: &mut Vec<u8>, fin: bool, opcode: OpCode, payload: &[u8], mask: [u8; 4]) {
    encode_header(out, fin, opcode, payload.len(), Some(mask));
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask, 0);
}

/// Appends a close frame with `code` and `reason` (reason cut to fit 125 bytes
/// on a character boundary).
pub fn encode_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason.as_bytes()[..end];
    encode_header(out, true, OpCode::Close, 2 + reason.len(), None);
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(reason);
}

/// XORs `buf` with `mask`, as if `buf` started `offset` bytes into the
/// payload. Works eight bytes at a time: the compiler turns the inner loop
/// into vector instructions, with no `unsafe` needed.
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    let r = offset & 3;
    let key = [mask[r], mask[(r + 1) & 3], mask[(r + 2) & 3], mask[(r + 3) & 3]];
    let word = u64::from_ne_bytes([key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3]]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        let v = u64::from_ne_bytes(b) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked_hello() -> Vec<u8> {
        // RFC 6455 §5.7: a single-frame masked text message "Hello".
        vec![0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
    }

    #[test]
    fn rfc_single_frame_masked_text() {
        let mut f = masked_hello();
        let (h, n) = parse_header(&f).unwrap().unwrap();
        assert_eq!(n, 6);
        assert!(h.fin);
        assert_eq!(h.opcode, OpCode::Text);
        assert_eq!(h.len, 5);
        apply_mask(&mut f[n..], h.mask.unwrap(), 0);
        assert_eq!(&f[n..], b"Hello");
    }

    #[test]
    fn rfc_unmasked_examples() {
        // §5.7: unmasked "Hello", fragmented "Hel"+"lo", unmasked ping.
        let cases: &[(&[u8], bool, OpCode, u64)] = &[
            (&[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f], true, OpCode::Text, 5),
            (&[0x01, 0x03, 0x48, 0x65, 0x6c], false, OpCode::Text, 3),
            (&[0x80, 0x02, 0x6c, 0x6f], true, OpCode::Continuation, 2),
            (&[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f], true, OpCode::Ping, 5),
        ];
        for (bytes, fin, op, len) in cases {
            let (h, n) = parse_header_any(bytes).unwrap().unwrap();
            assert_eq!((h.fin, h.opcode, h.len, n), (*fin, *op, *len, 2));
            // A server must refuse them: they are not masked.
            assert_eq!(parse_header(bytes).unwrap_err().code, 1002);
        }
        // 256 bytes and 64 KiB binary messages in a single unmasked frame.
        let (h, n) = parse_header_any(&[0x82, 0x7E, 0x01, 0x00]).unwrap().unwrap();
        assert_eq!((h.len, n), (256, 4));
        let (h, n) = parse_header_any(&[0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0])
            .unwrap()
            .unwrap();
        assert_eq!((h.len, n), (65536, 10));
    }

    #[test]
    fn header_rules() {
        let cases: &[(&[u8], Result<bool, u16>)] = &[
            // (bytes, Ok(complete) or Err(close code))
            (&[], Ok(false)),
            (&[0x81], Ok(false)),
            (&[0x81, 0x85, 1, 2, 3], Ok(false)),
            (&[0x81, 0x85, 1, 2, 3, 4], Ok(true)),
            (&[0xC1, 0x80, 0, 0, 0, 0], Err(1002)),         // RSV1
            (&[0xA1, 0x80, 0, 0, 0, 0], Err(1002)),         // RSV2
            (&[0x91, 0x80, 0, 0, 0, 0], Err(1002)),         // RSV3
            (&[0x83, 0x80, 0, 0, 0, 0], Err(1002)),         // reserved data opcode
            (&[0x8B, 0x80, 0, 0, 0, 0], Err(1002)),         // reserved control opcode
            (&[0x09, 0x80, 0, 0, 0, 0], Err(1002)),         // fragmented ping
            (&[0x89, 0xFE], Err(1002)),                     // ping with 16-bit length: refused at once
            (&[0x88, 0xFE, 0, 126], Err(1002)),             // close over 125
            (&[0x82, 0x7E, 0, 1], Err(1002)),               // unmasked
            (&[0x82, 0xFE, 0, 125, 0, 0, 0, 0], Err(1002)), // non-minimal 16-bit
            (&[0x82, 0xFF, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0, 0, 0], Err(1002)), // non-minimal 64-bit
            (&[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], Err(1002)), // MSB set
            (&[0x82, 0xFF, 0, 0, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0], Ok(true)), // 2^40: header is fine
        ];
        for (bytes, want) in cases {
            let got = parse_header(bytes);
            match (got, want) {
                (Ok(r), Ok(complete)) => assert_eq!(r.is_some(), *complete, "{bytes:?}"),
                (Err(e), Err(code)) => assert_eq!(e.code, *code, "{bytes:?}"),
                (got, want) => panic!("{bytes:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn encode_roundtrip_all_lengths() {
        for len in [0usize, 1, 125, 126, 127, 65535, 65536, 70000] {
            let payload = vec![0xABu8; len];
            let mut out = Vec::new();
            encode_frame_masked(&mut out, true, OpCode::Binary, &payload, [1, 2, 3, 4]);
            let (h, n) = parse_header(&out).unwrap().unwrap();
            assert_eq!(n, header_len(len, true));
            assert_eq!(h.len as usize, len);
            apply_mask(&mut out[n..], h.mask.unwrap(), 0);
            assert_eq!(&out[n..], &payload[..]);
            let mut plain = Vec::new();
            encode_frame(&mut plain, OpCode::Binary, &payload);
            let (h, n) = parse_header_any(&plain).unwrap().unwrap();
            assert_eq!((h.len as usize, n, h.mask), (len, header_len(len, false), None));
        }
    }

    #[test]
    fn mask_any_offset_and_length_matches_bytewise() {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        for len in 0..40 {
            for off in 0..8 {
                let orig: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(31)).collect();
                let mut fast = orig.clone();
                apply_mask(&mut fast, mask, off);
                let slow: Vec<u8> = orig.iter().enumerate().map(|(i, b)| b ^ mask[(i + off) & 3]).collect();
                assert_eq!(fast, slow, "len {len} off {off}");
            }
        }
    }

    #[test]
    fn close_reason_is_cut_on_a_char_boundary() {
        let reason = "é".repeat(100); // 200 bytes
        let mut out = Vec::new();
        encode_close(&mut out, 1000, &reason);
        let (h, n) = parse_header_any(&out).unwrap().unwrap();
        assert!(h.len as usize <= MAX_CONTROL_PAYLOAD);
        assert!(std::str::from_utf8(&out[n + 2..]).is_ok());
    }
}
