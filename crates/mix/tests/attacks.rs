//! Attacks on the mix layer by the adversaries of the threat model, over real swarms on
//! loopback: a malicious sender that poisons addresses, an exit flooder, a replayer that waits
//! for a restart. Each test plays the attack at full strength and checks what the attacker
//! gets: no honest node suspended, bounded exit work, no second delivery.

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{ECHO, Node, NodeEvent, Options, lp, network};
use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol, identity, noise, tcp, yamux};
use libp2p_mix::core::{MixNode, SubnetLimits};
use libp2p_mix::{DropReason, ExitProtocol, StaticPool};
use mix_sphinx::{
    AddressBlock, Hop, MESSAGE_SIZE, NodeSecretKey, Packet, Route, WireFormat, message,
};

/// A port on loopback where nothing listens: dials fail at once with "connection refused".
const DEAD: &str = "/ip4/127.0.0.1/tcp/1";

/// A packet through `hops` (each a peer at the address written for it) whose exit delivers
/// `body` to `destination` with the echo protocol.
fn packet(
    hops: &[(PeerId, Multiaddr, mix_sphinx::NodePublicKey)],
    destination: &AddressBlock,
    body: &[u8],
) -> Packet {
    packet_with(hops, destination, ECHO, body)
}

/// [`packet`] with the origin protocol `codec`.
fn packet_with(
    hops: &[(PeerId, Multiaddr, mix_sphinx::NodePublicKey)],
    destination: &AddressBlock,
    codec: &str,
    body: &[u8],
) -> Packet {
    let format = WireFormat::default();
    let hops = hops
        .iter()
        .map(|(peer, addr, key)| Hop {
            public_key: *key,
            address: AddressBlock::encode(addr, peer).unwrap(),
        })
        .collect();
    let route = Route::new(hops, vec![1, 1]).unwrap();
    let mut m = [0u8; MESSAGE_SIZE];
    message::encode_forward(format.padding(), 0, codec, &[], &lp(body), &mut m).unwrap();
    route.forward_packet(&format, destination, &m, &mut rand::rng()).unwrap()
}

fn hop(node: &Node) -> (PeerId, Multiaddr, mix_sphinx::NodePublicKey) {
    (node.peer_id, node.addr.clone(), node.mix_key.unwrap())
}

fn random_peer() -> PeerId {
    identity::Keypair::generate_secp256k1().public().to_peer_id()
}

/// Waits for the destination's echo of `body`.
async fn echoed(dest: &mut Node, body: &[u8], within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(NodeEvent::Echo(b)) = dest.next_event(Duration::from_millis(200)).await
            && b == body
        {
            return true;
        }
    }
    false
}

/// A malicious sender writes an honest node's peer id with a dead address as the next hop.
/// The hop must not suspend that node (before the fix it did, after two failed dials), and it
/// dials pool members at their own advertised address, so the packet still gets through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_next_hop_address_suspends_no_one() {
    common::init_tracing();
    let mut net = network(Options { nodes: 4, live_pool: true, ..Options::default() }).await;
    let (hop1, victim, exit) = (&net.mix[1], &net.mix[2], &net.mix[3]);
    let poisoned = (victim.peer_id, DEAD.parse().unwrap(), victim.mix_key.unwrap());
    let dest = AddressBlock::encode(&net.dest.addr, &net.dest.peer_id).unwrap();
    let p = packet(&[hop(hop1), poisoned, hop(exit)], &dest, b"poisoned");
    net.mix[0].send_packet(hop1.peer_id, hop1.addr.clone(), p);

    let delivered = echoed(&mut net.dest, b"poisoned", Duration::from_secs(10)).await;
    // Whatever happened to the packet, the victim must still be offered for paths.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        net.mix[1].pool_entry(net.mix[2].peer_id).await.is_some(),
        "the hop suspended an honest node because a packet named it at a dead address"
    );
    assert!(delivered, "the hop did not reach the pool member at its advertised address");
}

/// A sender names loopback addresses that are not pool members' for a next hop, and as the
/// destination. A node that dials no non-public address for others (a public node) drops
/// both, counted, and dials nothing; pool members (here on loopback too) are still reached
/// at their own addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_node_dials_no_local_address_a_packet_names() {
    common::init_tracing();
    let options = Options {
        nodes: 4,
        live_pool: true,
        configure: Some(|i, c| {
            if i == 1 {
                c.local_addresses = libp2p_mix::core::LocalAddresses::None;
            }
        }),
        ..Options::default()
    };
    let mut net = network(options).await;
    let metrics = net.mix[1].metrics.clone().unwrap();
    let stranger = (random_peer(), DEAD.parse::<Multiaddr>().unwrap());
    let key = NodeSecretKey::generate(&mut rand::rng()).public_key();
    let dest = AddressBlock::encode(&net.dest.addr, &net.dest.peer_id).unwrap();
    // A next hop at a local address, through node 1.
    let p = packet(
        &[hop(&net.mix[1]), (stranger.0, stranger.1.clone(), key), hop(&net.mix[3])],
        &dest,
        b"next hop",
    );
    net.mix[0].send_packet(net.mix[1].peer_id, net.mix[1].addr.clone(), p);
    // A destination at a local address, with node 1 as the exit.
    let to_stranger = AddressBlock::encode(&stranger.1, &stranger.0).unwrap();
    let p = packet(&[hop(&net.mix[0]), hop(&net.mix[2]), hop(&net.mix[1])], &to_stranger, b"exit");
    net.mix[3].send_packet(net.mix[0].peer_id, net.mix[0].addr.clone(), p);
    let deadline = Instant::now() + Duration::from_secs(10);
    while metrics.packets_dropped(DropReason::LocalAddress) < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metrics.packets_dropped(DropReason::LocalAddress), 2);
    assert_eq!(metrics.packets_dropped(DropReason::Unreachable), 0, "a dial was made");
    // Through pool members, node 1 still forwards.
    let p = packet(&[hop(&net.mix[1]), hop(&net.mix[2]), hop(&net.mix[3])], &dest, b"control");
    net.mix[0].send_packet(net.mix[1].peer_id, net.mix[1].addr.clone(), p);
    assert!(echoed(&mut net.dest, b"control", Duration::from_secs(10)).await);
}

/// A malicious sender names an honest mix node, at a dead address, as the destination. The
/// exit fails to deliver, and that must not touch its pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_exit_destination_suspends_no_one() {
    common::init_tracing();
    let mut net = network(Options { nodes: 4, live_pool: true, ..Options::default() }).await;
    // The destination: a pool member (mix[1]) at a dead address, and a stranger at one.
    let members = (net.mix[1].peer_id, DEAD.parse::<Multiaddr>().unwrap());
    let stranger = (random_peer(), DEAD.parse::<Multiaddr>().unwrap());
    let route = [hop(&net.mix[0]), hop(&net.mix[2]), hop(&net.mix[3])];
    for (peer, addr) in [&members, &stranger] {
        let dest = AddressBlock::encode(addr, peer).unwrap();
        let p = packet(&route, &dest, b"to a dead address");
        net.mix[1].send_packet(net.mix[0].peer_id, net.mix[0].addr.clone(), p);
    }
    let exit = &mut net.mix[3];
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut outcomes = Vec::new();
    while outcomes.len() < 2 && Instant::now() < deadline {
        if let Some(NodeEvent::Mix(libp2p_mix::Event::Delivered { peer, result, .. })) =
            exit.next_event(Duration::from_millis(200)).await
        {
            outcomes.push((peer, result.is_ok()));
        }
    }
    assert_eq!(outcomes.len(), 2, "the exit reported both deliveries: {outcomes:?}");
    assert!(
        net.mix[3].pool_entry(net.mix[1].peer_id).await.is_some(),
        "the exit suspended a pool member because a sender named it as a destination"
    );
    assert_eq!(net.mix[3].pool_size().await, 4);
}

/// A sender routes junk for a hop through an honest mix node: packets valid at the first hop
/// whose layer for the second was built with a wrong key, so the second hop sees nothing but
/// Sphinx failures from an honest peer. The honest peer must not be penalized for them (its
/// frames keep their full budget), and honest traffic over that link keeps flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_routed_through_an_honest_hop_does_not_get_it_penalized() {
    common::init_tracing();
    let mut net = network(Options { nodes: 4, ..Options::default() }).await;
    let (honest, target, exit) = (&net.mix[1], &net.mix[2], &net.mix[3]);
    let wrong_key = NodeSecretKey::generate(&mut rand::rng()).public_key();
    let dest = AddressBlock::encode(&net.dest.addr, &net.dest.peer_id).unwrap();
    for i in 0..300u32 {
        let junk_for_target = (target.peer_id, target.addr.clone(), wrong_key);
        let p = packet(&[hop(honest), junk_for_target, hop(exit)], &dest, &i.to_be_bytes());
        net.mix[0].send_packet(honest.peer_id, honest.addr.clone(), p);
    }
    // Then honest packets over the same link.
    for i in 0..50u32 {
        let p = packet(&[hop(honest), hop(target), hop(exit)], &dest, &(1000 + i).to_be_bytes());
        net.mix[0].send_packet(honest.peer_id, honest.addr.clone(), p);
    }
    let mut delivered = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while delivered < 50 && Instant::now() < deadline {
        if let Some(NodeEvent::Echo(_)) = net.dest.next_event(Duration::from_millis(200)).await {
            delivered += 1;
        }
    }
    let metrics = net.mix[2].metrics.as_ref().unwrap();
    let failed = metrics.packets_dropped(DropReason::Sphinx(mix_sphinx::ProcessError::MacMismatch));
    eprintln!(
        "junk through an honest hop: {failed} MAC failures at the target, {delivered} of 50 honest packets delivered, {} penalties",
        metrics.penalties()
    );
    assert_eq!(failed, 300);
    assert_eq!(metrics.penalties(), 0, "the target penalized an honest mix node");
    assert_eq!(delivered, 50);
}

/// A TCP listener that accepts connections and never answers (a black hole for dials: each
/// one hangs until its handshake times out). Counts the connections it accepted.
async fn black_hole() -> (Multiaddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::Relaxed);
            held.push(socket);
        }
    });
    (format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap(), accepted)
}

/// A flooder sends valid packets whose exit must deliver to destinations that never answer:
/// 600 distinct peers behind one black hole, and 300 messages to a single one. The exit's
/// queued work and its dials to destinations stay bounded, every refusal is counted, and
/// honest traffic keeps flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exit_queue_flood_is_bounded() {
    common::init_tracing();
    let mut options = Options { nodes: 5, ..Options::default() };
    options.config.max_exit_jobs = 400;
    options.config.max_exit_jobs_per_destination = 64;
    let caps = options.config.clone();
    let mut net = network(options).await;
    let (hole, accepted) = black_hole().await;
    let route = [hop(&net.mix[1]), hop(&net.mix[2]), hop(&net.mix[3])];
    // The exit has delivered to the honest destination before (a destination that answers).
    let dest_block = AddressBlock::encode(&net.dest.addr, &net.dest.peer_id).unwrap();
    let warm_up = packet(&route, &dest_block, b"before");
    net.mix[0].send_packet(net.mix[1].peer_id, net.mix[1].addr.clone(), warm_up);
    assert!(echoed(&mut net.dest, b"before", Duration::from_secs(10)).await);
    let one = random_peer();
    for i in 0..900u32 {
        let peer = if i < 600 { random_peer() } else { one };
        let dest = AddressBlock::encode(&hole, &peer).unwrap();
        let p = packet(&route, &dest, &i.to_be_bytes());
        net.mix[0].send_packet(net.mix[1].peer_id, net.mix[1].addr.clone(), p);
    }
    // Honest traffic through random paths meanwhile.
    let dest = net.dest.destination();
    for i in 0..50u32 {
        net.mix[4].send(&dest, ECHO, lp(&(1_000_000 + i).to_be_bytes())).await.unwrap();
    }
    let mut honest = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while honest < 50 && Instant::now() < deadline {
        if let Some(NodeEvent::Echo(_)) = net.dest.next_event(Duration::from_millis(200)).await {
            honest += 1;
        }
    }
    // Destinations the exit reached lately skip the dial rate (and this one is connected).
    assert_eq!(honest, 50, "honest traffic got through the flooded exit");
    let exit = net.mix[3].metrics.as_ref().unwrap();
    let dials = accepted.load(Ordering::Relaxed);
    let refused = |r| exit.packets_dropped(r);
    eprintln!(
        "exit flood: {dials} dials reached the black hole; refused {} (total cap) {} (per \
         destination) {} (dial rate); {} jobs left",
        refused(DropReason::ExitQueueFull),
        refused(DropReason::ExitDestinationFull),
        refused(DropReason::ExitDialRate),
        exit.exit_jobs()
    );
    assert!(dials <= 100, "{dials} dials to destinations in a few seconds");
    assert!(refused(DropReason::ExitDialRate) > 0, "dial rate never refused anything");
    assert!(refused(DropReason::ExitDestinationFull) > 0, "one destination took every slot");
    assert!(net.mix[3].exit_jobs().await <= caps.max_exit_jobs);
    assert!(exit.exit_jobs() as usize <= caps.max_exit_jobs);
}

/// An origin protocol the exit delivers on one pooled stream per destination.
const SINK: &str = "/test/sink/1.0.0";

/// A destination that accepts streams of `protocol` and never reads them: once their receive
/// windows are full, every write to it hangs.
async fn staller(protocol: &'static str) -> (PeerId, Multiaddr) {
    let key = identity::Keypair::generate_secp256k1();
    let peer = key.public().to_peer_id();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    let mut incoming =
        swarm.behaviour().new_control().accept(StreamProtocol::new(protocol)).unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some((_, stream)) = incoming.next().await {
            held.push(stream);
        }
    });
    swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap()).unwrap();
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    };
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    (peer, addr)
}

/// A destination accepts the exit's pooled stream and stops reading it (a sender can address
/// messages to any destination it runs). Before the fix, the exit's pooled write hung for
/// ever with its deliveries holding their slots, and a full exit refused everyone else's: a
/// few such destinations shut an exit for good. Now a full exit gives the slot of the busiest
/// destination's oldest delivery to a newcomer, and a write that is not read within
/// `exit_timeout` fails its deliveries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_stops_reading_keeps_no_one_out() {
    common::init_tracing();
    let mut options = Options {
        nodes: 5,
        exit_protocols: vec![(
            SINK,
            ExitProtocol { read: None, retry_on_reset: false, pooled: true },
        )],
        ..Options::default()
    };
    options.config.max_exit_jobs = 200;
    options.config.max_exit_jobs_per_destination = 200;
    options.config.exit_timeout = Duration::from_secs(4);
    let mut net = network(options).await;
    let route = [hop(&net.mix[1]), hop(&net.mix[2]), hop(&net.mix[3])];
    let inject = |net: &common::Network, p: Packet| {
        net.mix[0].send_packet(net.mix[1].peer_id, net.mix[1].addr.clone(), p);
    };
    let dest_block = AddressBlock::encode(&net.dest.addr, &net.dest.peer_id).unwrap();
    inject(&net, packet(&route, &dest_block, b"before"));
    assert!(echoed(&mut net.dest, b"before", Duration::from_secs(10)).await);

    // 1,500 messages of 3 kB: the staller's stream window (256 KiB) takes the first ~90, then
    // the pooled write hangs, 200 wait behind it and fill the exit, and the rest are refused.
    let (staller, staller_addr) = staller(SINK).await;
    let staller_block = AddressBlock::encode(&staller_addr, &staller).unwrap();
    for i in 0..1500u32 {
        let mut body = vec![0u8; 3000];
        body[..4].copy_from_slice(&i.to_be_bytes());
        inject(&net, packet_with(&route, &staller_block, SINK, &body));
    }
    let exit = net.mix[3].metrics.clone().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while (exit.exit_jobs() as usize) < 200 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(exit.exit_jobs(), 200, "the staller did not fill the exit");
    // Past the first writes, which the window took: the exit stays full.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(exit.exit_jobs(), 200, "the staller's deliveries did not stall");

    // Honest messages through the same exit while it is full.
    for i in 0..20u32 {
        inject(&net, packet(&route, &dest_block, &(1_000_000 + i).to_be_bytes()));
    }
    let mut honest = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while honest < 20 && Instant::now() < deadline {
        if let Some(NodeEvent::Echo(_)) = net.dest.next_event(Duration::from_millis(100)).await {
            honest += 1;
        }
    }
    let evicted = exit.packets_dropped(DropReason::ExitEvicted);
    let refused = exit.packets_dropped(DropReason::ExitQueueFull);
    eprintln!("full exit: {honest}/20 honest delivered, {evicted} evicted, {refused} refused");
    assert_eq!(honest, 20, "honest messages got through the exit the staller filled");
    // Each honest delivery that finds the exit full takes a stalled one's slot; once done it
    // leaves its slot free for the next.
    assert!(evicted > 0, "nothing was evicted: the exit was not full");

    // The staller's stalled write fails within the exit timeout and frees its slots.
    let deadline = Instant::now() + Duration::from_secs(10);
    while exit.exit_jobs() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(exit.exit_jobs(), 0, "deliveries to the staller still hold the exit");
    assert_eq!(net.mix[3].exit_jobs().await, 0);
}

/// A node started with `identity`, `secret` and `state` at `addr`, with `pool`.
async fn restartable(
    identity: identity::Keypair,
    secret: NodeSecretKey,
    addr: Multiaddr,
    pool: StaticPool,
    state: &std::path::Path,
) -> Node {
    let peer = identity.public().to_peer_id();
    let public = secret.public_key();
    let config = libp2p_mix::MixnetConfig { mix: Options::default().config, ..Default::default() };
    let mut mix = libp2p_mix::Mixnet::new(&identity, secret, config)
        .unwrap()
        .with_pool(Box::new(pool))
        .with_delay(Box::new(libp2p_mix::core::NoDelay))
        .with_state_dir(state)
        .unwrap();
    mix.mix_mut().register_read_rule(ECHO, libp2p_mix::ReadRule::LengthPrefixed { max: 2048 });
    let mut swarm = common::build_swarm(identity, Some(mix));
    let addr = common::listen_at(&mut swarm, addr).await;
    common::spawn(swarm, peer, addr, Some(public))
}

/// A replayer captures a packet, waits for its first hop to restart with the same mix key,
/// and sends it again: the restarted node remembers it (its replay state is in its state
/// directory) and drops it. (Hops after it that did not restart would drop it too, but by then
/// the replay has re-emerged on the restarted node's outbound link, where an observer matches
/// it with the first copy and learns the node's input-output mapping.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_after_a_restart_are_dropped() {
    common::init_tracing();
    let mut net = network(Options { nodes: 4, ..Options::default() }).await;
    let state = tempdir();
    let identity = identity::Keypair::generate_secp256k1();
    let secret_bytes: [u8; 32] = rand::random();
    let port = free_port();
    let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
    let pool = common::pool_of(&[&net.mix[1], &net.mix[2]]);
    let victim = restartable(
        identity.clone(),
        NodeSecretKey::from_bytes(secret_bytes),
        addr.clone(),
        pool.clone(),
        &state,
    )
    .await;
    let dest = AddressBlock::encode(&net.dest.addr, &net.dest.peer_id).unwrap();
    let p = packet(&[hop(&victim), hop(&net.mix[1]), hop(&net.mix[2])], &dest, b"captured");
    let copy = Packet::try_from(p.as_bytes().to_vec()).unwrap();
    net.mix[0].send_packet(victim.peer_id, victim.addr.clone(), p);
    assert!(echoed(&mut net.dest, b"captured", Duration::from_secs(10)).await);

    victim.kill();
    // The abort is carried out on a runtime thread: the directory's lock is free once the
    // stopped node saved and let go of it (a second node could not take it before).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match libp2p_mix::state::StateFile::open(&state) {
            Ok(file) => {
                assert!(file.load().unwrap().unwrap().clean, "the stop's save is on disk");
                break;
            }
            Err(libp2p_mix::state::StateError::Locked { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let victim =
        restartable(identity, NodeSecretKey::from_bytes(secret_bytes), addr, pool, &state).await;
    // From a node that never talked to the first run (so no stale connection eats it).
    net.mix[3].send_packet(victim.peer_id, victim.addr.clone(), copy);
    let metrics = victim.metrics.clone().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while metrics.packets_received() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metrics.packets_received(), 1, "the replay reached the restarted node");
    assert!(
        !echoed(&mut net.dest, b"captured", Duration::from_secs(5)).await,
        "a packet captured before the restart was delivered again after it"
    );
    assert_eq!(metrics.packets_dropped(DropReason::Replay), 1);
    assert_eq!(metrics.packets_forwarded(), 0, "the replay left the restarted node");
    assert!(metrics.state_saves("ok") >= 1, "the start's save is counted");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mix-attacks-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A Sybil: a libp2p node that runs discovery only and publishes a valid, signed record for
/// its own identity, listening on `ip`.
async fn sybil(ip: &str, bootstrap: &Node) {
    sybil_claiming(ip, None, bootstrap).await;
}

/// A Sybil listening on `ip` whose record claims `claim` (if given) as its address instead.
async fn sybil_claiming(ip: &str, claim: Option<Multiaddr>, bootstrap: &Node) {
    use futures::StreamExt;
    use libp2p::{noise, tcp, yamux};
    let key = identity::Keypair::generate_secp256k1();
    let mix_key = NodeSecretKey::generate(&mut rand::rng()).public_key();
    let mut discovery =
        libp2p_mix::discovery::Behaviour::new(key.clone(), common::fast_discovery());
    discovery.add_bootstrap(bootstrap.peer_id, bootstrap.addr.clone());
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_behaviour(|_| discovery)
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    swarm.listen_on(format!("/ip4/{ip}/tcp/0").parse().unwrap()).unwrap();
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    };
    swarm.behaviour_mut().set_local_record(vec![claim.unwrap_or(addr)], mix_key, None, true);
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
}

/// 50 identities from one /24 publish valid, signed records through Kademlia, next to five
/// honest nodes each in a /16 of its own. (Caps apply to loopback here: the test runs on
/// 127.0.0.0/8, which a local testnet exempts.) The target's pool admits at most
/// `per_24` of them, every honest node stays in, and refusals are counted. Discovery's table
/// of nodes to fetch again (bounded) keeps no more than the pool let in, so such a flood
/// cannot fill it and keep honest newcomers out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sybil_flood_of_valid_records_gets_a_bounded_share() {
    common::init_tracing();
    let limits = SubnetLimits { exempt_local: false, ..SubnetLimits::default() };
    let net =
        network(Options { nodes: 5, discovery: true, spread: true, limits, ..Options::default() })
            .await;
    for _ in 0..50 {
        sybil("127.66.66.1", &net.mix[0]).await;
    }
    let target = &net.mix[0];
    let is_sybil = |n: &MixNode| n.ip().is_some_and(|ip| ip.octets()[..3] == [127, 66, 66]);
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let refused = target.pool_refused("subnet_24").await;
        let nodes = target.pool_nodes().await;
        let sybils = nodes.iter().filter(|n| is_sybil(n)).count();
        if (refused as usize + sybils >= 50 && nodes.len() - sybils >= 4)
            || Instant::now() > deadline
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let nodes = target.pool_nodes().await;
    let sybils = nodes.iter().filter(|n| is_sybil(n)).count();
    let honest = nodes.len() - sybils;
    let refused = target.pool_refused("subnet_24").await;
    eprintln!(
        "sybil flood: pool holds {honest} honest and {sybils} Sybil nodes; {refused} records refused (subnet_24)"
    );
    let known = target.known_nodes().await;
    eprintln!("sybil flood: discovery keeps fetching {known} nodes");
    let cap = SubnetLimits::default().per_24;
    assert!(sybils <= cap, "{sybils} Sybils from one /24 in the pool");
    assert!(known <= honest + cap, "discovery tracks {known} nodes");
    assert!(honest >= 4, "only {honest} honest nodes in the pool");
    assert!(refused >= 10, "too few Sybil records arrived to test anything: {refused} refused");
}

/// Records whose owners cannot be reached at the address they claim: four identities publish
/// valid, signed records claiming addresses in an honest node's /24, where nobody answers for
/// them. The target dials each at its claimed address before offering it for paths; none
/// answers, so none is ever usable, none holds a place in that /24, and the failed checks are
/// counted. Every honest node is usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_claiming_addresses_nobody_answers_at_are_never_used() {
    common::init_tracing();
    let limits = SubnetLimits { exempt_local: false, ..SubnetLimits::default() };
    let net =
        network(Options { nodes: 5, discovery: true, spread: true, limits, ..Options::default() })
            .await;
    // Node 1 listens on 127.2.0.1; the claims are in its /24, on ports nobody listens on.
    let fakes = 4;
    for i in 0..fakes {
        let ip = format!("127.2.0.{}", 1 + i % 2);
        let claim: Multiaddr = format!("/ip4/{ip}/tcp/{}", free_port()).parse().unwrap();
        sybil_claiming("127.77.0.1", Some(claim), &net.mix[0]).await;
    }
    let target = &net.mix[0];
    let metrics = target.metrics.clone().unwrap();
    let honest_ids: Vec<PeerId> = net.mix.iter().map(|n| n.peer_id).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut fakes_seen = 0;
    let honest = loop {
        let nodes = target.pool_nodes().await;
        let fake = nodes.iter().filter(|n| !honest_ids.contains(n.peer_id())).count();
        fakes_seen = fakes_seen.max(fake);
        let honest = nodes.len() - fake;
        let failed = metrics.reach_checks("failed");
        if fakes_seen > 0 || (failed >= fakes && honest >= 4) || Instant::now() > deadline {
            break honest;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (failed, reached) = (metrics.reach_checks("failed"), metrics.reach_checks("reached"));
    eprintln!(
        "unreachable claims: {fakes_seen} fake nodes seen usable, {honest} honest usable; \
         checks: {failed} failed, {reached} reached"
    );
    assert_eq!(fakes_seen, 0, "a node nobody answers for was offered for paths");
    assert!(honest >= 4, "only {honest} honest nodes usable");
    assert!(failed >= fakes, "{failed} failed checks counted for {fakes} false claims");
    assert_eq!(metrics.pool_refusals("subnet_24"), 0, "the claims held places in the /24");
}

/// A node that keeps its mix key for ever fills its replay filter past its design capacity.
/// The filter grows in stages, so a replay is still caught and fresh packets are not taken
/// for replays more often than the design rate; the fill level is exported; and once the last
/// stage is full the node refuses new packets (counted) rather than let the error grow.
#[test]
fn a_replay_after_the_filters_design_capacity_is_still_dropped() {
    use libp2p_mix::core::{Config, MixCore, NoDelay, ReplayConfig};
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(9);
    // 1 000 tags per stage (the smallest filter) at a design rate of 1 %: big enough errors to
    // measure, small enough to fill in a test.
    let replay = ReplayConfig {
        packets_per_second: 1,
        key_lifetime: Duration::from_secs(1000),
        false_positive_rate: 0.01,
    };
    let secret = NodeSecretKey::generate(&mut rng);
    let peer = random_peer();
    let local = MixNode::new(peer, DEAD.parse().unwrap(), secret.public_key(), true).unwrap();
    let others: Vec<(PeerId, Multiaddr, mix_sphinx::NodePublicKey)> = (0..2)
        .map(|i| {
            let k = NodeSecretKey::generate(&mut rng).public_key();
            (random_peer(), format!("/ip4/127.0.0.{}/tcp/9", i + 2).parse().unwrap(), k)
        })
        .collect();
    let config = Config { replay, ..Config::default() };
    let pool = StaticPool::default();
    let mut core =
        MixCore::new(config, local.clone(), secret, Box::new(pool), Box::new(NoDelay), rng);
    let now = Instant::now();
    let route =
        [(peer, local.addr().clone(), *local.mix_key()), others[0].clone(), others[1].clone()];
    let dest = AddressBlock::encode(&DEAD.parse().unwrap(), &random_peer()).unwrap();
    let first = packet(&route, &dest, b"first");
    let replayed = Packet::try_from(first.as_bytes().to_vec()).unwrap();
    core.handle_packet(now, first).unwrap();
    // Five times the design capacity of fresh packets.
    let mut honest_dropped = 0;
    for i in 0..5_000u32 {
        if core.handle_packet(now, packet(&route, &dest, &i.to_be_bytes()))
            == Err(DropReason::Replay)
        {
            honest_dropped += 1;
        }
        while core.poll_output().is_some() {}
    }
    let fill = core.stats().replay_fill;
    eprintln!(
        "replay filter at {fill:.2}x its design capacity: {honest_dropped} of 5000 fresh packets taken for replays (design rate 1 %)"
    );
    assert!(fill > 4.9, "fill ratio {fill}");
    assert_eq!(core.handle_packet(now, replayed), Err(DropReason::Replay));
    // Below the design rate (1 % of 5 000 = 50) with room for chance.
    assert!(honest_dropped <= 50, "{honest_dropped} fresh packets dropped as replays");
    // Past the last stage, packets are refused, not accepted with a growing error.
    let mut refused = 0;
    for i in 0..4_000u32 {
        let r = core.handle_packet(now, packet(&route, &dest, &(10_000 + i).to_be_bytes()));
        if r == Err(DropReason::ReplayFilterFull) {
            refused += 1;
        }
        while core.poll_output().is_some() {}
    }
    assert!(refused > 0, "the filter grew without bound");
    assert_eq!(core.stats().packets_dropped(DropReason::ReplayFilterFull), refused);
}
