//! One frame: what one mix message (opener to acceptor) or one SURB reply (back) carries.
//!
//! ```text
//! version u8 (1) | stream [32] | seq u32 | ChaCha20-Poly1305(items) | tag [16]
//! ```
//!
//! `stream` is the opener's ephemeral X25519 key: the acceptor derives the stream's keys from
//! it, and it names nothing else. `seq` counts the frames of one direction from 0; the nonce is
//! `0^8 ‖ seq` under that direction's key, and the first 37 bytes are the associated data.
//! Integers are big-endian. The plaintext is a sequence of items, each a type byte and its
//! fields, at most one of each type, DATA last:
//!
//! ```text
//! 0x01 OPEN   flags u8 (bit 0: a message, the opener reads nothing back)
//! 0x03 ACK    next u32 | window_end u32 | largest_seq u32 | ack_delay_ms u16
//!             | sample_end u32 | sample_len u16 | sample_got u16
//!             | count u8 | count × (block u32 | shards_received u32 bitmap, all ones: complete)
//! 0x04 SURBS  lifetime_ms u32 | count u8 | count × SURB (734 bytes)        opener only
//! 0x05 WANT   held u16 | wanted u16 | surbs_received u32                   acceptor only
//! 0x06 RESET  code u8
//! 0x02 DATA   block u32 | index u8 | k u8 | n u8 | flags u8 (bit 0: compressed, bit 1: last
//!             block) | len u32 | shard (the rest of the frame)
//! ```
//!
//! Every length is checked against the bytes present before anything is allocated, so a frame
//! of a few kilobytes can never ask for more.

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use mix_sphinx::SURB_SIZE;
use zeroize::Zeroizing;

/// The frame format version.
pub const VERSION: u8 = 1;
/// Bytes before the ciphertext.
pub const HEADER_LEN: usize = 1 + 32 + 4;
/// The AEAD tag.
pub const TAG_LEN: usize = 16;
/// Header and tag: what every frame spends before its items.
pub const FRAME_OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// A DATA item's fields before its shard.
pub const DATA_HEADER_LEN: usize = 1 + 4 + 1 + 1 + 1 + 1 + 4;
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

const T_OPEN: u8 = 0x01;
const T_DATA: u8 = 0x02;
const T_ACK: u8 = 0x03;
const T_SURBS: u8 = 0x04;
const T_WANT: u8 = 0x05;
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
        1 + 4 + 4 + 4 + 2 + 8 + 1 + 8 * self.blocks.len().min(MAX_ACK_BLOCKS)
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
    pub(crate) data: Option<Data>,
}

impl Items {
    pub(crate) fn is_empty(&self) -> bool {
        self.open.is_none()
            && self.ack.is_none()
            && self.surbs.is_none()
            && self.want.is_none()
            && self.reset.is_none()
            && self.data.is_none()
    }

    pub(crate) fn encoded_len(&self) -> usize {
        self.open.map_or(0, |_| 2)
            + self.ack.as_ref().map_or(0, Ack::encoded_len)
            + self.surbs.as_ref().map_or(0, |s| 1 + 4 + 1 + SURB_SIZE * s.surbs.len())
            + self.want.map_or(0, |_| 1 + 2 + 2 + 4)
            + self.reset.map_or(0, |_| 2)
            + self.data.as_ref().map_or(0, Data::encoded_len)
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len() + TAG_LEN);
        if let Some(flags) = self.open {
            out.extend_from_slice(&[T_OPEN, flags]);
        }
        if let Some(ack) = &self.ack {
            out.push(T_ACK);
            out.extend_from_slice(&ack.next.to_be_bytes());
            out.extend_from_slice(&ack.window_end.to_be_bytes());
            out.extend_from_slice(&ack.largest_seq.to_be_bytes());
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
        if let Some(d) = &self.data {
            out.push(T_DATA);
            out.extend_from_slice(&d.block.to_be_bytes());
            out.extend_from_slice(&[d.index, d.k, d.n, d.flags]);
            out.extend_from_slice(&d.len.to_be_bytes());
            out.extend_from_slice(&d.shard);
        }
        out
    }

    pub(crate) fn decode(mut bytes: &[u8]) -> Result<Self, FrameError> {
        let mut items = Self::default();
        while let Some((&kind, rest)) = bytes.split_first() {
            bytes = rest;
            match kind {
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
                T_DATA => {
                    let mut r = Reader(&mut bytes, "DATA");
                    let block = r.u32()?;
                    let [index, k, n, flags] = r.take(4)?.try_into().expect("4 bytes");
                    let len = r.u32()?;
                    let shard = std::mem::take(r.0).to_vec();
                    if k == 0 || n < k || n > MAX_SHARDS || index >= n {
                        return Err(FrameError::Malformed("DATA parameters"));
                    }
                    if flags & !(DATA_COMPRESSED | DATA_FIN) != 0 {
                        return Err(FrameError::Malformed("DATA flags"));
                    }
                    if u64::from(len) > u64::from(k) * shard.len() as u64 {
                        return Err(FrameError::Malformed("DATA length"));
                    }
                    items.data = Some(Data { block, index, k, n, flags, len, shard });
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

/// The stream and sequence number of a frame, read without its key.
pub fn peek(bytes: &[u8]) -> Result<([u8; 32], u32), FrameError> {
    if bytes.len() < FRAME_OVERHEAD || bytes.len() > MAX_FRAME_LEN {
        return Err(FrameError::Length(bytes.len()));
    }
    if bytes[0] != VERSION {
        return Err(FrameError::Version(bytes[0]));
    }
    let stream = bytes[1..33].try_into().expect("32 bytes");
    let seq = u32::from_be_bytes(bytes[33..37].try_into().expect("4 bytes"));
    Ok((stream, seq))
}

fn nonce(seq: u32) -> Nonce {
    let mut n = [0u8; 12];
    n[8..].copy_from_slice(&seq.to_be_bytes());
    Nonce::from(n)
}

/// Seals `items` into a frame of `stream` with sequence number `seq`.
pub(crate) fn seal(key: &[u8; 32], stream: &[u8; 32], seq: u32, items: &Items) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_OVERHEAD + items.encoded_len());
    out.push(VERSION);
    out.extend_from_slice(stream);
    out.extend_from_slice(&seq.to_be_bytes());
    let mut body = items.encode();
    ChaCha20Poly1305::new_from_slice(key)
        .expect("32-byte key")
        .encrypt_in_place(&nonce(seq), &out, &mut body)
        .expect("a frame is far below the AEAD's limit");
    out.extend_from_slice(&body);
    out
}

/// Opens a frame under `key`; returns its sequence number and items.
pub(crate) fn open(key: &[u8; 32], bytes: &[u8]) -> Result<(u32, Items), FrameError> {
    let (_, seq) = peek(bytes)?;
    let (header, sealed) = bytes.split_at(HEADER_LEN);
    let mut body = sealed.to_vec();
    ChaCha20Poly1305::new_from_slice(key)
        .expect("32-byte key")
        .decrypt_in_place(&nonce(seq), header, &mut body)
        .map_err(|_| FrameError::Authentication)?;
    Ok((seq, Items::decode(&body)?))
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

    #[test]
    fn frames_round_trip_and_bind_their_header() {
        let key = [5u8; 32];
        let stream = [8u8; 32];
        let items = sample();
        let frame = seal(&key, &stream, 42, &items);
        assert_eq!(frame.len(), FRAME_OVERHEAD + items.encoded_len());
        assert_eq!(peek(&frame), Ok((stream, 42)));
        assert_eq!(open(&key, &frame), Ok((42, items)));
        assert_eq!(open(&[6u8; 32], &frame), Err(FrameError::Authentication));
        // Every byte is covered: header (associated data), ciphertext and tag.
        for i in 1..frame.len() {
            let mut bad = frame.clone();
            bad[i] ^= 1;
            assert!(open(&key, &bad).is_err(), "flip at {i} accepted");
        }
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
        ack.extend_from_slice(&[0; 22]);
        ack.push(65);
        assert!(Items::decode(&ack).is_err());
        // Impossible coding parameters and lengths.
        let data = |k: u8, n: u8, index: u8, len: u32, shard: usize| {
            let mut d = vec![T_DATA, 0, 0, 0, 0, index, k, n, 0];
            d.extend_from_slice(&len.to_be_bytes());
            d.extend(std::iter::repeat_n(0, shard));
            Items::decode(&d)
        };
        assert!(data(0, 1, 0, 0, 1).is_err());
        assert!(data(2, 1, 0, 0, 1).is_err());
        assert!(data(2, 33, 0, 0, 1).is_err());
        assert!(data(2, 3, 3, 0, 1).is_err());
        assert!(data(2, 3, 0, 3, 1).is_err());
        assert!(data(2, 3, 2, 2, 1).is_ok());
        assert_eq!(peek(&[1u8; 10]), Err(FrameError::Length(10)));
        assert_eq!(peek(&[2u8; 60]), Err(FrameError::Version(2)));
        assert_eq!(peek(&vec![1u8; MAX_FRAME_LEN + 1]), Err(FrameError::Length(4097)));
    }
}
