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
    acceptor_with_pool(config, StaticPool::default())
}

/// An accepting node whose mix pool is `pool`.
fn acceptor_with_pool(config: Config, pool: StaticPool) -> (Behaviour, [u8; 32]) {
    let identity = libp2p_identity::Keypair::generate_secp256k1();
    let secret = NodeSecretKey::generate(&mut rand::rng());
    let public = secret.public_key();
    let receiver = *secret.to_bytes();
    let mix = libp2p_mix::Mixnet::new(&identity, secret, libp2p_mix::MixnetConfig::default())
        .unwrap()
        .with_pool(Box::new(pool))
        .with_delay(Box::new(libp2p_mix::core::NoDelay));
    (Behaviour::new(mix, Some(receiver), config), *public.as_bytes())
}

/// The frames of a short message to `key`, sealed `age` ago (an opening each).
fn message_frames(
    key: &[u8; 32],
    body: &[u8],
    age: Duration,
    rng: &mut impl rand::CryptoRng,
) -> Vec<Vec<u8>> {
    opener_frames(key, Mode::Message, body, true, age, rng)
}

/// The frames an opener of `mode` sends first after writing `body` (and closing, if `finish`).
fn opener_frames(
    key: &[u8; 32],
    mode: Mode,
    body: &[u8],
    finish: bool,
    age: Duration,
    rng: &mut impl rand::CryptoRng,
) -> Vec<Vec<u8>> {
    let now = Instant::now();
    let mut opener =
        Connection::open(key, mode, StreamConfig::default(), MIX_LIMITS, now, rng).unwrap();
    let unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap() - age;
    opener.set_wall_clock(now, unix);
    opener.write(now, body).unwrap();
    if finish {
        opener.finish();
    } else {
        opener.flush();
    }
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

/// A mix pool of one exit, and that exit's peer id.
fn pool_of_one_exit() -> (PeerId, StaticPool) {
    let exit = libp2p_identity::Keypair::generate_secp256k1().public().to_peer_id();
    let exit_mix = NodeSecretKey::generate(&mut rand::rng()).public_key();
    let entry =
        MixNode::new(exit, "/ip4/127.0.0.2/tcp/1".parse().unwrap(), exit_mix, true).unwrap();
    (exit, StaticPool::new([entry]).unwrap())
}

/// Delivers `frames` as exits would, each from a peer of its own.
fn deliver(behaviour: &mut Behaviour, frames: &[Vec<u8>]) {
    for frame in frames {
        deliver_from(behaviour, PeerId::random(), frame.clone());
    }
}

/// Delivers `frame` as `exit` would.
fn deliver_from(behaviour: &mut Behaviour, exit: PeerId, frame: Vec<u8>) {
    behaviour.on_connection_handler_event(
        exit,
        ConnectionId::new_unchecked(0),
        either::Either::Right(FromHandler::Frame(frame)),
    );
}

/// Random bytes shaped like a frame (the version byte, the length of one).
fn junk(rng: &mut impl rand::Rng) -> Vec<u8> {
    let mut frame = vec![0u8; 3943];
    rng.fill_bytes(&mut frame);
    frame[0] = mix_stream::frame::VERSION;
    frame
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
        // Every opening here comes from a peer of its own outside the pool.
        stranger_accept_rate: 1e9,
        max_accepted_from_strangers: usize::MAX,
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
    assert_eq!(metrics.accepted_total(), 20_001, "every opening was accepted (and remembered)");
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

/// One exit floods: past its frame budget its frames are dropped unread, past its opening
/// budget its unknown labels cost no Diffie-Hellman; another exit's message still arrives.
#[test]
fn one_exit_cannot_use_up_the_budgets_of_the_others() {
    let config =
        Config { peer_frame_rate: Some(300.0), peer_accept_rate: 50.0, ..Config::default() };
    let (mut node, key) = acceptor(config);
    let control = node.control();
    let metrics = node.metrics().clone();
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(2);
    let flooder = PeerId::random();
    let started = Instant::now();
    for _ in 0..1000 {
        deliver_from(&mut node, flooder, junk(&mut rng));
    }
    let elapsed = started.elapsed().as_secs_f64();
    settle(&mut node);
    let (rate, opening, unknown) = (
        metrics.frames_dropped("peer_frame_rate"),
        metrics.frames_dropped("peer_accept_rate"),
        metrics.frames_dropped("unknown_label"),
    );
    assert_eq!(rate + opening + unknown, 1000);
    // A burst of 300 frames (and what refilled meanwhile), of which 50 (and refills) cost a
    // Diffie-Hellman each.
    let refill = |r: f64| (r * elapsed).ceil() as u64 + 1;
    assert!(rate >= 700 - refill(300.0), "{rate} dropped for the frame rate");
    assert!(unknown <= 50 + refill(50.0), "{unknown} junk frames cost a Diffie-Hellman");
    let honest = PeerId::random();
    for frame in message_frames(&key, b"still here", Duration::ZERO, &mut rng) {
        deliver_from(&mut node, honest, frame);
    }
    settle(&mut node);
    assert_eq!(control.next_message().now_or_never(), Some(Some(b"still here".to_vec())));
}

/// An opening that brings no data loses its slot after the deadline.
#[test]
fn an_opening_without_data_loses_its_slot() {
    let config = Config { opening_deadline: Duration::from_millis(50), ..Config::default() };
    let (mut node, key) = acceptor(config);
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
    let frames = opener_frames(&key, Mode::Stream, b"", false, Duration::ZERO, &mut rng);
    deliver(&mut node, &frames[..1]);
    settle(&mut node);
    assert_eq!(node.active_streams(), 1);
    std::thread::sleep(Duration::from_millis(80));
    settle(&mut node);
    assert_eq!(node.metrics().frames_dropped("opening_idle"), 1);
    assert_eq!(node.active_streams(), 0, "the slot is free again");
}

/// A message over the size limit is reset when it crosses it; once accepted messages hold the
/// byte budget, new openings are refused, and nothing already accepted is lost.
#[test]
fn messages_are_bounded_one_by_one_and_all_together() {
    let config =
        Config { max_message_len: 20_000, max_accepted_bytes: 30_000, ..Config::default() };
    let (mut node, key) = acceptor(config);
    let metrics = node.metrics().clone();
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(4);
    let big = vec![7u8; 25_000];
    deliver(&mut node, &opener_frames(&key, Mode::Message, &big, true, Duration::ZERO, &mut rng));
    settle(&mut node);
    assert_eq!(metrics.frames_dropped("message_too_large"), 1);
    // Two unfinished messages of 16,000 bytes: the first is held, the second would pass the
    // budget and is reset.
    let part = vec![9u8; 16_000];
    for _ in 0..2 {
        let frames = opener_frames(&key, Mode::Message, &part, false, Duration::ZERO, &mut rng);
        deliver(&mut node, &frames);
        settle(&mut node);
    }
    assert_eq!(metrics.frames_dropped("memory_budget"), 1);
    // Fill the budget with a third (the first holds 16,000; this one 14,000).
    let rest = vec![3u8; 14_000];
    deliver(&mut node, &opener_frames(&key, Mode::Message, &rest, false, Duration::ZERO, &mut rng));
    settle(&mut node);
    let before = metrics.frames_dropped("memory_budget");
    let late = message_frames(&key, b"late", Duration::ZERO, &mut rng);
    deliver(&mut node, &late[..1]);
    settle(&mut node);
    assert_eq!(metrics.frames_dropped("memory_budget"), before + 1, "the opening was refused");
}

/// Openings delivered by peers outside the mix pool share a few slots (and each such peer
/// gets fewer still); openings delivered by a mix node of the pool, as honest ones are, still
/// find a slot when strangers hold all of theirs.
#[test]
fn strangers_share_a_few_slots_and_cannot_take_the_pools() {
    let (exit, pool) = pool_of_one_exit();
    let config = Config {
        max_accepted_from_strangers: 8,
        max_accepted_per_stranger: 2,
        ..Config::default()
    };
    let (mut node, key) = acceptor_with_pool(config, pool);
    let metrics = node.metrics().clone();
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(5);
    let strangers: Vec<PeerId> = (0..6).map(|_| PeerId::random()).collect();
    for stranger in &strangers {
        for _ in 0..3 {
            let frames =
                opener_frames(&key, Mode::Stream, b"hold", false, Duration::ZERO, &mut rng);
            deliver_from(&mut node, *stranger, frames[0].clone());
        }
    }
    settle(&mut node);
    // 6 strangers × 3: the first four fill the strangers' 8 slots, two each (their third is
    // over their own share); the last two find no stranger slot left.
    assert_eq!(metrics.frames_dropped("peer_streams"), 4);
    assert_eq!(metrics.frames_dropped("stranger_streams"), 6);
    assert_eq!(node.active_streams(), 8);
    for _ in 0..3 {
        let frames = opener_frames(&key, Mode::Stream, b"honest", false, Duration::ZERO, &mut rng);
        deliver_from(&mut node, exit, frames[0].clone());
    }
    settle(&mut node);
    assert_eq!(node.active_streams(), 11, "the pool's exit is no stranger");
}

/// Attack (found by review): a shard of a few bytes can rebuild a block of 256 KiB
/// (compressed zeros). Streams that each send every block of their window but the first held
/// them all, out of order: before, four such streams held 3 MiB against a budget of 1 MiB,
/// for 95 KB of frames sent (256 streams with a window each would hold gigabytes). Now each
/// holds at most its share of the budget (at least one block), and the rest are refused
/// until the first arrives.
#[test]
fn blocks_rebuilt_out_of_order_stay_within_the_memory_budget() {
    const MIB: usize = 1 << 20;
    let config = Config { max_accepted_bytes: MIB, ..Config::default() };
    let (mut node, key) = acceptor(config);
    let metrics = node.metrics().clone();
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(6);
    let zeros = vec![0u8; 8 * mix_stream::MAX_BLOCK_BYTES];
    let streams: Vec<Vec<Vec<u8>>> = (0..4)
        .map(|_| opener_frames(&key, Mode::Message, &zeros, true, Duration::ZERO, &mut rng))
        .collect();
    for frames in &streams {
        assert!(frames.len() > 4 && frames.len() * frames[0].len() < 64 * 1024, "compressed");
    }
    // The first three frames carry the first block (its data shard and two of parity): held
    // back. Each stream is opened first, then gets every other block it sent.
    for frames in &streams {
        deliver(&mut node, &frames[3..4]);
    }
    settle(&mut node);
    assert_eq!(node.active_streams(), 4);
    for frames in &streams {
        deliver(&mut node, &frames[4..]);
        settle(&mut node);
    }
    assert_eq!(node.endpoint().stats().bytes_received, 0, "nothing in order");
    let held = node.endpoint().stats().accepted_bytes;
    assert!(held <= MIB + mix_stream::MAX_BLOCK_BYTES, "{held} bytes held");
    assert!(metrics.frames_dropped("rebuilt_share") > 0);
}

/// Attack (found by review): openings through the pool's exits (an anonymous sender's, as
/// honest ones are) each hold a slot with one block and then one frame now and then, which
/// keeps them from their idle timeout. Before, with every slot held, every new stream and
/// message was refused for as long as that went on (the control below, with eviction put
/// off, shows it). Now a new opening takes the slot of the stream that went longest without
/// a block, once that is `stalled_after`.
#[test]
fn streams_that_stall_cannot_keep_new_ones_out() {
    for stalled_after in [Duration::from_secs(3600), Duration::from_millis(50)] {
        let (exit, pool) = pool_of_one_exit();
        let config = Config { max_accepted: 8, stalled_after, ..Config::default() };
        let (mut node, key) = acceptor_with_pool(config, pool);
        let control = node.control();
        let metrics = node.metrics().clone();
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        for _ in 0..8 {
            let frames =
                opener_frames(&key, Mode::Message, b"hold", false, Duration::ZERO, &mut rng);
            deliver_from(&mut node, exit, frames[0].clone());
        }
        settle(&mut node);
        assert_eq!(node.active_streams(), 8);
        std::thread::sleep(Duration::from_millis(80));
        settle(&mut node);
        for frame in message_frames(&key, b"honest", Duration::ZERO, &mut rng) {
            deliver_from(&mut node, exit, frame);
        }
        settle(&mut node);
        let got = control.next_message().now_or_never().flatten();
        if stalled_after > Duration::from_secs(60) {
            assert_eq!(got, None, "control: every slot held");
            assert!(metrics.frames_dropped("too_many_streams") > 0);
        } else {
            assert_eq!(got, Some(b"honest".to_vec()));
            assert_eq!(metrics.frames_dropped("stalled_evicted"), 1);
            // A stranger's opening takes only a stranger's slot: these are the pool's.
            std::thread::sleep(Duration::from_millis(80));
            settle(&mut node);
            let refused = metrics.frames_dropped("too_many_streams");
            let frames = opener_frames(&key, Mode::Message, b"x", false, Duration::ZERO, &mut rng);
            deliver_from(&mut node, PeerId::random(), frames[0].clone());
            settle(&mut node);
            assert_eq!(metrics.frames_dropped("too_many_streams"), refused + 1);
            assert_eq!(metrics.frames_dropped("stalled_evicted"), 1);
        }
    }
}

/// Attack (found by review): junk frames from many stranger identities, each within its own
/// opening budget, used up the node-wide one, so openings through the pool's exits were
/// refused (`accept_rate`). Strangers now draw on a budget of their own.
#[test]
fn junk_from_many_strangers_leaves_the_pools_openings_their_budget() {
    let (exit, pool) = pool_of_one_exit();
    let config = Config {
        accept_rate: 100.0,
        stranger_accept_rate: 100.0,
        peer_accept_rate: 50.0,
        ..Config::default()
    };
    let (mut node, key) = acceptor_with_pool(config, pool);
    let control = node.control();
    let metrics = node.metrics().clone();
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(8);
    for _ in 0..4 {
        let stranger = PeerId::random();
        for _ in 0..50 {
            deliver_from(&mut node, stranger, junk(&mut rng));
        }
    }
    settle(&mut node);
    for frame in message_frames(&key, b"through the pool", Duration::ZERO, &mut rng) {
        deliver_from(&mut node, exit, frame);
    }
    settle(&mut node);
    assert_eq!(control.next_message().now_or_never(), Some(Some(b"through the pool".to_vec())));
    assert_eq!(metrics.frames_dropped("accept_rate"), 0);
    assert!(metrics.frames_dropped("stranger_accept_rate") >= 90);
}
