//! Per-stream keys: X25519 between a fresh ephemeral key and the receiver's static key, then
//! HKDF-SHA256.

use hkdf::Hkdf;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

const INFO: &[u8] = b"mix-stream/1 keys";

/// The receiver's long-term X25519 key pair (a mix node can use its mix key).
pub struct ReceiverKey {
    secret: StaticSecret,
    public: PublicKey,
}

impl std::fmt::Debug for ReceiverKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiverKey").field("public", &self.public.as_bytes()).finish()
    }
}

impl ReceiverKey {
    /// The key pair of a 32-byte secret (clamped as X25519 does).
    pub fn from_bytes(secret: [u8; 32]) -> Self {
        let secret = StaticSecret::from(secret);
        let public = PublicKey::from(&secret);
        Self { secret, public }
    }

    /// The public half, which senders need.
    pub fn public(&self) -> [u8; 32] {
        self.public.to_bytes()
    }

    /// The keys of the stream a sender opened with `ephemeral`.
    pub(crate) fn stream_keys(&self, ephemeral: &[u8; 32]) -> StreamKeys {
        // SharedSecret zeroizes itself on drop.
        let shared = self.secret.diffie_hellman(&PublicKey::from(*ephemeral));
        StreamKeys::derive(shared.as_bytes(), ephemeral, self.public.as_bytes())
    }
}

/// The secrets of one stream.
pub struct StreamKeys {
    /// The AEAD key for the sender's blocks.
    pub(crate) data: Zeroizing<[u8; 32]>,
    /// The MAC key of shards.
    pub(crate) mac: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for StreamKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamKeys(..)")
    }
}

impl StreamKeys {
    pub(crate) fn derive(shared: &[u8; 32], ephemeral: &[u8; 32], receiver: &[u8; 32]) -> Self {
        // Both public keys in the salt bind the keys to this exchange.
        let mut salt = [0u8; 64];
        salt[..32].copy_from_slice(ephemeral);
        salt[32..].copy_from_slice(receiver);
        let hk = Hkdf::<Sha256>::new(Some(&salt), shared);
        let mut okm = Zeroizing::new([0u8; 64]);
        hk.expand(INFO, okm.as_mut()).expect("64 bytes is a valid HKDF-SHA256 length");
        let mut data = Zeroizing::new([0u8; 32]);
        let mut mac = Zeroizing::new([0u8; 32]);
        data.copy_from_slice(&okm[..32]);
        mac.copy_from_slice(&okm[32..]);
        Self { data, mac }
    }

    /// A sender's side: a fresh ephemeral key for `receiver`; returns the keys and the
    /// ephemeral public key that names the stream on the wire.
    pub(crate) fn for_receiver<R: rand::CryptoRng + ?Sized>(
        receiver: &[u8; 32],
        rng: &mut R,
    ) -> (Self, [u8; 32]) {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(bytes.as_mut());
        let secret = StaticSecret::from(*bytes);
        let ephemeral = PublicKey::from(&secret).to_bytes();
        let shared = secret.diffie_hellman(&PublicKey::from(*receiver));
        (Self::derive(shared.as_bytes(), &ephemeral, receiver), ephemeral)
    }
}
