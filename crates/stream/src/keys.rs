//! Per-stream keys. The opener draws a random stream secret S, and every key of the stream
//! comes from S through HKDF-SHA256. S reaches the acceptor in opening envelopes, each sealed
//! under a key from X25519 between a fresh ephemeral key and the acceptor's key, so no two
//! frames share a public value. The ephemeral key is written as its Elligator 2
//! representative ([`crate::elligator`]): random bytes, like every other frame's `E` field.

use curve25519_dalek::EdwardsPoint;
use hkdf::Hkdf;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::elligator;

const OPENING_INFO: &[u8] = b"mix-stream/3 opening";
const STREAM_INFO: &[u8] = b"mix-stream/3 stream";

/// The acceptor's X25519 key pair (a mix node uses its mix key of the epoch).
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

    /// The envelope key of a frame whose `E` field stands for the key `e` ([`opening_key`]), or
    /// `None` for a point that gives no shared secret (a low-order point). Random bytes give a
    /// key too; the envelope then fails.
    pub(crate) fn envelope_key(&self, e: &[u8; 32]) -> Option<Zeroizing<[u8; 32]>> {
        // SharedSecret zeroizes itself on drop.
        let shared = self.secret.diffie_hellman(&PublicKey::from(*e));
        if !shared.was_contributory() {
            return None;
        }
        Some(envelope_key(shared.as_bytes(), e, self.public.as_bytes()))
    }
}

fn envelope_key(shared: &[u8; 32], e: &[u8; 32], receiver: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    // Both public keys in the salt bind the key to this exchange.
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(e);
    salt[32..].copy_from_slice(receiver);
    let hk = Hkdf::<Sha256>::new(Some(&salt), shared);
    let mut key = Zeroizing::new([0u8; 32]);
    hk.expand(OPENING_INFO, key.as_mut()).expect("32 bytes is a valid HKDF-SHA256 length");
    key
}

/// The ephemeral key a frame's `E` field (a representative) stands for. Decoded once per
/// frame, whatever the number of keys tried on it.
pub(crate) fn opening_key(written: &[u8; 32]) -> [u8; 32] {
    elligator::point(written)
}

/// The opener's side of one opening frame: a fresh ephemeral key for `receiver`, as written
/// (its representative), and the envelope key. `None` if `receiver` is a low-order point.
pub(crate) fn opening_keys<R: rand::CryptoRng + ?Sized>(
    receiver: &[u8; 32],
    rng: &mut R,
) -> Option<([u8; 32], Zeroizing<[u8; 32]>)> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    // About half of all keys have a representative: two tries on average.
    let (e, written) = loop {
        rng.fill_bytes(bytes.as_mut());
        let mut pick = [0u8; 1];
        rng.fill_bytes(&mut pick);
        // A random point of small order on top: the receiver's clamped scalar, a multiple of
        // eight, removes it, and without it every key would lie in the prime-order subgroup.
        let torsion = curve25519_dalek::constants::EIGHT_TORSION[usize::from(pick[0] & 7)];
        let e = (EdwardsPoint::mul_base_clamped(*bytes) + torsion).to_montgomery().to_bytes();
        if let Some(written) = elligator::representative(&e, pick[0] & 8 != 0, pick[0] >> 6) {
            break (e, written);
        }
    };
    let secret = StaticSecret::from(*bytes);
    let shared = secret.diffie_hellman(&PublicKey::from(*receiver));
    if !shared.was_contributory() {
        return None;
    }
    let key = envelope_key(shared.as_bytes(), &e, receiver);
    Some((written, key))
}

/// The secrets of one stream, all from its secret S.
pub(crate) struct StreamKeys {
    pub(crate) secret: Zeroizing<[u8; 32]>,
    /// The stream's local name (never written): both sides compute it.
    pub(crate) id: StreamId,
    /// Frames from the opener to the acceptor.
    pub(crate) forward: Zeroizing<[u8; 32]>,
    /// Frames from the acceptor back to the opener.
    pub(crate) reverse: Zeroizing<[u8; 32]>,
    /// Labels of forward frames.
    pub(crate) forward_labels: Zeroizing<[u8; 32]>,
    /// Labels of reverse frames.
    pub(crate) reverse_labels: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for StreamKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamKeys(..)")
    }
}

impl StreamKeys {
    pub(crate) fn from_secret(secret: Zeroizing<[u8; 32]>) -> Self {
        let hk = Hkdf::<Sha256>::new(None, secret.as_ref());
        let mut okm = Zeroizing::new([0u8; 160]);
        hk.expand(STREAM_INFO, okm.as_mut()).expect("160 bytes is a valid HKDF-SHA256 length");
        let part = |i: usize| {
            let mut k = Zeroizing::new([0u8; 32]);
            k.copy_from_slice(&okm[32 * i..32 * (i + 1)]);
            k
        };
        let id = StreamId(*part(0));
        Self {
            id,
            forward: part(1),
            reverse: part(2),
            forward_labels: part(3),
            reverse_labels: part(4),
            secret,
        }
    }

    /// A fresh stream secret.
    pub(crate) fn generate<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut secret = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(secret.as_mut());
        Self::from_secret(secret)
    }
}

/// A stream's local name. Both ends derive it from the stream's secret and it is never written
/// on the wire: it names nothing an observer or an exit sees.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId([u8; 32]);

impl StreamId {
    /// Its bytes, for logs, or to match the two ends of a stream.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }
}

impl std::fmt::Debug for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StreamId({})", hex(&self.0[..8]))
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
    fn both_sides_agree_on_envelope_keys_and_streams_share_nothing() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let receiver = ReceiverKey::generate(&mut rng);
        for _ in 0..64 {
            let (e, key) = opening_keys(&receiver.public(), &mut rng).unwrap();
            assert_eq!(*receiver.envelope_key(&opening_key(&e)).unwrap(), *key);
        }
        let a = StreamKeys::generate(&mut rng);
        let again = StreamKeys::from_secret(a.secret.clone());
        assert_eq!((a.id, *a.forward, *a.reverse), (again.id, *again.forward, *again.reverse));
        let keys = [&a.forward, &a.reverse, &a.forward_labels, &a.reverse_labels];
        for (i, x) in keys.iter().enumerate() {
            for y in &keys[i + 1..] {
                assert_ne!(***x, ***y);
            }
        }
        let b = StreamKeys::generate(&mut rng);
        assert_ne!(a.id, b.id);
        assert_ne!(*a.forward, *b.forward);
    }

    /// What colluding exits can test on any frame's `E` field: read as a u-coordinate, is it
    /// on the curve and in its prime-order subgroup? Random bytes are about one time in
    /// sixteen (half on the curve, an eighth of those in the subgroup); a genuine X25519 public
    /// key always is, which picked out every opening frame. And decoded as a representative,
    /// is its point in the subgroup? Any 254 bits decode to a point, in the subgroup one time
    /// in eight; without the small-order point added, an opener's keys always would be.
    #[test]
    fn opening_keys_pass_the_curve_test_as_often_as_random_bytes() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
        let receiver = ReceiverKey::generate(&mut rng);
        let looks_like_a_key = |e: &[u8; 32]| {
            let mut u = *e;
            u[31] &= 0x7f;
            curve25519_dalek::MontgomeryPoint(u).to_edwards(0).is_some_and(|p| p.is_torsion_free())
        };
        let decodes_to_a_key = |e: &[u8; 32]| {
            curve25519_dalek::MontgomeryPoint(opening_key(e))
                .to_edwards(0)
                .is_some_and(|p| p.is_torsion_free())
        };
        const N: usize = 2000;
        let (mut keys, mut random, mut top_two) = (0, 0, [0usize; 2]);
        let (mut decoded_keys, mut decoded_random) = (0, 0);
        for _ in 0..N {
            let (e, key) = opening_keys(&receiver.public(), &mut rng).unwrap();
            assert_eq!(*receiver.envelope_key(&opening_key(&e)).unwrap(), *key);
            keys += usize::from(looks_like_a_key(&e));
            decoded_keys += usize::from(decodes_to_a_key(&e));
            top_two[0] += usize::from(e[31] >> 7);
            top_two[1] += usize::from((e[31] >> 6) & 1);
            let mut bytes = [0u8; 32];
            rand::Rng::fill_bytes(&mut rng, &mut bytes);
            random += usize::from(looks_like_a_key(&bytes));
            decoded_random += usize::from(decodes_to_a_key(&bytes));
        }
        // N/8 = 250, sigma about 14.8: four sigmas either way.
        let eighth = 190..=310;
        assert!(eighth.contains(&decoded_random), "random bytes decoded: {decoded_random} of {N}");
        assert!(eighth.contains(&decoded_keys), "opening keys decoded: {decoded_keys} of {N}");
        // N/16 = 125, sigma about 10.8: four sigmas either way.
        let bounds = 82..=168;
        assert!(bounds.contains(&random), "random bytes: {random} of {N}");
        assert!(bounds.contains(&keys), "opening keys: {keys} of {N} look like keys");
        for (bit, set) in top_two.into_iter().enumerate() {
            assert!((900..=1100).contains(&set), "top bit {bit}: {set} of {N} set");
        }
    }

    #[test]
    fn low_order_points_give_no_keys() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(2);
        let receiver = ReceiverKey::generate(&mut rng);
        assert!(receiver.envelope_key(&opening_key(&[0u8; 32])).is_none(), "0 stands for u = 0");
        let mut written = 0;
        for point in curve25519_dalek::constants::EIGHT_TORSION {
            let u = point.to_montgomery().to_bytes();
            for branch in [false, true] {
                if let Some(r) = elligator::representative(&u, branch, 3) {
                    written += 1;
                    let key = receiver.envelope_key(&opening_key(&r));
                    assert!(key.is_none(), "a low-order point gave a key");
                }
            }
        }
        assert!(written > 0, "no low-order point has a representative to try");
        assert!(opening_keys(&[0u8; 32], &mut rng).is_none());
    }
}
