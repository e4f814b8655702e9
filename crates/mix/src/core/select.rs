//! Path selection: which mix nodes a packet goes through.
//!
//! Every selector returns distinct nodes, never the sender or the destination, ending with the
//! required last hop. They differ in how likely each eligible node is at each position:
//!
//! * [`RandomPaths`] (the default): uniform. Every honest node is equally likely at every
//!   position, so a path reveals nothing about its sender, and an adversary's share of paths is
//!   its share of nodes.
//! * [`RttPaths`]: weighted by 1 / (the sender's measured round-trip time to the node). Paths
//!   get shorter, but the choice now depends on where the sender sits in the network: an
//!   observer who knows the RTT map can tell which senders were likely to pick a given path,
//!   and nodes that look close to many senders (an adversary can place nodes so) carry more
//!   than their share of traffic.
//! * [`HybridPaths`]: draws a uniform random set of candidates first, then weights them by RTT
//!   mixed with a uniform share (`randomness` ∈ [0, 1]; 1 is uniform). The random candidate
//!   set bounds how far the RTT preference can concentrate traffic; the cost is between the
//!   other two.
//!
//! * [`LayeredPaths`]: stratified, as Loopix and Nym build paths. Every node is in one of
//!   `layers` layers (a hash of its peer id), and the i-th hop before the last is drawn,
//!   uniformly, from layer i mod `layers`; the last hop is a uniform exit (or the given node).
//!   A node
//!   then only ever holds packets at one position of their paths: the first layer mixes
//!   packets fresh from their senders only among themselves, and every later layer holds
//!   only packets already mixed. In a free-route network a node at a path's last delaying hop
//!   also holds packets fresh from their senders, and an observer who sees each such packet
//!   come straight from one sender learns most from them. Layers are for a network whose
//!   senders are clients that do not forward (Loopix's and Nym's split), and its costs are
//!   these:
//!   - Layers are public (a hash of the peer id). A node's own packets go first to layer 0,
//!     and relayed ones reach layer 0 only from the last layer (as a path's last hop), so an
//!     observer tells the own packets of any node outside the last layer from what it
//!     relays: such a node, if it both sends and forwards, loses that cover.
//!   - An operator picks its node's layer by trying about `layers` peer ids. An adversary
//!     with a share c of the nodes, all in one layer, holds about
//!     `layers`·c / (1 + (`layers` − 1)·c) of it: a quarter of a layer for c = 10 % and 3
//!     layers. Nym's directory assigns layers at random each epoch; there is none here.
//!   - Layers are as even as a hash makes them: on 8 nodes, one of two layers has 2 nodes
//!     or fewer about 3 times in 10, and those nodes carry half the paths or more; one node
//!     or none 7 % of the time, and a node alone in a layer it must start from has no path.
//!   - `layers` should be the path length − 1. Longer paths wrap around (a layer-0 node then
//!     holds packets at two positions); shorter ones leave the last layers unused.
//!   - A layered path always fits the layers, and a free route fits 3 layers about 1 time
//!     in 27 (2 layers: 1 in 4): every sender of a network should use the same mode, or the
//!     mode splits the senders.
//!
//! The simulator measures these costs (entropy of the sender given a path) rather than the
//! documentation guessing them.

use std::fmt;
use std::time::Duration;

use libp2p_identity::PeerId;
use rand::{Rng, RngExt};

use super::pool::{MixNode, NodePool};

/// How the last hop of a path is chosen.
#[derive(Debug, Clone, Copy)]
pub enum LastHop<'a> {
    /// Among the exit-enabled nodes.
    AnyExit,
    /// This node: a destination that is itself a mix node, or the initiator at the end of a
    /// SURB's return path.
    Given(&'a MixNode),
}

/// Not enough nodes to build a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The pool has too few nodes besides the sender and the destination.
    #[error(
        "a path needs {needed} mix nodes besides the sender and destination, the pool has {available}"
    )]
    NotEnoughNodes {
        /// Nodes a path needs.
        needed: usize,
        /// Nodes available.
        available: usize,
    },
    /// No exit-enabled node is available.
    #[error("no exit-enabled mix node is available")]
    NoExit,
    /// A layered path found no node for one of its layers (besides the sender, the
    /// destination, the exit and the hops already chosen, and outside their /16s).
    #[error("no mix node left in layer {layer} for a layered path")]
    EmptyLayer {
        /// The layer.
        layer: u8,
    },
}

/// Chooses paths.
pub trait PathSelector: Send + fmt::Debug {
    /// `len` distinct nodes from `pool`, none of them in `exclude`, ending with `last`.
    fn select<'a>(
        &mut self,
        pool: &'a dyn NodePool,
        rng: &mut dyn Rng,
        len: usize,
        exclude: &[PeerId],
        last: LastHop<'a>,
    ) -> Result<Vec<&'a MixNode>, PathError>;
}

/// Which built-in selector to use.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub enum PathSelection {
    /// [`RandomPaths`].
    #[default]
    Random,
    /// [`RttPaths`].
    Rtt,
    /// [`HybridPaths`] with this many candidates and this share of uniform choice.
    Hybrid {
        /// Size of the uniformly drawn candidate set.
        candidates: usize,
        /// 0 = weight by RTT only, 1 = uniform.
        randomness: f64,
    },
    /// [`LayeredPaths`] with this many layers.
    Layered {
        /// Layers (at least 1); with `path_len` − 1 of them, every delaying hop is a layer.
        layers: u8,
    },
}

impl PathSelection {
    /// The selector.
    pub fn selector(self) -> Box<dyn PathSelector> {
        match self {
            Self::Random => Box::new(RandomPaths),
            Self::Rtt => Box::new(RttPaths),
            Self::Hybrid { candidates, randomness } => {
                Box::new(HybridPaths { candidates, randomness })
            }
            Self::Layered { layers } => Box::new(LayeredPaths { layers }),
        }
    }
}

/// Uniform paths.
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomPaths;

/// Paths weighted by the inverse of the sender's RTT to each node.
#[derive(Debug, Clone, Copy, Default)]
pub struct RttPaths;

/// Uniform candidates, then RTT weights mixed with a uniform share.
#[derive(Debug, Clone, Copy)]
pub struct HybridPaths {
    /// Size of the candidate set (at least the path length).
    pub candidates: usize,
    /// 0 = weight by RTT only, 1 = uniform.
    pub randomness: f64,
}

/// Stratified paths: the i-th hop before the last from layer i mod `layers`.
#[derive(Debug, Clone, Copy)]
pub struct LayeredPaths {
    /// Layers (at least 1).
    pub layers: u8,
}

impl PathSelector for LayeredPaths {
    fn select<'a>(
        &mut self,
        pool: &'a dyn NodePool,
        rng: &mut dyn Rng,
        len: usize,
        exclude: &[PeerId],
        last: LastHop<'a>,
    ) -> Result<Vec<&'a MixNode>, PathError> {
        let layers = self.layers.max(1);
        let eligible = eligible(pool, exclude);
        // An exit that is the only node left in a layer, or shares a /16 with all of one,
        // leaves no path that another exit would not: draw again before giving up.
        let tries = if matches!(last, LastHop::AnyExit) { EXIT_DRAWS } else { 1 };
        let mut result = Err(PathError::NoExit);
        for _ in 0..tries {
            let exit = last_hop(&eligible, rng, last, |_| 1.0)?;
            result = layered_path(&eligible, rng, len, layers, exit);
            if result.is_ok() {
                break;
            }
        }
        result
    }
}

/// Exits drawn for a layered path before it fails.
const EXIT_DRAWS: usize = 8;

/// `len - 1` nodes, the i-th from layer i mod `layers`, then `exit`.
fn layered_path<'a>(
    eligible: &[&'a MixNode],
    rng: &mut dyn Rng,
    len: usize,
    layers: u8,
    exit: &'a MixNode,
) -> Result<Vec<&'a MixNode>, PathError> {
    let needed = len.checked_sub(1).ok_or(PathError::NotEnoughNodes { needed: 1, available: 0 })?;
    let mut path: Vec<&MixNode> = Vec::with_capacity(len);
    for position in 0..needed {
        let layer = (position % usize::from(layers)) as u8;
        let fits = |n: &&&MixNode| {
            n.layer(layers) == layer
                && n.peer_id() != exit.peer_id()
                && !same_family(n, exit)
                && path.iter().all(|p| p.peer_id() != n.peer_id() && !same_family(n, p))
        };
        let candidates: Vec<&MixNode> = eligible.iter().filter(fits).copied().collect();
        if candidates.is_empty() {
            return Err(PathError::EmptyLayer { layer });
        }
        path.push(candidates[rng.random_range(0..candidates.len())]);
    }
    path.push(exit);
    Ok(path)
}

impl PathSelector for RandomPaths {
    fn select<'a>(
        &mut self,
        pool: &'a dyn NodePool,
        rng: &mut dyn Rng,
        len: usize,
        exclude: &[PeerId],
        last: LastHop<'a>,
    ) -> Result<Vec<&'a MixNode>, PathError> {
        let eligible = eligible(pool, exclude);
        weighted_path(eligible, rng, len, last, |_| 1.0)
    }
}

impl PathSelector for RttPaths {
    fn select<'a>(
        &mut self,
        pool: &'a dyn NodePool,
        rng: &mut dyn Rng,
        len: usize,
        exclude: &[PeerId],
        last: LastHop<'a>,
    ) -> Result<Vec<&'a MixNode>, PathError> {
        let eligible = eligible(pool, exclude);
        let weights = RttWeights::new(pool, &eligible);
        weighted_path(eligible, rng, len, last, |n| weights.of(pool, n))
    }
}

impl PathSelector for HybridPaths {
    fn select<'a>(
        &mut self,
        pool: &'a dyn NodePool,
        rng: &mut dyn Rng,
        len: usize,
        exclude: &[PeerId],
        last: LastHop<'a>,
    ) -> Result<Vec<&'a MixNode>, PathError> {
        let mut eligible = eligible(pool, exclude);
        let all = eligible.len();
        // A uniform candidate set, keeping enough exits in it for an exit to be chosen.
        let size = self.candidates.max(len).min(all);
        partial_shuffle(&mut eligible, size, rng);
        if matches!(last, LastHop::AnyExit)
            && !eligible[..size].iter().any(|n| n.is_exit())
            && let Some(i) = eligible[size..].iter().position(|n| n.is_exit())
        {
            eligible.swap(size - 1, size + i);
        }
        let mut path = self.weighted(pool, rng, len, last, eligible.clone(), size);
        if matches!(path, Err(PathError::NotEnoughNodes { .. })) && size < all {
            // The candidates held too few /16s for a path: widen to every eligible node.
            path = self.weighted(pool, rng, len, last, eligible, all);
        }
        path
    }
}

impl HybridPaths {
    fn weighted<'a>(
        &self,
        pool: &'a dyn NodePool,
        rng: &mut dyn Rng,
        len: usize,
        last: LastHop<'a>,
        mut eligible: Vec<&'a MixNode>,
        size: usize,
    ) -> Result<Vec<&'a MixNode>, PathError> {
        eligible.truncate(size);
        let weights = RttWeights::new(pool, &eligible);
        let sum: f64 = eligible.iter().map(|n| weights.of(pool, n)).sum();
        let f = self.randomness.clamp(0.0, 1.0);
        let count = eligible.len().max(1) as f64;
        weighted_path(eligible, rng, len, last, |n| {
            (1.0 - f) * weights.of(pool, n) / sum.max(f64::MIN_POSITIVE) + f / count
        })
    }
}

/// 1/RTT in 1/ms; nodes without a measurement count as the median measured node (or all
/// alike when nothing is measured).
struct RttWeights {
    unknown: f64,
}

impl RttWeights {
    fn new(pool: &dyn NodePool, nodes: &[&MixNode]) -> Self {
        let mut known: Vec<Duration> = nodes.iter().filter_map(|n| pool.rtt(n.peer_id())).collect();
        known.sort_unstable();
        let unknown = known.get(known.len() / 2).map_or(1.0, |rtt| inverse_ms(*rtt));
        Self { unknown }
    }

    fn of(&self, pool: &dyn NodePool, node: &MixNode) -> f64 {
        pool.rtt(node.peer_id()).map_or(self.unknown, inverse_ms)
    }
}

fn inverse_ms(rtt: Duration) -> f64 {
    1.0 / (rtt.as_secs_f64() * 1000.0).max(0.01)
}

fn eligible<'a>(pool: &'a dyn NodePool, exclude: &[PeerId]) -> Vec<&'a MixNode> {
    pool.nodes().iter().filter(|n| !exclude.contains(n.peer_id())).collect()
}

/// Moves a uniform random sample of `k` entries to the front (partial Fisher-Yates).
fn partial_shuffle<T>(items: &mut [T], k: usize, rng: &mut dyn Rng) {
    for i in 0..k.min(items.len()) {
        let j = rng.random_range(i..items.len());
        items.swap(i, j);
    }
}

/// Picks an index with probability proportional to `weights`; equal (or degenerate) weights
/// draw an exact uniform integer instead of going through floating point.
fn pick(weights: &[f64], rng: &mut dyn Rng) -> usize {
    let total: f64 = weights.iter().sum();
    let uniform = weights.iter().all(|w| *w == weights[0]);
    if uniform || !(total > 0.0 && total.is_finite()) {
        return rng.random_range(0..weights.len());
    }
    let mut target = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if target < *w {
            return i;
        }
        target -= w;
    }
    weights.len() - 1
}

/// The last hop by `last`: the given node, or an exit among `candidates` drawn by `weight`.
fn last_hop<'a>(
    candidates: &[&'a MixNode],
    rng: &mut dyn Rng,
    last: LastHop<'a>,
    weight: impl Fn(&MixNode) -> f64,
) -> Result<&'a MixNode, PathError> {
    match last {
        LastHop::Given(node) => Ok(node),
        LastHop::AnyExit => {
            let exits: Vec<&MixNode> = candidates.iter().copied().filter(|n| n.is_exit()).collect();
            if exits.is_empty() {
                return Err(PathError::NoExit);
            }
            let weights: Vec<f64> = exits.iter().map(|n| weight(n)).collect();
            Ok(exits[pick(&weights, rng)])
        }
    }
}

/// At most one node of each /16 on a path (see `MixNode::family`).
fn same_family(a: &MixNode, b: &MixNode) -> bool {
    a.family().is_some() && a.family() == b.family()
}

/// The exit by `last`, then `len - 1` more nodes drawn without replacement by `weight`.
fn weighted_path<'a>(
    mut candidates: Vec<&'a MixNode>,
    rng: &mut dyn Rng,
    len: usize,
    last: LastHop<'a>,
    weight: impl Fn(&MixNode) -> f64,
) -> Result<Vec<&'a MixNode>, PathError> {
    let exit = last_hop(&candidates, rng, last, &weight)?;
    candidates.retain(|n| n.peer_id() != exit.peer_id() && !same_family(n, exit));
    let needed = len.checked_sub(1).ok_or(PathError::NotEnoughNodes { needed: 1, available: 0 })?;
    let not_enough = |available: usize| PathError::NotEnoughNodes { needed: len, available };
    if candidates.len() < needed {
        return Err(not_enough(candidates.len() + 1));
    }
    let mut path = Vec::with_capacity(len);
    let mut weights: Vec<f64> = candidates.iter().map(|n| weight(n)).collect();
    for _ in 0..needed {
        if candidates.is_empty() {
            return Err(not_enough(path.len() + 1));
        }
        let i = pick(&weights, rng);
        let chosen = candidates.swap_remove(i);
        weights.swap_remove(i);
        if chosen.family().is_some() {
            let mut j = 0;
            while j < candidates.len() {
                if same_family(candidates[j], chosen) {
                    candidates.swap_remove(j);
                    weights.swap_remove(j);
                } else {
                    j += 1;
                }
            }
        }
        path.push(chosen);
    }
    path.push(exit);
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::pool::{DynamicPool, StaticPool};
    use mix_sphinx::NodeSecretKey;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;
    use std::time::Instant;

    pub(crate) fn nodes(n: usize, exits: usize, rng: &mut ChaCha20Rng) -> Vec<MixNode> {
        (0..n)
            .map(|i| {
                let peer = libp2p_identity::Keypair::generate_secp256k1().public().to_peer_id();
                let addr =
                    format!("/ip4/10.0.{}.{}/tcp/4000", i / 250, i % 250 + 1).parse().unwrap();
                MixNode::new(peer, addr, NodeSecretKey::generate(rng).public_key(), i < exits)
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn layered_paths_take_each_delaying_hop_from_its_layer() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let pool = StaticPool::new(nodes(60, 10, &mut rng)).unwrap();
        let excluded = [*pool.nodes()[0].peer_id()];
        let mut selector = PathSelection::Layered { layers: 3 }.selector();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2000 {
            let path = selector.select(&pool, &mut rng, 4, &excluded, LastHop::AnyExit).unwrap();
            assert_eq!(path.len(), 4);
            for (i, node) in path[..3].iter().enumerate() {
                assert_eq!(node.layer(3), i as u8);
                seen.insert(*node.peer_id());
            }
            assert!(path[3].is_exit());
            let distinct: std::collections::HashSet<_> = path.iter().map(|n| n.peer_id()).collect();
            assert_eq!(distinct.len(), 4);
            assert!(path.iter().all(|n| n.peer_id() != &excluded[0]));
        }
        // Every node but the excluded one serves its layer.
        assert_eq!(seen.len(), 59);
        // Layers are drawn from the peer id: about a third each.
        let per_layer: Vec<usize> =
            (0..3).map(|l| pool.nodes().iter().filter(|n| n.layer(3) == l).count()).collect();
        assert!(per_layer.iter().all(|&c| (8..=32).contains(&c)), "{per_layer:?}");
    }

    #[test]
    fn a_layer_with_no_node_left_is_an_empty_layer() {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let pool = StaticPool::new(nodes(30, 5, &mut rng)).unwrap();
        let layer_one: Vec<PeerId> =
            pool.nodes().iter().filter(|n| n.layer(3) == 1).map(|n| *n.peer_id()).collect();
        let mut selector = PathSelection::Layered { layers: 3 }.selector();
        let err = selector.select(&pool, &mut rng, 4, &layer_one, LastHop::AnyExit).unwrap_err();
        assert_eq!(err, PathError::EmptyLayer { layer: 1 });
    }

    #[test]
    fn a_layered_path_draws_another_exit_when_the_first_holds_a_layers_last_node() {
        // Every node may exit; one node is left in layer 1. Drawn as the exit, it would
        // leave layer 1 empty, though any other exit gives a path.
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let all = nodes(12, 12, &mut rng);
        let in_layer_one: Vec<PeerId> =
            all.iter().filter(|n| n.layer(2) == 1).map(|n| *n.peer_id()).collect();
        assert!(in_layer_one.len() >= 2, "{in_layer_one:?}");
        let pool = StaticPool::new(all).unwrap();
        let (last, excluded) = in_layer_one.split_last().unwrap();
        let mut selector = PathSelection::Layered { layers: 2 }.selector();
        for _ in 0..200 {
            let path = selector.select(&pool, &mut rng, 3, excluded, LastHop::AnyExit).unwrap();
            assert_eq!(path[1].peer_id(), last);
            assert_ne!(path[2].peer_id(), last);
        }
    }

    #[test]
    fn paths_are_distinct_exclude_and_end_at_an_exit() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let pool = StaticPool::new(nodes(6, 2, &mut rng)).unwrap();
        let excluded = [*pool.nodes()[0].peer_id(), *pool.nodes()[5].peer_id()];
        for selector in [
            PathSelection::Random,
            PathSelection::Rtt,
            PathSelection::Hybrid { candidates: 4, randomness: 0.3 },
        ] {
            let mut selector = selector.selector();
            for _ in 0..200 {
                let path =
                    selector.select(&pool, &mut rng, 3, &excluded, LastHop::AnyExit).unwrap();
                assert_eq!(path.len(), 3);
                assert_eq!(path[2].peer_id(), pool.nodes()[1].peer_id(), "the only allowed exit");
                for (i, a) in path.iter().enumerate() {
                    assert!(!excluded.contains(a.peer_id()));
                    assert!(path[i + 1..].iter().all(|b| b.peer_id() != a.peer_id()));
                }
            }
            assert_eq!(
                selector.select(&pool, &mut rng, 5, &excluded, LastHop::AnyExit),
                Err(PathError::NotEnoughNodes { needed: 5, available: 4 })
            );
            let no_exit = [*pool.nodes()[0].peer_id(), *pool.nodes()[1].peer_id()];
            assert_eq!(
                selector.select(&pool, &mut rng, 3, &no_exit, LastHop::AnyExit),
                Err(PathError::NoExit)
            );
        }
    }

    /// Nodes in public /16s: 8 from one /16 (a Sybil's network) and 4 each in a /16 of
    /// their own. Every path holds at most one node of each /16, whatever the selector.
    #[test]
    fn a_path_holds_at_most_one_node_per_slash_16() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let mut all = Vec::new();
        for i in 0..12u8 {
            let peer = libp2p_identity::Keypair::generate_secp256k1().public().to_peer_id();
            let ip = if i < 8 { format!("198.51.{i}.7") } else { format!("{}.1.2.3", 20 + i) };
            let addr = format!("/ip4/{ip}/tcp/4000").parse().unwrap();
            let key = NodeSecretKey::generate(&mut rng).public_key();
            all.push(MixNode::new(peer, addr, key, true).unwrap());
        }
        let pool = StaticPool::new(all).unwrap();
        for selection in [
            PathSelection::Random,
            PathSelection::Rtt,
            PathSelection::Hybrid { candidates: 6, randomness: 0.5 },
        ] {
            let mut selector = selection.selector();
            let mut sybil_hops = 0;
            for _ in 0..500 {
                let path = selector.select(&pool, &mut rng, 3, &[], LastHop::AnyExit).unwrap();
                let families: Vec<_> = path.iter().map(|n| n.family().unwrap()).collect();
                let sybil =
                    families.iter().filter(|f| **f == u16::from_be_bytes([198, 51])).count();
                assert!(sybil <= 1, "{families:?}");
                sybil_hops += sybil;
                assert!(families[0] != families[1] && families[1] != families[2]);
            }
            // 8 of 12 nodes, yet at most one hop a path.
            assert!(sybil_hops <= 500);
            // Five hops need five /16s: there are exactly five.
            selector.select(&pool, &mut rng, 5, &[], LastHop::AnyExit).unwrap();
        }
        // Local addresses are not grouped: ten nodes on 127.0.0.1 make any path.
        let local = StaticPool::new(nodes(10, 10, &mut rng)).unwrap();
        assert!(local.nodes().iter().all(|n| n.family().is_none()));
    }

    #[test]
    fn rtt_selection_prefers_close_nodes_and_hybrid_less_so() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let t0 = Instant::now();
        let mut pool = DynamicPool::new();
        let all = nodes(20, 20, &mut rng);
        for (i, n) in all.iter().enumerate() {
            pool.offer(n.clone(), 1, t0 + Duration::from_secs(60), t0);
            pool.report_reached(n.peer_id(), n.addr());
            // Node 0 is 1 ms away, the others 50 ms.
            pool.report_rtt(n.peer_id(), Duration::from_millis(if i == 0 { 1 } else { 50 }));
        }
        let close = *all[0].peer_id();
        let share = |selection: PathSelection, rng: &mut ChaCha20Rng| {
            let mut s = selection.selector();
            let hits = (0..4000)
                .filter(|_| {
                    s.select(&pool, rng, 3, &[], LastHop::AnyExit)
                        .unwrap()
                        .iter()
                        .any(|n| *n.peer_id() == close)
                })
                .count();
            hits as f64 / 4000.0
        };
        let random = share(PathSelection::Random, &mut rng);
        let rtt = share(PathSelection::Rtt, &mut rng);
        let hybrid = share(PathSelection::Hybrid { candidates: 6, randomness: 0.5 }, &mut rng);
        // Uniform: 3 of 20 positions. RTT: the close node is in nearly every path.
        assert!((0.12..0.18).contains(&random), "{random}");
        assert!(rtt > 0.95, "{rtt}");
        assert!(hybrid > random && hybrid < rtt, "{random} {hybrid} {rtt}");
    }

    /// ln Γ(x) (Lanczos, g = 7, n = 9), for x > 0.
    fn ln_gamma(x: f64) -> f64 {
        const C: [f64; 9] = [
            0.999_999_999_999_809_9,
            676.520_368_121_885_1,
            -1_259.139_216_722_402_8,
            771.323_428_777_653_1,
            -176.615_029_162_140_6,
            12.507_343_278_686_905,
            -0.138_571_095_265_720_12,
            9.984_369_578_019_572e-6,
            1.505_632_735_149_311_6e-7,
        ];
        let x = x - 1.0;
        let t = x + 7.5;
        let series: f64 = C[0] + (1..9).map(|i| C[i] / (x + i as f64)).sum::<f64>();
        0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + series.ln()
    }

    /// The regularised upper incomplete gamma function Q(a, x): the chi-square survival
    /// function is Q(dof / 2, statistic / 2).
    fn gamma_q(a: f64, x: f64) -> f64 {
        if x < a + 1.0 {
            // Series for P(a, x).
            let (mut term, mut sum, mut n) = (1.0 / a, 1.0 / a, a);
            while term.abs() > sum.abs() * 1e-15 {
                n += 1.0;
                term *= x / n;
                sum += term;
            }
            1.0 - sum * (-x + a * x.ln() - ln_gamma(a)).exp()
        } else {
            // Continued fraction for Q(a, x) (modified Lentz).
            let tiny = 1e-300;
            let mut b = x + 1.0 - a;
            let mut c = 1.0 / tiny;
            let mut d = 1.0 / b;
            let mut h = d;
            for i in 1..10_000 {
                let an = -(i as f64) * (i as f64 - a);
                b += 2.0;
                d = an * d + b;
                d = if d.abs() < tiny { tiny } else { d };
                c = b + an / c;
                c = if c.abs() < tiny { tiny } else { c };
                d = 1.0 / d;
                let delta = d * c;
                h *= delta;
                if (delta - 1.0).abs() < 1e-15 {
                    break;
                }
            }
            h * (-x + a * x.ln() - ln_gamma(a)).exp()
        }
    }

    #[test]
    fn chi_square_survival_matches_known_values() {
        // chi-square(10) at 18.307 is the 0.05 critical value; chi-square(47) at 70.0 ~ 0.0164.
        assert!((gamma_q(5.0, 18.307 / 2.0) - 0.05).abs() < 1e-4);
        assert!((gamma_q(23.5, 35.0) - 0.01638).abs() < 2e-4, "{}", gamma_q(23.5, 35.0));
        assert!((gamma_q(0.5, 0.5 * 3.841) - 0.05).abs() < 1e-4);
    }

    /// 100 000 uniform paths from a 50-node pool (sender and destination excluded): every
    /// position's node frequencies pass a chi-square test at p > 0.01, no path repeats a node,
    /// and neither the sender nor the destination is ever a hop.
    #[test]
    fn random_paths_are_uniform_at_every_position() {
        const PATHS: usize = 100_000;
        let mut rng = ChaCha20Rng::seed_from_u64(50);
        let pool = StaticPool::new(nodes(50, 50, &mut rng)).unwrap();
        let sender = *pool.nodes()[7].peer_id();
        let destination = *pool.nodes()[31].peer_id();
        let eligible: Vec<PeerId> = pool
            .nodes()
            .iter()
            .map(|n| *n.peer_id())
            .filter(|p| *p != sender && *p != destination)
            .collect();
        let index: std::collections::HashMap<PeerId, usize> =
            eligible.iter().enumerate().map(|(i, p)| (*p, i)).collect();
        let mut counts = vec![vec![0u64; eligible.len()]; 3];
        let mut selector = RandomPaths;
        for _ in 0..PATHS {
            let path = selector
                .select(&pool, &mut rng, 3, &[sender, destination], LastHop::AnyExit)
                .unwrap();
            assert!(
                path[0].peer_id() != path[1].peer_id() && path[1].peer_id() != path[2].peer_id()
            );
            assert!(path[0].peer_id() != path[2].peer_id());
            for (position, node) in path.iter().enumerate() {
                // Excluded peers are not in `index`: this also checks they never appear.
                counts[position][index[node.peer_id()]] += 1;
            }
        }
        let expected = PATHS as f64 / eligible.len() as f64;
        for (position, counts) in counts.iter().enumerate() {
            let statistic: f64 =
                counts.iter().map(|&o| (o as f64 - expected).powi(2) / expected).sum();
            let dof = (eligible.len() - 1) as f64;
            let p = gamma_q(dof / 2.0, statistic / 2.0);
            eprintln!("position {position}: chi-square {statistic:.1} on {dof} dof, p = {p:.3}");
            assert!(
                p > 0.01,
                "position {position}: chi-square {statistic:.1} on {dof} dof, p = {p:.4}"
            );
        }
    }
}
