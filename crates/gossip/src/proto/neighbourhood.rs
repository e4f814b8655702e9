//! Who may be a neighbour once the application vouches for a directory of members.
//!
//! Every pair of identities has a pseudo-random *distance*, the same seen from either end.
//! A node's *neighbourhood* is the directory members nearest to it, as many as the setting
//! asks for, skipping those it found unreachable; a link is allowed when either end has the
//! other within that horizon. Each end checks this from the two identities alone. So the
//! attacker's identities become an honest node's neighbours only as often as chance puts
//! them in its neighbourhood, about their share of the directory, however often they ask and
//! however readily they accept. Without it, every slot that opens goes to whoever accepts at
//! once, and Sybils that always accept end up holding a multiple of their share.
//!
//! Only members are allowed: the distances are not secret, and an attacker who can make
//! identities at will can search for ones near a chosen victim. The directory's own admission
//! (the mix pool's subnet caps) is what makes identities cost something.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use sha2::{Digest, Sha256};

use super::PeerIdentity;
use super::message::TopicId;

/// The neighbourhood of one node on one topic.
#[derive(Debug)]
pub(crate) struct Neighbourhood<P> {
    topic: TopicId,
    me: u64,
    /// Directory members (never this node) by distance from it, nearest first.
    order: Vec<(u64, P)>,
    /// Each member's key, for ranking this node in other peers' neighbourhoods.
    keys: Vec<u64>,
    members: HashSet<P>,
    /// Where this node ranks among a member's distances to the directory (0: nearest); at
    /// most one entry per member.
    ranks: HashMap<P, u32>,
}

impl<P: PeerIdentity> Neighbourhood<P> {
    /// The neighbourhood of `me` among `directory` (which does not hold `me`).
    pub(crate) fn new(topic: TopicId, me: &P, directory: &[P]) -> Self {
        let me = key(&topic, me);
        let keys: Vec<u64> = directory.iter().map(|p| key(&topic, p)).collect();
        let mut order: Vec<(u64, P)> =
            directory.iter().zip(&keys).map(|(p, k)| (distance(me, *k), *p)).collect();
        order.sort_unstable();
        let members = directory.iter().copied().collect();
        Self { topic, me, order, keys, members, ranks: HashMap::new() }
    }

    /// Members nearest first.
    pub(crate) fn order(&self) -> impl Iterator<Item = &P> {
        self.order.iter().map(|(_, p)| p)
    }

    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    pub(crate) fn is_member(&self, peer: &P) -> bool {
        self.members.contains(peer)
    }

    /// Whether a link to member `peer` is allowed: it lies within the first `horizon` of this
    /// node's order, or this node lies within the first `theirs` of `peer`'s order (as far as
    /// this node's directory tells). Never for a non-member.
    pub(crate) fn allows(&mut self, peer: &P, horizon: usize, theirs: usize) -> bool {
        if !self.members.contains(peer) {
            return false;
        }
        if horizon >= self.order.len() {
            return true;
        }
        let key_of_peer = key(&self.topic, peer);
        if horizon > 0 && distance(self.me, key_of_peer) <= self.order[horizon - 1].0 {
            return true;
        }
        (self.rank_among(peer, key_of_peer) as usize) < theirs
    }

    /// Where this node ranks in `peer`'s order.
    fn rank_among(&mut self, peer: &P, theirs: u64) -> u32 {
        if let Some(rank) = self.ranks.get(peer) {
            return *rank;
        }
        let mine = distance(theirs, self.me);
        let rank =
            self.keys.iter().filter(|k| **k != theirs && distance(theirs, **k) < mine).count();
        let rank = u32::try_from(rank).unwrap_or(u32::MAX);
        self.ranks.insert(*peer, rank);
        rank
    }
}

/// A peer's key on a topic: the first bytes of a hash of the topic and the identity.
fn key<P: Hash>(topic: &TopicId, peer: &P) -> u64 {
    let mut h = StableHasher(Sha256::new());
    h.0.update(b"mix-gossip/neighbourhood/1");
    h.0.update(topic.0);
    peer.hash(&mut h);
    let digest = h.0.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

/// The distance between two keys: symmetric, and uniform over pairs (a good mix of both, so
/// the nearest few of one node are a random sample, unrelated to the nearest of another).
fn distance(a: u64, b: u64) -> u64 {
    let (low, high) = if a <= b { (a, b) } else { (b, a) };
    mix(mix(low) ^ high.rotate_left(32))
}

/// SplitMix64's finaliser.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Feeds what an identity's `Hash` writes into SHA-256 with every integer little-endian and
/// `usize` as 64 bits, so that nodes on any platform compute the same keys.
struct StableHasher(Sha256);

impl Hasher for StableHasher {
    fn finish(&self) -> u64 {
        // Never asked: the digest is taken whole.
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn write_u8(&mut self, i: u8) {
        self.0.update([i]);
    }
    fn write_u16(&mut self, i: u16) {
        self.0.update(i.to_le_bytes());
    }
    fn write_u32(&mut self, i: u32) {
        self.0.update(i.to_le_bytes());
    }
    fn write_u64(&mut self, i: u64) {
        self.0.update(i.to_le_bytes());
    }
    fn write_u128(&mut self, i: u128) {
        self.0.update(i.to_le_bytes());
    }
    fn write_usize(&mut self, i: usize) {
        self.0.update((i as u64).to_le_bytes());
    }
    fn write_i8(&mut self, i: i8) {
        self.write_u8(i as u8);
    }
    fn write_i16(&mut self, i: i16) {
        self.write_u16(i as u16);
    }
    fn write_i32(&mut self, i: i32) {
        self.write_u32(i as u32);
    }
    fn write_i64(&mut self, i: i64) {
        self.write_u64(i as u64);
    }
    fn write_i128(&mut self, i: i128) {
        self.write_u128(i as u128);
    }
    fn write_isize(&mut self, i: isize) {
        self.write_u64(i as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_are_symmetric_and_keys_stable() {
        let topic = TopicId::from_name("t");
        let (a, b) = (key(&topic, &1u32), key(&topic, &2u32));
        assert_eq!(distance(a, b), distance(b, a));
        // Pinned: a change here splits nodes of two versions into disagreeing neighbourhoods.
        assert_eq!(key(&topic, &7u32), key(&topic, &7u32));
        assert_ne!(key(&topic, &7u32), key(&TopicId::from_name("u"), &7u32));
    }

    #[test]
    fn either_end_within_its_horizon_allows_the_link_and_both_ends_agree() {
        let topic = TopicId::from_name("t");
        let all: Vec<u32> = (0..200).collect();
        let hood = |me: u32| {
            let others: Vec<u32> = all.iter().copied().filter(|p| *p != me).collect();
            Neighbourhood::new(topic, &me, &others)
        };
        let horizon = 5;
        let mut degree = Vec::new();
        for a in 0..50u32 {
            let mut ha = hood(a);
            let nearest: Vec<u32> = ha.order().take(horizon).copied().collect();
            for p in &nearest {
                assert!(ha.allows(p, horizon, horizon));
            }
            assert!(!ha.allows(&1000, horizon, horizon), "a non-member never");
            assert!(!ha.allows(&1000, 1000, 1000), "not even with the widest horizon");
            let mut allowed = 0;
            for b in all.iter().copied().filter(|b| *b != a) {
                let ab = ha.allows(&b, horizon, horizon);
                assert_eq!(ab, hood(b).allows(&a, horizon, horizon), "{a} and {b} disagree");
                allowed += usize::from(ab);
            }
            degree.push(allowed);
        }
        // Own nearest plus those that have this node among theirs: between h and 2h or so.
        let mean = degree.iter().sum::<usize>() as f64 / degree.len() as f64;
        assert!((horizon as f64..=2.0 * horizon as f64).contains(&mean), "{mean}");
        assert!(degree.iter().all(|d| *d >= horizon));
    }
}
