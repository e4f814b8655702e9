//! One frame: what one mix message (opener to acceptor) or one SURB reply (back) carries.
//!
//! Every exit reads the mix messages it delivers in clear, so nothing an exit sees may link two
//! frames of one stream. Every frame of a direction has the same length, and apart from the
//! version byte every byte of it is fresh and looks random:
//!
//! ```text
//! version u8 (2) | label [16] | E [32] | envelope [44 + 16] | ChaCha20-Poly1305(items ‖ 0…) | mac [16]
//! ```
//!
//! * `label` names the frame to its receiver only: HMAC-SHA-256 over the sequence number, under
//!   the direction's label key, cut to 16 bytes. The receiver keeps a bounded window of the
//!   labels it expects (`labels`), which gives it the stream and the sequence number;
//!   neither is written.
//! * An *opening* frame (the opener's, until the acceptor answers) carries a fresh X25519
//!   ephemeral key `E`, written as its Elligator 2 representative (`crate::elligator`: random
//!   bytes to an observer), and an envelope sealed under a key from `X25519(e, acceptor key)`:
//!   the stream secret S, the sequence number and the Unix second.
//!   The acceptor derives every key of the stream from S. In other frames both fields are
//!   random bytes.
//! * The items are sealed under the direction's key, nonce `0^8 ‖ seq`, with the 109 bytes
//!   before them as associated data, and padded with zeros to the frame's length.
//!
//! The plaintext is a sequence of items, each a type byte and its fields, at most one of each
//! type; a zero type byte ends them (the rest is padding):
//!
//! ```text
//! 0x01 OPEN   flags u8 (bit 0: a message, the opener reads nothing back)
//! 0x03 ACK    next u32 | window_end u32 | largest_seq u32 | labels_ahead u16 | ack_delay_ms u16
//!             | sample_end u32 | sample_len u16 | sample_got u16
//!             | count u8 | count × (block u32 | shards_received u32 bitmap, all ones: complete)
//! 0x04 SURBS  lifetime_ms u32 | count u8 | count × SURB (734 bytes)        opener only
//! 0x05 WANT   held u16 | wanted u16 | surbs_received u32                   acceptor only
//! 0x06 RESET  code u8
//! 0x07 AHEAD  labels u16   the sender asks the receiver to expect this many labels above the
//!             largest sequence number it acknowledged (it runs further ahead than announced)
//! 0x02 DATA   block u32 | index u8 | k u8 | n u8 | flags u8 (bit 0: compressed, bit 1: last
//!             block) | len u32 | shard_len u16 | shard
//! ```
//!
//! Integers are big-endian. Every length is checked against the bytes present before anything
//! is allocated, so a frame of a few kilobytes can never ask for more.

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use mix_sphinx::SURB_SIZE;
use zeroize::Zeroizing;

/// The frame format version.
pub const VERSION: u8 = 2;
/// The per-frame label.
pub const LABEL_LEN: usize = 16;
/// The opener's ephemeral key (or random bytes).
pub const EPHEMERAL_LEN: usize = 32;
/// The opening envelope's plaintext: the stream secret, the sequence number, the Unix second.
pub const OPENING_LEN: usize = 32 + 4 + 8;
/// An AEAD tag.
pub const MAC_LEN: usize = 16;
/// The envelope as written (sealed, or random bytes).
pub const ENVELOPE_LEN: usize = OPENING_LEN + MAC_LEN;
/// Bytes before the items' ciphertext (their associated data).
pub const HEADER_LEN: usize = 1 + LABEL_LEN + EPHEMERAL_LEN + ENVELOPE_LEN;
/// Header and tag: what every frame spends before its items.
pub const FRAME_OVERHEAD: usize = HEADER_LEN + MAC_LEN;
/// A DATA item's fields before its shard.
pub const DATA_HEADER_LEN: usize = 1 + 4 + 1 + 1 + 1 + 1 + 4 + 2;
/// Shards a block may have (the acknowledgement's bitmap has 32 bits).
pub const MAX_SHARDS: u8 = 32;
/// Block entries one ACK carries at most.
pub const MAX_ACK_BLOCKS: usize = 64;
/// SURBs one SURBS item carries at most.
pub const MAX_FRAME_SURBS: usize = 5;
/// The longest frame accepted: a mix message is shorter.
pub const MAX_FRAME_LEN: usize = 4096;
/// An ACK's bitmap for a block that is complete.
pub const COMPLETE: u32 = u32::MAX;

const T_PAD: u8 = 0x00;
const T_OPEN: u8 = 0x01;
const T_DATA: u8 = 0x02;
const T_ACK: u8 = 0x03;
const T_SURBS: u8 = 0x04;
const T_WANT: u8 = 0x05;
const T_AHEAD: u8 = 0x07;
const T_RESET: u8 = 0x06;

/// OPEN flag: the opener sends one message and reads nothing back.
pub(crate) const OPEN_MESSAGE: u8 = 1;
/// DATA flag: the block is compressed.
pub(crate) const DATA_COMPRESSED: u8 = 1;
/// DATA flag: the last block of its direction.
pub(crate) const DATA_FIN: u8 = 2;

/// Why bytes are not a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Shorter than a header and tag, or longer than any frame.
    #[error("frame of {0} bytes is too short or too long")]
    Length(usize),
    /// An unknown version.
    #[error("unknown frame version {0}")]
    Version(u8),
    /// The AEAD did not open: not for this stream, or altered.
    #[error("frame authentication failed")]
    Authentication,
    /// The items do not parse.
    #[error("malformed {0}")]
    Malformed(&'static str),
}

/// A block's shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Data {
    pub(crate) block: u32,
    pub(crate) index: u8,
    pub(crate) k: u8,
    pub(crate) n: u8,
    pub(crate) flags: u8,
    /// The coded block's length (before it was cut into `k` shards).
    pub(crate) len: u32,
    pub(crate) shard: Vec<u8>,
}

impl Data {
    pub(crate) fn encoded_len(&self) -> usize {
        DATA_HEADER_LEN + self.shard.len()
    }
}

/// What the receiving side of a direction has.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Ack {
    /// Every block below this one is complete.
    pub(crate) next: u32,
    /// The sender may send blocks below this one.
    pub(crate) window_end: u32,
    /// The highest frame sequence number received.
    pub(crate) largest_seq: u32,
    /// Labels the receiver expects above `largest_seq`: frames further ahead must say which
    /// stream they belong to (an opening envelope).
    pub(crate) labels_ahead: u16,
    /// How long after receiving `largest_seq` this acknowledgement was made.
    pub(crate) ack_delay_ms: u16,
    /// A loss sample: of the `sample_len` frames numbered below `sample_end` (far enough
    /// below `largest_seq` that late frames have had time to arrive), `sample_got` arrived.
    pub(crate) sample_end: u32,
    pub(crate) sample_len: u16,
    pub(crate) sample_got: u16,
    /// Blocks at or above `next`: which shards arrived ([`COMPLETE`]: the whole block).
    pub(crate) blocks: Vec<(u32, u32)>,
}

impl Ack {
    pub(crate) fn encoded_len(&self) -> usize {
        1 + 4 + 4 + 4 + 2 + 2 + 8 + 1 + 8 * self.blocks.len().min(MAX_ACK_BLOCKS)
    }
}

/// SURBs for the acceptor's frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Surbs {
    /// How long the opener keeps their secrets, from when it made them.
    pub(crate) lifetime_ms: u32,
    pub(crate) surbs: Vec<SurbBytes>,
}

/// A SURB as carried in a frame (it holds the reply key, hence zeroized).
pub type SurbBytes = Zeroizing<Vec<u8>>;

/// The acceptor's SURB stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Want {
    pub(crate) held: u16,
    pub(crate) wanted: u16,
    pub(crate) received: u32,
}

/// A frame's items.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Items {
    pub(crate) open: Option<u8>,
    pub(crate) ack: Option<Ack>,
    pub(crate) surbs: Option<Surbs>,
    pub(crate) want: Option<Want>,
    pub(crate) reset: Option<u8>,
    pub(crate) ahead: Option<u16>,
    pub(crate) data: Option<Data>,
}

impl Items {
    pub(crate) fn is_empty(&self) -> bool {
        self.open.is_none()
            && self.ack.is_none()
            && self.surbs.is_none()
            && self.want.is_none()
            && self.reset.is_none()
            && self.ahead.is_none()
            && self.data.is_none()
    }

    pub(crate) fn encoded_len(&self) -> usize {
        self.open.map_or(0, |_| 2)
            + self.ack.as_ref().map_or(0, Ack::encoded_len)
            + self.surbs.as_ref().map_or(0, |s| 1 + 4 + 1 + SURB_SIZE * s.surbs.len())
            + self.want.map_or(0, |_| 1 + 2 + 2 + 4)
            + self.reset.map_or(0, |_| 2)
            + self.ahead.map_or(0, |_| 3)
            + self.data.as_ref().map_or(0, Data::encoded_len)
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        if let Some(flags) = self.open {
            out.extend_from_slice(&[T_OPEN, flags]);
        }
        if let Some(ack) = &self.ack {
            out.push(T_ACK);
            out.extend_from_slice(&ack.next.to_be_bytes());
            out.extend_from_slice(&ack.window_end.to_be_bytes());
            out.extend_from_slice(&ack.largest_seq.to_be_bytes());
            out.extend_from_slice(&ack.labels_ahead.to_be_bytes());
            out.extend_from_slice(&ack.ack_delay_ms.to_be_bytes());
            out.extend_from_slice(&ack.sample_end.to_be_bytes());
            out.extend_from_slice(&ack.sample_len.to_be_bytes());
            out.extend_from_slice(&ack.sample_got.to_be_bytes());
            let blocks = &ack.blocks[..ack.blocks.len().min(MAX_ACK_BLOCKS)];
            out.push(blocks.len() as u8);
            for (block, bitmap) in blocks {
                out.extend_from_slice(&block.to_be_bytes());
                out.extend_from_slice(&bitmap.to_be_bytes());
            }
        }
        if let Some(surbs) = &self.surbs {
            out.push(T_SURBS);
            out.extend_from_slice(&surbs.lifetime_ms.to_be_bytes());
            out.push(surbs.surbs.len() as u8);
            for surb in &surbs.surbs {
                out.extend_from_slice(surb);
            }
        }
        if let Some(want) = self.want {
            out.push(T_WANT);
            out.extend_from_slice(&want.held.to_be_bytes());
            out.extend_from_slice(&want.wanted.to_be_bytes());
            out.extend_from_slice(&want.received.to_be_bytes());
        }
        if let Some(code) = self.reset {
            out.extend_from_slice(&[T_RESET, code]);
        }
        if let Some(labels) = self.ahead {
            out.push(T_AHEAD);
            out.extend_from_slice(&labels.to_be_bytes());
        }
        if let Some(d) = &self.data {
            out.push(T_DATA);
            out.extend_from_slice(&d.block.to_be_bytes());
            out.extend_from_slice(&[d.index, d.k, d.n, d.flags]);
            out.extend_from_slice(&d.len.to_be_bytes());
            out.extend_from_slice(&(d.shard.len() as u16).to_be_bytes());
            out.extend_from_slice(&d.shard);
        }
        out
    }

    pub(crate) fn decode(mut bytes: &[u8]) -> Result<Self, FrameError> {
        let mut items = Self::default();
        while let Some((&kind, rest)) = bytes.split_first() {
            bytes = rest;
            match kind {
                T_PAD => break,
                T_OPEN => {
                    let mut r = Reader(&mut bytes, "OPEN");
                    set(&mut items.open, r.u8()?, "OPEN")?;
                }
                T_ACK => {
                    let mut r = Reader(&mut bytes, "ACK");
                    let mut ack = Ack {
                        next: r.u32()?,
                        window_end: r.u32()?,
                        largest_seq: r.u32()?,
                        labels_ahead: r.u16()?,
                        ack_delay_ms: r.u16()?,
                        sample_end: r.u32()?,
                        sample_len: r.u16()?,
                        sample_got: r.u16()?,
                        blocks: Vec::new(),
                    };
                    if ack.sample_got > ack.sample_len {
                        return Err(FrameError::Malformed("ACK"));
                    }
                    let count = usize::from(r.u8()?);
                    if count > MAX_ACK_BLOCKS {
                        return Err(FrameError::Malformed("ACK"));
                    }
                    r.need(8 * count)?;
                    ack.blocks.reserve_exact(count);
                    for _ in 0..count {
                        ack.blocks.push((r.u32()?, r.u32()?));
                    }
                    set(&mut items.ack, ack, "ACK")?;
                }
                T_SURBS => {
                    let mut r = Reader(&mut bytes, "SURBS");
                    let lifetime_ms = r.u32()?;
                    let count = usize::from(r.u8()?);
                    if count > MAX_FRAME_SURBS {
                        return Err(FrameError::Malformed("SURBS"));
                    }
                    r.need(SURB_SIZE * count)?;
                    let surbs = (0..count)
                        .map(|_| r.take(SURB_SIZE).map(|s| Zeroizing::new(s.to_vec())))
                        .collect::<Result<_, _>>()?;
                    set(&mut items.surbs, Surbs { lifetime_ms, surbs }, "SURBS")?;
                }
                T_WANT => {
                    let mut r = Reader(&mut bytes, "WANT");
                    let want = Want { held: r.u16()?, wanted: r.u16()?, received: r.u32()? };
                    set(&mut items.want, want, "WANT")?;
                }
                T_RESET => {
                    let mut r = Reader(&mut bytes, "RESET");
                    set(&mut items.reset, r.u8()?, "RESET")?;
                }
                T_AHEAD => {
                    let mut r = Reader(&mut bytes, "AHEAD");
                    set(&mut items.ahead, r.u16()?, "AHEAD")?;
                }
                T_DATA => {
                    let mut r = Reader(&mut bytes, "DATA");
                    let block = r.u32()?;
                    let [index, k, n, flags] = r.take(4)?.try_into().expect("4 bytes");
                    let len = r.u32()?;
                    let shard_len = usize::from(r.u16()?);
                    let shard = r.take(shard_len)?.to_vec();
                    if k == 0 || n < k || n > MAX_SHARDS || index >= n {
                        return Err(FrameError::Malformed("DATA parameters"));
                    }
                    if flags & !(DATA_COMPRESSED | DATA_FIN) != 0 {
                        return Err(FrameError::Malformed("DATA flags"));
                    }
                    if u64::from(len) > u64::from(k) * shard.len() as u64 {
                        return Err(FrameError::Malformed("DATA length"));
                    }
                    set(&mut items.data, Data { block, index, k, n, flags, len, shard }, "DATA")?;
                }
                _ => return Err(FrameError::Malformed("item type")),
            }
        }
        Ok(items)
    }
}

fn set<T>(slot: &mut Option<T>, value: T, what: &'static str) -> Result<(), FrameError> {
    if slot.replace(value).is_some() {
        return Err(FrameError::Malformed(what));
    }
    Ok(())
}

struct Reader<'a, 'b>(&'a mut &'b [u8], &'static str);

impl<'b> Reader<'_, 'b> {
    fn need(&self, n: usize) -> Result<(), FrameError> {
        if self.0.len() < n { Err(FrameError::Malformed(self.1)) } else { Ok(()) }
    }

    fn take(&mut self, n: usize) -> Result<&'b [u8], FrameError> {
        let (head, tail) = self.0.split_at_checked(n).ok_or(FrameError::Malformed(self.1))?;
        *self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, FrameError> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }

    fn u32(&mut self) -> Result<u32, FrameError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
}

/// The clear fields of a frame: its label and its `E` field (an ephemeral key in openings).
pub fn split(bytes: &[u8]) -> Result<([u8; LABEL_LEN], [u8; EPHEMERAL_LEN]), FrameError> {
    if bytes.len() < FRAME_OVERHEAD || bytes.len() > MAX_FRAME_LEN {
        return Err(FrameError::Length(bytes.len()));
    }
    if bytes[0] != VERSION {
        return Err(FrameError::Version(bytes[0]));
    }
    let label = bytes[1..1 + LABEL_LEN].try_into().expect("16 bytes");
    let e = bytes[1 + LABEL_LEN..1 + LABEL_LEN + EPHEMERAL_LEN].try_into().expect("32 bytes");
    Ok((label, e))
}

fn nonce(seq: u32) -> Nonce {
    let mut n = [0u8; 12];
    n[8..].copy_from_slice(&seq.to_be_bytes());
    Nonce::from(n)
}

/// What an opening frame tells the acceptor.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Opening {
    pub(crate) secret: Zeroizing<[u8; 32]>,
    pub(crate) seq: u32,
    pub(crate) unix_secs: u64,
}

impl std::fmt::Debug for Opening {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opening")
            .field("seq", &self.seq)
            .field("unix_secs", &self.unix_secs)
            .finish()
    }
}

/// The fields of an opening frame: the ephemeral key as written, and the envelope's key.
pub(crate) struct Envelope<'a> {
    pub(crate) ephemeral: [u8; EPHEMERAL_LEN],
    pub(crate) key: &'a [u8; 32],
    pub(crate) opening: &'a Opening,
}

/// Seals `items` into a frame of exactly `frame_len` bytes: number `seq` under `key`, named by
/// `label`. `random` fills the opening fields of a frame that is not an opening.
pub(crate) fn seal(
    key: &[u8; 32],
    label: &[u8; LABEL_LEN],
    seq: u32,
    items: &Items,
    envelope: Option<Envelope<'_>>,
    frame_len: usize,
    random: &mut dyn FnMut(&mut [u8]),
) -> Result<Vec<u8>, FrameError> {
    let body_len = frame_len.checked_sub(FRAME_OVERHEAD).ok_or(FrameError::Length(frame_len))?;
    if items.encoded_len() > body_len || frame_len > MAX_FRAME_LEN {
        return Err(FrameError::Length(frame_len));
    }
    let mut out = vec![0u8; frame_len];
    out[0] = VERSION;
    out[1..1 + LABEL_LEN].copy_from_slice(label);
    let (prefix, rest) = out[..HEADER_LEN].split_at_mut(1 + LABEL_LEN);
    match envelope {
        Some(env) => {
            let (e, sealed) = rest.split_at_mut(EPHEMERAL_LEN);
            e.copy_from_slice(&env.ephemeral);
            let (plain, mac) = sealed.split_at_mut(OPENING_LEN);
            plain[..32].copy_from_slice(env.opening.secret.as_ref());
            plain[32..36].copy_from_slice(&env.opening.seq.to_be_bytes());
            plain[36..].copy_from_slice(&env.opening.unix_secs.to_be_bytes());
            // Each envelope key seals one envelope (E is fresh every time), so nonce 0 is safe.
            // E is bound through the key; the items' AEAD binds the whole header.
            let tag = ChaCha20Poly1305::new_from_slice(env.key)
                .expect("32-byte key")
                .encrypt_inout_detached(&Nonce::default(), prefix, plain.into())
                .map_err(|_| FrameError::Authentication)?;
            mac.copy_from_slice(&tag);
        }
        None => random(rest),
    }
    let encoded = items.encode();
    let (header, body) = out.split_at_mut(HEADER_LEN);
    let (plain, mac) = body.split_at_mut(body_len);
    plain[..encoded.len()].copy_from_slice(&encoded);
    let tag = ChaCha20Poly1305::new_from_slice(key)
        .expect("32-byte key")
        .encrypt_inout_detached(&nonce(seq), header, plain.into())
        .map_err(|_| FrameError::Authentication)?;
    mac.copy_from_slice(&tag);
    Ok(out)
}

/// Opens the envelope of what may be an opening frame, under `key` (from its `E` field).
pub(crate) fn open_envelope(key: &[u8; 32], bytes: &[u8]) -> Result<Opening, FrameError> {
    split(bytes)?;
    let mut plain = Zeroizing::new([0u8; OPENING_LEN]);
    let start = 1 + LABEL_LEN + EPHEMERAL_LEN;
    plain.copy_from_slice(&bytes[start..start + OPENING_LEN]);
    let mac = &bytes[start + OPENING_LEN..HEADER_LEN];
    ChaCha20Poly1305::new_from_slice(key)
        .expect("32-byte key")
        .decrypt_inout_detached(
            &Nonce::default(),
            &bytes[..1 + LABEL_LEN],
            plain.as_mut_slice().into(),
            mac.try_into().expect("16 bytes"),
        )
        .map_err(|_| FrameError::Authentication)?;
    let mut secret = Zeroizing::new([0u8; 32]);
    secret.copy_from_slice(&plain[..32]);
    Ok(Opening {
        secret,
        seq: u32::from_be_bytes(plain[32..36].try_into().expect("4 bytes")),
        unix_secs: u64::from_be_bytes(plain[36..].try_into().expect("8 bytes")),
    })
}

/// Opens frame number `seq` under `key` and returns its items.
pub(crate) fn open(key: &[u8; 32], seq: u32, bytes: &[u8]) -> Result<Items, FrameError> {
    split(bytes)?;
    let (header, sealed) = bytes.split_at(HEADER_LEN);
    let (sealed, mac) = sealed.split_at(sealed.len() - MAC_LEN);
    let mut body = sealed.to_vec();
    ChaCha20Poly1305::new_from_slice(key)
        .expect("32-byte key")
        .decrypt_inout_detached(
            &nonce(seq),
            header,
            body.as_mut_slice().into(),
            mac.try_into().expect("16 bytes"),
        )
        .map_err(|_| FrameError::Authentication)?;
    Items::decode(&body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Items {
        Items {
            open: Some(OPEN_MESSAGE),
            ack: Some(Ack {
                next: 7,
                window_end: 39,
                largest_seq: 1000,
                labels_ahead: 512,
                ack_delay_ms: 12,
                sample_end: 900,
                sample_len: 512,
                sample_got: 500,
                blocks: vec![(7, 0b1011), (8, COMPLETE)],
            }),
            surbs: Some(Surbs {
                lifetime_ms: 60_000,
                surbs: vec![Zeroizing::new(vec![3u8; SURB_SIZE]); 2],
            }),
            want: Some(Want { held: 3, wanted: 9, received: 44 }),
            reset: None,
            ahead: Some(1500),
            data: Some(Data {
                block: 9,
                index: 2,
                k: 3,
                n: 5,
                flags: DATA_FIN,
                len: 250,
                shard: vec![9u8; 100],
            }),
        }
    }

    fn random(b: &mut [u8]) {
        b.iter_mut().enumerate().for_each(|(i, x)| *x = (i as u8).wrapping_mul(151) ^ 0x5a);
    }

    #[test]
    fn frames_round_trip_have_one_length_and_bind_their_header() {
        let key = [5u8; 32];
        let label = [8u8; LABEL_LEN];
        let items = sample();
        let frame = seal(&key, &label, 42, &items, None, 3900, &mut random).unwrap();
        assert_eq!(frame.len(), 3900);
        let short = Items { reset: Some(1), ..Items::default() };
        assert_eq!(seal(&key, &label, 43, &short, None, 3900, &mut random).unwrap().len(), 3900);
        assert_eq!(split(&frame).unwrap().0, label);
        assert_eq!(open(&key, 42, &frame), Ok(items.clone()));
        assert_eq!(open(&key, 41, &frame), Err(FrameError::Authentication));
        assert_eq!(open(&[6u8; 32], 42, &frame), Err(FrameError::Authentication));
        // Every byte is covered: header (associated data), ciphertext and tag.
        for i in 1..frame.len() {
            let mut bad = frame.clone();
            bad[i] ^= 1;
            assert!(open(&key, 42, &bad).is_err(), "flip at {i} accepted");
        }
        // Items that do not fit are refused, not cut.
        assert!(seal(&key, &label, 1, &items, None, FRAME_OVERHEAD + 10, &mut random).is_err());
    }

    #[test]
    fn an_opening_envelope_opens_under_its_key_only() {
        let key = [5u8; 32];
        let envelope_key = [9u8; 32];
        let opening =
            Opening { secret: Zeroizing::new([3u8; 32]), seq: 7, unix_secs: 1_800_000_000 };
        let envelope = Envelope { ephemeral: [4u8; 32], key: &envelope_key, opening: &opening };
        let frame =
            seal(&key, &[1u8; LABEL_LEN], 7, &sample(), Some(envelope), 3900, &mut random).unwrap();
        assert_eq!(split(&frame).unwrap().1, [4u8; 32]);
        assert_eq!(open_envelope(&envelope_key, &frame), Ok(opening));
        assert_eq!(open_envelope(&key, &frame), Err(FrameError::Authentication));
        assert_eq!(open(&key, 7, &frame), Ok(sample()));
    }

    #[test]
    fn malformed_items_are_refused() {
        let good = sample().encode();
        // Every truncation parses (at an item boundary, or as a shorter last shard) or is
        // refused as malformed; none panics.
        for cut in 0..good.len() {
            match Items::decode(&good[..cut]) {
                Ok(_) | Err(FrameError::Malformed(_)) => {}
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert_eq!(Items::decode(&[0x99]), Err(FrameError::Malformed("item type")));
        assert_eq!(Items::decode(&[T_OPEN, 0, T_OPEN, 0]), Err(FrameError::Malformed("OPEN")));
        // Too many SURBs or ack blocks claimed.
        assert!(Items::decode(&[T_SURBS, 0, 0, 0, 1, 6]).is_err());
        let mut ack = vec![T_ACK];
        ack.extend_from_slice(&[0; 24]);
        ack.push(65);
        assert!(Items::decode(&ack).is_err());
        // Impossible coding parameters and lengths.
        let data = |k: u8, n: u8, index: u8, len: u32, shard: usize| {
            let mut d = vec![T_DATA, 0, 0, 0, 0, index, k, n, 0];
            d.extend_from_slice(&len.to_be_bytes());
            d.extend_from_slice(&(shard as u16).to_be_bytes());
            d.extend(std::iter::repeat_n(0, shard));
            Items::decode(&d)
        };
        assert!(data(0, 1, 0, 0, 1).is_err());
        assert!(data(2, 1, 0, 0, 1).is_err());
        assert!(data(2, 33, 0, 0, 1).is_err());
        assert!(data(2, 3, 3, 0, 1).is_err());
        assert!(data(2, 3, 0, 3, 1).is_err());
        assert!(data(2, 3, 2, 2, 1).is_ok());
        assert_eq!(split(&[2u8; 10]), Err(FrameError::Length(10)));
        assert_eq!(split(&[1u8; 200]), Err(FrameError::Version(1)));
        assert_eq!(split(&vec![2u8; MAX_FRAME_LEN + 1]), Err(FrameError::Length(4097)));
    }
}
