//! What the fuzz targets in `fuzz/` run, and the default tests replay over the committed
//! corpus (`fuzz/corpus/mix_*`): the frame reader of `/mix/1.0.0` and of exit replies,
//! discovery records with their signature envelope, and cores exchanging packets whose
//! payloads the fuzzer writes.

use std::time::{Duration, Instant};

use futures::executor::block_on;
use futures::io::Cursor;
use libp2p_identity::PeerId;
use mix_sphinx::PACKET_SIZE;

use mix_sphinx::{HEADER_SIZE, NodeSecretKey, Packet};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::core::{Config, Destination, ExponentialDelay, MixCore, MixNode, Output, StaticPool};
use crate::discovery::record::MixRecord;
use crate::protocol::{self, ReadRule};

/// Reads frames from `data` as a stream of `/mix/1.0.0` would, until it ends or fails, and
/// one exit reply by each rule. No frame is longer than the reader's limit.
pub fn frames(data: &[u8]) {
    // A packet, or a packet and a per-hop proof.
    for max in [PACKET_SIZE, PACKET_SIZE + 64] {
        let mut io = Cursor::new(data);
        let mut frames = 0;
        while let Ok(Some(frame)) =
            block_on(crate::framing::read(&mut io, max, Duration::from_secs(5)))
        {
            assert!(frame.len() <= max, "a frame over the limit was read");
            frames += 1;
            assert!(frames <= data.len(), "more frames than bytes");
        }
    }
    for rule in
        [ReadRule::Exact(32), ReadRule::LengthPrefixed { max: 1024 }, ReadRule::ToEnd { max: 1024 }]
    {
        if let Ok(reply) = block_on(protocol::read_reply(&mut Cursor::new(data), rule)) {
            assert!(reply.len() <= 1024 + 10, "a reply over the limit was read");
        }
    }
}

/// Decodes `data` as a record and verifies it as a signed record stored for a fixed peer:
/// what decodes must encode to the same bytes' meaning, and a stranger's bytes never verify.
pub fn record(data: &[u8]) {
    if let Ok(record) = MixRecord::decode(data) {
        let again = MixRecord::decode(&record.encode()).expect("what decoded encodes and decodes");
        assert_eq!(again, record, "decode ∘ encode is the identity on decoded records");
    }
    let peer = PeerId::from_bytes(&[0x00, 0x02, 0x08, 0x01]).expect("an identity multihash");
    for now in [0, 1_800_000_000, u64::MAX] {
        let _ = MixRecord::verify(data, &peer, now);
    }
}

/// Four real cores exchange real packets as `data` directs. Each input byte is an
/// operation: a node sends a message or a request (body and codec from the input) to another
/// node; a packet in flight has bytes of its payload changed (the header MAC does not cover
/// the payload, so the next hop takes it and its exit decrypts what the fuzzer wrote); a raw
/// frame from the input arrives; or time moves on and what is due arrives. After every
/// operation, every core stays within its bounds and one call's output is bounded.
pub fn core(data: &[u8]) {
    let start = Instant::now();
    let (nodes, secrets): (Vec<MixNode>, Vec<NodeSecretKey>) = (0..4u8).map(node).unzip();
    let pool = StaticPool::new(nodes.clone()).expect("four distinct nodes");
    let config = Config {
        max_delayed_packets: 64,
        max_pending_requests: 8,
        max_pending_surbs: 32,
        ..Config::default()
    };
    let mut cores: Vec<MixCore<ChaCha20Rng>> = nodes
        .iter()
        .zip(secrets)
        .enumerate()
        .map(|(i, (local, secret))| {
            let mut core = MixCore::new(
                config.clone(),
                local.clone(),
                secret,
                Box::new(pool.clone()),
                Box::new(ExponentialDelay::new(Duration::from_millis(20))),
                ChaCha20Rng::seed_from_u64(i as u64),
            );
            core.set_wall_clock(start, Duration::from_secs(1_800_000_000));
            core
        })
        .collect();
    let index = |peer: &PeerId| nodes.iter().position(|n| n.peer_id() == peer);
    let mut now = start;
    let mut in_flight: Vec<(Instant, usize, Packet)> = Vec::new();
    let mut rest = data;
    while let [op, arg, tail @ ..] = rest {
        rest = tail;
        let i = usize::from(op & 3);
        let j = (i + 1 + usize::from(arg & 3) % 3) % 4;
        match op >> 2 {
            0..=15 => {
                let len = usize::from(*arg).min(rest.len());
                let (body, tail) = rest.split_at(len);
                rest = tail;
                let destination = Destination::MixNode(*nodes[j].peer_id());
                let codec = ["/fuzz/1", "/mix/cover/1.0.0", ""][usize::from(op >> 2) % 3];
                let _ = cores[i].send(now, &destination, codec, body);
            }
            16..=23 => {
                let destination = Destination::MixNode(*nodes[j].peer_id());
                let surbs = 1 + usize::from(arg >> 6);
                let _ = cores[i].request(now, &destination, "/fuzz/1", &[*arg; 40], surbs);
            }
            24..=39 => {
                // A byte of the payload of a packet in flight (the MAC covers the header).
                if let Some(k) =
                    (!in_flight.is_empty()).then(|| usize::from(*arg) % in_flight.len())
                    && let [at_hi, at_lo, value, tail @ ..] = rest
                {
                    rest = tail;
                    let at = HEADER_SIZE
                        + usize::from(u16::from_be_bytes([*at_hi, *at_lo]))
                            % (PACKET_SIZE - HEADER_SIZE);
                    in_flight[k].2.as_bytes_mut()[at] ^= value | 1;
                }
            }
            40..=47 => {
                // A stranger's frame, as many bytes as the input has left (zero-padded).
                let mut bytes = [0u8; PACKET_SIZE];
                let n = rest.len().min(PACKET_SIZE);
                bytes[..n].copy_from_slice(&rest[..n]);
                rest = &rest[n..];
                let _ =
                    cores[i].handle_packet(now, Packet::from_slice(&bytes).expect("4608 bytes"));
            }
            _ => {
                now += Duration::from_millis(u64::from(*arg) * 4);
                let (due, later): (Vec<_>, Vec<_>) =
                    in_flight.drain(..).partition(|(at, _, _)| *at <= now);
                in_flight = later;
                for (_, to, packet) in due {
                    let _ = cores[to].handle_packet(now, packet);
                }
                for core in &mut cores {
                    core.handle_timeout(now);
                }
            }
        }
        for (n, core) in cores.iter_mut().enumerate() {
            let mut outputs = 0;
            while let Some(output) = core.poll_output() {
                outputs += 1;
                assert!(outputs < 10_000, "one step made unbounded output");
                if let Output::Transmit { peer, packet, .. } = output
                    && let Some(to) = index(&peer)
                    && in_flight.len() < 4_096
                {
                    in_flight.push((now + Duration::from_millis(5), to, packet));
                }
            }
            assert!(core.delayed_packets() <= 64, "node {n} holds more than its limit");
            assert!(core.pending_requests() <= 8, "node {n} awaits more than its limit");
        }
    }
}

/// Node `i` of the fuzz network: fixed secp256k1 identity and mix key, a public address.
fn node(i: u8) -> (MixNode, NodeSecretKey) {
    let identity = libp2p_identity::secp256k1::SecretKey::try_from_bytes([i + 1; 32])
        .expect("a small scalar is a valid key");
    let identity =
        libp2p_identity::Keypair::from(libp2p_identity::secp256k1::Keypair::from(identity));
    let secret = NodeSecretKey::from_bytes([0x40 + i; 32]);
    let addr = format!("/ip4/10.0.0.{}/tcp/4000", i + 1).parse().expect("a valid address");
    let node = MixNode::new(identity.public().to_peer_id(), addr, secret.public_key(), true)
        .expect("a secp256k1 identity on IPv4 TCP fits an address block");
    (node, secret)
}

#[cfg(test)]
mod tests {
    /// Every committed corpus file through the fuzz targets' functions (stable toolchain).
    #[test]
    fn the_fuzz_corpus_replays_cleanly() {
        for (target, run) in [
            ("mix_frames", super::frames as fn(&[u8])),
            ("mix_record", super::record),
            ("mix_core", super::core),
        ] {
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
