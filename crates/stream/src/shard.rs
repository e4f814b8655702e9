//! One shard on the wire.
//!
//! ```text
//! version u8 (1) | stream [32] (the sender's ephemeral key) | block u32 | index u8 | k u8
//! | n u8 | flags u8 (bit 0: compressed) | sealed_len u32 | mac [16] | data
//! ```
//!
//! Integers big-endian. `sealed_len` is the length of the encrypted block (its AEAD tag
//! included) before it was split into `k` data shards of equal length; every shard of a block
//! carries `ceil(sealed_len / k)` data bytes. The MAC (HMAC-SHA256 under a per-stream key,
//! truncated) covers header and data, so a forged shard is dropped on its own instead of
//! spoiling the block it would be decoded with.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Bytes before a shard's data.
pub const SHARD_HEADER_LEN: usize = 1 + 32 + 4 + 1 + 1 + 1 + 1 + 4 + MAC_LEN;
const VERSION: u8 = 1;
const MAC_LEN: usize = 16;
const MAC_AT: usize = SHARD_HEADER_LEN - MAC_LEN;
/// The flags a receiver understands.
const KNOWN_FLAGS: u8 = 1;

/// A shard's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardHeader {
    /// The stream: the sender's ephemeral public key.
    pub stream: [u8; 32],
    /// The block within the stream.
    pub block: u32,
    /// This shard's index, `0..n`; the first `k` carry data, the rest parity.
    pub index: u8,
    /// Shards needed to rebuild the block.
    pub k: u8,
    /// Shards made for the block.
    pub n: u8,
    /// Whether the block was compressed before encryption.
    pub compressed: bool,
    /// Length of the encrypted block.
    pub sealed_len: u32,
}

/// Why bytes are not a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShardError {
    /// Shorter than a header, or of the wrong length for its block.
    #[error("truncated or mis-sized shard")]
    Length,
    /// An unknown version or flag.
    #[error("unknown shard version or flags")]
    Version,
    /// Impossible coding parameters.
    #[error("bad coding parameters")]
    Parameters,
    /// The MAC does not verify.
    #[error("shard authentication failed")]
    Mac,
}

impl ShardHeader {
    /// Data bytes in each shard of this block.
    pub fn shard_len(&self) -> usize {
        (self.sealed_len as usize).div_ceil(usize::from(self.k).max(1))
    }

    pub(crate) fn write(&self, mac_key: &[u8; 32], data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(SHARD_HEADER_LEN + data.len());
        out.push(VERSION);
        out.extend_from_slice(&self.stream);
        out.extend_from_slice(&self.block.to_be_bytes());
        out.extend_from_slice(&[self.index, self.k, self.n, u8::from(self.compressed)]);
        out.extend_from_slice(&self.sealed_len.to_be_bytes());
        out.extend_from_slice(&[0; MAC_LEN]);
        out.extend_from_slice(data);
        let mac = mac(mac_key, &out);
        out[MAC_AT..SHARD_HEADER_LEN].copy_from_slice(&mac);
        out
    }

    /// Parses a header without checking the MAC (the stream's key is found by its `stream`).
    pub fn parse(bytes: &[u8]) -> Result<(Self, &[u8]), ShardError> {
        let (head, data) = bytes.split_at_checked(SHARD_HEADER_LEN).ok_or(ShardError::Length)?;
        if head[0] != VERSION || head[40] & !KNOWN_FLAGS != 0 {
            return Err(ShardError::Version);
        }
        let header = Self {
            stream: head[1..33].try_into().expect("32 bytes"),
            block: u32::from_be_bytes(head[33..37].try_into().expect("4 bytes")),
            index: head[37],
            k: head[38],
            n: head[39],
            compressed: head[40] & 1 == 1,
            sealed_len: u32::from_be_bytes(head[41..45].try_into().expect("4 bytes")),
        };
        if header.k == 0 || header.n < header.k || header.index >= header.n {
            return Err(ShardError::Parameters);
        }
        if data.len() != header.shard_len() {
            return Err(ShardError::Length);
        }
        Ok((header, data))
    }

    /// Checks the MAC of the whole shard `bytes` in constant time.
    pub(crate) fn verify(bytes: &[u8], mac_key: &[u8; 32]) -> Result<(), ShardError> {
        let mut copy = bytes.to_vec();
        copy[MAC_AT..SHARD_HEADER_LEN].fill(0);
        let expected = mac(mac_key, &copy);
        if bool::from(expected.ct_eq(&bytes[MAC_AT..SHARD_HEADER_LEN])) {
            Ok(())
        } else {
            Err(ShardError::Mac)
        }
    }
}

fn mac(key: &[u8; 32], bytes: &[u8]) -> [u8; MAC_LEN] {
    let mut h = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
    h.update(bytes);
    let full = h.finalize().into_bytes();
    full[..MAC_LEN].try_into().expect("16 bytes")
}
