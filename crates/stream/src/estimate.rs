//! What a sender learns from acknowledgements: round-trip time and frame loss; and the
//! receiver's window of frame sequence numbers already seen.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Round-trip time, smoothed as TCP does (RFC 6298).
#[derive(Debug, Clone)]
pub(crate) struct Rtt {
    srtt: Option<Duration>,
    rttvar: Duration,
    min: Option<Duration>,
}

impl Rtt {
    pub(crate) fn new() -> Self {
        Self { srtt: None, rttvar: Duration::ZERO, min: None }
    }

    pub(crate) fn sample(&mut self, rtt: Duration) {
        self.min = Some(self.min.map_or(rtt, |m| m.min(rtt)));
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let diff = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + diff) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
    }

    pub(crate) fn smoothed(&self) -> Option<Duration> {
        self.srtt
    }

    /// The retransmission timeout: `srtt + 4 rttvar`, within the bounds.
    pub(crate) fn rto(&self, initial: Duration, min: Duration, max: Duration) -> Duration {
        match self.srtt {
            None => initial,
            Some(srtt) => (srtt + self.rttvar * 4).clamp(min, max),
        }
    }
}

/// Frame loss on one direction, from the receiver's samples: how many of a range of frame
/// numbers far enough behind the newest arrived. Ranges that overlap earlier ones count only
/// for their new part. The estimate is a ratio of decaying counts (lost over sent, forgetting
/// with a horizon of [`Self::HORIZON`] frames), started from a prior worth [`Self::PRIOR`]
/// frames, so the first samples move it quickly and old ones fade.
#[derive(Debug, Clone)]
pub(crate) struct LossMeter {
    lost: f64,
    total: f64,
    last_end: Option<u32>,
    /// Frames the samples covered.
    sampled: u64,
}

impl LossMeter {
    const MIN_SAMPLE: u16 = 16;
    const PRIOR: f64 = 64.0;
    const HORIZON: f64 = 2048.0;

    pub(crate) fn new(initial: f64) -> Self {
        Self { lost: initial * Self::PRIOR, total: Self::PRIOR, last_end: None, sampled: 0 }
    }

    pub(crate) fn estimate(&self) -> f64 {
        (self.lost / self.total).clamp(0.0, 1.0)
    }

    /// Frames the samples so far covered.
    pub(crate) fn sampled(&self) -> u64 {
        self.sampled
    }

    /// Of `len` frames numbered below `end`, `got` arrived.
    pub(crate) fn on_sample(&mut self, end: u32, len: u16, got: u16) {
        if len < Self::MIN_SAMPLE || got > len {
            return;
        }
        let start = end.saturating_sub(u32::from(len));
        let fresh = match self.last_end {
            Some(last) if last >= end => return,
            Some(last) => f64::from(end - last.max(start)),
            None => f64::from(len),
        };
        let share = 1.0 - f64::from(got) / f64::from(len);
        let keep = (-fresh / Self::HORIZON).exp();
        self.lost = self.lost * keep + share * fresh;
        self.total = self.total * keep + fresh;
        self.last_end = Some(end);
        self.sampled += fresh as u64;
    }
}

/// What a node knows of the mixnet's loss, learned from the streams it ran: new streams start
/// from it. A stream long enough to measure its loss (see `LossMeter`) says so directly; a
/// short one only shows whether its blocks needed retransmission, and that is used as
/// feedback: blocks that had to be sent again raise the estimate, clean blocks lower it a
/// little each, so that about one block in a hundred needs a retransmission.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NetworkLoss {
    estimate: f64,
}

impl NetworkLoss {
    /// Frames of measurement that count as much as everything learned before.
    const FULL_WEIGHT: f64 = 4096.0;

    /// Starting from `initial`.
    pub fn new(initial: f64) -> Self {
        Self { estimate: initial.clamp(0.0, 0.5) }
    }

    /// The current estimate of the share of frames lost.
    pub fn estimate(&self) -> f64 {
        self.estimate
    }

    /// Learns from a stream that ended.
    pub fn learn(&mut self, stats: &crate::ConnectionStats) {
        let sampled = stats.loss_sampled as f64;
        if sampled >= 64.0 {
            let weight = (sampled / Self::FULL_WEIGHT).min(0.5);
            self.estimate = (1.0 - weight) * self.estimate + weight * stats.loss;
        } else if stats.send.blocks > 0 {
            let blocks = stats.send.blocks as f64;
            let failed = stats.send.blocks_retransmitted as f64;
            if failed > 0.0 {
                self.estimate = self.estimate * (1.0 + 2.0 * failed / blocks) + 0.005;
            } else {
                self.estimate *= 0.995f64.powf(blocks);
            }
        }
        self.estimate = self.estimate.clamp(0.0, 0.5);
    }
}

/// The rate of events (frames received): each event adds `1/τ` to a sum that decays with time
/// constant `τ` (one second), so a steady stream of `λ` events per second reads `λ`.
#[derive(Debug, Clone, Default)]
pub(crate) struct RateMeter {
    sum: f64,
    last: Option<Instant>,
}

impl RateMeter {
    const TAU: f64 = 1.0;

    pub(crate) fn record(&mut self, now: Instant) {
        self.sum = self.rate(now) + 1.0 / Self::TAU;
        self.last = Some(now);
    }

    /// Events per second.
    pub(crate) fn rate(&self, now: Instant) -> f64 {
        let Some(last) = self.last else { return 0.0 };
        let age = now.saturating_duration_since(last).as_secs_f64();
        self.sum * (-age / Self::TAU).exp()
    }
}

/// When each recent frame left, to turn acknowledgements into round-trip samples.
#[derive(Debug, Clone, Default)]
pub(crate) struct SendTimes {
    times: VecDeque<(u32, Instant)>,
}

impl SendTimes {
    const KEEP: usize = 8192;

    pub(crate) fn record(&mut self, seq: u32, at: Instant) {
        if self.times.len() == Self::KEEP {
            self.times.pop_front();
        }
        self.times.push_back((seq, at));
    }

    pub(crate) fn sent_at(&self, seq: u32) -> Option<Instant> {
        let i = self.times.binary_search_by_key(&seq, |(s, _)| *s).ok()?;
        Some(self.times[i].1)
    }
}

/// Sequence numbers seen recently, to drop replayed frames: everything above the highest
/// seen is new, and a bitmap covers the [`Self::SPAN`] below it; older frames are refused.
#[derive(Debug, Clone)]
pub(crate) struct SeenWindow {
    highest: Option<u32>,
    bits: Box<[u64; Self::WORDS]>,
}

/// What [`SeenWindow::check_and_mark`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    New,
    Duplicate,
    TooOld,
}

impl SeenWindow {
    const WORDS: usize = 64;
    pub(crate) const SPAN: u32 = 64 * Self::WORDS as u32;

    pub(crate) fn new() -> Self {
        Self { highest: None, bits: Box::new([0; Self::WORDS]) }
    }

    pub(crate) fn highest(&self) -> Option<u32> {
        self.highest
    }

    /// How many of the numbers in `[start, end)` were seen; `None` unless the range lies
    /// within the window.
    pub(crate) fn count(&self, start: u32, end: u32) -> Option<u32> {
        let highest = self.highest?;
        if start > end || end > highest.saturating_add(1) || highest - start >= Self::SPAN {
            return None;
        }
        Some((start..end).filter(|s| self.get(*s)).count() as u32)
    }

    /// Whether `seq` would be new, without recording it.
    pub(crate) fn check(&self, seq: u32) -> Seen {
        let Some(highest) = self.highest else { return Seen::New };
        if seq > highest {
            return Seen::New;
        }
        let back = highest - seq;
        if back >= Self::SPAN {
            return Seen::TooOld;
        }
        if self.get(seq) { Seen::Duplicate } else { Seen::New }
    }

    /// Records `seq` (call after [`Self::check`] said new and the frame authenticated).
    pub(crate) fn mark(&mut self, seq: u32) {
        match self.highest {
            Some(highest) if seq <= highest => {}
            Some(highest) => {
                // Clear the bits of the numbers skipped over, which are new until seen.
                let step = seq - highest;
                if step >= Self::SPAN {
                    self.bits.fill(0);
                } else {
                    for s in highest + 1..seq {
                        self.clear(s);
                    }
                }
                self.highest = Some(seq);
            }
            None => {
                self.bits.fill(0);
                self.highest = Some(seq);
            }
        }
        self.set(seq);
    }

    fn slot(seq: u32) -> (usize, u64) {
        let i = seq % Self::SPAN;
        ((i / 64) as usize, 1u64 << (i % 64))
    }

    fn get(&self, seq: u32) -> bool {
        let (w, b) = Self::slot(seq);
        self.bits[w] & b != 0
    }

    fn set(&mut self, seq: u32) {
        let (w, b) = Self::slot(seq);
        self.bits[w] |= b;
    }

    fn clear(&mut self, seq: u32) {
        let (w, b) = Self::slot(seq);
        self.bits[w] &= !b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtt_follows_samples() {
        let mut rtt = Rtt::new();
        let (init, min, max) =
            (Duration::from_secs(1), Duration::from_millis(10), Duration::from_secs(9));
        assert_eq!(rtt.rto(init, min, max), init);
        rtt.sample(Duration::from_millis(100));
        assert_eq!(rtt.rto(init, min, max), Duration::from_millis(300));
        for _ in 0..50 {
            rtt.sample(Duration::from_millis(100));
        }
        assert!(rtt.rto(init, min, max) < Duration::from_millis(110));
        assert!(rtt.rto(init, Duration::from_millis(200), max) == Duration::from_millis(200));
    }

    #[test]
    fn rate_reads_events_per_second() {
        let mut rate = RateMeter::default();
        let t0 = Instant::now();
        for i in 0..5000u32 {
            rate.record(t0 + Duration::from_millis(u64::from(i)));
        }
        let now = t0 + Duration::from_millis(5000);
        assert!((rate.rate(now) - 1000.0).abs() < 20.0, "{}", rate.rate(now));
        assert!(rate.rate(now + Duration::from_secs(10)) < 1.0);
    }

    #[test]
    fn loss_converges_to_the_share_missing() {
        let mut loss = LossMeter::new(0.5);
        for i in 1..200u32 {
            loss.on_sample(i * 100, 200, 180);
        }
        assert!((loss.estimate() - 0.1).abs() < 0.01, "{}", loss.estimate());
        // A repeated or older range changes nothing.
        let before = loss.estimate();
        loss.on_sample(19_900, 200, 0);
        loss.on_sample(100, 200, 0);
        assert_eq!(loss.estimate(), before);
    }

    #[test]
    fn the_seen_window_drops_replays_and_ancient_frames() {
        let mut w = SeenWindow::new();
        for seq in [5, 3, 9, 4] {
            assert_eq!(w.check(seq), Seen::New);
            w.mark(seq);
        }
        for seq in [5, 3, 9, 4] {
            assert_eq!(w.check(seq), Seen::Duplicate);
        }
        assert_eq!(w.check(6), Seen::New);
        w.mark(10_000);
        assert_eq!(w.check(9), Seen::TooOld);
        assert_eq!(w.check(9_000), Seen::New);
        w.mark(9_000);
        assert_eq!(w.check(9_000), Seen::Duplicate);
        // Skipping ahead by a little clears only what was skipped.
        w.mark(10_070);
        assert_eq!(w.check(10_069), Seen::New);
        assert_eq!(w.check(10_000), Seen::Duplicate);
        assert_eq!(w.check(9_000), Seen::Duplicate);
    }
}
