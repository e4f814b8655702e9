//! X25519 as LIBP2P-MIX uses it: RFC 7748 with clamped scalars everywhere, including the
//! blinding factors, which are raw SHA-256 outputs.
//!
//! Hops compute `X25519(priv, α)` and `X25519(b, α)` directly. The sender instead keeps the
//! product of its clamped scalars reduced mod ℓ ([`ScalarChain`]): α_i and s_i are then one
//! fixed-base and one variable-base multiplication each, instead of a chain of i + 1
//! multiplications.

use curve25519_dalek::{
    montgomery::MontgomeryPoint,
    scalar::{Scalar, clamp_integer},
};
use subtle::{ConditionallySelectable, ConstantTimeEq};
use zeroize::Zeroizing;

#[cfg(feature = "aws-lc")]
use super::aws_lc as backend;
#[cfg(not(feature = "aws-lc"))]
use dalek as backend;

/// RFC 7748 X25519(k, u); `None` when the result is all zero (a small-order `u`).
pub(crate) fn x25519(k: &[u8; 32], u: &[u8; 32]) -> Option<[u8; 32]> {
    backend::x25519(k, u)
}

/// RFC 7748 X25519(k, 9).
pub(crate) fn x25519_base(k: &[u8; 32]) -> [u8; 32] {
    backend::x25519_base(k)
}

/// Pure-Rust X25519; the backend without the `aws-lc` feature and the cross-check in tests.
pub(crate) mod dalek {
    use super::MontgomeryPoint;

    #[allow(dead_code, reason = "used only without the aws-lc feature and in tests")]
    pub(crate) fn x25519(k: &[u8; 32], u: &[u8; 32]) -> Option<[u8; 32]> {
        let out = MontgomeryPoint(*u).mul_clamped(*k).0;
        (out != [0u8; 32]).then_some(out)
    }

    #[allow(dead_code, reason = "used only without the aws-lc feature and in tests")]
    pub(crate) fn x25519_base(k: &[u8; 32]) -> [u8; 32] {
        MontgomeryPoint::mul_base_clamped(*k).0
    }
}

/// 8⁻¹ mod ℓ, little-endian.
const INV8: [u8; 32] = [
    121, 47, 220, 226, 41, 229, 6, 97, 208, 218, 28, 125, 179, 157, 211, 7, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 6,
];

/// The sender's running product x·b_0·…·b_{i−1} of clamped scalars, mod ℓ.
///
/// Node keys and α values lie in the prime-order subgroup (a key's small-order component, if
/// any, is killed by the cofactor-clearing clamped scalars on both sides), so multiplying by
/// the product mod ℓ gives the same u-coordinate as the reference's chain of multiplications.
pub(crate) struct ScalarChain {
    product: Zeroizing<Scalar>,
}

impl ScalarChain {
    pub(crate) fn new(x: &[u8; 32]) -> Self {
        Self { product: Zeroizing::new(Scalar::from_bytes_mod_order(clamp_integer(*x))) }
    }

    /// α = u([k]·G).
    pub(crate) fn alpha(&self) -> [u8; 32] {
        match clamped_representative(&self.product) {
            Some(c) => x25519_base(&c),
            None => MontgomeryPoint::mul_base(&self.product).0,
        }
    }

    /// s = u([k]·Y) for a validated public key `Y` (on the curve, not of small order).
    pub(crate) fn shared_secret(&self, public: &[u8; 32]) -> Option<[u8; 32]> {
        match clamped_representative(&self.product) {
            Some(c) => x25519(&c, public),
            None => slow_mul(&self.product, public),
        }
    }

    /// k ← k · clamp(b).
    pub(crate) fn blind(&mut self, blinder: &[u8; 32]) {
        let b = Zeroizing::new(Scalar::from_bytes_mod_order(clamp_integer(*blinder)));
        *self.product *= &*b;
    }
}

/// A clamped 32-byte scalar c with X25519(c, P) = u([k]P) for every P whose prime-order part
/// is what matters, i.e. c = 8r with r ≡ ±k/8 (mod ℓ) and 2²⁵¹ ≤ r < 2²⁵² (clamping leaves such
/// a c unchanged, and ±k give the same u-coordinate). Neither candidate fits with probability
/// about 2⁻¹²⁶; the caller then takes the slow path.
fn clamped_representative(k: &Scalar) -> Option<Zeroizing<[u8; 32]>> {
    let r = Zeroizing::new(k * Scalar::from_bytes_mod_order(INV8));
    let neg_r = Zeroizing::new(-*r);
    let r_fits = in_window(&r.to_bytes());
    let chosen = Zeroizing::new(Scalar::conditional_select(&neg_r, &r, r_fits).to_bytes());
    if !bool::from(in_window(&chosen)) {
        return None;
    }
    let mut c = Zeroizing::new([0u8; 32]);
    for i in (1..32).rev() {
        c[i] = (chosen[i] << 3) | (chosen[i - 1] >> 5);
    }
    c[0] = chosen[0] << 3;
    Some(c)
}

/// 2²⁵¹ ≤ r < 2²⁵² for little-endian `r`.
fn in_window(r: &[u8; 32]) -> subtle::Choice {
    (r[31] & 0xf8).ct_eq(&0x08)
}

/// u([8·(k/8)]P) without the clamping shortcut: clear the cofactor, then multiply.
fn slow_mul(k: &Scalar, public: &[u8; 32]) -> Option<[u8; 32]> {
    let point = MontgomeryPoint(*public).to_edwards(0)?;
    let r = Zeroizing::new(k * Scalar::from_bytes_mod_order(INV8));
    let out = (point.mul_by_cofactor() * *r).to_montgomery().0;
    (out != [0u8; 32]).then_some(out)
}

/// Whether `u` is the canonical encoding of a point on the curve (not the twist) that is not of
/// small order. Keys that pass give the same shared secret through [`ScalarChain`] as through
/// the reference's chain of X25519 calls.
pub(crate) fn is_valid_public_point(u: &[u8; 32]) -> Result<(), crate::KeyError> {
    if !is_canonical_u(u) {
        return Err(crate::KeyError::NonCanonical);
    }
    let point = MontgomeryPoint(*u).to_edwards(0).ok_or(crate::KeyError::NotOnCurve)?;
    if point.is_small_order() {
        return Err(crate::KeyError::SmallOrder);
    }
    Ok(())
}

/// u < 2²⁵⁵ − 19 and the unused top bit clear.
pub(crate) fn is_canonical_u(u: &[u8; 32]) -> bool {
    if u[31] & 0x80 != 0 {
        return false;
    }
    // The only values in [p, 2²⁵⁵) are 2²⁵⁵−19..2²⁵⁵−1: ff…ff7f with a low byte ≥ 0xed.
    let at_least_p = u[31] == 0x7f && u[1..31].iter().all(|&b| b == 0xff) && u[0] >= 0xed;
    !at_least_p
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    const BASE_U: [u8; 32] = {
        let mut b = [0u8; 32];
        b[0] = 9;
        b
    };

    fn chain_reference(scalars: &[[u8; 32]], point: [u8; 32]) -> [u8; 32] {
        scalars.iter().fold(point, |u, k| dalek::x25519(k, &u).expect("not small order"))
    }

    #[test]
    fn inv8_is_the_inverse_of_8() {
        assert_eq!(Scalar::from_bytes_mod_order(INV8) * Scalar::from(8u8), Scalar::ONE);
    }

    #[test]
    fn backend_matches_rfc7748_reference() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        for _ in 0..64 {
            let mut k = [0u8; 32];
            let mut u = [0u8; 32];
            rng.fill_bytes(&mut k);
            rng.fill_bytes(&mut u); // includes the ignored top bit and twist points
            assert_eq!(x25519(&k, &u), dalek::x25519(&k, &u));
            assert_eq!(x25519_base(&k), dalek::x25519_base(&k));
        }
        // RFC 7748 §5.2 first test vector.
        let k = hex::decode("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4")
            .unwrap();
        let u = hex::decode("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c")
            .unwrap();
        let out = x25519(&k.try_into().unwrap(), &u.try_into().unwrap()).unwrap();
        assert_eq!(
            hex::encode(out),
            "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552"
        );
    }

    #[test]
    fn chain_equals_reference_chain_on_both_paths() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        for _ in 0..16 {
            let mut scalars = [[0u8; 32]; 4];
            for s in &mut scalars {
                rng.fill_bytes(s);
            }
            let mut node = [0u8; 32];
            rng.fill_bytes(&mut node);
            let public = x25519_base(&node);

            let mut chain = ScalarChain::new(&scalars[0]);
            for b in &scalars[1..] {
                chain.blind(b);
            }
            let expected_alpha = chain_reference(&scalars, BASE_U);
            let expected_secret = chain_reference(&scalars, public);
            assert_eq!(chain.alpha(), expected_alpha);
            assert_eq!(chain.shared_secret(&public), Some(expected_secret));
            // The fallback agrees with the fast path.
            assert_eq!(MontgomeryPoint::mul_base(&chain.product).0, expected_alpha);
            assert_eq!(slow_mul(&chain.product, &public), Some(expected_secret));
        }
    }

    #[test]
    fn torsioned_public_keys_give_the_reference_secret() {
        // A valid key plus a point of order 8: the clamped chain ignores the torsion, and so
        // must the mod-ℓ shortcut.
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let mut node = [0u8; 32];
        rng.fill_bytes(&mut node);
        let base_point = MontgomeryPoint(x25519_base(&node)).to_edwards(0).unwrap();
        let torsion = curve25519_dalek::constants::EIGHT_TORSION[1];
        let public = (base_point + torsion).to_montgomery().0;
        assert!(is_valid_public_point(&public).is_ok());
        let mut x = [0u8; 32];
        let mut b = [0u8; 32];
        rng.fill_bytes(&mut x);
        rng.fill_bytes(&mut b);
        let mut chain = ScalarChain::new(&x);
        chain.blind(&b);
        assert_eq!(chain.shared_secret(&public), Some(chain_reference(&[x, b], public)));
    }

    #[test]
    fn validation_rejects_bad_points() {
        assert_eq!(is_valid_public_point(&[0; 32]), Err(crate::KeyError::SmallOrder));
        let mut one = [0u8; 32];
        one[0] = 1;
        assert_eq!(is_valid_public_point(&one), Err(crate::KeyError::SmallOrder));
        let mut high = x25519_base(&[7; 32]);
        high[31] |= 0x80;
        assert_eq!(is_valid_public_point(&high), Err(crate::KeyError::NonCanonical));
        let mut p = [0xffu8; 32];
        p[0] = 0xed;
        p[31] = 0x7f;
        assert_eq!(is_valid_public_point(&p), Err(crate::KeyError::NonCanonical));
        // u = 2 is on the twist.
        let mut two = [0u8; 32];
        two[0] = 2;
        assert_eq!(is_valid_public_point(&two), Err(crate::KeyError::NotOnCurve));
    }
}
