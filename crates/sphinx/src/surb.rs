//! Single-use reply blocks (LIBP2P-MIX §8.7).
//!
//! The initiator builds a header along a return path that ends at itself, with a random id in
//! the final routing block, and sends it inside its message together with a fresh key k̃. The
//! exit wraps the reply payload once under k̃ and sends header ‖ payload to the SURB's first
//! hop. The return hops process it like any packet; the initiator, as its last hop, sees
//! [`crate::Action::Reply`] and removes every layer with the secrets it kept.

use rand_core::CryptoRng;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::address::AddressBlock;
use crate::error::{BuildError, LengthError, ReplyError};
use crate::format::WireFormat;
use crate::header;
use crate::keys::EphemeralSecret;
use crate::packet::Packet;
use crate::params::{
    ADDRESS_SIZE, HEADER_SIZE, INTEGRITY_PREFIX_SIZE, MAX_PATH_LEN, MESSAGE_SIZE, SURB_ID_SIZE,
    SURB_KEY_SIZE, SURB_SIZE,
};
use crate::payload::LayerKey;
use crate::route::Route;

/// The 16-byte identifier the initiator finds in a reply's final routing block. Never zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SurbId([u8; SURB_ID_SIZE]);

impl SurbId {
    /// Wraps 16 id bytes.
    pub const fn from_bytes(bytes: [u8; SURB_ID_SIZE]) -> Self {
        Self(bytes)
    }

    /// A random non-zero id.
    pub fn random<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        loop {
            let mut bytes = [0u8; SURB_ID_SIZE];
            rng.fill_bytes(&mut bytes);
            if bytes != [0; SURB_ID_SIZE] {
                return Self(bytes);
            }
        }
    }

    /// The 16 id bytes.
    pub const fn as_bytes(&self) -> &[u8; SURB_ID_SIZE] {
        &self.0
    }
}

impl core::fmt::Debug for SurbId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        crate::debug_hex::fmt_hex(f, "SurbId", &self.0, self.0.len())
    }
}

/// k̃: the key of the reply payload's outermost layer.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct SurbKey([u8; SURB_KEY_SIZE]);

impl SurbKey {
    /// Wraps 16 key bytes.
    pub fn from_bytes(bytes: [u8; SURB_KEY_SIZE]) -> Self {
        Self(bytes)
    }

    /// A fresh key from a cryptographic RNG.
    pub fn random<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = [0u8; SURB_KEY_SIZE];
        rng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// The 16 key bytes.
    pub fn as_bytes(&self) -> &[u8; SURB_KEY_SIZE] {
        &self.0
    }
}

impl core::fmt::Debug for SurbKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SurbKey(..)")
    }
}

/// A SURB as the exit receives it: first-hop address ‖ header ‖ k̃ (734 bytes).
#[derive(Clone, PartialEq, Eq)]
pub struct Surb {
    first_hop: AddressBlock,
    header: [u8; HEADER_SIZE],
    key: SurbKey,
}

impl Surb {
    /// Parses the 734-byte wire form. Any bytes are a well-formed SURB: whether its header is
    /// valid only shows at the hops it leads to.
    pub fn from_bytes(bytes: &[u8; SURB_SIZE]) -> Self {
        let (first_hop, rest) = bytes.split_first_chunk::<ADDRESS_SIZE>().expect("fixed layout");
        let (header, key) = rest.split_first_chunk::<HEADER_SIZE>().expect("fixed layout");
        Self {
            first_hop: AddressBlock::from_bytes(*first_hop),
            header: *header,
            key: SurbKey(key.try_into().expect("fixed layout")),
        }
    }

    /// Like [`Self::from_bytes`] for a slice of exactly 734 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, LengthError> {
        let array = bytes.try_into().map_err(|_| LengthError {
            what: "SURB",
            expected: SURB_SIZE,
            got: bytes.len(),
        })?;
        Ok(Self::from_bytes(array))
    }

    /// Writes the 734-byte wire form.
    pub fn write_to(&self, out: &mut [u8; SURB_SIZE]) {
        out[..ADDRESS_SIZE].copy_from_slice(self.first_hop.as_bytes());
        out[ADDRESS_SIZE..ADDRESS_SIZE + HEADER_SIZE].copy_from_slice(&self.header);
        out[ADDRESS_SIZE + HEADER_SIZE..].copy_from_slice(&self.key.0);
    }

    /// The 734-byte wire form (it holds k̃, hence zeroized).
    pub fn to_bytes(&self) -> Zeroizing<[u8; SURB_SIZE]> {
        let mut out = Zeroizing::new([0u8; SURB_SIZE]);
        self.write_to(&mut out);
        out
    }

    /// Where the exit sends the reply packet.
    pub fn first_hop(&self) -> &AddressBlock {
        &self.first_hop
    }

    /// The reply packet carrying `reply` (an already framed m) back to the initiator.
    pub fn reply_packet(&self, format: &WireFormat, reply: &[u8; MESSAGE_SIZE]) -> Packet {
        let mut packet = Packet::zeroed();
        packet.header_mut().copy_from_slice(&self.header);
        let payload = packet.payload_mut();
        payload[INTEGRITY_PREFIX_SIZE..].copy_from_slice(reply);
        format.cipher().wrap(LayerKey::Surb(&self.key.0), payload);
        packet
    }
}

impl core::fmt::Debug for Surb {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Surb").field("first_hop", &self.first_hop).finish_non_exhaustive()
    }
}

/// What the initiator keeps to read the reply to one SURB: its id, k̃ and the return path's
/// shared secrets. Wiped on drop.
#[derive(Clone)]
pub struct SurbSecrets {
    id: SurbId,
    key: SurbKey,
    secrets: Zeroizing<[[u8; 32]; MAX_PATH_LEN]>,
    len: usize,
}

impl core::fmt::Debug for SurbSecrets {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SurbSecrets").field("id", &self.id).field("hops", &self.len).finish()
    }
}

impl SurbSecrets {
    /// The id the reply will carry.
    pub fn id(&self) -> SurbId {
        self.id
    }

    /// Removes every layer of a reply packet on which this node's own processing reported
    /// [`crate::Action::Reply`] with this id, and returns the reply's m.
    pub fn recover<'p>(
        &self,
        format: &WireFormat,
        packet: &'p mut Packet,
    ) -> Result<&'p [u8; MESSAGE_SIZE], ReplyError> {
        let cipher = format.cipher();
        let payload = packet.payload_mut();
        // The return hops removed layers s_0 … s_{L−2} (our own hop, the last, left the
        // payload alone); the exit added k̃ beneath them. Put the hops' layers back, outermost
        // last, then remove k̃.
        for secret in self.secrets[..self.len - 1].iter().rev() {
            cipher.wrap(LayerKey::Hop(secret), payload);
        }
        cipher.unwrap(LayerKey::Surb(&self.key.0), payload);
        if payload[..INTEGRITY_PREFIX_SIZE].iter().any(|&b| b != 0) {
            return Err(ReplyError::PayloadIntegrity);
        }
        Ok(packet.message())
    }
}

impl Route {
    /// A SURB whose return path is this route; its last hop must be the initiator itself. Id,
    /// k̃ and the ephemeral secret are fresh from `rng`.
    pub fn surb<R: CryptoRng + ?Sized>(
        &self,
        format: &WireFormat,
        rng: &mut R,
    ) -> Result<(Surb, SurbSecrets), BuildError> {
        let id = SurbId::random(rng);
        let key = SurbKey::random(rng);
        self.surb_with_secret(format, id, key, &EphemeralSecret::random(rng))
    }

    /// [`Route::surb`] with given id, key and ephemeral secret, to reproduce a SURB exactly.
    pub fn surb_with_secret(
        &self,
        format: &WireFormat,
        id: SurbId,
        key: SurbKey,
        ephemeral: &EphemeralSecret,
    ) -> Result<(Surb, SurbSecrets), BuildError> {
        if id.0 == [0; SURB_ID_SIZE] {
            return Err(BuildError::ZeroSurbId);
        }
        let path = self.secrets(format, ephemeral)?;
        let mut surb_header = [0u8; HEADER_SIZE];
        header::write(&path, |i| self.next_hop(i), &AddressBlock::ZERO, &id.0, &mut surb_header);

        let mut secrets = Zeroizing::new([[0u8; 32]; MAX_PATH_LEN]);
        secrets[..self.len()].copy_from_slice(path.secrets());
        let surb = Surb { first_hop: *self.first_hop(), header: surb_header, key: key.clone() };
        Ok((surb, SurbSecrets { id, key, secrets, len: self.len() }))
    }
}
