//! Property tests: round trips over random keys, paths, delays and messages for both ciphers,
//! tamper detection, and arbitrary input handled without panics.

use mix_sphinx::{
    Action, AddressBlock, Hop, MESSAGE_SIZE, NodeSecretKey, PACKET_SIZE, PAYLOAD_SIZE, Packet,
    Padding, PayloadCipher, ProcessError, Route, SURB_SIZE, Surb, WireFormat, message, testing,
};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

const CIPHERS: [PayloadCipher; 2] = [PayloadCipher::AesCtr, PayloadCipher::Lioness];

fn format(cipher_index: usize) -> WireFormat {
    WireFormat::new(CIPHERS[cipher_index], Padding::Plain)
}

fn random_path(rng: &mut ChaCha20Rng, len: usize, delays: &[u16]) -> (Vec<NodeSecretKey>, Route) {
    let keys: Vec<_> = (0..len).map(|_| NodeSecretKey::generate(rng)).collect();
    let hops = keys
        .iter()
        .map(|k| {
            let mut address = [0u8; 94];
            rng.fill_bytes(&mut address);
            Hop { public_key: k.public_key(), address: AddressBlock::from_bytes(address) }
        })
        .collect();
    (keys, Route::new(hops, delays[..len - 1].to_vec()).expect("valid route"))
}

fn random_message(rng: &mut ChaCha20Rng) -> [u8; MESSAGE_SIZE] {
    let mut m = [0u8; MESSAGE_SIZE];
    rng.fill_bytes(&mut m);
    m
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn forward_packets_reach_the_exit_intact(
        seed: u64,
        len in 3usize..=5,
        cipher in 0usize..2,
        delays in proptest::collection::vec(1u16.., 4),
    ) {
        let format = format(cipher);
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let (keys, route) = random_path(&mut rng, len, &delays);
        let m = random_message(&mut rng);
        let mut destination = [0u8; 94];
        rng.fill_bytes(&mut destination);
        let destination = AddressBlock::from_bytes(destination);

        let mut packet = route.forward_packet(&format, &destination, &m, &mut rng).unwrap();
        let mut tags = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let (tag, action) = key.process(&format, &mut packet).unwrap();
            tags.push(tag);
            if i + 1 < len {
                prop_assert_eq!(action, Action::Forward { next_hop: route.hops()[i + 1].address, delay_ms: delays[i] });
            } else {
                prop_assert_eq!(action, Action::Deliver { destination });
                prop_assert_eq!(packet.message(), &m);
            }
        }
        tags.sort_by_key(|t| *t.as_bytes());
        tags.dedup();
        prop_assert_eq!(tags.len(), len);
    }

    #[test]
    fn surb_replies_come_back_intact(seed: u64, len in 3usize..=5, cipher in 0usize..2) {
        let format = format(cipher);
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let (keys, route) = random_path(&mut rng, len, &[7, 8, 9, 10]);
        let (surb, secrets) = route.surb(&format, &mut rng).unwrap();
        // The SURB travels inside a message and is parsed back by the exit.
        let surb = Surb::from_slice(&*surb.to_bytes()).unwrap();
        let reply = random_message(&mut rng);
        let mut packet = surb.reply_packet(&format, &reply);
        prop_assert_eq!(surb.first_hop(), route.first_hop());
        for key in &keys[..len - 1] {
            let (_, action) = key.process(&format, &mut packet).unwrap();
            prop_assert!(matches!(action, Action::Forward { .. }), "{:?}", action);
        }
        let (_, action) = keys[len - 1].process(&format, &mut packet).unwrap();
        prop_assert_eq!(action, Action::Reply { id: secrets.id() });
        prop_assert_eq!(secrets.recover(&format, &mut packet).unwrap(), &reply);
    }

    #[test]
    fn any_header_flip_is_rejected_at_the_first_hop(
        seed: u64,
        cipher in 0usize..2,
        at in 0usize..624,
        mask in 1u8..,
    ) {
        let format = format(cipher);
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let (keys, route) = random_path(&mut rng, 3, &[1, 1]);
        let m = random_message(&mut rng);
        let mut packet = route.forward_packet(&format, &AddressBlock::ZERO, &m, &mut rng).unwrap();
        packet.as_bytes_mut()[at] ^= mask;
        let err = keys[0].process(&format, &mut packet).unwrap_err();
        prop_assert!(matches!(
            err,
            ProcessError::MacMismatch | ProcessError::NonCanonicalAlpha | ProcessError::LowOrderAlpha
        ), "{:?}", err);
    }

    #[test]
    fn any_packet_bytes_are_handled(bytes in proptest::collection::vec(any::<u8>(), PACKET_SIZE), seed: u64) {
        let key = NodeSecretKey::generate(&mut ChaCha20Rng::seed_from_u64(seed));
        for format in [format(0), format(1)] {
            let mut packet = Packet::from_slice(&bytes).unwrap();
            let _ = key.process(&format, &mut packet);
        }
    }

    /// Garbage that passes the MAC: random β under a valid γ, with the routing block chosen so
    /// that every role (intermediate, exit, reply, malformed) is reached with a random payload.
    #[test]
    fn authenticated_garbage_is_handled(
        seed: u64,
        cipher in 0usize..2,
        role in 0u8..4,
        zero_run_len in 0usize..=240,
    ) {
        let format = format(cipher);
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let key = NodeSecretKey::generate(&mut rng);
        let mut block = [0u8; 576];
        rng.fill_bytes(&mut block);
        block[112..112 + zero_run_len].fill(0);
        match role {
            0 => block[94..112].fill(0),
            1 => block[..96].fill(0),
            2 => block[..112].fill(0),
            _ => {}
        }
        let alpha = NodeSecretKey::generate(&mut rng).public_key().to_bytes();
        let mut payload = [0u8; PAYLOAD_SIZE];
        rng.fill_bytes(&mut payload);
        let routing = block[..576].try_into().unwrap();
        let mut packet = testing::authenticated_packet(&key, &alpha, routing, &payload).unwrap();
        let outcome = key.process(&format, &mut packet);
        if let Ok((_, Action::Reply { .. })) = outcome {
            // An initiator that holds some SURB secret for this id must survive garbage too.
            let (_, route) = random_path(&mut rng, 3, &[1, 1]);
            let (_, secrets) = route.surb(&format, &mut rng).unwrap();
            prop_assert!(secrets.recover(&format, &mut packet).is_err());
        }
    }

    #[test]
    fn any_message_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), MESSAGE_SIZE), pad in 0u16..4000) {
        let mut m: [u8; MESSAGE_SIZE] = bytes.try_into().unwrap();
        m[..2].copy_from_slice(&pad.to_be_bytes());
        for padding in [Padding::SeqNo, Padding::Plain] {
            let _ = message::decode_forward(padding, &m);
            let _ = message::decode_reply(padding, &m);
        }
        let _ = AddressBlock::from_slice(&m[..94]).unwrap().decode();
    }

    #[test]
    fn framing_round_trips(
        seed: u64,
        codec in "[a-z/0-9.]{0,40}",
        surb_count in 0usize..=2,
        body_len in 0usize..1500,
        plain: bool,
    ) {
        let padding = if plain { Padding::Plain } else { Padding::SeqNo };
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let surbs: Vec<Surb> = (0..surb_count)
            .map(|_| {
                let mut b = [0u8; SURB_SIZE];
                rng.fill_bytes(&mut b);
                Surb::from_bytes(&b)
            })
            .collect();
        let mut body = vec![0u8; body_len];
        rng.fill_bytes(&mut body);
        let seqno = rng.next_u32();
        let mut m = [0u8; MESSAGE_SIZE];
        message::encode_forward(padding, seqno, &codec, &surbs, &body, &mut m).unwrap();
        let decoded = message::decode_forward(padding, &m).unwrap();
        prop_assert_eq!(decoded.codec, codec.as_str());
        prop_assert_eq!(&decoded.surbs, &surbs);
        prop_assert_eq!(decoded.body, &body[..]);
        prop_assert_eq!(decoded.seqno, (!plain).then_some(seqno));
        let max = message::max_message_size(padding, &codec, surb_count).unwrap();
        prop_assert!(body_len <= max);
        let too_big = vec![0u8; max + 1];
        prop_assert!(message::encode_forward(padding, seqno, &codec, &surbs, &too_big, &mut m).is_err());
    }
}
