//! The admission filter holds at every point a peer can enter a view: over random schedules of
//! joins, shuffles, rotations and crashes, no peer the filter rejects is ever a neighbour (or
//! a contact) of a node running it.

#![allow(clippy::unwrap_used, reason = "test")]

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use mix_gossip::proto::{Config, MembershipConfig, PeerFilter};
use mix_gossip::{AllowAll, Forwarding, RotationConfig, Route, TopicId};
use mix_sim::gossip::{Latency, Network, Peer};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Join(usize),
    Rotate(usize, usize),
    Run(u64),
    Crash(usize),
    Publish(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1usize..4).prop_map(Op::Join),
        (any::<usize>(), 1usize..3).prop_map(|(n, c)| Op::Rotate(n, c)),
        (1u64..90).prop_map(Op::Run),
        any::<usize>().prop_map(Op::Crash),
        any::<usize>().prop_map(Op::Publish),
    ]
}

/// Membership that moves fast: shuffles every 5 s and rotation every 10 ± 5 s, so a short
/// schedule exercises every path into a view many times.
fn config() -> Config {
    Config {
        membership: MembershipConfig {
            shuffle_interval: Duration::from_secs(5),
            ..MembershipConfig::default()
        },
        forwarding: Forwarding::Immediate,
        rotation: Some(RotationConfig {
            interval: Duration::from_secs(10),
            jitter: Duration::from_secs(5),
            count: 1,
        }),
        ..Config::default()
    }
}

/// Peers in S: those with `p % m == r` (never node 0, the first bootstrap).
#[derive(Debug, Clone, Copy)]
struct Rejected {
    m: Peer,
    r: Peer,
}

impl Rejected {
    fn contains(self, p: Peer) -> bool {
        p % self.m == self.r
    }
}

/// Collects every violation the view hook sees.
fn watch(net: &mut Network, s: Rejected) -> Rc<RefCell<Vec<String>>> {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let log = seen.clone();
    net.check = Some(Box::new(move |node, view| {
        if !s.contains(node) {
            for p in view {
                if s.contains(*p) {
                    log.borrow_mut().push(format!("{node} took {p} as a neighbour"));
                }
            }
        }
    }));
    seen
}

fn assert_views_clean(net: &Network, s: Rejected, topic: &TopicId) -> Result<(), TestCaseError> {
    for node in net.alive() {
        if s.contains(node) {
            continue;
        }
        let state = net.node(node).unwrap();
        for p in state.neighbors(topic).iter().chain(state.contacts(topic)) {
            prop_assert!(!s.contains(*p), "{} holds rejected {} in a view", node, p);
        }
    }
    Ok(())
}

fn pick(net: &Network, i: usize) -> Option<Peer> {
    let mut alive: Vec<Peer> = net.alive().into_iter().collect();
    alive.sort_unstable();
    (!alive.is_empty()).then(|| alive[i % alive.len()])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn no_rejected_peer_enters_an_honest_view(
        m in 3u32..7,
        r in 1u32..3,
        n in 30usize..60,
        seed: u64,
        ops in proptest::collection::vec(op(), 10..40),
    ) {
        let s = Rejected { m, r };
        // Honest nodes reject S; the nodes of S admit anyone (they want in).
        let filter_of = Box::new(move |me: Peer| -> Arc<dyn PeerFilter<Peer>> {
            if s.contains(me) {
                Arc::new(AllowAll)
            } else {
                Arc::new(move |_: &TopicId, p: &Peer| !s.contains(*p))
            }
        });
        let mut net = Network::with_filters(n, &config(), filter_of, Latency::default(), 3, seed);
        let seen = watch(&mut net, s);
        let topic = net.topic();
        for op in ops {
            match op {
                Op::Join(bootstrap) => {
                    net.add_node(bootstrap);
                }
                Op::Rotate(i, count) => {
                    if let Some(p) = pick(&net, i) {
                        net.rotate(p, count);
                    }
                }
                Op::Run(secs) => net.run_for(Duration::from_secs(secs)),
                Op::Crash(i) => {
                    // One node at a time, never node 0.
                    if let Some(p) = pick(&net, i).filter(|p| *p != 0) {
                        let share = 1.0 / net.alive().len().max(1) as f64;
                        net.crash(share, &[0, p.saturating_sub(1)]);
                    }
                }
                Op::Publish(i) => {
                    if let Some(p) = pick(&net, i) {
                        net.broadcast(p, Route::Direct, Duration::from_secs(5));
                    }
                }
            }
            let seen = seen.borrow();
            prop_assert!(seen.is_empty(), "{:?}", &seen[..seen.len().min(5)]);
        }
        assert_views_clean(&net, s, &topic)?;
    }

    #[test]
    fn refilter_evicts_peers_that_lost_trust(
        m in 3u32..7,
        r in 1u32..3,
        seed: u64,
    ) {
        let s = Rejected { m, r };
        let mut net = Network::new(150, &config(), Arc::new(AllowAll), Latency::default(), 3, seed);
        net.run_for(Duration::from_secs(60));
        let topic = net.topic();
        let had = net
            .alive()
            .into_iter()
            .filter(|n| !s.contains(*n))
            .filter(|n| net.node(*n).unwrap().neighbors(&topic).iter().any(|p| s.contains(*p)))
            .count();
        prop_assert!(had > 0, "some honest node had a neighbour in S before");
        // Trust changes: honest nodes stop admitting S.
        let honest: Vec<Peer> = (0..150).filter(|p| !s.contains(*p)).collect();
        for &node in &honest {
            net.set_node_filter(node, Arc::new(move |_: &TopicId, p: &Peer| !s.contains(*p)));
        }
        assert_views_clean(&net, s, &topic)?;
        let seen = watch(&mut net, s);
        net.run_for(Duration::from_secs(120));
        prop_assert!(seen.borrow().is_empty(), "{:?}", seen.borrow());
        assert_views_clean(&net, s, &topic)?;
        // The honest nodes still form one broadcast tree.
        let id = net.broadcast(honest[3], Route::Direct, Duration::from_secs(10)).unwrap();
        let trace = &net.traces[&id];
        let missed: Vec<_> = honest.iter().filter(|p| !trace.delivered.contains_key(p)).collect();
        prop_assert!(missed.is_empty(), "honest nodes missed it: {:?}", missed);
    }
}
