//! What the attacker concludes about a publisher from what its nodes saw.
//!
//! Every estimator here names a set of equally likely candidates (ties are kept, and the
//! attacker is credited `1 / |set|` when the publisher is in it). Its nodes are never
//! candidates: the attacker knows they did not publish.
//!
//! - [`first_spy`]: the peer the earliest spy got the message from (the estimator of the
//!   Dandelion papers).
//! - [`timing`]: every spy's first reception and the latency model: each peer seen sending
//!   the message gets a maximum-likelihood estimate of when it sent, and the earliest is
//!   named (see the function).
//! - [`mix_likelihood`]: a mix publication handed to one of the attacker's nodes. The
//!   publisher drew that member uniformly from its pool (its views, or the directory every
//!   node shares), so a candidate whose pool lacks the member is ruled out, and the others
//!   weigh `1 / |pool|`. Attempts handed to honest members count too: they had to miss the
//!   attacker's members in the candidate's pool. Log-likelihoods add up over attempts and,
//!   for a publisher watched over many messages, over its messages.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::gossip::{Carried, Observation, Peer};

/// Candidates the attacker names, all equally likely.
pub type Named = Vec<Peer>;

/// Credit for naming `named` when `publisher` published: `1 / |named|` if it is among them.
pub fn credit(named: &[Peer], publisher: Peer) -> f64 {
    if named.contains(&publisher) { 1.0 / named.len() as f64 } else { 0.0 }
}

/// The sender of the earliest observation that is not the attacker's own node.
pub fn first_spy(observations: &[Observation], attackers: &HashSet<Peer>) -> Named {
    observations
        .iter()
        .filter(|o| !attackers.contains(&o.from))
        .min_by_key(|o| o.at)
        .map(|o| vec![o.from])
        .unwrap_or_default()
}

/// The peer that most likely sent first, from every spy's first reception and the latency
/// model: one-way latencies uniform in `[a, b]` (`latency`). A peer that sends at `T` to
/// several spies (a node pushes to its neighbours at once) reaches them in `[T + a, T + b]`;
/// the maximum-likelihood estimate of `T` from its receptions is their midrange less
/// `(a + b) / 2`, which gets sharper with every spy the peer reached, where the first spy
/// uses only the earliest reception. The peer with the earliest estimate is named. On the
/// stem, the peer the earliest stem relay came from is named instead: a spy on the stem
/// knows it is one, and the broadcast that follows only tells where the stem ended.
pub fn timing(
    observations: &[Observation],
    attackers: &HashSet<Peer>,
    latency: (Duration, Duration),
) -> Named {
    let honest = |o: &&Observation| !attackers.contains(&o.from);
    if let Some(stem) =
        observations.iter().filter(honest).filter(|o| o.kind == Carried::Stem).min_by_key(|o| o.at)
    {
        return vec![stem.from];
    }
    let Some(origin) = observations.iter().map(|o| o.at).min() else { return Vec::new() };
    let (a, b) = (latency.0.as_secs_f64(), latency.1.as_secs_f64());
    // Per sender: earliest and latest reception, in seconds after the first one.
    let mut spans: HashMap<Peer, (f64, f64)> = HashMap::new();
    for o in observations.iter().filter(honest) {
        let t = o.at.duration_since(origin).as_secs_f64();
        let e = spans.entry(o.from).or_insert((t, t));
        e.0 = e.0.min(t);
        e.1 = e.1.max(t);
    }
    let scores: HashMap<Peer, f64> =
        spans.into_iter().map(|(p, (lo, hi))| (p, (a + b) / 2.0 - (lo + hi) / 2.0)).collect();
    best(&scores)
}

/// Where a candidate publisher drew its rebroadcasters from.
#[derive(Debug, Clone, Copy)]
pub enum Pools<'a> {
    /// The directory every node shares: all `n` nodes but the candidate.
    Directory {
        /// Nodes in the directory.
        n: usize,
    },
    /// Each candidate's own views (active and passive), sorted.
    Views(&'a HashMap<Peer, Vec<Peer>>),
}

/// Adds to `log_l` (per candidate) the log-likelihood of the rebroadcasters a publication was
/// handed to (see the module's documentation). Candidates ruled out go to −∞.
pub fn mix_likelihood(
    log_l: &mut HashMap<Peer, f64>,
    rebroadcasters: &[Peer],
    attackers: &HashSet<Peer>,
    pools: &Pools<'_>,
) {
    for (candidate, l) in log_l.iter_mut() {
        for to in rebroadcasters {
            let (size, has_to, ours) = match pools {
                Pools::Directory { n } => {
                    let size = n.saturating_sub(1).max(1);
                    (size, *to != *candidate, attackers.len())
                }
                Pools::Views(views) => {
                    let v = views.get(candidate).map_or(&[][..], Vec::as_slice);
                    let ours = v.iter().filter(|p| attackers.contains(p)).count();
                    (v.len().max(1), v.binary_search(to).is_ok(), ours)
                }
            };
            *l += if attackers.contains(to) {
                if has_to { -(size as f64).ln() } else { f64::NEG_INFINITY }
            } else {
                let honest = size.saturating_sub(ours);
                if honest == 0 { f64::NEG_INFINITY } else { (honest as f64 / size as f64).ln() }
            };
        }
    }
}

/// The candidates with the greatest score.
pub fn best(scores: &HashMap<Peer, f64>) -> Named {
    let top = scores.values().copied().fold(f64::NEG_INFINITY, f64::max);
    if top == f64::NEG_INFINITY {
        return Vec::new();
    }
    let mut named: Named =
        scores.iter().filter(|(_, s)| (**s - top).abs() < 1e-9).map(|(p, _)| *p).collect();
    named.sort_unstable();
    named
}

/// The publisher's rank among the candidates by score: 1 when it alone scores highest; ties
/// share the middle rank.
pub fn rank(scores: &HashMap<Peer, f64>, publisher: Peer) -> f64 {
    let mine = scores.get(&publisher).copied().unwrap_or(f64::NEG_INFINITY);
    let above = scores.values().filter(|s| **s > mine + 1e-9).count();
    let tied = scores.values().filter(|s| (**s - mine).abs() <= 1e-9).count().max(1);
    above as f64 + (tied as f64 + 1.0) / 2.0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test")]

    use std::time::Instant;

    use super::*;

    fn obs(at: Instant, ms: u64, spy: Peer, from: Peer, kind: Carried) -> Observation {
        Observation { at: at + Duration::from_millis(ms), spy, from, kind }
    }

    #[test]
    fn timing_uses_every_reception_where_the_first_spy_uses_one() {
        // Latency 10–50 ms. Peer 1 reached spies at 10 and 48 ms, so it sent within
        // [−2, 0]; peer 2 reached one at 20 ms, so within [−30, 10]. The first spy names
        // peer 1; the midranges (29 and 20 ms, less 30) name peer 2.
        let t = Instant::now();
        let o = [
            obs(t, 10, 100, 1, Carried::Gossip),
            obs(t, 20, 101, 2, Carried::Gossip),
            obs(t, 48, 102, 1, Carried::IHave),
        ];
        let attackers: HashSet<Peer> = [100, 101, 102].into();
        assert_eq!(first_spy(&o, &attackers), vec![1]);
        let lat = (Duration::from_millis(10), Duration::from_millis(50));
        assert_eq!(timing(&o, &attackers, lat), vec![2]);
        // Receptions from the attacker's own nodes name nobody.
        let o2 = [obs(t, 5, 101, 100, Carried::Gossip), o[1]];
        assert_eq!(timing(&o2, &attackers, lat), vec![2]);
    }

    #[test]
    fn on_the_stem_the_earliest_stem_relay_names_its_sender() {
        let t = Instant::now();
        let o = [obs(t, 5, 100, 7, Carried::Gossip), obs(t, 9, 101, 3, Carried::Stem)];
        let lat = (Duration::from_millis(10), Duration::from_millis(50));
        assert_eq!(timing(&o, &[100, 101].into(), lat), vec![3]);
    }

    #[test]
    fn a_rebroadcaster_in_few_views_narrows_the_publisher_down() {
        // Attacker member 9 sits in the views of 1 and 2 only; 3's views hold no attacker.
        let views: HashMap<Peer, Vec<Peer>> =
            [(1, vec![4, 9]), (2, vec![4, 5, 6, 9]), (3, vec![4, 5])].into();
        let attackers: HashSet<Peer> = [9].into();
        let mut l: HashMap<Peer, f64> = [(1, 0.0), (2, 0.0), (3, 0.0)].into();
        mix_likelihood(&mut l, &[9], &attackers, &Pools::Views(&views));
        assert_eq!(best(&l), vec![1], "1/2 beats 1/4, and 3 is ruled out");
        assert_eq!(rank(&l, 2), 2.0);
        assert_eq!(l[&3], f64::NEG_INFINITY);
        // With the directory, every candidate drew from the same pool: nothing learned.
        let mut l: HashMap<Peer, f64> = [(1, 0.0), (2, 0.0), (3, 0.0)].into();
        mix_likelihood(&mut l, &[9, 4], &attackers, &Pools::Directory { n: 10 });
        assert_eq!(best(&l), vec![1, 2, 3]);
        assert!((credit(&best(&l), 2) - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(rank(&l, 2), 2.0);
    }
}
