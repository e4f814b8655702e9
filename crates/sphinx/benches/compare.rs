//! Our packet creation and hop processing next to Nym's `sphinx-packet` 0.8 (the most used
//! Rust Sphinx) and one x25519-dalek Diffie-Hellman, in the same process:
//!
//! ```text
//! cargo bench -p mix-sphinx --bench compare
//! ```
//!
//! `sphinx-packet` uses its own format (X25519 + Lioness with BLAKE2/ChaCha, its default
//! payload size), so the comparison is of equivalent operations, not of identical bytes.

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Duration;

use divan::Bencher;
use mix_sphinx::{AddressBlock, Hop, MESSAGE_SIZE, NodeSecretKey, Packet, Route, WireFormat};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn main() {
    divan::main();
}

#[divan::bench]
fn baseline_x25519_dalek(bencher: Bencher<'_, '_>) {
    let scalar = [7u8; 32];
    let point = x25519_dalek::x25519([3; 32], x25519_dalek::X25519_BASEPOINT_BYTES);
    bencher.bench(|| x25519_dalek::x25519(scalar, black_box(point)));
}

mod ours {
    use super::*;

    fn path(hops: usize) -> (Vec<NodeSecretKey>, Route) {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let keys: Vec<_> = (0..hops).map(|_| NodeSecretKey::generate(&mut rng)).collect();
        let route = Route::new(
            keys.iter()
                .map(|k| Hop {
                    public_key: k.public_key(),
                    address: AddressBlock::from_bytes([1; 94]),
                })
                .collect(),
            vec![10; hops - 1],
        )
        .unwrap();
        (keys, route)
    }

    #[divan::bench(args = [3, 5])]
    fn create(bencher: Bencher<'_, '_>, hops: usize) {
        let (_, route) = path(hops);
        let format = WireFormat::default();
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let message = [0x42u8; MESSAGE_SIZE];
        bencher.bench_local(|| {
            route.forward_packet(&format, &AddressBlock::ZERO, &message, &mut rng).unwrap()
        });
    }

    #[divan::bench]
    fn hop(bencher: Bencher<'_, '_>) {
        let (keys, route) = path(3);
        let format = WireFormat::default();
        let packet = route
            .forward_packet(
                &format,
                &AddressBlock::ZERO,
                &[0; MESSAGE_SIZE],
                &mut ChaCha20Rng::seed_from_u64(3),
            )
            .unwrap();
        bencher
            .with_inputs(|| packet.clone())
            .bench_local_refs(|p: &mut Packet| keys[0].process(&format, p).unwrap());
    }
}

mod nym_sphinx_packet {
    use super::*;
    use sphinx_packet::SphinxPacket;
    use sphinx_packet::constants::{
        DESTINATION_ADDRESS_LENGTH, IDENTIFIER_LENGTH, NODE_ADDRESS_LENGTH,
    };
    use sphinx_packet::header::delays;
    use sphinx_packet::route::{Destination, DestinationAddressBytes, Node, NodeAddressBytes};
    use x25519_dalek::{PublicKey, StaticSecret};

    fn path(hops: usize) -> (Vec<StaticSecret>, Vec<Node>, Vec<delays::Delay>, Destination) {
        let secrets: Vec<_> = (0..hops).map(|i| StaticSecret::from([i as u8 + 1; 32])).collect();
        let nodes = secrets
            .iter()
            .map(|s| {
                Node::new(
                    NodeAddressBytes::from_bytes([5; NODE_ADDRESS_LENGTH]),
                    PublicKey::from(s),
                )
            })
            .collect();
        let delays = delays::generate_from_average_duration(hops, Duration::from_millis(10));
        let destination = Destination::new(
            DestinationAddressBytes::from_bytes([3; DESTINATION_ADDRESS_LENGTH]),
            [4; IDENTIFIER_LENGTH],
        );
        (secrets, nodes, delays, destination)
    }

    #[divan::bench(args = [3, 5])]
    fn create(bencher: Bencher<'_, '_>, hops: usize) {
        let (_, nodes, delays, destination) = path(hops);
        bencher.bench(|| SphinxPacket::new(vec![0x42; 32], &nodes, &destination, &delays).unwrap());
    }

    #[divan::bench]
    fn hop(bencher: Bencher<'_, '_>) {
        let (secrets, nodes, delays, destination) = path(3);
        let bytes =
            SphinxPacket::new(vec![0x42; 32], &nodes, &destination, &delays).unwrap().to_bytes();
        bencher
            .with_inputs(|| SphinxPacket::from_bytes(&bytes).unwrap())
            .bench_values(|p| p.process(&secrets[0]).unwrap());
    }
}
