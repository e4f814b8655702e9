//! Replay protection: every packet's tag (SHA-256 of its shared secret at this hop) is
//! remembered for as long as the mix key that produced it, so a packet, or a SURB, that comes
//! back is dropped. A replayed packet would otherwise reappear on the same path and let an
//! observer follow it.
//!
//! Memory is bounded by Bloom filters sized for `packets_per_second × key_lifetime` tags at a
//! chosen false-positive rate (a false positive drops an honest packet). Size in bits is
//! n·ln(1/p)/ln²2: the first stage is built for p/2, about 30.3 bits per tag at p = 10⁻⁶, i.e.
//! 13.6 MB for the default 1000 packets/s over one hour. Past that many tags the filter adds
//! stages at p/4, p/8, … so that its false-positive rate never passes p, and past
//! [`MAX_STAGES`] it refuses new packets under that key (see [`ReplayFilter`]). Key rotation
//! starts a new filter with each key.
//!
//! The stages' hash seeds come from a secret the filter is given (the node derives it from the
//! mix key the filter serves), not from the operating system: an outsider cannot predict where
//! tags land, and a seeded simulation drops the same packets on every run.

use std::time::Duration;

use fastbloom::BloomFilter;
use mix_sphinx::ReplayTag;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// How to size the replay filter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplayConfig {
    /// The packet rate the node is provisioned for.
    pub packets_per_second: u32,
    /// How long one mix key (and so one filter) lives.
    pub key_lifetime: Duration,
    /// The probability that a fresh packet is taken for a replay, while within capacity.
    pub false_positive_rate: f64,
}

impl Default for ReplayConfig {
    fn default() -> Self {
        Self {
            packets_per_second: 1000,
            key_lifetime: Duration::from_secs(3600),
            false_positive_rate: 1e-6,
        }
    }
}

impl ReplayConfig {
    /// The number of tags the filter holds at its false-positive rate.
    pub fn capacity(&self) -> usize {
        let n = u64::from(self.packets_per_second).saturating_mul(self.key_lifetime.as_secs());
        usize::try_from(n).unwrap_or(usize::MAX).clamp(1_000, 1 << 32)
    }

    /// The filter's memory in bytes.
    pub fn memory_bytes(&self) -> usize {
        fastbloom::optimal_size(self.capacity(), self.fp()) / 8
    }

    fn fp(&self) -> f64 {
        self.false_positive_rate.clamp(1e-12, 0.5)
    }
}

/// Stages a filter may grow to. Each holds the design capacity; past the last one the filter
/// refuses new tags (and so the packets that carry them) rather than raise its error.
pub const MAX_STAGES: usize = 8;

/// The most hash functions a restored stage may use (a sized stage uses about 21 at the default
/// rate); more is a damaged snapshot.
pub(crate) const MAX_HASHES: u32 = 64;

/// One Bloom filter of a [`ReplayFilter`].
#[derive(Debug)]
struct Stage {
    bloom: BloomFilter,
    seed: u128,
    len: usize,
}

impl Stage {
    fn new(capacity: usize, fp: f64, seed: u128) -> Self {
        Self {
            bloom: BloomFilter::with_false_pos(fp).seed(&seed).expected_items(capacity),
            seed,
            len: 0,
        }
    }
}

/// The set of tags seen under one mix key.
///
/// It grows in stages: stage `i` is sized for the design capacity at a false-positive rate of
/// `p / 2^(i+1)`, so that however many stages are in use the chance that a fresh tag is taken
/// for a replay stays below the design rate `p` (the sum of the stages' rates). A node that
/// keeps its key for ever therefore never drifts into dropping honest packets; it pays memory
/// instead (each stage about 5 % more than the last), up to [`MAX_STAGES`], and past that it
/// refuses new packets under this key ([`ReplayFull`]), which the node logs loudly: the
/// operator must rotate the key or size the filter for the real rate.
pub struct ReplayFilter {
    stages: Vec<Stage>,
    capacity: usize,
    fp: f64,
    len: usize,
    secret: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for ReplayFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayFilter")
            .field("stages", &self.stages.len())
            .field("capacity", &self.capacity)
            .field("fp", &self.fp)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// The filter is full: accepting another tag would raise its false-positive rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the replay filter holds all the tags it may ({0})")]
pub struct ReplayFull(pub usize);

impl ReplayFilter {
    /// An empty filter whose stages hash with seeds derived from `secret`. Keep `secret`
    /// secret: whoever knows it can compute which bits a tag sets.
    pub fn new(config: &ReplayConfig, secret: Zeroizing<[u8; 32]>) -> Self {
        let capacity = config.capacity();
        let fp = config.fp();
        let first = Stage::new(capacity, fp / 2.0, stage_seed(&secret, 0));
        Self { stages: vec![first], capacity, fp, len: 0, secret }
    }

    /// Records `tag`; returns whether it was (probably) seen before, or [`ReplayFull`] when the
    /// tag is new and the last stage is full.
    pub fn check_and_insert(&mut self, tag: &ReplayTag) -> Result<bool, ReplayFull> {
        let bytes = tag.as_bytes();
        if self.stages.iter().any(|s| s.bloom.contains(bytes)) {
            return Ok(true);
        }
        if self.stages.last().is_some_and(|s| s.len >= self.capacity) {
            if self.stages.len() >= MAX_STAGES {
                return Err(ReplayFull(self.len));
            }
            let fp = self.fp / f64::from(1u32 << (self.stages.len() + 1));
            let seed = stage_seed(&self.secret, self.stages.len());
            self.stages.push(Stage::new(self.capacity, fp, seed));
            tracing::warn!(
                stages = self.stages.len(),
                tags = self.len,
                "the replay filter reached its design capacity and added a stage; rotate mix \
                 keys or raise replay.packets_per_second"
            );
        }
        let stage = self.stages.last_mut().expect("at least one stage");
        stage.bloom.insert(bytes);
        stage.len += 1;
        self.len += 1;
        Ok(false)
    }

    /// Tags recorded so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no tag was recorded yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Tags recorded over the design capacity of one stage (above 1.0 once a second stage is in
    /// use).
    pub fn fill_ratio(&self) -> f64 {
        self.len as f64 / self.capacity as f64
    }

    /// Stages in use.
    pub fn stages(&self) -> usize {
        self.stages.len()
    }

    /// Whether more tags than one stage was sized for were recorded.
    pub fn is_saturated(&self) -> bool {
        self.len > self.capacity
    }

    /// The filter's state, to save.
    pub fn snapshot(&self) -> ReplaySnapshot {
        ReplaySnapshot {
            stages: self
                .stages
                .iter()
                .map(|s| StageSnapshot {
                    seed: s.seed,
                    hashes: s.bloom.num_hashes(),
                    len: s.len as u64,
                    bits: s.bloom.as_slice().to_vec(),
                })
                .collect(),
        }
    }

    /// A filter with the state of `snapshot`, under `config`'s capacity and rate, whose later
    /// stages take their seeds from `secret` (as in [`ReplayFilter::new`]). `None` if the
    /// snapshot does not fit: no stage or too many, an empty bit vector, no hash or more than
    /// 64, or tag counts past `usize` (the state file's decoder refuses all of these).
    pub fn restore(
        config: &ReplayConfig,
        snapshot: &ReplaySnapshot,
        secret: Zeroizing<[u8; 32]>,
    ) -> Option<Self> {
        if snapshot.stages.is_empty() || snapshot.stages.len() > MAX_STAGES {
            return None;
        }
        let mut stages = Vec::with_capacity(snapshot.stages.len());
        let mut len = 0usize;
        for s in &snapshot.stages {
            if s.bits.is_empty() || s.hashes == 0 || s.hashes > MAX_HASHES {
                return None;
            }
            let bloom = BloomFilter::from_vec(s.bits.clone()).seed(&s.seed).hashes(s.hashes);
            let stage_len = usize::try_from(s.len).ok()?;
            len = len.checked_add(stage_len)?;
            stages.push(Stage { bloom, seed: s.seed, len: stage_len });
        }
        Some(Self { stages, capacity: config.capacity(), fp: config.fp(), len, secret })
    }
}

/// The hash seed of stage `index`: SHA-256 of a label, the secret and the index, cut to 128 bits.
fn stage_seed(secret: &[u8; 32], index: usize) -> u128 {
    let digest = Sha256::new()
        .chain_update(b"libp2p-mix replay filter stage seed")
        .chain_update(secret)
        .chain_update((index as u64).to_be_bytes())
        .finalize();
    let mut seed = [0u8; 16];
    seed.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(seed)
}

/// A saved [`ReplayFilter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplaySnapshot {
    /// Oldest first.
    pub stages: Vec<StageSnapshot>,
}

/// A saved stage: its hasher's seed, hash count, tags recorded and bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageSnapshot {
    /// The hasher's seed.
    pub seed: u128,
    /// Hashes per tag.
    pub hashes: u32,
    /// Tags recorded.
    pub len: u64,
    /// The bit vector.
    pub bits: Vec<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use mix_sphinx::{AddressBlock, Hop, MESSAGE_SIZE, NodeSecretKey, Route, WireFormat};
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn tags(n: usize) -> Vec<ReplayTag> {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let key = NodeSecretKey::generate(&mut rng);
        let route = Route::new(
            (0..3)
                .map(|_| Hop { public_key: key.public_key(), address: AddressBlock::ZERO })
                .collect(),
            vec![1, 1],
        )
        .unwrap();
        let format = WireFormat::default();
        (0..n)
            .map(|_| {
                let mut p = route
                    .forward_packet(&format, &AddressBlock::ZERO, &[0; MESSAGE_SIZE], &mut rng)
                    .unwrap();
                *key.open(&format, &mut p).unwrap().replay_tag()
            })
            .collect()
    }

    #[test]
    fn replays_are_caught_and_fresh_tags_pass() {
        let config = ReplayConfig {
            packets_per_second: 1,
            key_lifetime: Duration::from_secs(1),
            false_positive_rate: 1e-6,
        };
        let mut filter = ReplayFilter::new(&config, Zeroizing::new([7; 32]));
        let tags = tags(200);
        for tag in &tags {
            assert!(!filter.check_and_insert(tag).unwrap());
        }
        for tag in &tags {
            assert!(filter.check_and_insert(tag).unwrap());
        }
        assert_eq!(filter.len(), 200);
        assert!(!filter.is_saturated());
    }

    fn fill(config: &ReplayConfig, secret: u8, tags: &[ReplayTag]) -> ReplayFilter {
        let mut filter = ReplayFilter::new(config, Zeroizing::new([secret; 32]));
        for tag in tags {
            assert!(!filter.check_and_insert(tag).unwrap());
        }
        filter
    }

    /// The seeds come from the secret alone: one secret fills the same bits on every run (a
    /// seeded simulation drops the same packets), two secrets different ones, and a stage
    /// added after a restore hashes as it would have without the restart.
    #[test]
    fn stage_seeds_follow_the_secret() {
        let config = ReplayConfig {
            packets_per_second: 1,
            key_lifetime: Duration::from_secs(1),
            false_positive_rate: 1e-6,
        };
        let tags = tags(config.capacity() + 10);
        let (first, rest) = tags.split_at(config.capacity());

        let a = fill(&config, 1, &tags).snapshot();
        assert_eq!(a.stages.len(), 2);
        assert_eq!(a, fill(&config, 1, &tags).snapshot());
        let b = fill(&config, 2, &tags).snapshot();
        assert!(a.stages.iter().zip(&b.stages).all(|(x, y)| x.seed != y.seed && x.bits != y.bits));

        let saved = fill(&config, 1, first).snapshot();
        let mut restored = ReplayFilter::restore(&config, &saved, Zeroizing::new([1; 32])).unwrap();
        for tag in rest {
            assert!(!restored.check_and_insert(tag).unwrap());
        }
        assert_eq!(restored.snapshot(), a);
    }

    #[test]
    fn default_sizing_is_documented() {
        let c = ReplayConfig::default();
        assert_eq!(c.capacity(), 3_600_000);
        let mb = c.memory_bytes() as f64 / 1e6;
        assert!((12.0..14.0).contains(&mb), "{mb} MB");
    }
}
