//! What goes inside the 3968-byte m (not fixed by the spec; this follows the reference).
//!
//! ```text
//! X (forward) = LEB128(len codec) ‖ codec ‖ u8(#SURBs) ‖ SURB_1 … SURB_n ‖ body
//! X (reply)   = 0x00 ‖ body                    (empty codec, no SURB count)
//! X (cover)   = LEB128(len) ‖ "/mix/cover/1.0.0" ‖ body
//! m = BE16(padLen) ‖ 0^padLen ‖ X [‖ BE32(seqNo)]      (the trailer only with Padding::SeqNo)
//! ```
//!
//! Decoding checks every length against the bytes present and never allocates more than the
//! SURBs it returns (at most [`MAX_SURBS`]).

use crate::crypto::symmetric::sha256;
use crate::error::MessageError;
use crate::format::Padding;
use crate::params::{MESSAGE_SIZE, SURB_SIZE};
use crate::surb::Surb;

/// The origin codec of cover (loop) messages, consumed by the exit.
pub const COVER_CODEC: &str = "/mix/cover/1.0.0";
/// The most SURBs one message can carry (6 would not fit).
pub const MAX_SURBS: usize = 5;
/// The longest codec a two-byte LEB128 length can describe. The reference decodes only
/// lengths below 128, so keep protocol ids shorter than that to reach its exits.
pub const MAX_CODEC_LEN: usize = (1 << 14) - 1;

const PAD_LEN_SIZE: usize = 2;
const SEQNO_SIZE: usize = 4;

impl Padding {
    /// The room for X inside m.
    pub const fn data_size(self) -> usize {
        match self {
            Self::SeqNo => MESSAGE_SIZE - PAD_LEN_SIZE - SEQNO_SIZE,
            Self::Plain => MESSAGE_SIZE - PAD_LEN_SIZE,
        }
    }
}

/// A decoded forward (or cover) message, borrowing from m.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ForwardMessage<'a> {
    /// The origin protocol id; [`COVER_CODEC`] for loop messages.
    pub codec: &'a str,
    /// SURBs for the reply (none for cover).
    pub surbs: Vec<Surb>,
    /// The application bytes (random filler for cover).
    pub body: &'a [u8],
    /// The trailer of [`Padding::SeqNo`]; receivers do not interpret it.
    pub seqno: Option<u32>,
}

impl ForwardMessage<'_> {
    /// Whether this is a cover (loop) message.
    pub fn is_cover(&self) -> bool {
        self.codec == COVER_CODEC
    }
}

/// The largest body a forward message with `codec` and `surbs` SURBs can carry.
pub fn max_message_size(
    padding: Padding,
    codec: &str,
    surbs: usize,
) -> Result<usize, MessageError> {
    check_surb_count(surbs)?;
    let overhead = codec_field_len(codec)? + 1 + surbs * SURB_SIZE;
    Ok(padding.data_size().saturating_sub(overhead))
}

/// The largest reply body a SURB can carry.
pub const fn max_reply_size(padding: Padding) -> usize {
    padding.data_size() - 1
}

/// Frames a forward message into `out`. `seqno` is used only by [`Padding::SeqNo`].
pub fn encode_forward(
    padding: Padding,
    seqno: u32,
    codec: &str,
    surbs: &[Surb],
    body: &[u8],
    out: &mut [u8; MESSAGE_SIZE],
) -> Result<(), MessageError> {
    check_surb_count(surbs.len())?;
    let x_len = codec_field_len(codec)? + 1 + surbs.len() * SURB_SIZE + body.len();
    let x = frame(padding, seqno, x_len, out)?;
    let mut rest = write_codec(codec, x);
    rest[0] = surbs.len() as u8;
    rest = &mut rest[1..];
    for surb in surbs {
        let (slot, tail) = rest.split_first_chunk_mut::<SURB_SIZE>().expect("length checked");
        surb.write_to(slot);
        rest = tail;
    }
    rest.copy_from_slice(body);
    Ok(())
}

/// Frames a reply (sent through a SURB) into `out`.
pub fn encode_reply(
    padding: Padding,
    seqno: u32,
    body: &[u8],
    out: &mut [u8; MESSAGE_SIZE],
) -> Result<(), MessageError> {
    let x = frame(padding, seqno, 1 + body.len(), out)?;
    x[0] = 0;
    x[1..].copy_from_slice(body);
    Ok(())
}

/// Frames a cover message with `filler` (random bytes, up to the cover maximum) into `out`.
pub fn encode_cover(
    padding: Padding,
    seqno: u32,
    filler: &[u8],
    out: &mut [u8; MESSAGE_SIZE],
) -> Result<(), MessageError> {
    let x = frame(padding, seqno, codec_field_len(COVER_CODEC)? + filler.len(), out)?;
    write_codec(COVER_CODEC, x).copy_from_slice(filler);
    Ok(())
}

/// Parses a forward or cover message out of m.
pub fn decode_forward(
    padding: Padding,
    m: &[u8; MESSAGE_SIZE],
) -> Result<ForwardMessage<'_>, MessageError> {
    let (x, seqno) = unframe(padding, m)?;
    let (codec, rest) = read_codec(x)?;
    if codec == COVER_CODEC {
        return Ok(ForwardMessage { codec, surbs: Vec::new(), body: rest, seqno });
    }
    let (&count, mut rest) =
        rest.split_first().ok_or(MessageError::Truncated { field: "SURB count" })?;
    let count = usize::from(count);
    check_surb_count(count)?;
    if rest.len() < count * SURB_SIZE {
        return Err(MessageError::Truncated { field: "SURBs" });
    }
    let mut surbs = Vec::with_capacity(count);
    for _ in 0..count {
        let (surb, tail) = rest.split_first_chunk::<SURB_SIZE>().expect("length checked");
        surbs.push(Surb::from_bytes(surb));
        rest = tail;
    }
    Ok(ForwardMessage { codec, surbs, body: rest, seqno })
}

/// Parses a reply out of m; returns the body and the [`Padding::SeqNo`] trailer.
pub fn decode_reply(
    padding: Padding,
    m: &[u8; MESSAGE_SIZE],
) -> Result<(&[u8], Option<u32>), MessageError> {
    let (x, seqno) = unframe(padding, m)?;
    match x.split_first() {
        Some((0, body)) => Ok((body, seqno)),
        Some(_) => Err(MessageError::NotAReply),
        None => Err(MessageError::Truncated { field: "codec length" }),
    }
}

/// The reference's sequence number for [`Padding::SeqNo`]: first4(SHA-256(peer id)) +
/// first4(SHA-256(message ‖ BE64(unix ms))) mod (2³² − 1). Receivers ignore it; any value works.
pub fn reference_seqno(peer_id: &[u8], message: &[u8], unix_ms: u64) -> u32 {
    let first4 = |h: [u8; 32]| u64::from(u32::from_be_bytes([h[0], h[1], h[2], h[3]]));
    let sum = first4(sha256(&[peer_id])) + first4(sha256(&[message, &unix_ms.to_be_bytes()]));
    (sum % u64::from(u32::MAX)) as u32
}

fn check_surb_count(count: usize) -> Result<(), MessageError> {
    if count > MAX_SURBS {
        return Err(MessageError::TooManySurbs { count, max: MAX_SURBS });
    }
    Ok(())
}

fn codec_field_len(codec: &str) -> Result<usize, MessageError> {
    match codec.len() {
        len @ 0..128 => Ok(1 + len),
        len @ 128..=MAX_CODEC_LEN => Ok(2 + len),
        len => Err(MessageError::CodecTooLong { len, max: MAX_CODEC_LEN }),
    }
}

/// Writes the padding (and trailer) for an X of `x_len` bytes and returns X's slot.
fn frame(
    padding: Padding,
    seqno: u32,
    x_len: usize,
    out: &mut [u8; MESSAGE_SIZE],
) -> Result<&mut [u8], MessageError> {
    let data_size = padding.data_size();
    if x_len > data_size {
        return Err(MessageError::TooLarge { len: x_len, max: data_size });
    }
    let pad_len = data_size - x_len;
    out.fill(0);
    out[..PAD_LEN_SIZE].copy_from_slice(&(pad_len as u16).to_be_bytes());
    if padding == Padding::SeqNo {
        out[PAD_LEN_SIZE + data_size..].copy_from_slice(&seqno.to_be_bytes());
    }
    Ok(&mut out[PAD_LEN_SIZE + pad_len..PAD_LEN_SIZE + data_size])
}

fn unframe(padding: Padding, m: &[u8; MESSAGE_SIZE]) -> Result<(&[u8], Option<u32>), MessageError> {
    let data_size = padding.data_size();
    let pad_len = usize::from(u16::from_be_bytes([m[0], m[1]]));
    if pad_len > data_size {
        return Err(MessageError::PaddingLength { pad_len, max: data_size });
    }
    let data = &m[PAD_LEN_SIZE..PAD_LEN_SIZE + data_size];
    let (zeros, x) = data.split_at(pad_len);
    if zeros.iter().any(|&b| b != 0) {
        return Err(MessageError::NonZeroPadding);
    }
    let seqno = (padding == Padding::SeqNo).then(|| {
        let t = &m[PAD_LEN_SIZE + data_size..];
        u32::from_be_bytes([t[0], t[1], t[2], t[3]])
    });
    Ok((x, seqno))
}

/// Writes the codec name with its length as minimal LEB128 of one or two bytes. This is a field
/// of the payload format, inside the encrypted packet; it is not stream framing (that is
/// `libp2p_mix::framing`, a layer above this crate) and shares no code with it on purpose.
fn write_codec<'a>(codec: &str, x: &'a mut [u8]) -> &'a mut [u8] {
    let len = codec.len();
    let prefix = if len < 128 {
        x[0] = len as u8;
        1
    } else {
        x[0] = (len as u8 & 0x7f) | 0x80;
        x[1] = (len >> 7) as u8;
        2
    };
    x[prefix..prefix + len].copy_from_slice(codec.as_bytes());
    &mut x[prefix + len..]
}

/// Reads a minimal LEB128 length of one or two bytes and the codec it describes.
fn read_codec(x: &[u8]) -> Result<(&str, &[u8]), MessageError> {
    let (len, prefix) = match x {
        [] => return Err(MessageError::Truncated { field: "codec length" }),
        [b0, ..] if b0 & 0x80 == 0 => (usize::from(*b0), 1),
        [_] => return Err(MessageError::Truncated { field: "codec length" }),
        [b0, b1, ..] if b1 & 0x80 == 0 && *b1 != 0 => {
            (usize::from(b0 & 0x7f) | (usize::from(*b1) << 7), 2)
        }
        _ => return Err(MessageError::CodecLength),
    };
    let rest = &x[prefix..];
    if rest.len() < len {
        return Err(MessageError::Truncated { field: "codec" });
    }
    let (codec, rest) = rest.split_at(len);
    let codec = core::str::from_utf8(codec).map_err(|_| MessageError::CodecNotUtf8)?;
    Ok((codec, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_example_sizes() {
        // LIBP2P-MIX notes §3.6: ping with one SURB leaves 3210 (P1) / 3214 (P2) bytes.
        assert_eq!(max_message_size(Padding::SeqNo, "/ipfs/ping/1.0.0", 1), Ok(3210));
        assert_eq!(max_message_size(Padding::Plain, "/ipfs/ping/1.0.0", 1), Ok(3214));
        assert!(max_message_size(Padding::Plain, "x", 6).is_err());
    }

    #[test]
    fn long_codecs_use_two_byte_lengths() {
        let codec = "c".repeat(300);
        let mut m = [0u8; MESSAGE_SIZE];
        encode_forward(Padding::Plain, 0, &codec, &[], b"hi", &mut m).unwrap();
        let decoded = decode_forward(Padding::Plain, &m).unwrap();
        assert_eq!((decoded.codec, decoded.body), (codec.as_str(), &b"hi"[..]));
    }

    #[test]
    fn rejects_bad_lengths() {
        let mut m = [0u8; MESSAGE_SIZE];
        assert!(matches!(
            encode_reply(Padding::Plain, 0, &[1; 3966], &mut m),
            Err(MessageError::TooLarge { len: 3967, max: 3966 })
        ));
        encode_reply(Padding::Plain, 0, &[1; 10], &mut m).unwrap();
        let mut bad = m;
        bad[0] = 0xff;
        assert!(matches!(
            decode_reply(Padding::Plain, &bad),
            Err(MessageError::PaddingLength { .. })
        ));
        let mut bad = m;
        bad[5] = 1;
        assert_eq!(decode_reply(Padding::Plain, &bad), Err(MessageError::NonZeroPadding));
        // Read as a forward message, the reply body's first byte (1) becomes a SURB count.
        assert_eq!(
            decode_forward(Padding::Plain, &m),
            Err(MessageError::Truncated { field: "SURBs" })
        );
        // A forward message whose SURB count promises more than is there.
        encode_forward(Padding::Plain, 0, "/p", &[], &[], &mut m).unwrap();
        let count_at = MESSAGE_SIZE - 1;
        m[count_at] = 1;
        assert_eq!(
            decode_forward(Padding::Plain, &m),
            Err(MessageError::Truncated { field: "SURBs" })
        );
        m[count_at] = 9;
        assert!(matches!(
            decode_forward(Padding::Plain, &m),
            Err(MessageError::TooManySurbs { .. })
        ));
    }

    #[test]
    fn cover_has_no_surb_count() {
        let mut m = [0u8; MESSAGE_SIZE];
        encode_cover(Padding::SeqNo, 7, &[0xaa; 100], &mut m).unwrap();
        let d = decode_forward(Padding::SeqNo, &m).unwrap();
        assert!(d.is_cover());
        assert_eq!((d.body.len(), d.seqno), (100, Some(7)));
    }
}
