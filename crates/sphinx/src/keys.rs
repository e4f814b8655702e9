//! Mix keys (X25519) and the secrets derived from them.

use rand_core::CryptoRng;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::KeyError;
use crate::crypto::curve;

/// A mix node's X25519 private key. It is used as a raw RFC 7748 scalar (clamped by X25519)
/// and is wiped from memory on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct NodeSecretKey([u8; 32]);

impl NodeSecretKey {
    /// A fresh key from a cryptographic RNG.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// Wraps stored key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw key, for storage. Keep the copy zeroized too.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0)
    }

    /// X25519(self, 9).
    pub fn public_key(&self) -> NodePublicKey {
        NodePublicKey(curve::x25519_base(&self.0))
    }

    pub(crate) fn as_scalar(&self) -> &[u8; 32] {
        &self.0
    }
}

impl core::fmt::Debug for NodeSecretKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "NodeSecretKey({:?})", self.public_key())
    }
}

/// A mix node's X25519 public key, validated: a canonical encoding of a point on the curve that
/// is not of small order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodePublicKey([u8; 32]);

impl NodePublicKey {
    /// Validates a key received from a peer, a record or a config file.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, KeyError> {
        curve::is_valid_public_point(&bytes)?;
        Ok(Self(bytes))
    }

    /// Like [`Self::from_bytes`] for a slice, which must have 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeyError> {
        let array: [u8; 32] =
            bytes.try_into().map_err(|_| KeyError::Length { got: bytes.len() })?;
        Self::from_bytes(array)
    }

    /// The 32-byte u-coordinate.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 32-byte u-coordinate, by value.
    pub fn to_bytes(self) -> [u8; 32] {
        self.0
    }
}

impl core::fmt::Debug for NodePublicKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        crate::debug_hex::fmt_hex(f, "NodePublicKey", &self.0, 8)
    }
}

/// The sender's per-packet ephemeral scalar x. Fresh from an RNG for every packet and SURB;
/// fixed only to reproduce test vectors.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct EphemeralSecret([u8; 32]);

impl EphemeralSecret {
    /// A fresh secret from a cryptographic RNG.
    pub fn random<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// A given secret, to reproduce a packet exactly.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub(crate) fn as_scalar(&self) -> &[u8; 32] {
        &self.0
    }
}

impl core::fmt::Debug for EphemeralSecret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("EphemeralSecret(..)")
    }
}

/// s = X25519(node key, α): the secret one hop shares with the sender.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct SharedSecret(pub(crate) [u8; 32]);

impl core::fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SharedSecret(..)")
    }
}
