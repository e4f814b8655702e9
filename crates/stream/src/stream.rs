//! The sending side of a stream: blocks in, shards out.

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use reed_solomon_erasure::galois_8::ReedSolomon;

use crate::keys::StreamKeys;
use crate::shard::{SHARD_HEADER_LEN, ShardHeader};

/// AEAD tag length.
pub(crate) const TAG_LEN: usize = 16;

/// How blocks are coded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodingConfig {
    /// Shards that rebuild a block (k).
    pub data_shards: u8,
    /// Extra shards (m): any `m` of the `k + m` may be lost.
    pub parity_shards: u8,
    /// The largest shard on the wire, header included: what one mix message carries.
    pub max_shard_len: usize,
    /// zstd level; `None` sends blocks uncompressed. A block is sent compressed only if that
    /// makes it smaller.
    pub compression: Option<i32>,
}

impl Default for CodingConfig {
    fn default() -> Self {
        // 10 + 4 tolerates 28 % loss per block; 3 800 bytes fit a default mix message with room
        // for a codec name and SURBs.
        Self { data_shards: 10, parity_shards: 4, max_shard_len: 3_800, compression: Some(1) }
    }
}

impl CodingConfig {
    /// The largest block [`StreamSender::encode`] takes.
    pub fn max_block_len(&self) -> usize {
        let per_shard = self.max_shard_len.saturating_sub(SHARD_HEADER_LEN);
        (per_shard * usize::from(self.data_shards)).saturating_sub(TAG_LEN)
    }

    fn check(&self) -> Result<(), EncodeError> {
        let n = usize::from(self.data_shards) + usize::from(self.parity_shards);
        if self.data_shards == 0 || n > 255 || self.max_shard_len <= SHARD_HEADER_LEN {
            return Err(EncodeError::Config);
        }
        Ok(())
    }
}

/// Why a block could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The block is larger than [`CodingConfig::max_block_len`].
    #[error("block of {len} bytes exceeds {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// Impossible coding settings (no data shards, more than 255 shards, shards too small).
    #[error("invalid coding configuration")]
    Config,
    /// The stream has used all its block numbers.
    #[error("stream exhausted")]
    Exhausted,
}

/// One encoded block.
#[derive(Debug, Clone)]
pub struct Block {
    /// Its number in the stream.
    pub number: u32,
    /// `k + m` shards, each for one mix message; any `k` rebuild the block.
    pub shards: Vec<Vec<u8>>,
}

/// A stream to one receiver.
#[derive(Debug)]
pub struct StreamSender {
    keys: StreamKeys,
    ephemeral: [u8; 32],
    next: u32,
    config: CodingConfig,
    /// `None` without parity shards.
    rs: Option<ReedSolomon>,
}

impl StreamSender {
    /// A new stream to the holder of `receiver` (an X25519 public key), with a fresh
    /// ephemeral key from `rng`.
    pub fn new<R: rand::CryptoRng + ?Sized>(
        receiver: &[u8; 32],
        config: CodingConfig,
        rng: &mut R,
    ) -> Result<Self, EncodeError> {
        config.check()?;
        let rs = match config.parity_shards {
            0 => None,
            m => Some(
                ReedSolomon::new(usize::from(config.data_shards), usize::from(m))
                    .map_err(|_| EncodeError::Config)?,
            ),
        };
        let (keys, ephemeral) = StreamKeys::for_receiver(receiver, rng);
        Ok(Self { keys, ephemeral, next: 0, config, rs })
    }

    /// The stream's name on the wire (its ephemeral public key).
    pub fn stream_id(&self) -> [u8; 32] {
        self.ephemeral
    }

    /// The coding settings.
    pub fn config(&self) -> &CodingConfig {
        &self.config
    }

    /// Compresses, encrypts and shards the next block. `data` must fit one block after
    /// compression.
    pub fn encode(&mut self, data: &[u8]) -> Result<Block, EncodeError> {
        let (block, used) = self.encode_prefix(data)?;
        if used < data.len() {
            return Err(EncodeError::TooLarge { len: data.len(), max: used });
        }
        Ok(block)
    }

    /// Encodes the longest prefix of `data` that fits one block once compressed (trying up to
    /// [`MAX_INPUT_BLOCKS`] blocks' worth of input, halving until it fits); returns the block
    /// and how many bytes of `data` it holds. Compressible data thus takes fewer shards, and
    /// every shard saved is a Sphinx packet less at every hop.
    pub fn encode_prefix(&mut self, data: &[u8]) -> Result<(Block, usize), EncodeError> {
        let max = self.config.max_block_len();
        let mut len = data.len().min(max * MAX_INPUT_BLOCKS);
        loop {
            let compressed = self
                .config
                .compression
                .and_then(|level| zstd::bulk::compress(&data[..len], level).ok())
                .filter(|c| c.len() < len && c.len() <= max);
            if let Some(c) = compressed {
                return Ok((self.seal(c, true)?, len));
            }
            if len <= max {
                return Ok((self.seal(data[..len].to_vec(), false)?, len));
            }
            len = (len / 2).max(max);
        }
    }

    fn seal(&mut self, mut sealed: Vec<u8>, is_compressed: bool) -> Result<Block, EncodeError> {
        let number = self.next;
        self.next = self.next.checked_add(1).ok_or(EncodeError::Exhausted)?;
        let k = self.config.data_shards;
        let n = k + self.config.parity_shards;
        let mut header = ShardHeader {
            stream: self.ephemeral,
            block: number,
            index: 0,
            k,
            n,
            compressed: is_compressed,
            sealed_len: 0,
        };
        let aad = aad(&header);
        ChaCha20Poly1305::new_from_slice(&self.keys.data[..])
            .expect("32-byte key")
            .encrypt_in_place(&nonce(number), &aad, &mut sealed)
            .expect("a block below the AEAD limit");
        header.sealed_len = u32::try_from(sealed.len()).expect("bounded by max_block_len");

        let len = header.shard_len();
        sealed.resize(len * usize::from(k), 0);
        let mut pieces: Vec<Vec<u8>> = sealed.chunks(len).map(<[u8]>::to_vec).collect();
        pieces.resize(usize::from(n), vec![0; len]);
        if let Some(rs) = &self.rs {
            rs.encode(&mut pieces).expect("shards of equal length");
        }
        let shards = pieces
            .iter()
            .enumerate()
            .map(|(i, piece)| {
                let h = ShardHeader { index: i as u8, ..header };
                h.write(&self.keys.mac, piece)
            })
            .collect();
        Ok(Block { number, shards })
    }
}

/// Input blocks' worth of bytes [`StreamSender::encode_prefix`] tries to fit into one block.
pub const MAX_INPUT_BLOCKS: usize = 16;

/// The block's identity, authenticated by the AEAD.
pub(crate) fn aad(h: &ShardHeader) -> [u8; 39] {
    let mut aad = [0u8; 39];
    aad[..32].copy_from_slice(&h.stream);
    aad[32..36].copy_from_slice(&h.block.to_be_bytes());
    aad[36] = h.k;
    aad[37] = h.n;
    aad[38] = u8::from(h.compressed);
    aad
}

/// Each block number is used once per stream key, so it can be the nonce.
pub(crate) fn nonce(block: u32) -> Nonce {
    let mut n = [0u8; 12];
    n[8..].copy_from_slice(&block.to_be_bytes());
    Nonce::from(n)
}
