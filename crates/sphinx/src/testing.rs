//! Helpers for tests and fuzzers (feature `test-util`): packets that pass a hop's MAC while
//! carrying chosen, usually malformed, contents, so that everything behind the MAC check can be
//! exercised with arbitrary input.

use crate::crypto::curve::x25519;
use crate::crypto::symmetric::{aes_ctr, mac16};
use crate::header::{RoutingKeys, mac_key};
use crate::keys::NodeSecretKey;
use crate::packet::Packet;
use crate::params::{BETA_SIZE, PAYLOAD_SIZE};

/// A packet for `key` with α = `alpha` whose β decrypts to `routing` (the first 576 bytes of
/// the 688-byte block the hop reads) and whose payload is `payload`, with a valid γ. `None` if
/// `alpha` is of small order.
pub fn authenticated_packet(
    key: &NodeSecretKey,
    alpha: &[u8; 32],
    routing: &[u8; BETA_SIZE],
    payload: &[u8; PAYLOAD_SIZE],
) -> Option<Packet> {
    let secret = zeroize::Zeroizing::new(x25519(key.as_scalar(), alpha)?);
    let keys = RoutingKeys::derive(&secret);
    let mut packet = Packet::zeroed();
    let fields = packet.fields_mut();
    *fields.alpha = *alpha;
    fields.beta.copy_from_slice(routing);
    aes_ctr(&keys.aes, &keys.iv, fields.beta);
    *fields.gamma = mac16(&mac_key(&secret), fields.beta);
    fields.payload.copy_from_slice(payload);
    Some(packet)
}
