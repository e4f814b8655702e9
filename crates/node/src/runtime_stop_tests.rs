//! A graceful stop over real swarms: what is due within the drain leaves, the rest is dropped
//! and counted, and packets that arrive meanwhile are refused.

use std::time::{Duration, Instant};

use libp2p_mix::DropReason;
use libp2p_mix::core::DelaySemantics;
use mix_sphinx::{AddressBlock, Hop, MESSAGE_SIZE, Packet, Route, WireFormat, message};

use super::{NodeHandle, NodeSpec, start};

async fn node() -> NodeHandle {
    let mut config = libp2p_mix::Config::default();
    config.core.pre_send_delay = Duration::ZERO;
    // Each hop waits exactly what the sender wrote: the test picks which packets are due.
    config.core.delay_semantics_override = Some(DelaySemantics::Exact);
    config.probe_interval = None;
    start(NodeSpec::new("/ip4/127.0.0.1/tcp/0".parse().unwrap(), config)).await.unwrap()
}

/// A packet through `b` (held `delay_ms`) and `c` to the exit `d`, its destination.
fn packet(path: [&NodeHandle; 3], delay_ms: u16, seq: u64) -> Packet {
    let hop =
        |n: &NodeHandle| Hop { public_key: n.mix_key, address: *n.entry().unwrap().address() };
    let route = Route::new(path.map(hop).to_vec(), vec![delay_ms, 1]).unwrap();
    let format = WireFormat::default();
    let mut m = [0u8; MESSAGE_SIZE];
    message::encode_forward(format.padding(), 0, "/stop/test", &[], &seq.to_be_bytes(), &mut m)
        .unwrap();
    route.forward_packet(&format, &AddressBlock::ZERO, &m, &mut rand::rng()).unwrap()
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_node_sends_on_what_is_due_and_drops_the_rest_counted() {
    let (a, b, c, d) = (node().await, node().await, node().await, node().await);
    let to_b = |p| a.send_packet(b.peer_id, b.addr.clone(), p);
    for seq in 0..10 {
        to_b(packet([&b, &c, &d], 300, seq));
        to_b(packet([&b, &c, &d], 60_000, 100 + seq));
    }
    wait_for("20 packets held at b", || b.metrics.delay_queue() == 20).await;
    let late = packet([&b, &c, &d], 300, 200);
    let (report, ()) = tokio::join!(b.shutdown(Duration::from_secs(2)), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        to_b(late);
    });
    assert_eq!(report.held, 20, "{report:?}");
    assert_eq!(report.sent_on, 10, "the packets due within the drain left: {report:?}");
    assert_eq!(report.dropped, 10, "the rest were dropped: {report:?}");
    assert_eq!(report.refused, 1, "the packet that came during the stop: {report:?}");
    assert!(report.took_ms >= 1900, "it waited for the drain: {report:?}");
    assert_eq!(b.metrics.packets_dropped(DropReason::Stopping), 11);
    wait_for("10 deliveries at d", || d.metrics.deliveries() == 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_ends_as_soon_as_nothing_is_held() {
    let (a, b, c, d) = (node().await, node().await, node().await, node().await);
    for seq in 0..10 {
        a.send_packet(b.peer_id, b.addr.clone(), packet([&b, &c, &d], 200, seq));
    }
    wait_for("10 packets held at b", || b.metrics.delay_queue() == 10).await;
    let report = b.shutdown(Duration::from_secs(30)).await;
    assert_eq!((report.held, report.sent_on, report.dropped), (10, 10, 0), "{report:?}");
    assert!(report.took_ms < 5000, "{report:?}");
    wait_for("10 deliveries at d", || d.metrics.deliveries() == 10).await;
}
