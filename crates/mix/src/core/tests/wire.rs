//! Nodes that speak different wire generations: what is lost, and what each side can count.

use super::*;
use mix_sphinx::{Padding, PayloadCipher};

fn count(net: &Net, kind: Mismatch) -> u64 {
    net.nodes.values().map(|c| c.stats().wire_mismatches(kind)).sum()
}

fn speaking(net: &Net, wire: Wire) -> Vec<PeerId> {
    net.nodes.iter().filter(|(_, c)| c.config().wire == wire).map(|(p, _)| *p).collect()
}

/// A `v1` sender's packets cross `lip-183` hops and fail at a `lip-183` exit, every one of
/// them: the exit counts each as a payload mismatch. In a network that agrees, the same
/// traffic arrives in full.
#[test]
fn a_sender_of_another_generation_is_counted_at_the_exit() {
    let mut net = Net::with_configs(6, 31, exponential(5), |i| {
        Config::default().with_wire(if i == 0 { Wire::V1 } else { Wire::Lip183 })
    });
    let sender = speaking(&net, Wire::V1)[0];
    let now = net.now;
    for i in 0..20u32 {
        net.node(&sender).send(now, &external_destination(), "/app", &i.to_be_bytes()).unwrap();
    }
    net.run(Duration::from_secs(10));
    assert!(net.deliveries.is_empty());
    assert_eq!(count(&net, Mismatch::Payload), 20);
    let integrity = DropReason::Sphinx(ProcessError::PayloadIntegrity);
    let dropped: u64 = net.nodes.values().map(|c| c.stats().packets_dropped(integrity)).sum();
    assert_eq!(dropped, 20);

    for &wire in Wire::ALL {
        let mut net = Net::new(6, 32, exponential(5), Config::default().with_wire(wire));
        let peers = net.peers();
        let now = net.now;
        for i in 0..20u32 {
            net.node(&peers[0])
                .send(now, &external_destination(), "/app", &i.to_be_bytes())
                .unwrap();
        }
        net.run(Duration::from_secs(10));
        assert_eq!(net.deliveries.len(), 20, "{wire}");
        assert_eq!(count(&net, Mismatch::Payload), 0, "{wire}");
    }
}

/// A SURB built by a `lip-183` node and answered by a `v1` node: the reply comes back to its
/// creator, which cannot decrypt it and counts it.
#[test]
fn a_reply_from_another_generation_is_counted_at_the_surb_creator() {
    let mut net = Net::with_configs(6, 33, exponential(5), |i| {
        Config::default().with_wire(if i == 0 { Wire::V1 } else { Wire::Lip183 })
    });
    let replier = speaking(&net, Wire::V1)[0];
    let creator = speaking(&net, Wire::Lip183)[0];
    let now = net.now;
    let bundle =
        net.node(&creator).surb_bundle(now, 3, &[replier], SendOptions::default()).unwrap();
    assert_eq!(net.node(&replier).reply(now, &bundle.surbs, b"answer"), Ok(3));
    net.run(Duration::from_secs(10));
    assert!(net.replies.is_empty());
    assert_eq!(net.node(&creator).stats().wire_mismatches(Mismatch::Reply), 3);
    assert_eq!(net.node(&creator).stats().packets_dropped(DropReason::ReplyIntegrity), 3);
}

/// A padding mismatch alone (same cipher) passes the integrity check; the exit can tell only
/// where the framing betrays it. A sender without the trailer, read by a node that expects
/// one: a message too short to leave room for the trailer has a padding length that cannot
/// fit (dropped and counted), and one whose last four bytes are `ff ff ff ff` ends in a
/// trailer no sender writes (counted, and delivered four bytes short). Other bodies lose
/// their last four bytes unseen.
#[test]
fn a_padding_mismatch_is_counted_where_the_framing_betrays_it() {
    let trailer = Config {
        format_override: Some(WireFormat::new(PayloadCipher::Lioness, Padding::SeqNo)),
        ..Config::default()
    };
    let mut net = Net::with_configs(6, 34, exponential(5), |i| {
        if i == 0 { Config::default() } else { trailer.clone() }
    });
    let sender = net
        .nodes
        .iter()
        .find(|(_, c)| c.config().format_override.is_none())
        .map(|(p, _)| *p)
        .unwrap();
    let now = net.now;
    let dest = external_destination();
    // An empty codec and an empty body: X is 2 bytes, the padding length 3964 > 3962.
    net.node(&sender).send(now, &dest, "", b"").unwrap();
    net.node(&sender).send(now, &dest, "/app", b"body\xff\xff\xff\xff").unwrap();
    net.node(&sender).send(now, &dest, "/app", b"ordinary body").unwrap();
    net.run(Duration::from_secs(10));
    assert_eq!(count(&net, Mismatch::Padding), 2);
    assert_eq!(count(&net, Mismatch::Payload), 0);
    let mut bodies: Vec<_> = net.deliveries.iter().map(|(_, d)| d.body.clone()).collect();
    bodies.sort();
    assert_eq!(bodies, vec![b"body".to_vec(), b"ordinary ".to_vec()]);
}
