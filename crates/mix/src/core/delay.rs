//! How long each hop holds a packet (LIBP2P-MIX §6.2).
//!
//! The sender writes one 16-bit millisecond value into each intermediate hop's routing block;
//! the hop turns it into a delay. What the value means is a policy the whole network shares:
//! a [`DelayStrategy`] gives the distribution, and [`DelaySemantics`] says who draws from it,
//! each hop (the spec) or the sender (Loopix, and reference nodes up to nim-libp2p-mix 48c77ad).

use std::fmt;
use std::num::NonZeroU16;
use std::time::Duration;

use rand::{Rng, RngExt};

/// A network's mixing-delay policy.
pub trait DelayStrategy: Send + Sync + fmt::Debug {
    /// The strategy's parameter, as written for an intermediate hop under
    /// [`DelaySemantics::Mean`]. Never 0: receivers that follow the spec text literally would
    /// take a zero delay for an exit.
    fn encode(&self, rng: &mut dyn Rng) -> NonZeroU16;

    /// A delay drawn for the parameter `encoded_ms`: by each hop under
    /// [`DelaySemantics::Mean`], by the sender under [`DelaySemantics::Exact`].
    fn sample(&self, encoded_ms: u16, rng: &mut dyn Rng) -> Duration;
}

/// Who draws each hop's delay from the network's [`DelayStrategy`].
///
/// Both give every hop an independent random delay with the strategy's distribution, as long
/// as sender and hop agree. When they do not, a `Mean` sender's packets wait exactly the mean
/// at an `Exact` hop (no mixing there), and an `Exact` sender's packets wait a delay drawn
/// around an already drawn one at a `Mean` hop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DelaySemantics {
    /// The sender writes the strategy's parameter (the mean) and each hop samples its own
    /// delay from it (LIBP2P-MIX §6.2; LIP-183 networks).
    #[default]
    Mean,
    /// The sender samples each hop's delay, writes the sample in whole milliseconds (at least
    /// 1), and the hop waits exactly that long (Loopix; nim-libp2p-mix up to 48c77ad).
    Exact,
}

impl DelaySemantics {
    /// The value a sender writes for one intermediate hop.
    pub fn write(self, strategy: &dyn DelayStrategy, rng: &mut dyn Rng) -> NonZeroU16 {
        let parameter = strategy.encode(rng);
        match self {
            Self::Mean => parameter,
            // Rounded up, so the written delay is never shorter than the one drawn.
            Self::Exact => {
                let drawn = strategy.sample(parameter.get(), rng);
                let ms = drawn.as_nanos().div_ceil(1_000_000).clamp(1, u128::from(u16::MAX));
                NonZeroU16::new(ms as u16).unwrap_or(NonZeroU16::MIN)
            }
        }
    }

    /// How long a hop holds a packet whose routing block carries `written_ms`.
    pub fn hold(
        self,
        strategy: &dyn DelayStrategy,
        written_ms: u16,
        rng: &mut dyn Rng,
    ) -> Duration {
        match self {
            Self::Mean => strategy.sample(written_ms, rng),
            Self::Exact => Duration::from_millis(written_ms.into()),
        }
    }

    /// The name used in configuration files: `mean` or `exact`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Mean => "mean",
            Self::Exact => "exact",
        }
    }
}

/// The reference's bound on exponential samples: the mean times −ln(10⁻⁶) ≈ 13.8.
const TRUNCATION_FACTOR: f64 = 13.815_510_557_964_274;
const MAX_DELAY_MS: f64 = u16::MAX as f64;

/// Exponential delays (the default, as in Loopix and the spec): the parameter is the mean, and
/// delays are drawn from an exponential distribution with that mean, truncated at
/// mean · ln(10⁶) (and 65.535 s). Memorylessness is what makes the order of packets leaving a
/// hop independent of the order they arrived in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExponentialDelay {
    mean_ms: NonZeroU16,
}

impl ExponentialDelay {
    /// Delays with the given mean, rounded to whole milliseconds in 1..=65535.
    pub fn new(mean: Duration) -> Self {
        Self { mean_ms: clamp_ms(mean) }
    }

    /// The mean each hop is told to use.
    pub fn mean(&self) -> Duration {
        Duration::from_millis(self.mean_ms.get().into())
    }
}

impl DelayStrategy for ExponentialDelay {
    fn encode(&self, _: &mut dyn Rng) -> NonZeroU16 {
        self.mean_ms
    }

    fn sample(&self, encoded_ms: u16, rng: &mut dyn Rng) -> Duration {
        truncated_exponential(f64::from(encoded_ms), rng)
    }
}

/// Draws from Exp(mean) truncated to [0, min(mean · ln 10⁶, 65 535)] ms by inverting its CDF.
pub(crate) fn truncated_exponential(mean_ms: f64, rng: &mut dyn Rng) -> Duration {
    if mean_ms <= 0.0 {
        return Duration::ZERO;
    }
    let upper = (mean_ms * TRUNCATION_FACTOR).min(MAX_DELAY_MS);
    let mass = 1.0 - (-upper / mean_ms).exp();
    let u: f64 = rng.random();
    let ms = -mean_ms * (1.0 - u * mass).ln();
    Duration::from_secs_f64(ms.clamp(0.0, upper) / 1000.0)
}

/// CDF of the truncated exponential delay distribution, for tests of the distribution.
pub fn truncated_exponential_cdf(mean_ms: f64, x_ms: f64) -> f64 {
    let upper = (mean_ms * TRUNCATION_FACTOR).min(MAX_DELAY_MS);
    if x_ms <= 0.0 {
        return 0.0;
    }
    if x_ms >= upper {
        return 1.0;
    }
    (1.0 - (-x_ms / mean_ms).exp()) / (1.0 - (-upper / mean_ms).exp())
}

/// Uniform delays: the parameter is an upper bound, delays are drawn uniformly from [0, bound].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UniformDelay {
    max_ms: NonZeroU16,
}

impl UniformDelay {
    /// Delays uniform on [0, `max`], `max` rounded to whole milliseconds in 1..=65535.
    pub fn new(max: Duration) -> Self {
        Self { max_ms: clamp_ms(max) }
    }
}

impl DelayStrategy for UniformDelay {
    fn encode(&self, _: &mut dyn Rng) -> NonZeroU16 {
        self.max_ms
    }

    fn sample(&self, encoded_ms: u16, rng: &mut dyn Rng) -> Duration {
        let u: f64 = rng.random();
        Duration::from_secs_f64(u * f64::from(encoded_ms) / 1000.0)
    }
}

/// No mixing delay: hops forward as soon as they have processed a packet. For measurements
/// and tests; it gives no protection against timing correlation. Encodes 1 ms (never 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoDelay;

impl DelayStrategy for NoDelay {
    fn encode(&self, _: &mut dyn Rng) -> NonZeroU16 {
        NonZeroU16::MIN
    }

    fn sample(&self, _: u16, _: &mut dyn Rng) -> Duration {
        Duration::ZERO
    }
}

fn clamp_ms(d: Duration) -> NonZeroU16 {
    let ms = d.as_millis().clamp(1, u128::from(u16::MAX)) as u16;
    NonZeroU16::new(ms).unwrap_or(NonZeroU16::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    /// Two-sided Kolmogorov-Smirnov statistic of `samples` against `cdf`.
    fn ks_statistic(samples: &mut [f64], cdf: impl Fn(f64) -> f64) -> f64 {
        samples.sort_by(f64::total_cmp);
        let n = samples.len() as f64;
        samples.iter().enumerate().fold(0.0, |d, (i, &x)| {
            let f = cdf(x);
            d.max((f - i as f64 / n).abs()).max(((i + 1) as f64 / n - f).abs())
        })
    }

    /// Critical value at α = 0.01 for large n.
    fn ks_critical(n: usize) -> f64 {
        1.628 / (n as f64).sqrt()
    }

    #[test]
    fn exponential_samples_follow_the_truncated_distribution() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        for mean in [1u16, 5, 100, 10_000] {
            let strategy = ExponentialDelay::new(Duration::from_millis(mean.into()));
            let encoded = strategy.encode(&mut rng).get();
            assert_eq!(encoded, mean);
            let mut samples: Vec<f64> = (0..20_000)
                .map(|_| strategy.sample(encoded, &mut rng).as_secs_f64() * 1000.0)
                .collect();
            let d = ks_statistic(&mut samples, |x| truncated_exponential_cdf(mean.into(), x));
            assert!(d < ks_critical(samples.len()), "mean {mean}: D = {d}");
            // A plain (untruncated) exponential with twice the mean is rejected: the test has power.
            let d_wrong =
                ks_statistic(&mut samples, |x| 1.0 - (-x / (2.0 * f64::from(mean))).exp());
            assert!(d_wrong > ks_critical(samples.len()), "mean {mean}: D_wrong = {d_wrong}");
        }
    }

    /// KS statistic of whole-millisecond `samples` against the distribution of ⌈X⌉ for X
    /// with CDF `cdf`: P(⌈X⌉ ≤ k) = cdf(k), compared at every value taken.
    fn discrete_ks_statistic(samples: &mut [u64], cdf: impl Fn(f64) -> f64) -> f64 {
        samples.sort_unstable();
        let n = samples.len() as f64;
        let mut d = 0.0f64;
        let mut i = 0;
        while i < samples.len() {
            let k = samples[i];
            let below = i as f64 / n;
            while i < samples.len() && samples[i] == k {
                i += 1;
            }
            d = d.max((i as f64 / n - cdf(k as f64)).abs());
            d = d.max((below - cdf(k as f64 - 1.0)).abs());
        }
        d
    }

    /// Under `Exact`, the sender draws and the hop waits what was written: the held delays
    /// follow the strategy's distribution (to the millisecond), and every hop still gets an
    /// independent random delay.
    #[test]
    fn exact_semantics_hold_delays_drawn_by_the_sender() {
        let mut rng = ChaCha20Rng::seed_from_u64(10);
        for mean in [40u16, 1000] {
            let strategy = ExponentialDelay::new(Duration::from_millis(mean.into()));
            let mut held: Vec<u64> = (0..20_000)
                .map(|_| {
                    let written = DelaySemantics::Exact.write(&strategy, &mut rng).get();
                    let hold = DelaySemantics::Exact.hold(&strategy, written, &mut rng);
                    assert_eq!(hold, Duration::from_millis(written.into()));
                    hold.as_millis() as u64
                })
                .collect();
            let cdf = |x: f64| truncated_exponential_cdf(mean.into(), x);
            let d = discrete_ks_statistic(&mut held, cdf);
            assert!(d < ks_critical(held.len()), "mean {mean}: D = {d}");
            let wrong = |x: f64| 1.0 - (-x / (2.0 * f64::from(mean))).exp();
            let d_wrong = discrete_ks_statistic(&mut held, wrong);
            assert!(d_wrong > ks_critical(held.len()), "mean {mean}: D_wrong = {d_wrong}");
        }
        let uniform = UniformDelay::new(Duration::from_millis(250));
        let mut held: Vec<u64> = (0..20_000)
            .map(|_| u64::from(DelaySemantics::Exact.write(&uniform, &mut rng).get()))
            .collect();
        let d = discrete_ks_statistic(&mut held, |x| (x / 250.0).clamp(0.0, 1.0));
        assert!(d < ks_critical(held.len()), "uniform: D = {d}");
    }

    /// Under `Mean`, the written value is the parameter and each hop samples from it.
    #[test]
    fn mean_semantics_write_the_parameter() {
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        let strategy = ExponentialDelay::new(Duration::from_millis(300));
        assert_eq!(DelaySemantics::Mean.write(&strategy, &mut rng).get(), 300);
        let mut held: Vec<f64> = (0..20_000)
            .map(|_| DelaySemantics::Mean.hold(&strategy, 300, &mut rng).as_secs_f64() * 1000.0)
            .collect();
        let d = ks_statistic(&mut held, |x| truncated_exponential_cdf(300.0, x));
        assert!(d < ks_critical(held.len()), "D = {d}");
    }

    #[test]
    fn uniform_samples_are_uniform() {
        let mut rng = ChaCha20Rng::seed_from_u64(8);
        let strategy = UniformDelay::new(Duration::from_millis(250));
        let mut samples: Vec<f64> =
            (0..20_000).map(|_| strategy.sample(250, &mut rng).as_secs_f64() * 1000.0).collect();
        let d = ks_statistic(&mut samples, |x| (x / 250.0).clamp(0.0, 1.0));
        assert!(d < ks_critical(samples.len()), "D = {d}");
    }

    #[test]
    fn encodings_are_never_zero_and_zero_means_no_delay() {
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        assert_eq!(ExponentialDelay::new(Duration::ZERO).encode(&mut rng).get(), 1);
        assert_eq!(UniformDelay::new(Duration::from_secs(1000)).encode(&mut rng).get(), u16::MAX);
        assert_eq!(NoDelay.encode(&mut rng).get(), 1);
        assert_eq!(
            ExponentialDelay::new(Duration::from_millis(5)).sample(0, &mut rng),
            Duration::ZERO
        );
        assert_eq!(NoDelay.sample(500, &mut rng), Duration::ZERO);
    }
}
