//! `mixnode keygen`: fresh keys for a node, as configuration text.

use libp2p::{Multiaddr, identity};
use mix_sphinx::NodeSecretKey;

/// A secp256k1 libp2p identity and an X25519 mix key: the `[identity]` section of `node.toml`,
/// and, commented out, the `[[pool]]` entry other nodes use to route through this one.
pub(crate) fn generate(advertise: &Multiaddr) -> anyhow::Result<String> {
    let identity = identity::Keypair::generate_secp256k1();
    let mix = NodeSecretKey::generate(&mut rand::rng());
    let peer_id = identity.public().to_peer_id();
    let libp2p_key = hex::encode(identity.to_protobuf_encoding()?);
    let mix_key = hex::encode(*mix.to_bytes());
    let mix_public = hex::encode(mix.public_key().as_bytes());
    Ok(format!(
        "# Keep this section secret: it is the node's identity.\n\
         [identity]\n\
         libp2p_key = \"{libp2p_key}\"\n\
         mix_key = \"{mix_key}\"\n\
         \n\
         # Other nodes route through this one with this pool entry:\n\
         # [[pool]]\n\
         # peer_id = \"{peer_id}\"\n\
         # multiaddr = \"{advertise}\"\n\
         # mix_key = \"{mix_public}\"\n\
         # exit = true\n"
    ))
}
