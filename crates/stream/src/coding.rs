//! Blocks into shards and back: zstd when it shrinks the block, then Reed-Solomon.
//!
//! A block's *coded* bytes (compressed or not) are cut into `k` data shards of equal length
//! `ceil(len / k)` (the last one zero-padded), and `n - k` parity shards are added; any `k` of
//! the `n` rebuild it.

use std::collections::HashMap;

use reed_solomon_erasure::galois_8::ReedSolomon;

/// The most bytes of application data one block holds once decompressed; a receiver refuses
/// blocks that would decompress to more.
pub const MAX_BLOCK_BYTES: usize = 256 * 1024;

/// Input sampled to decide whether a block is worth compressing.
const SAMPLE: usize = 4096;
/// A sample must compress at least this well for the block to be compressed.
const WORTH_IT: f64 = 0.95;

/// Why a block could not be rebuilt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BlockError {
    /// The shards disagree with each other.
    #[error("inconsistent shards")]
    Inconsistent,
    /// The block did not decompress, or is larger than allowed.
    #[error("block did not decompress within the size limit")]
    Decompress,
}

/// Reed-Solomon codecs, one per `(k, m)`, made when first needed.
#[derive(Default)]
pub(crate) struct Coder {
    codecs: HashMap<(u8, u8), ReedSolomon>,
}

impl std::fmt::Debug for Coder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coder").field("codecs", &self.codecs.len()).finish()
    }
}

impl Coder {
    fn codec(&mut self, k: u8, m: u8) -> Result<&ReedSolomon, BlockError> {
        match self.codecs.entry((k, m)) {
            std::collections::hash_map::Entry::Occupied(e) => Ok(e.into_mut()),
            std::collections::hash_map::Entry::Vacant(v) => Ok(v.insert(
                ReedSolomon::new(usize::from(k), usize::from(m))
                    .map_err(|_| BlockError::Inconsistent)?,
            )),
        }
    }

    /// Cuts `coded` into `k` data shards (`k` as given) and adds `parity` parity shards.
    pub(crate) fn encode(&mut self, coded: &[u8], k: u8, parity: u8) -> Vec<Vec<u8>> {
        let k = k.max(1);
        let len = shard_len(coded.len(), k);
        let mut shards: Vec<Vec<u8>> = (0..usize::from(k))
            .map(|i| {
                let start = (i * len).min(coded.len());
                let end = ((i + 1) * len).min(coded.len());
                let mut shard = coded[start..end].to_vec();
                shard.resize(len, 0);
                shard
            })
            .collect();
        shards.resize(usize::from(k) + usize::from(parity), vec![0; len]);
        if parity > 0 && len > 0 {
            self.codec(k, parity)
                .expect("k + parity within the limits checked by the caller")
                .encode(&mut shards)
                .expect("shards of equal length");
        }
        shards
    }

    /// Rebuilds the coded bytes of a block from at least `k` of its `n` shards.
    pub(crate) fn decode(
        &mut self,
        k: u8,
        n: u8,
        len: usize,
        shards: &mut [Option<Vec<u8>>],
    ) -> Result<Vec<u8>, BlockError> {
        let data = usize::from(k);
        if shards[..data].iter().any(Option::is_none) {
            if shard_len(len, k) == 0 {
                shards.iter_mut().for_each(|s| *s = Some(Vec::new()));
            } else {
                self.codec(k, n - k)?
                    .reconstruct_data(shards)
                    .map_err(|_| BlockError::Inconsistent)?;
            }
        }
        let mut out = Vec::with_capacity(len);
        for shard in &shards[..data] {
            out.extend_from_slice(shard.as_deref().ok_or(BlockError::Inconsistent)?);
        }
        out.truncate(len);
        Ok(out)
    }
}

/// The length of each shard of a block of `len` coded bytes in `k` data shards.
pub(crate) fn shard_len(len: usize, k: u8) -> usize {
    len.div_ceil(usize::from(k.max(1)))
}

/// The next block's coded bytes, taken from the front of `input`: returns them, how many
/// input bytes they hold and whether they are compressed. At most `max_coded` coded bytes;
/// with `level`, as much input as fits once compressed (up to [`MAX_BLOCK_BYTES`]), if a
/// sample shows the input compresses at all.
pub(crate) fn next_block(
    input: &[u8],
    max_coded: usize,
    level: Option<i32>,
) -> (Vec<u8>, usize, bool) {
    let raw = || {
        let used = input.len().min(max_coded);
        (input[..used].to_vec(), used, false)
    };
    let Some(level) = level else { return raw() };
    let sample = &input[..input.len().min(SAMPLE)];
    if sample.len() < 64 {
        return raw();
    }
    let Ok(compressed) = zstd::bulk::compress(sample, level) else { return raw() };
    let ratio = compressed.len() as f64 / sample.len() as f64;
    if ratio > WORTH_IT {
        return raw();
    }
    // Aim a little below the room the sample's ratio predicts, then correct once.
    let mut take = ((max_coded as f64 / ratio) * 0.9) as usize;
    for _ in 0..2 {
        take = take.clamp(1, MAX_BLOCK_BYTES).min(input.len());
        let Ok(compressed) = zstd::bulk::compress(&input[..take], level) else { return raw() };
        if compressed.len() <= max_coded {
            if compressed.len() < take.min(max_coded) || take > max_coded {
                return (compressed, take, true);
            }
            return raw();
        }
        take = (take as f64 * max_coded as f64 / compressed.len() as f64 * 0.95) as usize;
    }
    raw()
}

/// The application bytes of a block's coded bytes.
pub(crate) fn unpack(coded: Vec<u8>, compressed: bool) -> Result<Vec<u8>, BlockError> {
    let data = if compressed {
        // Decompressing reserves the whole cap; what is held is counted by its length, so it
        // must not keep more.
        let mut data =
            zstd::bulk::decompress(&coded, MAX_BLOCK_BYTES).map_err(|_| BlockError::Decompress)?;
        data.shrink_to_fit();
        data
    } else {
        coded
    };
    if data.len() > MAX_BLOCK_BYTES {
        return Err(BlockError::Decompress);
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Found by review: decompressing reserved the whole block cap, so a block of one byte
    /// held 256 KiB while the budgets counted one.
    #[test]
    fn a_decompressed_block_holds_no_more_than_its_length() {
        let coded = zstd::bulk::compress(b"x", 1).unwrap();
        let data = unpack(coded, true).unwrap();
        assert_eq!(data, b"x");
        assert!(data.capacity() < 4096, "{} bytes reserved", data.capacity());
    }

    #[test]
    fn any_k_shards_rebuild_a_block() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
        let mut coder = Coder::default();
        for (len, k, m) in [(0usize, 1u8, 1u8), (1, 1, 1), (100, 1, 2), (1000, 3, 2), (9000, 16, 4)]
        {
            let mut data = vec![0u8; len];
            rng.fill_bytes(&mut data);
            let shards = coder.encode(&data, k, m);
            assert_eq!(shards.len(), usize::from(k + m));
            assert!(shards.iter().all(|s| s.len() == shard_len(len, k)));
            // Drop m shards, the first ones (data) to force reconstruction.
            let mut got: Vec<Option<Vec<u8>>> = shards.into_iter().map(Some).collect();
            for slot in got.iter_mut().take(usize::from(m)) {
                *slot = None;
            }
            assert_eq!(coder.decode(k, k + m, len, &mut got).unwrap(), data, "{len} {k} {m}");
        }
    }

    #[test]
    fn compression_is_used_only_when_it_helps() {
        let text: Vec<u8> = b"a log line that repeats itself, more or less, every time\n"
            .iter()
            .copied()
            .cycle()
            .take(500_000)
            .collect();
        let (coded, used, compressed) = next_block(&text, 10_000, Some(1));
        assert!(compressed && coded.len() <= 10_000 && used > 10_000, "{} {used}", coded.len());
        assert_eq!(unpack(coded, true).unwrap(), &text[..used]);

        let mut random = vec![0u8; 50_000];
        rand_chacha::ChaCha20Rng::seed_from_u64(4).fill_bytes(&mut random);
        let (coded, used, compressed) = next_block(&random, 10_000, Some(1));
        assert_eq!((coded.len(), used, compressed), (10_000, 10_000, false));
        let (_, used, compressed) = next_block(&text[..30], 10_000, Some(1));
        assert_eq!((used, compressed), (30, false));
        let (_, used, compressed) = next_block(&text, 10_000, None);
        assert_eq!((used, compressed), (10_000, false));
    }

    #[test]
    fn bombs_and_garbage_do_not_decompress() {
        let zeros = vec![0u8; MAX_BLOCK_BYTES + 1];
        let bomb = zstd::bulk::compress(&zeros, 1).unwrap();
        assert_eq!(unpack(bomb, true), Err(BlockError::Decompress));
        assert_eq!(unpack(vec![1, 2, 3], true), Err(BlockError::Decompress));
    }
}
