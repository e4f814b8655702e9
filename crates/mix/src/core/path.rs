//! Uniform random path selection: distinct nodes, never the sender itself or the destination.

use libp2p_identity::PeerId;
use rand::{Rng, RngExt};

use super::pool::{MixNode, NodePool};

/// How the last hop of a path is chosen.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LastHop<'a> {
    /// Uniformly among the exit-enabled nodes.
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
}

/// `len` distinct nodes from `pool`, none of them in `exclude`, ending with `last`. Every
/// eligible node is equally likely at every position.
pub(crate) fn select<'a>(
    pool: &'a dyn NodePool,
    rng: &mut dyn Rng,
    len: usize,
    exclude: &[PeerId],
    last: LastHop<'a>,
) -> Result<Vec<&'a MixNode>, PathError> {
    let allowed = |n: &&MixNode| !exclude.contains(n.peer_id());
    let exit = match last {
        LastHop::Given(node) => node,
        LastHop::AnyExit => {
            let exits: Vec<&MixNode> =
                pool.nodes().iter().filter(allowed).filter(|n| n.is_exit()).collect();
            if exits.is_empty() {
                return Err(PathError::NoExit);
            }
            exits[rng.random_range(0..exits.len())]
        }
    };
    let mut candidates: Vec<&MixNode> =
        pool.nodes().iter().filter(allowed).filter(|n| n.peer_id() != exit.peer_id()).collect();
    let needed = len - 1;
    if candidates.len() < needed {
        return Err(PathError::NotEnoughNodes { needed: len, available: candidates.len() + 1 });
    }
    // Partial Fisher-Yates: the first `needed` entries become a uniform random sample.
    for i in 0..needed {
        let j = rng.random_range(i..candidates.len());
        candidates.swap(i, j);
    }
    candidates.truncate(needed);
    candidates.push(exit);
    Ok(candidates)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::pool::StaticPool;
    use mix_sphinx::NodeSecretKey;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    pub(crate) fn pool(n: usize, exits: usize, rng: &mut ChaCha20Rng) -> StaticPool {
        StaticPool::new((0..n).map(|i| {
            let peer = libp2p_identity::Keypair::generate_secp256k1().public().to_peer_id();
            let addr = format!("/ip4/10.0.0.{}/tcp/4000", i + 1).parse().unwrap();
            MixNode::new(peer, addr, NodeSecretKey::generate(rng).public_key(), i < exits).unwrap()
        }))
        .unwrap()
    }

    #[test]
    fn paths_are_distinct_exclude_and_end_at_an_exit() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let pool = pool(6, 2, &mut rng);
        let excluded = [*pool.nodes()[0].peer_id(), *pool.nodes()[5].peer_id()];
        for _ in 0..200 {
            let path = select(&pool, &mut rng, 3, &excluded, LastHop::AnyExit).unwrap();
            assert_eq!(path.len(), 3);
            assert!(path[2].is_exit());
            assert_eq!(path[2].peer_id(), pool.nodes()[1].peer_id(), "the only allowed exit");
            for (i, a) in path.iter().enumerate() {
                assert!(!excluded.contains(a.peer_id()));
                assert!(path[i + 1..].iter().all(|b| b.peer_id() != a.peer_id()));
            }
        }
        assert_eq!(
            select(&pool, &mut rng, 5, &excluded, LastHop::AnyExit),
            Err(PathError::NotEnoughNodes { needed: 5, available: 4 })
        );
        let no_exit = [*pool.nodes()[0].peer_id(), *pool.nodes()[1].peer_id()];
        assert_eq!(select(&pool, &mut rng, 3, &no_exit, LastHop::AnyExit), Err(PathError::NoExit));
    }
}
