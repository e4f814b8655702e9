//! The receiving side: shards in, blocks out.
//!
//! Shards arrive in any order, some never, some twice. Each is authenticated on its own
//! (a forged one is dropped without harming its block); once `k` distinct shards of a block
//! are in, the block is rebuilt, decrypted and decompressed. Memory is bounded: streams, blocks
//! in progress per stream and the size of a rebuilt block all have limits, and partial blocks
//! that stall are dropped after a timeout.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use chacha20poly1305::ChaCha20Poly1305;
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use reed_solomon_erasure::galois_8::ReedSolomon;

use crate::keys::{ReceiverKey, StreamKeys};
use crate::shard::{ShardError, ShardHeader};
use crate::stream::{TAG_LEN, aad, nonce};

/// Limits of a [`Reassembler`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReassemblyConfig {
    /// Streams tracked at once; shards of further new streams are refused.
    pub max_streams: usize,
    /// Blocks in progress per stream.
    pub max_blocks_per_stream: usize,
    /// The largest block accepted after decompression.
    pub max_block_len: usize,
    /// A block not complete this long after its first shard is dropped.
    pub block_timeout: Duration,
    /// A stream with no shard for this long is forgotten.
    pub stream_timeout: Duration,
    /// Completed block numbers remembered per stream, to ignore late duplicates.
    pub remembered_blocks: usize,
}

impl Default for ReassemblyConfig {
    fn default() -> Self {
        Self {
            max_streams: 1024,
            max_blocks_per_stream: 256,
            max_block_len: 1 << 20,
            block_timeout: Duration::from_secs(60),
            stream_timeout: Duration::from_secs(600),
            remembered_blocks: 4096,
        }
    }
}

/// Why a shard or a block was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReassemblyError {
    /// The shard is malformed or not authentic.
    #[error(transparent)]
    Shard(#[from] ShardError),
    /// Its block's other shards announced different parameters.
    #[error("shard disagrees with its block")]
    Inconsistent,
    /// Too many streams at once.
    #[error("too many streams")]
    TooManyStreams,
    /// Too many blocks in progress on the stream.
    #[error("too many blocks in progress")]
    TooManyBlocks,
    /// The rebuilt block did not decrypt.
    #[error("block failed authentication")]
    Decrypt,
    /// The block did not decompress, or is larger than allowed.
    #[error("block did not decompress within the size limit")]
    Decompress,
}

/// A rebuilt block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The stream (the sender's ephemeral key; it names nothing else).
    pub stream: [u8; 32],
    /// The block number.
    pub block: u32,
    /// The application's bytes.
    pub data: Vec<u8>,
}

struct Partial {
    header: ShardHeader,
    shards: Vec<Option<Vec<u8>>>,
    have: usize,
    since: Instant,
}

struct StreamState {
    keys: StreamKeys,
    partial: HashMap<u32, Partial>,
    done: BTreeSet<u32>,
    last_seen: Instant,
}

/// Rebuilds blocks of the streams sent to one receiver key.
pub struct Reassembler {
    key: ReceiverKey,
    config: ReassemblyConfig,
    streams: HashMap<[u8; 32], StreamState>,
    codecs: HashMap<(u8, u8), ReedSolomon>,
}

impl std::fmt::Debug for Reassembler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reassembler").field("streams", &self.streams.len()).finish_non_exhaustive()
    }
}

impl Reassembler {
    /// A receiver holding `key`.
    pub fn new(key: ReceiverKey, config: ReassemblyConfig) -> Self {
        Self { key, config, streams: HashMap::new(), codecs: HashMap::new() }
    }

    /// Streams tracked now.
    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    /// Whether `block` of `stream` was rebuilt (and is still remembered).
    pub fn is_done(&self, stream: &[u8; 32], block: u32) -> bool {
        self.streams.get(stream).is_some_and(|s| s.done.contains(&block))
    }

    /// Blocks in progress over all streams.
    pub fn partial_blocks(&self) -> usize {
        self.streams.values().map(|s| s.partial.len()).sum()
    }

    /// Takes one shard. Returns the block it completed, if any; duplicates and shards of
    /// blocks already rebuilt return `Ok(None)`.
    pub fn accept(
        &mut self,
        now: Instant,
        bytes: &[u8],
    ) -> Result<Option<Delivered>, ReassemblyError> {
        let (header, data) = ShardHeader::parse(bytes)?;
        if !self.streams.contains_key(&header.stream) {
            if self.streams.len() >= self.config.max_streams {
                return Err(ReassemblyError::TooManyStreams);
            }
            // A Diffie-Hellman per new stream name: check the MAC before keeping anything.
            let keys = self.key.stream_keys(&header.stream);
            ShardHeader::verify(bytes, &keys.mac)?;
            self.streams.insert(
                header.stream,
                StreamState {
                    keys,
                    partial: HashMap::new(),
                    done: BTreeSet::new(),
                    last_seen: now,
                },
            );
        } else {
            let state = &self.streams[&header.stream];
            ShardHeader::verify(bytes, &state.keys.mac)?;
        }
        let config = self.config;
        let state = self.streams.get_mut(&header.stream).expect("inserted above");
        state.last_seen = now;
        if state.done.contains(&header.block) {
            return Ok(None);
        }
        if !state.partial.contains_key(&header.block)
            && state.partial.len() >= config.max_blocks_per_stream
        {
            return Err(ReassemblyError::TooManyBlocks);
        }
        let partial = state.partial.entry(header.block).or_insert_with(|| Partial {
            header,
            shards: vec![None; usize::from(header.n)],
            have: 0,
            since: now,
        });
        let expected = ShardHeader { index: header.index, ..partial.header };
        if expected != header {
            return Err(ReassemblyError::Inconsistent);
        }
        let slot = &mut partial.shards[usize::from(header.index)];
        if slot.is_some() {
            return Ok(None);
        }
        *slot = Some(data.to_vec());
        partial.have += 1;
        if partial.have < usize::from(header.k) {
            return Ok(None);
        }

        let mut partial = state.partial.remove(&header.block).expect("present");
        state.done.insert(header.block);
        while state.done.len() > config.remembered_blocks {
            state.done.pop_first();
        }
        let h = partial.header;
        if h.n > h.k && partial.shards[..usize::from(h.k)].iter().any(Option::is_none) {
            let rs = match self.codecs.entry((h.k, h.n)) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => v.insert(
                    ReedSolomon::new(usize::from(h.k), usize::from(h.n - h.k))
                        .map_err(|_| ReassemblyError::Inconsistent)?,
                ),
            };
            rs.reconstruct_data(&mut partial.shards).map_err(|_| ReassemblyError::Inconsistent)?;
        }
        let mut sealed: Vec<u8> = partial.shards[..usize::from(h.k)]
            .iter()
            .flat_map(|s| s.as_deref().unwrap_or_default().iter().copied())
            .collect();
        sealed.truncate(h.sealed_len as usize);
        if sealed.len() < TAG_LEN {
            return Err(ReassemblyError::Decrypt);
        }
        ChaCha20Poly1305::new_from_slice(&state.keys.data[..])
            .expect("32-byte key")
            .decrypt_in_place(&nonce(h.block), &aad(&h), &mut sealed)
            .map_err(|_| ReassemblyError::Decrypt)?;
        let data = if h.compressed {
            zstd::bulk::decompress(&sealed, config.max_block_len)
                .map_err(|_| ReassemblyError::Decompress)?
        } else {
            sealed
        };
        if data.len() > config.max_block_len {
            return Err(ReassemblyError::Decompress);
        }
        Ok(Some(Delivered { stream: h.stream, block: h.block, data }))
    }

    /// Drops blocks that stalled and streams that went quiet. Returns how many blocks were
    /// dropped.
    pub fn expire(&mut self, now: Instant) -> usize {
        let config = self.config;
        let mut dropped = 0;
        self.streams.retain(|_, s| {
            let before = s.partial.len();
            s.partial.retain(|_, p| now.saturating_duration_since(p.since) < config.block_timeout);
            dropped += before - s.partial.len();
            now.saturating_duration_since(s.last_seen) < config.stream_timeout
        });
        dropped
    }
}
