//! Benchmark programs. Each prints figures with a baseline measured in the same run (and JSON
//! with `--json`); none asserts on time.

pub(crate) mod flood;
pub(crate) mod flood_stream;
pub(crate) mod loss;
mod measure;
pub(crate) mod node;
pub(crate) mod own;
pub(crate) mod pow;
mod rig;
pub(crate) mod scaling;
pub(crate) mod sphinx;
pub(crate) mod stream;
mod turns;

/// A bare libp2p host for the benchmarks' load generators and hostile peers: TCP, Noise and
/// Yamux as a node's, streams opened and accepted through `libp2p-stream`, no mix behaviour.
/// Its identity is secp256k1, as a node's (a mix next hop's address needs one).
pub(crate) fn bare_host() -> anyhow::Result<libp2p::Swarm<libp2p_stream::Behaviour>> {
    use libp2p::{identity, noise, tcp, yamux};
    Ok(libp2p::SwarmBuilder::with_existing_identity(identity::Keypair::generate_secp256k1())
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)?
        .with_behaviour(|_| libp2p_stream::Behaviour::new())?
        .with_swarm_config(|c| c.with_idle_connection_timeout(std::time::Duration::from_secs(300)))
        .build())
}
