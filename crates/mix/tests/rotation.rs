//! Key rotation on real swarms: ten nodes that find each other through discovery rotate their
//! mix keys every 4 s while traffic flows.

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{ECHO, NodeEvent, Options, fast_discovery, lp, network};
use libp2p_mix::DropReason;
use libp2p_mix::core::RotationConfig;
use mix_sphinx::{AddressBlock, Hop, MESSAGE_SIZE, ProcessError, Route, WireFormat, message};

const EPOCH: Duration = Duration::from_secs(4);
const OVERLAP: Duration = Duration::from_secs(2);

fn unix() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap()
}

/// Sleeps until `offset` into the next epoch.
async fn until_next_epoch(offset: Duration) -> u64 {
    let now = unix();
    let next = (now.as_millis() / EPOCH.as_millis() + 1) as u64;
    let at = EPOCH * next as u32 + offset;
    tokio::time::sleep(at - now).await;
    next
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_under_load_without_loss_and_replays_are_caught_across_a_rotation() {
    common::init_tracing();
    let mut options = Options { nodes: 10, discovery: true, ..Options::default() };
    options.config.core.rotation = Some(RotationConfig { epoch: EPOCH, overlap: OVERLAP });
    options.discovery_config = fast_discovery();
    options.discovery_config.refetch_interval = Duration::from_secs(1);
    let mut net = network(options).await;
    let started = Instant::now();
    loop {
        let sizes = futures::future::join_all(net.mix.iter().map(|n| n.pool_size())).await;
        if sizes.iter().all(|s| *s >= 9) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "pools: {sizes:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Load: a message every 20 ms for three and a half epochs, from every node in turn.
    let dest = net.dest.destination();
    let load = async {
        let mut errors = Vec::new();
        let mut sent = 0u32;
        let end = Instant::now() + EPOCH * 7 / 2;
        while Instant::now() < end {
            let node = &net.mix[sent as usize % net.mix.len()];
            match node.send(&dest, ECHO, lp(&sent.to_be_bytes())).await {
                Ok(()) => sent += 1,
                Err(e) => errors.push(e),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (sent, errors)
    };

    // Meanwhile: a packet built for node 1's key of this epoch, sent before the rotation, again
    // just after it (inside the overlap), and once more after the overlap.
    let replay = async {
        let (sender, x) = (&net.mix[0], &net.mix[1]);
        let epoch = until_next_epoch(Duration::from_millis(200)).await;
        let mut hops = Vec::new();
        for node in &net.mix[1..4] {
            let entry = sender.pool_entry(node.peer_id).await.unwrap();
            let key = *entry.key_for(Some(epoch)).unwrap();
            hops.push(Hop { public_key: key, address: *entry.address() });
        }
        let format = WireFormat::default();
        let mut m = [0u8; MESSAGE_SIZE];
        message::encode_cover(format.padding(), 0, b"replayed", &mut m).unwrap();
        let packet = Route::new(hops, vec![1, 1])
            .unwrap()
            .forward_packet(&format, &AddressBlock::ZERO, &m, &mut rand::rng())
            .unwrap();
        sender.send_packet(x.peer_id, x.addr.clone(), packet.clone());
        let metrics = x.metrics.as_ref().unwrap();
        let mac = DropReason::Sphinx(ProcessError::MacMismatch);
        let (replays, macs) =
            (metrics.packets_dropped(DropReason::Replay), metrics.packets_dropped(mac));
        until_next_epoch(Duration::from_millis(300)).await;
        sender.send_packet(x.peer_id, x.addr.clone(), packet.clone());
        tokio::time::sleep(Duration::from_millis(500)).await;
        let replayed_in_overlap = metrics.packets_dropped(DropReason::Replay) - replays;
        tokio::time::sleep(OVERLAP).await;
        sender.send_packet(x.peer_id, x.addr.clone(), packet);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let failed_after_overlap = metrics.packets_dropped(mac) - macs;
        (replayed_in_overlap, failed_after_overlap)
    };
    let ((sent, errors), (replayed, failed)) = futures::join!(load, replay);
    assert!(errors.is_empty(), "send errors: {errors:?}");
    assert_eq!(replayed, 1, "a replay inside the overlap is refused by the previous key's filter");
    assert_eq!(failed, 1, "after the overlap the old key is gone");

    let mut seen = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < sent as usize && Instant::now() < deadline {
        if let Some(NodeEvent::Echo(body)) = net.dest.next_event(Duration::from_secs(2)).await {
            seen.insert(body);
        }
    }
    let rotations: Vec<u64> =
        net.mix.iter().map(|n| n.metrics.as_ref().unwrap().key_rotations()).collect();
    let mac_drops: u64 = net
        .mix
        .iter()
        .map(|n| {
            n.metrics
                .as_ref()
                .unwrap()
                .packets_dropped(DropReason::Sphinx(ProcessError::MacMismatch))
        })
        .sum();
    eprintln!(
        "rotation: {} of {sent} messages delivered across rotations {rotations:?}; MAC drops {mac_drops} \
         (1 expected: the replay after the overlap)",
        seen.len()
    );
    assert_eq!(seen.len(), sent as usize, "messages lost across rotations");
    assert!(rotations.iter().all(|r| *r >= 3), "{rotations:?}");
    assert_eq!(mac_drops, 1);
}
