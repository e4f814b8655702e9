//! What the endpoint lets peers spend: token buckets per peer and for all, and the openings it
//! remembers to refuse replays.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

use libp2p_identity::PeerId;

/// A token bucket.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub(super) fn full(burst: f64, now: Instant) -> Self {
        Self { tokens: burst, at: now }
    }

    /// Takes a token if one is there, after refilling at `rate` up to `burst`.
    pub(super) fn take(&mut self, rate: f64, burst: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }

    /// Whether it is full again (nothing to remember about its peer).
    fn is_full(&self, rate: f64, burst: f64, now: Instant) -> bool {
        self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * rate >= burst
    }
}

/// What one peer may still deliver.
#[derive(Debug, Clone, Copy)]
pub(super) struct PeerBudget {
    pub(super) frames: Bucket,
    pub(super) openings: Bucket,
}

/// Peers whose budgets are remembered at most; past it, full ones are forgotten.
pub(super) const MAX_TRACKED_PEERS: usize = 4096;

/// The budgets of the peers that delivered frames lately.
#[derive(Debug)]
pub(super) struct PeerBudgets {
    /// Frames per second per peer (its burst is as many).
    frame_rate: f64,
    /// Openings per second per peer (likewise).
    accept_rate: f64,
    peers: HashMap<PeerId, PeerBudget>,
}

impl PeerBudgets {
    pub(super) fn new(frame_rate: Option<f64>, accept_rate: f64) -> Self {
        Self {
            frame_rate: frame_rate.unwrap_or(f64::MAX).max(1.0),
            accept_rate: accept_rate.max(1.0),
            peers: HashMap::new(),
        }
    }

    /// Takes a frame token of `peer`'s.
    pub(super) fn take_frame(&mut self, peer: PeerId, now: Instant) -> bool {
        let rate = self.frame_rate;
        self.get(peer, now).frames.take(rate, rate, now)
    }

    /// Takes an opening token of `peer`'s.
    pub(super) fn take_opening(&mut self, peer: PeerId, now: Instant) -> bool {
        let rate = self.accept_rate;
        self.get(peer, now).openings.take(rate, rate, now)
    }

    /// Peers remembered now.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.peers.len()
    }

    /// `peer`'s budget, remembered while it is not full (and for at most
    /// [`MAX_TRACKED_PEERS`] peers: past that, full budgets are forgotten first).
    fn get(&mut self, peer: PeerId, now: Instant) -> &mut PeerBudget {
        let (frame_rate, accept_rate) = (self.frame_rate, self.accept_rate);
        if self.peers.len() >= MAX_TRACKED_PEERS && !self.peers.contains_key(&peer) {
            self.peers.retain(|_, b| {
                !(b.frames.is_full(frame_rate, frame_rate, now)
                    && b.openings.is_full(accept_rate, accept_rate, now))
            });
            if self.peers.len() >= MAX_TRACKED_PEERS {
                // Every tracked peer is busy: the newcomer shares the emptiest budget.
                let busiest = self
                    .peers
                    .iter()
                    .min_by(|a, b| a.1.openings.tokens.total_cmp(&b.1.openings.tokens))
                    .map(|(p, _)| *p)
                    .expect("not empty");
                return self.peers.get_mut(&busiest).expect("just found");
            }
        }
        self.peers.entry(peer).or_insert_with(|| PeerBudget {
            frames: Bucket::full(frame_rate, now),
            openings: Bucket::full(accept_rate, now),
        })
    }
}

/// The streams opened within the freshness window, to refuse a replayed opening: an opening
/// older than the window is refused for its time, a younger one for being here.
#[derive(Debug, Default)]
pub(super) struct RecentOpenings {
    set: HashSet<[u8; 16]>,
    /// (Unix second of the opening, stream) in the order they came.
    order: VecDeque<(u64, [u8; 16])>,
}

impl RecentOpenings {
    pub(super) fn forget_older_than(&mut self, unix_secs: u64) {
        while let Some(&(at, id)) = self.order.front() {
            if at >= unix_secs {
                break;
            }
            self.order.pop_front();
            self.set.remove(&id);
        }
    }

    pub(super) fn contains(&self, id: &[u8; 16]) -> bool {
        self.set.contains(id)
    }

    pub(super) fn len(&self) -> usize {
        self.set.len()
    }

    pub(super) fn insert(&mut self, unix_secs: u64, id: [u8; 16]) {
        self.set.insert(id);
        self.order.push_back((unix_secs, id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_refills_at_its_rate_up_to_its_burst() {
        let t0 = Instant::now();
        let mut b = Bucket::full(2.0, t0);
        assert!(b.take(1.0, 2.0, t0));
        assert!(b.take(1.0, 2.0, t0));
        assert!(!b.take(1.0, 2.0, t0));
        assert!(!b.take(1.0, 2.0, t0 + Duration::from_millis(900)));
        assert!(b.take(1.0, 2.0, t0 + Duration::from_millis(1000)));
        // Ten idle seconds refill only up to the burst.
        let later = t0 + Duration::from_secs(11);
        assert!(b.take(1.0, 2.0, later) && b.take(1.0, 2.0, later));
        assert!(!b.take(1.0, 2.0, later));
    }

    #[test]
    fn budgets_of_idle_peers_are_forgotten_when_the_table_is_full() {
        let t0 = Instant::now();
        let mut budgets = PeerBudgets::new(Some(10.0), 10.0);
        for _ in 0..MAX_TRACKED_PEERS {
            assert!(budgets.take_frame(PeerId::random(), t0));
        }
        assert_eq!(budgets.len(), MAX_TRACKED_PEERS);
        // A second later every budget is full again: a newcomer clears them out.
        assert!(budgets.take_frame(PeerId::random(), t0 + Duration::from_secs(1)));
        assert_eq!(budgets.len(), 1);
    }

    #[test]
    fn openings_are_forgotten_in_time_order() {
        let mut recent = RecentOpenings::default();
        recent.insert(10, [1; 16]);
        recent.insert(20, [2; 16]);
        recent.forget_older_than(15);
        assert!(!recent.contains(&[1; 16]));
        assert!(recent.contains(&[2; 16]));
        assert_eq!(recent.len(), 1);
    }
}
