//! What the fuzz targets in `fuzz/` run, and the default tests replay over the committed
//! corpus (`fuzz/corpus/gossip_*`): the codec, and a [`State`] fed whatever a stranger's
//! frames decode to, its bounds checked after every step.

use std::time::{Duration, Instant};

use libp2p_identity::PeerId;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::codec;
use crate::proto::{Config, Output, State, Timer, TopicId};

/// Decodes `data` as one frame; what decodes must encode and decode to the same message.
pub fn codec(data: &[u8]) {
    if let Ok(message) = codec::decode(data) {
        let bytes = codec::encode(&message).expect("a decoded message encodes");
        let again = codec::decode(&bytes).expect("an encoded message decodes");
        assert_eq!(again, message, "decode ∘ encode is the identity on decoded messages");
    }
}

/// Feeds frames from `data` to a node that joined one topic through 8 peers: each chunk is a
/// peer's pick (1 byte), a length (2 bytes) and a frame; a chunk that does not decode moves
/// time on and fires due timers or disconnects its peer. After every step the node's views
/// stay within their configured sizes and one step's outputs stay bounded.
pub fn state(data: &[u8]) {
    let peers: Vec<PeerId> = (0..8u8).map(|i| peer(i + 1)).collect();
    let topic = TopicId::from_name("fuzz");
    let config = Config::default();
    let (active, passive) = (config.membership.active_view, config.membership.passive_view);
    let mut state = State::new(peer(0), config, ChaCha20Rng::seed_from_u64(0));
    let mut now = Instant::now();
    let mut timers: Vec<(Instant, Timer)> = Vec::new();
    state.join(now, topic, peers[..3].to_vec());
    drain(&mut state, &mut timers);
    let mut rest = data;
    while let [pick, hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (frame, tail) = tail.split_at(len);
        rest = tail;
        let from = peers[usize::from(*pick) % peers.len()];
        match codec::decode(frame) {
            Ok(message) => state.handle_message(now, from, message),
            Err(_) if pick & 0x80 != 0 => state.handle_disconnected(now, from),
            Err(_) => {
                now += Duration::from_millis(u64::from(*hi) * 40 + u64::from(*lo));
                timers.sort_by_key(|(at, _)| *at);
                let due = timers.partition_point(|(at, _)| *at <= now);
                for (_, timer) in timers.drain(..due).collect::<Vec<_>>() {
                    state.handle_timer(now, timer);
                }
            }
        }
        drain(&mut state, &mut timers);
        assert!(state.neighbors(&topic).len() <= active, "active view over its size");
        assert!(state.contacts(&topic).len() <= passive, "passive view over its size");
        assert!(timers.len() < 100_000, "timers pile up");
    }
}

fn drain(state: &mut State<PeerId, ChaCha20Rng>, timers: &mut Vec<(Instant, Timer)>) {
    let mut outputs = 0;
    while let Some(output) = state.poll_output() {
        outputs += 1;
        assert!(outputs < 100_000, "one step made unbounded output");
        if let Output::Timer { at, timer } = output {
            timers.push((at, timer));
        }
    }
}

/// A fixed peer id: the identity multihash of an Ed25519 public key's protobuf, all bytes `i`.
fn peer(i: u8) -> PeerId {
    let mut bytes = vec![0x00, 0x24, 0x08, 0x01, 0x12, 0x20];
    bytes.extend_from_slice(&[i; 32]);
    PeerId::from_bytes(&bytes).expect("an identity multihash of 36 bytes")
}

#[cfg(test)]
mod tests {
    /// Every committed corpus file through the fuzz targets' functions (stable toolchain).
    #[test]
    fn the_fuzz_corpus_replays_cleanly() {
        for (target, run) in
            [("gossip_codec", super::codec as fn(&[u8])), ("gossip_state", super::state)]
        {
            let dir =
                concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus/").to_owned() + target;
            let mut files = 0;
            for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir}: {e}")) {
                run(&std::fs::read(entry.unwrap().path()).unwrap());
                files += 1;
            }
            assert!(files > 0, "{dir} is empty");
        }
    }
}
