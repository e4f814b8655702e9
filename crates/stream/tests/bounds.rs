//! The stream layer of an accepting node against what strangers send it: frames injected as
//! exits deliver them, into a behaviour of its own (no swarm, no network).

#![allow(clippy::unwrap_used, reason = "tests")]

use std::task::Context;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use libp2p_identity::PeerId;
use libp2p_mix::StaticPool;
use libp2p_mix::core::MixNode;
use libp2p_swarm::{ConnectionId, NetworkBehaviour};
use mix_sphinx::NodeSecretKey;
use mix_stream::sim::MIX_LIMITS;
use mix_stream::{
    Behaviour, Config, Connection, FromHandler, Mode, StreamConfig, SurbBytes, SurbSource,
};
use rand::SeedableRng;

struct NoSurbs;

impl SurbSource for NoSurbs {
    fn make_surbs(&mut self, _: usize) -> Option<(Vec<SurbBytes>, Duration)> {
        None
    }
}

/// An accepting node's stream behaviour and its public key.
fn acceptor(config: Config) -> (Behaviour, [u8; 32]) {
    let peer = libp2p_identity::Keypair::generate_secp256k1().public().to_peer_id();
    let secret = NodeSecretKey::generate(&mut rand::rng());
    let public = secret.public_key();
    let receiver = *secret.to_bytes();
    let local = MixNode::new(peer, "/ip4/127.0.0.1/tcp/1".parse().unwrap(), public, true).unwrap();
    let mix = libp2p_mix::Behaviour::new(
        local,
        secret,
        Box::new(StaticPool::default()),
        Box::new(libp2p_mix::core::NoDelay),
        libp2p_mix::Config::default(),
    );
    (Behaviour::new(mix, Some(receiver), config), *public.as_bytes())
}

/// The frames of a short message to `key`, sealed `age` ago (an opening each).
fn message_frames(
    key: &[u8; 32],
    body: &[u8],
    age: Duration,
    rng: &mut impl rand::CryptoRng,
) -> Vec<Vec<u8>> {
    let now = Instant::now();
    let mut opener =
        Connection::open(key, Mode::Message, StreamConfig::default(), MIX_LIMITS, now, rng)
            .unwrap();
    let unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap() - age;
    opener.set_wall_clock(now, unix);
    opener.write(now, body).unwrap();
    opener.finish();
    let mut frames = Vec::new();
    for ms in 0..20 {
        let at = now + Duration::from_millis(ms);
        opener.handle_timeout(at);
        while let Some(frame) = opener.poll_transmit(at, &mut NoSurbs) {
            frames.push(frame);
        }
        if opener.is_flushed() {
            break;
        }
    }
    frames
}

/// Delivers `frames` as exits would, each on a connection of its own.
fn deliver(behaviour: &mut Behaviour, frames: &[Vec<u8>]) {
    for frame in frames {
        behaviour.on_connection_handler_event(
            PeerId::random(),
            ConnectionId::new_unchecked(0),
            either::Either::Right(FromHandler::Frame(frame.clone())),
        );
    }
}

/// Runs the behaviour until it has nothing more to do now.
fn settle(behaviour: &mut Behaviour) {
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    while behaviour.poll(&mut cx).is_ready() {}
}

/// A message is delivered once. Replayed after 20,000 other openings (each accepted and
/// forgotten), it is refused as a replay; an opening older than the freshness window is
/// refused for its age.
#[test]
fn a_replayed_message_is_refused_after_twenty_thousand_other_openings() {
    let config = Config {
        accept_rate: 1e9,
        linger: Duration::ZERO,
        message_backlog: 1,
        stream: StreamConfig { idle_timeout: Duration::from_millis(1), ..StreamConfig::default() },
        ..Config::default()
    };
    let (mut node, key) = acceptor(config);
    let control = node.control();
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    let captured = message_frames(&key, b"pay alice 10", Duration::ZERO, &mut rng);
    assert!(!captured.is_empty());
    deliver(&mut node, &captured);
    settle(&mut node);
    assert_eq!(control.next_message().now_or_never(), Some(Some(b"pay alice 10".to_vec())));
    for i in 0..20_000u32 {
        // The first frame of each opens it: that is all the replay memory sees.
        let frames = message_frames(&key, &i.to_be_bytes(), Duration::ZERO, &mut rng);
        deliver(&mut node, &frames[..1]);
        settle(&mut node);
        while control.next_message().now_or_never().flatten().is_some() {}
        if i % 1000 == 999 {
            // Let the idle ones time out and go.
            std::thread::sleep(Duration::from_millis(5));
            settle(&mut node);
        }
    }
    std::thread::sleep(Duration::from_millis(5));
    settle(&mut node);
    assert!(node.active_streams() < 1000, "{} streams still held", node.active_streams());
    let metrics = node.metrics().clone();
    assert_eq!(metrics.frames_dropped("too_many_streams"), 0);
    deliver(&mut node, &captured);
    settle(&mut node);
    // Every frame of it was an opening (the acceptor never answered): each is refused.
    assert_eq!(metrics.frames_dropped("replayed_opening"), captured.len() as u64);
    assert_eq!(control.next_message().now_or_never().flatten(), None, "delivered twice");
    let stale = message_frames(&key, b"old", Duration::from_secs(600), &mut rng);
    deliver(&mut node, &stale[..1]);
    settle(&mut node);
    assert_eq!(metrics.frames_dropped("stale_opening"), 1);
}
