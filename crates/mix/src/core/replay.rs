//! Replay protection: every packet's tag (SHA-256 of its shared secret at this hop) is
//! remembered for as long as the mix key that produced it, so a packet, or a SURB, that comes
//! back is dropped. A replayed packet would otherwise reappear on the same path and let an
//! observer follow it.
//!
//! Memory is bounded by a Bloom filter sized for `packets_per_second × key_lifetime` tags at a
//! chosen false-positive rate (a false positive drops an honest packet). Size in bits is
//! n·ln(1/p)/ln²2: about 28.8 bits per tag at p = 10⁻⁶, i.e. 12.9 MB for the default 1000
//! packets/s over one hour. Past that many tags the false-positive rate climbs; the filter
//! reports itself saturated so that an operator (or key rotation, which starts a new filter)
//! can act.

use std::time::Duration;

use fastbloom::BloomFilter;
use mix_sphinx::ReplayTag;

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

/// The set of tags seen under the current mix key.
#[derive(Debug)]
pub struct ReplayFilter {
    bloom: BloomFilter,
    capacity: usize,
    len: usize,
}

impl ReplayFilter {
    /// An empty filter.
    pub fn new(config: &ReplayConfig) -> Self {
        let capacity = config.capacity();
        Self {
            bloom: BloomFilter::with_false_pos(config.fp()).expected_items(capacity),
            capacity,
            len: 0,
        }
    }

    /// Records `tag`; returns whether it was (probably) seen before.
    pub fn check_and_insert(&mut self, tag: &ReplayTag) -> bool {
        let seen = self.bloom.insert(tag.as_bytes());
        if !seen {
            self.len += 1;
        }
        seen
    }

    /// Tags recorded so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no tag was recorded yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether more tags than the filter was sized for were recorded: its false-positive rate
    /// is now above the configured one.
    pub fn is_saturated(&self) -> bool {
        self.len > self.capacity
    }
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
        let mut filter = ReplayFilter::new(&config);
        let tags = tags(200);
        for tag in &tags {
            assert!(!filter.check_and_insert(tag));
        }
        for tag in &tags {
            assert!(filter.check_and_insert(tag));
        }
        assert_eq!(filter.len(), 200);
        assert!(!filter.is_saturated());
    }

    #[test]
    fn default_sizing_is_documented() {
        let c = ReplayConfig::default();
        assert_eq!(c.capacity(), 3_600_000);
        let mb = c.memory_bytes() as f64 / 1e6;
        assert!((12.0..14.0).contains(&mb), "{mb} MB");
    }
}
