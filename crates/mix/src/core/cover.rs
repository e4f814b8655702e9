//! Cover traffic: loop packets that travel a path of mix nodes and come back to their sender.
//!
//! A loop is a normal Sphinx packet with the reserved codec `/mix/cover/1.0.0` whose exit is
//! the sender itself, so on every link it looks like any other packet. Loops hide when a node
//! sends real traffic, and a loop that does not come back tells the sender that a node on its
//! path may be down (the pool hears about it through [`super::NodePool::report_loop`]).
//!
//! Two schedules:
//! - [`CoverMode::Loops`]: loops leave at Poisson-distributed times at `rate`, on top of the
//!   node's own traffic (which keeps its pre-send delays).
//! - [`CoverMode::Loopix`], the three streams of Loopix: a Poisson stream of slots at `rate`,
//!   each carrying the oldest queued own packet or else a *drop* (a cover packet to a random
//!   exit, which discards it), and an independent Poisson stream of loops at `loop_rate`. Own
//!   packets replace drops, never loops, so both directions of a node's links look the same
//!   busy or idle: departures are `rate + loop_rate` whatever the node sends, and its own loops
//!   come back at `loop_rate` whatever it sends. (Filling slots with loops instead, as this
//!   crate did before, made a busy node get back fewer loops: its inbound rate fell by exactly
//!   its real rate, for any observer of its links to see.)

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use libp2p_identity::PeerId;

/// How a node sends cover traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CoverMode {
    /// No cover traffic; own packets leave after their pre-send delay.
    #[default]
    Off,
    /// Poisson loops at [`CoverConfig::rate`], independent of own traffic.
    Loops,
    /// A Poisson stream of slots at [`CoverConfig::rate`], each carrying an own packet if one is
    /// queued and a drop otherwise, and Poisson loops at [`CoverConfig::loop_rate`].
    Loopix,
    /// The flawed scheme this crate used before: slots carry an own packet or else a loop, so
    /// a busy node's inbound loop rate drops by its real rate. Kept only as the control of
    /// the link observer's test (which detects it); do not use it.
    LoopFill,
}

impl CoverMode {
    /// Whether own packets wait for a slot.
    pub(crate) fn queues_own(self) -> bool {
        matches!(self, Self::Loopix | Self::LoopFill)
    }
}

/// Cover traffic and the outbound rate budget.
#[derive(Debug, Clone, PartialEq)]
pub struct CoverConfig {
    /// Which schedule.
    pub mode: CoverMode,
    /// [`CoverMode::Loops`]: loops per second. [`CoverMode::Loopix`]: slots per second (own
    /// packets or drops).
    pub rate: f64,
    /// [`CoverMode::Loopix`]: loops per second, independent of the slots.
    pub loop_rate: f64,
    /// A loop not back after this long counts as lost.
    pub loop_timeout: Duration,
    /// [`CoverMode::Loopix`]: own packets waiting for a slot. More are refused with
    /// [`super::SendError::QueueFull`].
    pub max_queued_own: usize,
    /// [`CoverMode::Loopix`]: the longest expected wait for a slot (queue length / rate). Sends
    /// that would queue longer are refused with [`super::SendError::QueueFull`]: the slot rate
    /// is too low for the offered load. With key rotation, at most half the overlap, so that
    /// queued packets leave while the keys they were built with are still held.
    pub max_queue_delay: Duration,
    /// Packets per second this node may send in all (cover, own and forwarded). When the
    /// measured outbound rate reaches it, loops are skipped (real packets never are), and the
    /// node's own packets are limited to `budget / (1 + path_len)` per second, the share that
    /// leaves room for every hop of its paths to carry them. `None`: no budget.
    pub rate_budget: Option<f64>,
}

impl Default for CoverConfig {
    fn default() -> Self {
        Self {
            mode: CoverMode::Off,
            rate: 2.0,
            loop_rate: 2.0,
            loop_timeout: Duration::from_secs(20),
            max_queued_own: 1024,
            max_queue_delay: Duration::from_secs(2),
            rate_budget: None,
        }
    }
}

/// Loops in flight, to notice the ones that do not come back.
#[derive(Debug, Default)]
pub(crate) struct LoopTracker {
    pending: HashMap<[u8; 16], (Instant, Vec<PeerId>)>,
    /// Ids in the order they were sent; their deadlines are in the same order.
    order: VecDeque<[u8; 16]>,
}

/// What became of a loop.
pub(crate) struct LoopOutcome {
    pub(crate) path: Vec<PeerId>,
    pub(crate) rtt: Option<Duration>,
}

impl LoopTracker {
    /// Remembers a loop sent at `now` through `path` (its own node excluded). At most `cap` are
    /// kept; the oldest is forgotten (neither lost nor returned) beyond that.
    pub(crate) fn sent(&mut self, id: [u8; 16], path: Vec<PeerId>, now: Instant, cap: usize) {
        while self.order.len() >= cap.max(1) {
            if let Some(old) = self.order.pop_front() {
                self.pending.remove(&old);
            }
        }
        self.pending.insert(id, (now, path));
        self.order.push_back(id);
    }

    /// A loop came back: its path worked.
    pub(crate) fn returned(&mut self, id: &[u8; 16], now: Instant) -> Option<LoopOutcome> {
        let (sent, path) = self.pending.remove(id)?;
        Some(LoopOutcome { path, rtt: Some(now.saturating_duration_since(sent)) })
    }

    /// Loops sent more than `timeout` before `now`, now counted as lost.
    pub(crate) fn expire(&mut self, now: Instant, timeout: Duration) -> Vec<LoopOutcome> {
        let mut lost = Vec::new();
        while let Some(id) = self.order.front() {
            match self.pending.get(id) {
                None => {
                    self.order.pop_front();
                }
                Some((sent, _)) if *sent + timeout <= now => {
                    let id = self.order.pop_front().expect("front exists");
                    if let Some((_, path)) = self.pending.remove(&id) {
                        lost.push(LoopOutcome { path, rtt: None });
                    }
                }
                Some(_) => break,
            }
        }
        lost
    }

    /// When the oldest loop in flight times out.
    pub(crate) fn next_deadline(&self, timeout: Duration) -> Option<Instant> {
        self.order.iter().find_map(|id| self.pending.get(id)).map(|(sent, _)| *sent + timeout)
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.pending.len()
    }
}

/// Packets per second over the last second, in ten 100 ms buckets.
#[derive(Debug, Default)]
pub(crate) struct RateMeter {
    buckets: [u32; 10],
    /// The bucket index (in 100 ms units since `origin`) last written.
    current: u64,
    origin: Option<Instant>,
}

impl RateMeter {
    fn tick(&mut self, now: Instant) -> u64 {
        let origin = *self.origin.get_or_insert(now);
        let index = (now.saturating_duration_since(origin).as_millis() / 100) as u64;
        if index > self.current {
            let stale = (index - self.current).min(10);
            for i in 1..=stale {
                self.buckets[((self.current + i) % 10) as usize] = 0;
            }
            self.current = index;
        }
        index
    }

    pub(crate) fn record(&mut self, now: Instant) {
        let index = self.tick(now);
        let bucket = &mut self.buckets[(index % 10) as usize];
        *bucket = bucket.saturating_add(1);
    }

    /// Events in the last second.
    pub(crate) fn rate(&mut self, now: Instant) -> f64 {
        self.tick(now);
        f64::from(self.buckets.iter().sum::<u32>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loops_expire_in_order_and_returns_are_matched() {
        let t0 = Instant::now();
        let mut t = LoopTracker::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        t.sent([1; 16], vec![a], t0, 10);
        t.sent([2; 16], vec![b], t0 + Duration::from_secs(1), 10);
        assert_eq!(t.next_deadline(Duration::from_secs(5)), Some(t0 + Duration::from_secs(5)));
        let back = t.returned(&[1; 16], t0 + Duration::from_millis(300)).unwrap();
        assert_eq!(back.path, vec![a]);
        assert_eq!(back.rtt, Some(Duration::from_millis(300)));
        assert!(t.returned(&[1; 16], t0).is_none(), "a loop counts once");
        assert!(t.expire(t0 + Duration::from_secs(5), Duration::from_secs(5)).is_empty());
        let lost = t.expire(t0 + Duration::from_secs(6), Duration::from_secs(5));
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].path, vec![b]);
        assert_eq!(t.in_flight(), 0);
        // Bounded: the oldest is forgotten.
        for i in 0..5u8 {
            t.sent([i; 16], vec![], t0, 3);
        }
        assert_eq!(t.in_flight(), 3);
    }

    #[test]
    fn the_rate_meter_forgets_after_a_second() {
        let t0 = Instant::now();
        let mut m = RateMeter::default();
        for i in 0..50 {
            m.record(t0 + Duration::from_millis(i * 10));
        }
        assert_eq!(m.rate(t0 + Duration::from_millis(500)), 50.0);
        assert_eq!(m.rate(t0 + Duration::from_millis(1450)), 0.0);
        m.record(t0 + Duration::from_secs(10));
        assert_eq!(m.rate(t0 + Duration::from_secs(10)), 1.0);
    }
}
