//! Settings of streams, with presets.

use std::time::Duration;

use crate::frame::MAX_SHARDS;

/// How much parity a block gets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Redundancy {
    /// This many parity shards (at most 16) for a block of [`StreamConfig::data_shards`] data
    /// shards, and proportionally fewer, at least one, for smaller blocks.
    Parity(u8),
    /// Enough parity for a block to survive the loss of this share of its shards (at most a
    /// half).
    Tolerance(f64),
    /// Parity from the loss measured on the stream (through its acknowledgements): the least
    /// that keeps the chance of a block needing a retransmission below `block_loss`. A stream
    /// starts from [`StreamConfig::initial_loss`].
    Adaptive {
        /// Target share of blocks that need a retransmission.
        block_loss: f64,
    },
}

/// One stream's settings. The acceptor's own settings govern its direction.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamConfig {
    /// Mix hops per shard (3 to 5); reference nodes accept only 3.
    pub hops: usize,
    /// The mixing delay value written for every hop (the mean of each hop's exponential delay
    /// in an exponential network); `None`: the node's own.
    pub hop_delay: Option<Duration>,
    /// The longest random gap between two frames of this stream, drawn anew each time, so
    /// that a burst of shards does not leave as a burst. Zero turns it off.
    pub jitter: Duration,
    /// Data shards of a full block (k), at most: fewer when the measured loss calls for more
    /// parity than fits the 32 shards a block may have. Bigger blocks spread a block's parity
    /// (and its acknowledgement) over more data.
    pub data_shards: u8,
    /// Parity policy.
    pub redundancy: Redundancy,
    /// Shard loss assumed before any has been measured.
    pub initial_loss: f64,
    /// zstd level; `None` sends everything uncompressed. Blocks are compressed only when a
    /// sample shows it shrinks them.
    pub compression: Option<i32>,
    /// Blocks in flight (sent, not acknowledged) at most, and blocks the receiving side
    /// buffers: the stream's flow-control window.
    pub window: u32,
    /// Bytes a writer may have buffered before its writes wait.
    pub send_buffer: usize,
    /// How long written bytes may wait for more before they are sent as a short block
    /// (`flush` sends at once).
    pub coalesce: Duration,
    /// How long the receiving side may hold back an acknowledgement (a few complete blocks,
    /// up to four, are acknowledged at once).
    pub ack_delay: Duration,
    /// Retransmission timeout before any round trip was measured.
    pub initial_rto: Duration,
    /// Bounds of the retransmission timeout.
    pub min_rto: Duration,
    /// Upper bound of the retransmission timeout (after backoff).
    pub max_rto: Duration,
    /// Times a block is sent again before the stream fails.
    pub max_retries: u32,
    /// A stream that hears nothing from its peer for this long fails.
    pub idle_timeout: Duration,
    /// SURBs the acceptor should hold at least (for acknowledgements and replies).
    pub min_surbs: u16,
    /// SURBs the opener sends with its first frames.
    pub initial_surbs: u16,
    /// SURBs the opener keeps with the acceptor at most.
    pub max_surbs: u16,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self::interactive()
    }
}

impl StreamConfig {
    /// Low delay for calls and interactive sessions: the network's own mixing delay, little
    /// jitter, short coalescing. The default.
    pub fn interactive() -> Self {
        Self {
            hops: 3,
            hop_delay: None,
            jitter: Duration::from_micros(200),
            data_shards: 31,
            redundancy: Redundancy::Adaptive { block_loss: 0.01 },
            initial_loss: 0.05,
            compression: Some(1),
            window: 32,
            send_buffer: 1 << 20,
            coalesce: Duration::from_millis(5),
            ack_delay: Duration::from_millis(10),
            initial_rto: Duration::from_secs(2),
            min_rto: Duration::from_millis(200),
            max_rto: Duration::from_secs(30),
            max_retries: 10,
            idle_timeout: Duration::from_secs(180),
            min_surbs: 4,
            initial_surbs: 10,
            max_surbs: 512,
        }
    }

    /// Strong unlinkability for transfers that can wait: exponential mixing delays of 500 ms
    /// per hop, wider jitter, more parity (a retransmission costs seconds), a larger window
    /// to keep the pipe full over long round trips.
    pub fn high_anonymity() -> Self {
        Self {
            hop_delay: Some(Duration::from_millis(500)),
            jitter: Duration::from_millis(20),
            redundancy: Redundancy::Tolerance(0.25),
            window: 128,
            send_buffer: 4 << 20,
            coalesce: Duration::from_millis(100),
            ack_delay: Duration::from_millis(200),
            initial_rto: Duration::from_secs(15),
            min_rto: Duration::from_secs(3),
            max_rto: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(600),
            min_surbs: 8,
            initial_surbs: 20,
            ..Self::interactive()
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(3..=5).contains(&self.hops) {
            return Err(ConfigError::Hops(self.hops));
        }
        if self.data_shards == 0 || self.data_shards >= MAX_SHARDS {
            return Err(ConfigError::DataShards(self.data_shards));
        }
        let share_ok = |x: f64| x.is_finite() && (0.0..1.0).contains(&x);
        let redundancy_ok = match self.redundancy {
            // Blocks shrink to fit their parity in 32 shards.
            Redundancy::Parity(m) => m <= 16,
            Redundancy::Tolerance(t) => share_ok(t) && t <= 0.5,
            Redundancy::Adaptive { block_loss } => share_ok(block_loss) && block_loss > 0.0,
        };
        if !redundancy_ok || !share_ok(self.initial_loss) {
            return Err(ConfigError::Redundancy);
        }
        if self.window == 0 || self.send_buffer == 0 || self.max_surbs < self.min_surbs.max(1) {
            return Err(ConfigError::Limits);
        }
        if self.min_rto > self.max_rto || self.idle_timeout.is_zero() {
            return Err(ConfigError::Timers);
        }
        Ok(())
    }

    /// The most data shards a block should have at shard loss `loss`: [`Self::data_shards`],
    /// or fewer if its parity would not fit in 32 shards.
    pub fn block_shards(&self, loss: f64) -> u8 {
        (1..=self.data_shards)
            .rev()
            .find(|&k| {
                u32::from(k) + u32::from(self.parity_wanted(k, loss)) <= u32::from(MAX_SHARDS)
            })
            .unwrap_or(1)
    }

    /// Parity shards for a block of `k` data shards, at measured shard loss `loss`.
    pub fn parity(&self, k: u8, loss: f64) -> u8 {
        self.parity_wanted(k, loss).min(MAX_SHARDS - k)
    }

    /// Parity shards to send with the `need` shards a block still lacks, when it is sent
    /// again. A resent round that falls short costs a timeout, doubled each time, while the
    /// window may be stuck behind the block, so it aims for a 16 times smaller chance of
    /// that than a first send does. (Only adaptive parity does; and a resend picks among the
    /// block's own shards, so it gets at most the ones not known to have arrived.)
    pub fn resend_parity(&self, need: u8, loss: f64) -> u8 {
        let wanted = match self.redundancy {
            Redundancy::Adaptive { block_loss } => {
                let room = MAX_SHARDS.saturating_sub(need).max(16);
                adaptive_parity(need, loss, block_loss / RESEND_SAFETY, room)
            }
            _ => self.parity_wanted(need, loss),
        };
        wanted.min(MAX_SHARDS - need)
    }

    fn parity_wanted(&self, k: u8, loss: f64) -> u8 {
        let room = MAX_SHARDS.saturating_sub(k).max(16);
        match self.redundancy {
            Redundancy::Parity(0) => 0,
            Redundancy::Parity(m) => {
                let scaled = (u32::from(m) * u32::from(k)).div_ceil(u32::from(self.data_shards));
                scaled.clamp(1, u32::from(m)) as u8
            }
            Redundancy::Tolerance(t) => (f64::from(k) * t / (1.0 - t)).ceil() as u8,
            Redundancy::Adaptive { block_loss } => adaptive_parity(k, loss, block_loss, room),
        }
    }
}

/// How much less likely than a first send a resent round should be to fall short.
const RESEND_SAFETY: f64 = 16.0;

/// The least `m` with P(more than `m` of `k + m` shards lost) ≤ `target` at shard loss `p`
/// (with `p` at least 0.2 %, so that a clean network still carries one spare shard for big
/// blocks).
fn adaptive_parity(k: u8, p: f64, target: f64, room: u8) -> u8 {
    let p = p.clamp(0.002, 0.6);
    (0..=room)
        .find(|&m| binomial_tail(u32::from(k) + u32::from(m), p, u32::from(m)) <= target)
        .unwrap_or(room)
}

/// P(X > m) for X ~ Binomial(n, p).
fn binomial_tail(n: u32, p: f64, m: u32) -> f64 {
    let mut cdf = 0.0;
    let mut term = (1.0 - p).powi(n as i32);
    for i in 0..=m.min(n) {
        cdf += term;
        term *= f64::from(n - i) / f64::from(i + 1) * p / (1.0 - p);
    }
    (1.0 - cdf).max(0.0)
}

/// Settings that cannot work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Paths must have 3 to 5 hops.
    #[error("{0} hops: paths have 3 to 5")]
    Hops(usize),
    /// Data shards must be 1 to 31.
    #[error("{0} data shards: 1 to 31")]
    DataShards(u8),
    /// The redundancy or loss settings are out of range.
    #[error("redundancy out of range (parity at most 16, tolerance at most 0.5, shares below 1)")]
    Redundancy,
    /// A window, buffer or SURB limit is zero or inconsistent.
    #[error("window, buffer and SURB limits must be positive")]
    Limits,
    /// Timers are inconsistent.
    #[error("min_rto must not exceed max_rto, and the idle timeout must be positive")]
    Timers,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_parity_follows_the_policy() {
        StreamConfig::interactive().validate().unwrap();
        StreamConfig::high_anonymity().validate().unwrap();
        let c = StreamConfig::interactive();
        // Adaptive: one spare shard on a clean network, more as loss grows.
        assert_eq!(c.parity(16, 0.0), 1);
        assert_eq!((c.block_shards(0.0), c.parity(31, 0.0)), (31, 1));
        let at = |p| c.parity(16, p);
        assert!(at(0.05) > at(0.01) && at(0.10) > at(0.05) && at(0.30) > at(0.10));
        assert!(binomial_tail(16 + u32::from(at(0.10)), 0.10, u32::from(at(0.10))) <= 0.01);
        assert_eq!(c.parity(16, 0.9), 16, "capped at 32 shards");
        // Lossier networks get smaller blocks, to leave room for parity.
        let k = c.block_shards(0.10);
        assert!(k < 31 && k + c.parity(k, 0.10) <= 32 && c.parity(k, 0.10) >= 6, "{k}");
        assert!(c.block_shards(0.30) < k);
        assert_eq!(c.parity(1, 0.0), 0);
        assert_eq!(c.parity(1, 0.05), 1, "a single shard is sent twice on a lossy network");
        let fixed =
            StreamConfig { redundancy: Redundancy::Parity(4), data_shards: 16, ..c.clone() };
        assert_eq!((fixed.parity(16, 0.5), fixed.parity(8, 0.5), fixed.parity(1, 0.5)), (4, 2, 1));
        let tolerant =
            StreamConfig { redundancy: Redundancy::Tolerance(0.2), data_shards: 16, ..c.clone() };
        assert_eq!(tolerant.parity(16, 0.0), 4);
        assert_eq!(StreamConfig { hops: 6, ..c.clone() }.validate(), Err(ConfigError::Hops(6)));
        assert_eq!(
            StreamConfig { redundancy: Redundancy::Parity(17), data_shards: 16, ..c.clone() }
                .validate(),
            Err(ConfigError::Redundancy)
        );
    }

    #[test]
    fn binomial_tail_matches_known_values() {
        // P(X > 0) for n = 10, p = 0.1 is 1 - 0.9^10.
        assert!((binomial_tail(10, 0.1, 0) - (1.0 - 0.9f64.powi(10))).abs() < 1e-12);
        assert!(binomial_tail(14, 0.1, 14) < 1e-12);
        // 10 + 4 at 10 % loss fails 0.9 % of the time (the earlier measurement: 0.995 delivered).
        assert!((binomial_tail(14, 0.1, 4) - 0.00923).abs() < 2e-4);
    }
}
