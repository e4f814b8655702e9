//! What a mix node does with a packet it receives (LIBP2P-MIX §8.6).
//!
//! Processing is split in two so that the caller can consult its replay filter between the
//! cheap authenticity check and the rest: [`NodeSecretKey::open`] computes the shared secret and
//! checks the MAC, [`OpenedPacket::peel`] decrypts and rewrites the packet in place. Neither
//! allocates.

use subtle::ConstantTimeEq;

use crate::address::AddressBlock;
use crate::crypto::curve::{is_canonical_u, x25519};
use crate::crypto::symmetric::{aes_ctr, mac16, sha256};
use crate::error::ProcessError;
use crate::format::WireFormat;
use crate::header::{RoutingKeys, mac_key};
use crate::keys::{NodeSecretKey, SharedSecret};
use crate::packet::Packet;
use crate::params::{
    ADDRESS_SIZE, DELAY_SIZE, EXTENDED_BETA_SIZE, INTEGRITY_PREFIX_SIZE, ROUTING_BLOCK_SIZE,
    SURB_ID_SIZE, final_zero_run,
};
use crate::payload::LayerKey;
use crate::surb::SurbId;

/// SHA-256 of a packet's shared secret at this hop. Two packets with the same tag are the same
/// packet (or the same SURB used twice): remember tags for as long as the mix key lives.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplayTag([u8; 32]);

impl ReplayTag {
    /// The 32 tag bytes, for a replay filter.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl core::fmt::Debug for ReplayTag {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        crate::debug_hex::fmt_hex(f, "ReplayTag", &self.0, 8)
    }
}

/// What to do with a packet once its layer is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The packet now holds the next hop's packet: send it to `next_hop` after the delay the
    /// sender encoded (a literal delay or a mean to sample from, as the network agrees). A
    /// delay of 0 is possible: the reference's default strategy encodes it.
    Forward {
        /// Where to send the rewritten packet.
        next_hop: AddressBlock,
        /// The delay the sender encoded for this hop, in milliseconds.
        delay_ms: u16,
    },
    /// This node is the exit: [`Packet::message`] is the message m for `destination` (the zero
    /// block when this node is the destination).
    Deliver {
        /// The destination's address block, or zero.
        destination: AddressBlock,
    },
    /// A reply through a SURB this node made. The payload is left as received: look `id` up
    /// and pass the packet to [`crate::SurbSecrets::recover`].
    Reply {
        /// The SURB's id.
        id: SurbId,
    },
}

/// A packet whose MAC checked out at this hop, not yet decrypted.
pub struct OpenedPacket<'p> {
    packet: &'p mut Packet,
    secret: SharedSecret,
    tag: ReplayTag,
    format: WireFormat,
}

impl core::fmt::Debug for OpenedPacket<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("OpenedPacket").field("tag", &self.tag).finish_non_exhaustive()
    }
}

impl NodeSecretKey {
    /// Computes the shared secret and checks the header MAC in constant time. Rejects an α
    /// that is not a canonical encoding: the reference's X25519 would ignore its top bit, which
    /// makes packets malleable without changing their replay tag.
    pub fn open<'p>(
        &self,
        format: &WireFormat,
        packet: &'p mut Packet,
    ) -> Result<OpenedPacket<'p>, ProcessError> {
        let secret = self.check(packet)?;
        let tag = ReplayTag(sha256(&[&secret.0]));
        Ok(OpenedPacket { packet, secret, tag, format: *format })
    }

    /// [`Self::open`] with the first of `keys` whose MAC checks out (a node holding the keys
    /// of adjacent epochs). Returns that key's index. Each key tried costs a Diffie-Hellman;
    /// only a MAC mismatch moves on to the next key.
    pub fn open_any<'p>(
        keys: &[&Self],
        format: &WireFormat,
        packet: &'p mut Packet,
    ) -> Result<(usize, OpenedPacket<'p>), ProcessError> {
        let mut last = ProcessError::MacMismatch;
        for (i, key) in keys.iter().enumerate() {
            match key.check(packet) {
                Ok(secret) => {
                    let tag = ReplayTag(sha256(&[&secret.0]));
                    return Ok((i, OpenedPacket { packet, secret, tag, format: *format }));
                }
                Err(ProcessError::MacMismatch) => last = ProcessError::MacMismatch,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    fn check(&self, packet: &Packet) -> Result<SharedSecret, ProcessError> {
        let alpha = packet.alpha();
        if !is_canonical_u(alpha) {
            return Err(ProcessError::NonCanonicalAlpha);
        }
        let secret =
            SharedSecret(x25519(self.as_scalar(), alpha).ok_or(ProcessError::LowOrderAlpha)?);
        let expected = mac16(&mac_key(&secret.0), packet.beta());
        if !bool::from(expected.ct_eq(packet.gamma())) {
            return Err(ProcessError::MacMismatch);
        }
        Ok(secret)
    }

    /// [`Self::open`] then [`OpenedPacket::peel`], for callers that check the tag afterwards.
    pub fn process(
        &self,
        format: &WireFormat,
        packet: &mut Packet,
    ) -> Result<(ReplayTag, Action), ProcessError> {
        let opened = self.open(format, packet)?;
        let tag = opened.tag;
        Ok((tag, opened.peel()?))
    }
}

impl OpenedPacket<'_> {
    /// The packet's replay tag at this hop.
    pub fn replay_tag(&self) -> &ReplayTag {
        &self.tag
    }

    /// Decrypts the routing block and the payload and decides this hop's role. For
    /// [`Action::Forward`] the packet is rewritten into the next hop's packet.
    pub fn peel(self) -> Result<Action, ProcessError> {
        let Self { packet, secret, format, .. } = self;
        let keys = RoutingKeys::derive(&secret.0);
        let mut block = [0u8; EXTENDED_BETA_SIZE];
        block[..packet.beta().len()].copy_from_slice(packet.beta());
        aes_ctr(&keys.aes, &keys.iv, &mut block);

        let (routing, rest) = block.split_at(ROUTING_BLOCK_SIZE);
        let is_final = all_zero(&rest[..final_zero_run(format.max_path_len())]);
        let address = AddressBlock::from_bytes(routing[..ADDRESS_SIZE].try_into().expect("94"));
        let delay = [routing[ADDRESS_SIZE], routing[ADDRESS_SIZE + 1]];
        let id_or_gamma: [u8; SURB_ID_SIZE] =
            routing[ADDRESS_SIZE + DELAY_SIZE..].try_into().expect("16");

        if is_final {
            if all_zero(&routing[ADDRESS_SIZE..]) {
                let payload = packet.payload_mut();
                format.cipher().unwrap(LayerKey::Hop(&secret.0), payload);
                if !all_zero(&payload[..INTEGRITY_PREFIX_SIZE]) {
                    return Err(ProcessError::PayloadIntegrity);
                }
                return Ok(Action::Deliver { destination: address });
            }
            if all_zero(&routing[..ADDRESS_SIZE + DELAY_SIZE]) {
                return Ok(Action::Reply { id: SurbId::from_bytes(id_or_gamma) });
            }
            return Err(ProcessError::MalformedFinalBlock);
        }

        let blinder = sha256(&[packet.alpha(), &secret.0]);
        let next_alpha = x25519(&blinder, packet.alpha()).ok_or(ProcessError::LowOrderAlpha)?;
        let fields = packet.fields_mut();
        format.cipher().unwrap(LayerKey::Hop(&secret.0), fields.payload);
        *fields.alpha = next_alpha;
        fields.beta.copy_from_slice(rest);
        *fields.gamma = id_or_gamma;
        Ok(Action::Forward { next_hop: address, delay_ms: u16::from_be_bytes(delay) })
    }
}

fn all_zero(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |acc, &b| acc | b) == 0
}
