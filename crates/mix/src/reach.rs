//! Checks that a node found through discovery is where its record says, before paths use it.
//!
//! A record is signed by the node it names, so it proves who published it; the address in it
//! is only a claim. Anyone can publish records naming addresses where nobody answers for them:
//! taken on trust, they would be drawn for paths (every packet through them lost) and take
//! places in subnets whose honest nodes would then be refused. The pool keeps such nodes
//! waiting ([`NodePool::to_reach`]); this dials each at its record's address, a few at a time,
//! and says which answered. A connection this node dialed for any reason counts, so a node
//! already connected at the right address is taken at once.

use std::collections::{HashMap, HashSet, VecDeque};
use std::task::Context;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures_timer::Delay;
use libp2p_core::{ConnectedPoint, Multiaddr};
use libp2p_identity::PeerId;
use libp2p_swarm::ConnectionId;
use libp2p_swarm::dial_opts::{DialOpts, PeerCondition};

use crate::core::NodePool;
use crate::core::same_address;

/// Nodes waiting for a dial. Past this the queue drops the nodes the pool no longer waits
/// for (it holds at most `max_unreached` of them), then refuses more.
const MAX_QUEUED: usize = 4096;
/// How often dials that take too long are looked for.
const TICK: Duration = Duration::from_secs(1);

/// What to do next for a node waiting to be reached.
pub(crate) enum Step {
    /// A connection this node dialed already reached it at this address.
    Reached(PeerId, Multiaddr),
    /// Dial it.
    Dial(DialOpts),
}

/// How one of our dials ended without a connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Failed {
    /// Not made, or stopped on this side (another dial to the peer under way, a local limit):
    /// it says nothing about the node, which waits for its turn again.
    NotMade,
    /// The node did not answer at this address.
    Unreached(Multiaddr),
}

struct Dialing {
    id: ConnectionId,
    addr: Multiaddr,
    until: Instant,
}

pub(crate) struct Reacher {
    max_dials: usize,
    timeout: Duration,
    /// Nodes waiting for a dial, oldest first, each once.
    queue: VecDeque<PeerId>,
    queued: HashSet<PeerId>,
    /// Our dials in progress: where to, and when each is given up.
    dialing: HashMap<PeerId, Dialing>,
    /// Where this node's outbound connections go.
    outbound: HashMap<PeerId, Vec<(ConnectionId, Multiaddr)>>,
    tick: Option<Delay>,
}

impl Reacher {
    pub(crate) fn new(max_dials: usize, timeout: Duration) -> Self {
        Self {
            max_dials: max_dials.max(1),
            timeout,
            queue: VecDeque::new(),
            queued: HashSet::new(),
            dialing: HashMap::new(),
            outbound: HashMap::new(),
            tick: None,
        }
    }

    /// `peer` waits in `pool` to be reached.
    pub(crate) fn enqueue(&mut self, peer: PeerId, pool: &dyn NodePool) {
        if self.queued.contains(&peer) || self.dialing.contains_key(&peer) {
            return;
        }
        if self.queue.len() >= MAX_QUEUED {
            // Nodes the pool dropped (a newcomer took their place) go; those it waits for
            // keep theirs.
            self.queue.retain(|p| pool.to_reach(p).is_some());
            self.queued = self.queue.iter().copied().collect();
            if self.queue.len() >= MAX_QUEUED {
                return;
            }
        }
        self.queued.insert(peer);
        self.queue.push_back(peer);
    }

    /// The next steps, as many dials as there is room for.
    pub(crate) fn next(&mut self, pool: &dyn NodePool, now: Instant) -> Vec<Step> {
        let mut steps = Vec::new();
        while self.dialing.len() < self.max_dials {
            let Some(peer) = self.queue.pop_front() else { break };
            self.queued.remove(&peer);
            let Some(node) = pool.to_reach(&peer) else { continue };
            let at = self
                .outbound
                .get(&peer)
                .and_then(|c| c.iter().find(|(_, a)| same_address(a, node.addr())));
            if let Some((_, addr)) = at {
                steps.push(Step::Reached(peer, addr.clone()));
                continue;
            }
            // Even if connected (an inbound connection says nothing about the address), and
            // even if another dial is under way: that one may be at an address a packet
            // named, and a sender who kept one going would keep the node from ever being
            // checked.
            let opts = DialOpts::peer_id(peer)
                .addresses(vec![node.addr().clone()])
                .condition(PeerCondition::Always)
                .build();
            let dialing = Dialing {
                id: opts.connection_id(),
                addr: node.addr().clone(),
                until: now + self.timeout,
            };
            self.dialing.insert(peer, dialing);
            steps.push(Step::Dial(opts));
        }
        steps
    }

    /// A connection was established. Returns the address it reached, if this node dialed it.
    pub(crate) fn on_established(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        endpoint: &ConnectedPoint,
    ) -> Option<Multiaddr> {
        if self.dialing.get(&peer).is_some_and(|d| d.id == connection) {
            self.dialing.remove(&peer);
        }
        let ConnectedPoint::Dialer { address, .. } = endpoint else { return None };
        self.outbound.entry(peer).or_default().push((connection, address.clone()));
        Some(address.clone())
    }

    pub(crate) fn on_closed(&mut self, peer: PeerId, connection: ConnectionId) {
        if let Some(connections) = self.outbound.get_mut(&peer) {
            connections.retain(|(c, _)| *c != connection);
            if connections.is_empty() {
                self.outbound.remove(&peer);
            }
        }
    }

    /// A dial failed: `None` if it was not ours.
    pub(crate) fn on_dial_failure(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        not_made: bool,
        pool: &dyn NodePool,
    ) -> Option<Failed> {
        if self.dialing.get(&peer).is_none_or(|d| d.id != connection) {
            return None;
        }
        let dialing = self.dialing.remove(&peer)?;
        if not_made {
            self.enqueue(peer, pool);
            return Some(Failed::NotMade);
        }
        Some(Failed::Unreached(dialing.addr))
    }

    /// Our dials that took longer than the timeout: given up (a late connection still counts
    /// only if the pool waits for the node then).
    pub(crate) fn poll_expired(
        &mut self,
        cx: &mut Context<'_>,
        now: Instant,
    ) -> Vec<(PeerId, Multiaddr)> {
        if self.dialing.is_empty() {
            self.tick = None;
            return Vec::new();
        }
        // The tick only wakes the task; the dials (a handful) are checked on every poll.
        let tick = self.tick.get_or_insert_with(|| Delay::new(TICK));
        while tick.poll_unpin(cx).is_ready() {
            tick.reset(TICK);
        }
        let mut expired: Vec<PeerId> =
            self.dialing.iter().filter(|(_, d)| d.until <= now).map(|(p, _)| *p).collect();
        expired.sort_unstable();
        expired
            .into_iter()
            .filter_map(|peer| self.dialing.remove(&peer).map(|d| (peer, d.addr)))
            .collect()
    }

    /// Dials in progress.
    #[cfg(test)]
    pub(crate) fn dialing(&self) -> usize {
        self.dialing.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{DynamicPool, MixNode, test_node as node};

    fn dialed(steps: &[Step]) -> Vec<PeerId> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Dial(opts) => opts.get_peer_id(),
                Step::Reached(..) => None,
            })
            .collect()
    }

    #[test]
    fn dials_at_most_the_limit_at_once_and_each_node_once() {
        let t0 = Instant::now();
        let mut pool = DynamicPool::new();
        let mut reacher = Reacher::new(2, Duration::from_secs(10));
        let nodes: Vec<MixNode> = (1..=3).map(node).collect();
        for n in &nodes {
            pool.offer(n.clone(), 1, t0 + Duration::from_secs(60), t0);
            reacher.enqueue(*n.peer_id(), &pool);
            reacher.enqueue(*n.peer_id(), &pool);
        }
        let first = dialed(&reacher.next(&pool, t0));
        assert_eq!(first.len(), 2);
        assert!(reacher.next(&pool, t0).is_empty(), "no room");
        // The first dial fails: the third node's turn.
        let fail = |r: &mut Reacher, peer: PeerId| {
            let id = r.dialing[&peer].id;
            r.on_dial_failure(peer, id, false, &pool)
        };
        let addr = pool.to_reach(&first[0]).unwrap().addr().clone();
        assert_eq!(fail(&mut reacher, first[0]), Some(Failed::Unreached(addr)));
        assert_eq!(dialed(&reacher.next(&pool, t0)), vec![*nodes[2].peer_id()]);
        assert!(reacher.next(&pool, t0).is_empty(), "each node once");
        // Someone else's dial failing is not ours.
        assert_eq!(
            reacher.on_dial_failure(first[1], ConnectionId::new_unchecked(0), false, &pool),
            None
        );
    }

    #[test]
    fn an_outbound_connection_at_the_address_counts_and_an_inbound_one_does_not() {
        let t0 = Instant::now();
        let mut pool = DynamicPool::new();
        let mut reacher = Reacher::new(4, Duration::from_secs(10));
        let (a, b) = (node(1), node(2));
        let dialer = ConnectedPoint::Dialer {
            address: a.addr().clone(),
            role_override: libp2p_core::Endpoint::Dialer,
            port_use: libp2p_core::transport::PortUse::Reuse,
        };
        let listener = ConnectedPoint::Listener {
            local_addr: "/ip4/10.0.0.9/tcp/1".parse().unwrap(),
            send_back_addr: b.addr().clone(),
        };
        reacher.on_established(*a.peer_id(), ConnectionId::new_unchecked(1), &dialer);
        reacher.on_established(*b.peer_id(), ConnectionId::new_unchecked(2), &listener);
        for n in [&a, &b] {
            pool.offer(n.clone(), 1, t0 + Duration::from_secs(60), t0);
            reacher.enqueue(*n.peer_id(), &pool);
        }
        let steps = reacher.next(&pool, t0);
        assert!(matches!(&steps[0], Step::Reached(p, _) if p == a.peer_id()));
        assert_eq!(dialed(&steps), vec![*b.peer_id()]);
    }

    #[test]
    fn a_dial_that_hangs_is_given_up() {
        let t0 = Instant::now();
        let mut pool = DynamicPool::new();
        let mut reacher = Reacher::new(1, Duration::from_millis(10));
        let a = node(1);
        pool.offer(a.clone(), 1, t0 + Duration::from_secs(60), t0);
        reacher.enqueue(*a.peer_id(), &pool);
        assert_eq!(dialed(&reacher.next(&pool, t0)).len(), 1);
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let expired = reacher.poll_expired(&mut cx, t0 + Duration::from_millis(20));
        assert_eq!(expired, vec![(*a.peer_id(), a.addr().clone())]);
        assert_eq!(reacher.dialing(), 0);
    }
}
