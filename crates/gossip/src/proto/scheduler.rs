//! When publications leave a node: at once, in shuffled batches, or each after its own random
//! delay. Own publications and forwarded ones go through the same queue, so their timing does
//! not tell them apart.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use rand::RngExt;

use super::config::Forwarding;
use super::message::Message;
use super::{PeerIdentity, Timer};

struct Delayed<P> {
    at: Instant,
    seq: u64,
    to: P,
    message: Message<P>,
}

impl<P> PartialEq for Delayed<P> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl<P> Eq for Delayed<P> {}

impl<P> PartialOrd for Delayed<P> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<P> Ord for Delayed<P> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// The forwarding queue of a node.
pub(crate) struct Scheduler<P> {
    mode: Forwarding,
    batch: Vec<(P, Message<P>)>,
    batch_since: Option<Instant>,
    delayed: BinaryHeap<Reverse<Delayed<P>>>,
    seq: u64,
    /// Batch sizes flushed, for reports.
    flushed: Vec<usize>,
}

impl<P> std::fmt::Debug for Scheduler<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("mode", &self.mode)
            .field("batch", &self.batch.len())
            .field("delayed", &self.delayed.len())
            .finish()
    }
}

/// What the scheduler wants done.
pub(crate) enum Step<P> {
    Send(P, Message<P>),
    Timer(Instant, Timer),
}

impl<P: PeerIdentity> Scheduler<P> {
    pub(crate) fn new(mode: Forwarding) -> Self {
        Self {
            mode,
            batch: Vec::new(),
            batch_since: None,
            delayed: BinaryHeap::new(),
            seq: 0,
            flushed: Vec::new(),
        }
    }

    /// Sizes of the batches flushed so far (window mode), oldest first; drained.
    pub(crate) fn take_batch_sizes(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.flushed)
    }

    pub(crate) fn push<R: rand::Rng>(
        &mut self,
        now: Instant,
        rng: &mut R,
        to: P,
        message: Message<P>,
        steps: &mut Vec<Step<P>>,
    ) {
        match self.mode {
            Forwarding::Immediate => steps.push(Step::Send(to, message)),
            Forwarding::Window { window, max_batch, .. } => {
                self.batch.push((to, message));
                if self.batch_since.is_none() {
                    self.batch_since = Some(now);
                    steps.push(Step::Timer(now + window, Timer::flush()));
                }
                if self.batch.len() >= max_batch.max(1) {
                    self.flush(rng, steps);
                }
            }
            Forwarding::Poisson { mean, cap } => {
                // 1 - U is in (0, 1], so the logarithm is finite.
                let u: f64 = 1.0 - rng.random::<f64>();
                let delay =
                    Duration::from_secs_f64((-u.ln() * mean.as_secs_f64()).min(cap.as_secs_f64()));
                let at = now + delay;
                let earliest = self.delayed.peek().map(|d| d.0.at);
                self.seq += 1;
                self.delayed.push(Reverse(Delayed { at, seq: self.seq, to, message }));
                if earliest.is_none_or(|e| at < e) {
                    steps.push(Step::Timer(at, Timer::flush()));
                }
            }
        }
    }

    /// The flush timer fired.
    pub(crate) fn on_timer<R: rand::Rng>(
        &mut self,
        now: Instant,
        rng: &mut R,
        steps: &mut Vec<Step<P>>,
    ) {
        match self.mode {
            Forwarding::Immediate => {}
            Forwarding::Window { window, min_batch, .. } => {
                let Some(since) = self.batch_since else { return };
                if now < since + window {
                    // A timer of a batch already flushed early.
                    steps.push(Step::Timer(since + window, Timer::flush()));
                    return;
                }
                if self.batch.len() < min_batch && now < since + window * 4 {
                    steps.push(Step::Timer(now + window, Timer::flush()));
                    return;
                }
                self.flush(rng, steps);
            }
            Forwarding::Poisson { .. } => {
                while self.delayed.peek().is_some_and(|d| d.0.at <= now) {
                    let Some(Reverse(d)) = self.delayed.pop() else { break };
                    steps.push(Step::Send(d.to, d.message));
                }
                if let Some(next) = self.delayed.peek() {
                    steps.push(Step::Timer(next.0.at, Timer::flush()));
                }
            }
        }
    }

    /// Sends the batch in an order drawn by Fisher-Yates.
    fn flush<R: rand::Rng>(&mut self, rng: &mut R, steps: &mut Vec<Step<P>>) {
        let mut batch = std::mem::take(&mut self.batch);
        self.batch_since = None;
        for i in (1..batch.len()).rev() {
            let j = rng.random_range(0..=i);
            batch.swap(i, j);
        }
        if self.flushed.len() < 100_000 {
            self.flushed.push(batch.len());
        }
        steps.extend(batch.into_iter().map(|(to, m)| Step::Send(to, m)));
    }

    /// Drops what waits for `peer` (it went away).
    pub(crate) fn forget(&mut self, peer: &P) {
        self.batch.retain(|(to, _)| to != peer);
        if self.delayed.iter().any(|d| d.0.to == *peer) {
            let kept: Vec<_> =
                std::mem::take(&mut self.delayed).into_iter().filter(|d| d.0.to != *peer).collect();
            self.delayed = kept.into_iter().collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha12Rng;

    use super::*;
    use crate::proto::message::{Body, MessageId, TopicId};

    fn message(i: u8) -> Message<u32> {
        Message {
            topic: TopicId([0; 32]),
            body: Body::Gossip { id: MessageId([i; 32]), data: vec![i] },
        }
    }

    fn sent(steps: &[Step<u32>]) -> Vec<u8> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Send(_, Message { body: Body::Gossip { data, .. }, .. }) => Some(data[0]),
                _ => None,
            })
            .collect()
    }

    fn timers(steps: &[Step<u32>]) -> Vec<Instant> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Timer(at, _) => Some(*at),
                Step::Send(..) => None,
            })
            .collect()
    }

    #[test]
    fn immediate_sends_at_once_in_order() {
        let (now, mut rng) = (Instant::now(), ChaCha12Rng::seed_from_u64(1));
        let mut s = Scheduler::new(Forwarding::Immediate);
        let mut steps = Vec::new();
        for i in 0..5 {
            s.push(now, &mut rng, 1, message(i), &mut steps);
        }
        assert_eq!(sent(&steps), vec![0, 1, 2, 3, 4]);
        assert!(timers(&steps).is_empty());
    }

    #[test]
    fn a_window_holds_its_batch_and_sends_it_shuffled() {
        let window = Duration::from_millis(150);
        let mode = Forwarding::Window { window, min_batch: 1, max_batch: 64 };
        let mut rng = ChaCha12Rng::seed_from_u64(2);
        let mut orders = std::collections::HashSet::new();
        for _ in 0..50 {
            let now = Instant::now();
            let mut s = Scheduler::new(mode);
            let mut steps = Vec::new();
            for i in 0..8 {
                s.push(
                    now + Duration::from_millis(u64::from(i)),
                    &mut rng,
                    1,
                    message(i),
                    &mut steps,
                );
            }
            assert!(sent(&steps).is_empty(), "nothing leaves before the window closes");
            assert_eq!(timers(&steps), vec![now + window], "one timer per batch");
            steps.clear();
            s.on_timer(now + window, &mut rng, &mut steps);
            let mut order = sent(&steps);
            orders.insert(order.clone());
            order.sort_unstable();
            assert_eq!(order, (0..8).collect::<Vec<_>>(), "every message, once");
            assert_eq!(s.take_batch_sizes(), vec![8]);
        }
        assert!(orders.len() > 40, "the order is drawn afresh: {} orders of 50", orders.len());
    }

    #[test]
    fn a_full_batch_leaves_early_and_a_stale_timer_waits_for_the_next() {
        let window = Duration::from_millis(100);
        let mode = Forwarding::Window { window, min_batch: 1, max_batch: 16 };
        let (now, mut rng) = (Instant::now(), ChaCha12Rng::seed_from_u64(3));
        let mut s = Scheduler::new(mode);
        let mut steps = Vec::new();
        for i in 0..16 {
            s.push(now, &mut rng, 1, message(i), &mut steps);
        }
        assert_eq!(sent(&steps).len(), 16, "flushed at max_batch");
        steps.clear();
        let later = now + Duration::from_millis(40);
        s.push(later, &mut rng, 1, message(99), &mut steps);
        steps.clear();
        // The first batch's timer fires: the new batch keeps its own window.
        s.on_timer(now + window, &mut rng, &mut steps);
        assert!(sent(&steps).is_empty());
        assert_eq!(timers(&steps), vec![later + window]);
        steps.clear();
        s.on_timer(later + window, &mut rng, &mut steps);
        assert_eq!(sent(&steps), vec![99]);
    }

    #[test]
    fn poisson_delays_are_independent_capped_and_sent_in_time_order() {
        let (mean, cap) = (Duration::from_millis(50), Duration::from_millis(200));
        let (now, mut rng) = (Instant::now(), ChaCha12Rng::seed_from_u64(4));
        let mut s = Scheduler::new(Forwarding::Poisson { mean, cap });
        let mut steps = Vec::new();
        let n = 2000;
        for i in 0..n {
            s.push(now, &mut rng, 1, message((i % 250) as u8), &mut steps);
        }
        assert!(sent(&steps).is_empty());
        // Fire each timer as it falls due, as a driver would.
        let mut delays = Vec::new();
        let mut next = timers(&steps).into_iter().min();
        while let Some(at) = next {
            assert!(at <= now + cap, "capped");
            let mut fired = Vec::new();
            s.on_timer(at, &mut rng, &mut fired);
            delays.extend(sent(&fired).iter().map(|_| (at - now).as_secs_f64()));
            next = timers(&fired).into_iter().min();
        }
        assert_eq!(delays.len(), n);
        assert!(delays.windows(2).all(|w| w[0] <= w[1]), "in time order");
        let mean_seen = delays.iter().sum::<f64>() / n as f64;
        // The mean of an exponential capped at 4 means is 98 % of the mean.
        assert!((0.040..0.056).contains(&mean_seen), "mean {mean_seen}");
        let capped = delays.iter().filter(|d| **d >= cap.as_secs_f64()).count();
        assert!(capped < n / 20, "about 2 % reach the cap: {capped}");
    }

    #[test]
    fn forget_drops_what_waits_for_a_departed_peer() {
        let (now, mut rng) = (Instant::now(), ChaCha12Rng::seed_from_u64(5));
        for mode in [
            Forwarding::window(),
            Forwarding::Poisson { mean: Duration::from_millis(10), cap: Duration::from_millis(40) },
        ] {
            let mut s = Scheduler::new(mode);
            let mut steps = Vec::new();
            for i in 0..6u8 {
                s.push(now, &mut rng, u32::from(i % 2), message(i), &mut steps);
            }
            s.forget(&0);
            let mut out = Vec::new();
            s.on_timer(now + Duration::from_secs(1), &mut rng, &mut out);
            let mut got = sent(&out);
            got.sort_unstable();
            assert_eq!(got, vec![1, 3, 5], "{mode:?}");
        }
    }
}
