//! Per-stream keys: X25519 between the opener's fresh ephemeral key and the acceptor's static
//! key, then HKDF-SHA256 into one key per direction.

use hkdf::Hkdf;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

const INFO: &[u8] = b"mix-stream/1 directions";

/// The acceptor's long-term X25519 key pair (a mix node can use its mix key).
pub struct ReceiverKey {
    secret: StaticSecret,
    public: PublicKey,
}

impl std::fmt::Debug for ReceiverKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiverKey").field("public", &hex(self.public.as_bytes())).finish()
    }
}

impl Clone for ReceiverKey {
    fn clone(&self) -> Self {
        Self { secret: self.secret.clone(), public: self.public }
    }
}

impl ReceiverKey {
    /// The key pair of a 32-byte secret (clamped as X25519 does).
    pub fn from_bytes(secret: [u8; 32]) -> Self {
        let secret = Zeroizing::new(secret);
        let secret = StaticSecret::from(*secret);
        let public = PublicKey::from(&secret);
        Self { secret, public }
    }

    /// A fresh key pair.
    pub fn generate<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(bytes.as_mut());
        Self::from_bytes(*bytes)
    }

    /// The public half, which openers need.
    pub fn public(&self) -> [u8; 32] {
        self.public.to_bytes()
    }

    /// The keys of the stream an opener named with `ephemeral`, or `None` for a point that
    /// gives no shared secret (a low-order point).
    pub(crate) fn stream_keys(&self, ephemeral: &[u8; 32]) -> Option<StreamKeys> {
        // SharedSecret zeroizes itself on drop.
        let shared = self.secret.diffie_hellman(&PublicKey::from(*ephemeral));
        if !shared.was_contributory() {
            return None;
        }
        Some(StreamKeys::derive(shared.as_bytes(), ephemeral, self.public.as_bytes()))
    }
}

/// The secrets of one stream: an AEAD key per direction.
pub(crate) struct StreamKeys {
    /// Frames from the opener to the acceptor.
    pub(crate) forward: Zeroizing<[u8; 32]>,
    /// Frames from the acceptor back to the opener.
    pub(crate) reverse: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for StreamKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamKeys(..)")
    }
}

impl StreamKeys {
    fn derive(shared: &[u8; 32], ephemeral: &[u8; 32], receiver: &[u8; 32]) -> Self {
        // Both public keys in the salt bind the keys to this exchange.
        let mut salt = [0u8; 64];
        salt[..32].copy_from_slice(ephemeral);
        salt[32..].copy_from_slice(receiver);
        let hk = Hkdf::<Sha256>::new(Some(&salt), shared);
        let mut okm = Zeroizing::new([0u8; 64]);
        hk.expand(INFO, okm.as_mut()).expect("64 bytes is a valid HKDF-SHA256 length");
        let mut forward = Zeroizing::new([0u8; 32]);
        let mut reverse = Zeroizing::new([0u8; 32]);
        forward.copy_from_slice(&okm[..32]);
        reverse.copy_from_slice(&okm[32..]);
        Self { forward, reverse }
    }

    /// The opener's side: a fresh ephemeral key for `receiver`; returns the keys and the
    /// ephemeral public key that names the stream on the wire. `None` if `receiver` is a
    /// low-order point.
    pub(crate) fn for_receiver<R: rand::CryptoRng + ?Sized>(
        receiver: &[u8; 32],
        rng: &mut R,
    ) -> Option<(Self, [u8; 32])> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(bytes.as_mut());
        let secret = StaticSecret::from(*bytes);
        let ephemeral = PublicKey::from(&secret).to_bytes();
        let shared = secret.diffie_hellman(&PublicKey::from(*receiver));
        if !shared.was_contributory() {
            return None;
        }
        Some((Self::derive(shared.as_bytes(), &ephemeral, receiver), ephemeral))
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn both_sides_agree_and_directions_differ() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let receiver = ReceiverKey::generate(&mut rng);
        let (opener, id) = StreamKeys::for_receiver(&receiver.public(), &mut rng).unwrap();
        let acceptor = receiver.stream_keys(&id).unwrap();
        assert_eq!(*opener.forward, *acceptor.forward);
        assert_eq!(*opener.reverse, *acceptor.reverse);
        assert_ne!(*opener.forward, *opener.reverse);
        // A second stream to the same receiver shares nothing with the first.
        let (other, other_id) = StreamKeys::for_receiver(&receiver.public(), &mut rng).unwrap();
        assert_ne!(id, other_id);
        assert_ne!(*other.forward, *opener.forward);
    }

    #[test]
    fn low_order_points_give_no_keys() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(2);
        let receiver = ReceiverKey::generate(&mut rng);
        assert!(receiver.stream_keys(&[0u8; 32]).is_none());
        let mut one = [0u8; 32];
        one[0] = 1;
        assert!(receiver.stream_keys(&one).is_none());
        assert!(StreamKeys::for_receiver(&[0u8; 32], &mut rng).is_none());
    }
}
