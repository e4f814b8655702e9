//! Elligator 2 on Curve25519 (Bernstein, Hamburg, Krasnova and Lange, "Elligator: elliptic-curve
//! points indistinguishable from uniform random strings", CCS 2013), for the ephemeral keys of
//! opening frames.
//!
//! An X25519 public key is a u-coordinate on the curve, in its prime-order subgroup: random
//! bytes are that about one time in sixteen, so an exit that reads every frame could pick out
//! the frames that open streams. The opener therefore adds a random point of small order to
//! its key (the receiver's clamped scalar, a multiple of eight, removes it again), keeps only
//! keys that have a representative (about half), and writes the representative `r` with its two
//! free top bits random. Every 254-bit `r` decodes to a point, so a frame's `E` field carries no
//! test an observer can apply.
//!
//! The map, with A = 486662, p = 2^255 - 19 and the non-square 2:
//! - decode: w = -A / (1 + 2 r^2); u = w if w^3 + A w^2 + w is a square, else u = -w - A;
//! - encode u (u != 0, u != -A): r^2 = -u / (2 (u + A)) or r^2 = -(u + A) / (2 u), chosen at
//!   random: each stands for one of the two points with that u, and X25519 reads u alone, so
//!   both decode to the same key. A key has a representative if and only if -2 u (u + A) is a
//!   square. Of the two roots, the one at most (p - 1) / 2 is written.
//!
//! The arithmetic is on public values only (the key is public, and so is its representative
//! once written), so it need not run in constant time. It is a plain four-limb field; the
//! tests check it against `num-bigint`.

/// An element of GF(2^255 - 19): four little-endian 64-bit limbs, always below p.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fe([u64; 4]);

const P: [u64; 4] = [0xffff_ffff_ffff_ffed, u64::MAX, u64::MAX, 0x7fff_ffff_ffff_ffff];
/// p - 2: the inverse's exponent.
const INV_EXP: [u64; 4] = [0xffff_ffff_ffff_ffeb, u64::MAX, u64::MAX, 0x7fff_ffff_ffff_ffff];
/// (p - 1) / 2 = 2^254 - 10: the Euler criterion's exponent, and the largest root written.
const HALF: [u64; 4] = [0xffff_ffff_ffff_fff6, u64::MAX, u64::MAX, 0x3fff_ffff_ffff_ffff];
/// (p + 3) / 8 = 2^252 - 2: a square's root candidate (p = 5 mod 8).
const ROOT_EXP: [u64; 4] = [0xffff_ffff_ffff_fffe, u64::MAX, u64::MAX, 0x0fff_ffff_ffff_ffff];
/// (p - 1) / 4 = 2^253 - 5: 2 to it is a square root of -1.
const SQRT_M1_EXP: [u64; 4] = [0xffff_ffff_ffff_fffb, u64::MAX, u64::MAX, 0x1fff_ffff_ffff_ffff];
const A: Fe = Fe([486_662, 0, 0, 0]);

/// `x < y` for little-endian limbs.
fn less(x: &[u64; 4], y: &[u64; 4]) -> bool {
    for i in (0..4).rev() {
        if x[i] != y[i] {
            return x[i] < y[i];
        }
    }
    false
}

/// `x - y` and whether it borrowed.
fn sub_limbs(x: &[u64; 4], y: &[u64; 4]) -> ([u64; 4], bool) {
    let mut out = [0u64; 4];
    let mut borrow = false;
    for i in 0..4 {
        let (d, b1) = x[i].overflowing_sub(y[i]);
        let (d, b2) = d.overflowing_sub(u64::from(borrow));
        out[i] = d;
        borrow = b1 || b2;
    }
    (out, borrow)
}

impl Fe {
    const ZERO: Self = Self([0; 4]);
    const ONE: Self = Self([1, 0, 0, 0]);

    fn small(x: u64) -> Self {
        Self([x, 0, 0, 0])
    }

    /// Any 256-bit value, reduced.
    fn from_limbs(mut x: [u64; 4]) -> Self {
        // 2^255 = 19: fold the top bit, then one subtraction of p at most is left.
        let top = x[3] >> 63;
        x[3] &= 0x7fff_ffff_ffff_ffff;
        let mut carry = u128::from(top * 19);
        for limb in &mut x {
            let acc = u128::from(*limb) + carry;
            *limb = acc as u64;
            carry = acc >> 64;
        }
        if !less(&x, &P) {
            x = sub_limbs(&x, &P).0;
        }
        Self(x)
    }

    fn from_bytes(bytes: &[u8; 32]) -> Self {
        let mut x = [0u64; 4];
        for (limb, chunk) in x.iter_mut().zip(bytes.chunks_exact(8)) {
            *limb = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        }
        Self::from_limbs(x)
    }

    fn to_bytes(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (chunk, limb) in out.chunks_exact_mut(8).zip(self.0) {
            chunk.copy_from_slice(&limb.to_le_bytes());
        }
        out
    }

    fn add(self, other: Self) -> Self {
        // Both below p < 2^255: the sum fits in 256 bits.
        let mut out = [0u64; 4];
        let mut carry = 0u128;
        for (i, limb) in out.iter_mut().enumerate() {
            let acc = u128::from(self.0[i]) + u128::from(other.0[i]) + carry;
            *limb = acc as u64;
            carry = acc >> 64;
        }
        Self::from_limbs(out)
    }

    fn neg(self) -> Self {
        if self == Self::ZERO { self } else { Self(sub_limbs(&P, &self.0).0) }
    }

    fn mul(self, other: Self) -> Self {
        let mut wide = [0u64; 8];
        for i in 0..4 {
            let mut carry = 0u128;
            for j in 0..4 {
                let acc = u128::from(self.0[i]) * u128::from(other.0[j])
                    + u128::from(wide[i + j])
                    + carry;
                wide[i + j] = acc as u64;
                carry = acc >> 64;
            }
            wide[i + 4] = carry as u64;
        }
        // 2^256 = 38: fold the high half into the low, then what carries out of it.
        let mut low = [0u64; 4];
        let mut carry = 0u128;
        for i in 0..4 {
            let acc = u128::from(wide[i]) + 38 * u128::from(wide[i + 4]) + carry;
            low[i] = acc as u64;
            carry = acc >> 64;
        }
        while carry != 0 {
            let mut fold = carry * 38;
            for limb in &mut low {
                let acc = u128::from(*limb) + fold;
                *limb = acc as u64;
                fold = acc >> 64;
            }
            carry = fold;
        }
        Self::from_limbs(low)
    }

    fn square(self) -> Self {
        self.mul(self)
    }

    fn pow(self, exponent: &[u64; 4]) -> Self {
        let mut out = Self::ONE;
        for i in (0..256).rev() {
            out = out.square();
            if (exponent[i / 64] >> (i % 64)) & 1 == 1 {
                out = out.mul(self);
            }
        }
        out
    }

    fn inv(self) -> Self {
        self.pow(&INV_EXP)
    }

    fn is_square(self) -> bool {
        let e = self.pow(&HALF);
        e == Self::ZERO || e == Self::ONE
    }

    /// The root at most (p - 1) / 2, if `self` is a square.
    fn sqrt(self) -> Option<Self> {
        let mut r = self.pow(&ROOT_EXP);
        let square = r.square();
        if square != self {
            if square != self.neg() {
                return None;
            }
            r = r.mul(Self::small(2).pow(&SQRT_M1_EXP));
        }
        Some(if less(&HALF, &r.0) { r.neg() } else { r })
    }

    /// u^3 + A u^2 + u: a square if and only if u is on the curve (not its twist).
    fn curve(self) -> Self {
        let u2 = self.square();
        u2.mul(self).add(A.mul(u2)).add(self)
    }
}

/// The representative of the point with u-coordinate `u` (32 bytes, little-endian, below p),
/// through the root `branch` chooses, with its top two bits set to `top` (`0..4`); `None` if
/// `u` has none, or is not on the curve (a point of its twist would decode to another u).
pub(crate) fn representative(u: &[u8; 32], branch: bool, top: u8) -> Option<[u8; 32]> {
    let u = Fe::from_bytes(u);
    let u_plus_a = u.add(A);
    // Half of all keys have no representative: find out with one exponentiation.
    let two = Fe::small(2);
    if u == Fe::ZERO || u_plus_a == Fe::ZERO || !two.mul(u).mul(u_plus_a).neg().is_square() {
        return None;
    }
    if !u.curve().is_square() {
        return None;
    }
    let (num, den) =
        if branch { (u_plus_a.neg(), two.mul(u)) } else { (u.neg(), two.mul(u_plus_a)) };
    let r = num.mul(den.inv()).sqrt()?;
    let mut out = r.to_bytes();
    out[31] |= (top & 0b11) << 6;
    Some(out)
}

/// The u-coordinate (32 bytes, little-endian, below p) that the representative `r` stands
/// for; its top two bits are ignored.
pub(crate) fn point(r: &[u8; 32]) -> [u8; 32] {
    let mut r = *r;
    r[31] &= 0x3f;
    let r = Fe::from_bytes(&r);
    // 1 + 2 r^2 is never 0: -1/2 is not a square.
    let w = A.mul(Fe::ONE.add(Fe::small(2).mul(r.square())).inv()).neg();
    let u = if w.curve().is_square() { w } else { w.add(A).neg() };
    u.to_bytes()
}

#[cfg(test)]
mod tests {
    use num_bigint::BigUint;
    use rand::{Rng as _, SeedableRng};

    use super::*;

    fn big(x: Fe) -> BigUint {
        BigUint::from_bytes_le(&x.to_bytes())
    }

    fn p() -> BigUint {
        (BigUint::from(1u8) << 255u32) - 19u32
    }

    /// Values that stress the reductions: near 0, near p, near 2^255 and 2^256, and random.
    fn samples() -> Vec<[u8; 32]> {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(5);
        let mut out = vec![[0u8; 32], [0xff; 32]];
        for k in [0u64, 1, 18, 19, 20, 37, 38, 39] {
            for base in [
                BigUint::ZERO,
                p(),
                BigUint::from(1u8) << 255u32,
                (BigUint::from(1u8) << 256u32) - 1u32,
            ] {
                let x = (base + k) % (BigUint::from(1u8) << 256u32);
                let mut bytes = [0u8; 32];
                let le = x.to_bytes_le();
                bytes[..le.len()].copy_from_slice(&le);
                out.push(bytes);
            }
        }
        for _ in 0..200 {
            let mut bytes = [0u8; 32];
            rng.fill_bytes(&mut bytes);
            out.push(bytes);
        }
        out
    }

    #[test]
    fn the_field_agrees_with_num_bigint() {
        let p = p();
        let values = samples();
        for (i, a) in values.iter().enumerate() {
            let (x, xb) = (Fe::from_bytes(a), BigUint::from_bytes_le(a) % &p);
            assert_eq!(big(x), xb, "reduce {i}");
            let b = &values[(i * 7 + 3) % values.len()];
            let (y, yb) = (Fe::from_bytes(b), BigUint::from_bytes_le(b) % &p);
            assert_eq!(big(x.mul(y)), (&xb * &yb) % &p, "mul {i}");
            assert_eq!(big(x.add(y)), (&xb + &yb) % &p, "add {i}");
            assert_eq!(big(x.add(y.neg())), (&xb + &p - &yb) % &p, "neg {i}");
            assert_eq!(big(x.inv()), xb.modpow(&(&p - 2u32), &p), "inv {i}");
            let euler = xb.modpow(&((&p - 1u32) >> 1u32), &p);
            assert_eq!(x.is_square(), euler <= BigUint::from(1u8), "is_square {i}");
            match x.sqrt() {
                Some(r) => {
                    assert_eq!(big(r.square()), xb, "sqrt {i}");
                    assert!(big(r) <= (&p - 1u32) >> 1u32, "the smaller root {i}");
                }
                None => assert!(!x.is_square(), "a square without a root {i}"),
            }
        }
        assert_eq!(Fe::small(2).pow(&SQRT_M1_EXP).square(), Fe::ONE.neg());
        assert!(!Fe::small(2).is_square(), "2 is the non-square of the map");
    }

    #[test]
    fn representatives_decode_to_their_point_and_stay_in_range() {
        let (mut found, mut on_curve) = (0, 0);
        for (i, bytes) in samples().iter().enumerate() {
            let u = Fe::from_bytes(bytes).to_bytes();
            if !Fe::from_bytes(&u).curve().is_square() {
                assert_eq!(representative(&u, false, 0), None, "a point of the twist");
                continue;
            }
            on_curve += 1;
            for branch in [false, true] {
                let top = (i % 4) as u8;
                let Some(r) = representative(&u, branch, top) else { continue };
                found += 1;
                assert_eq!(point(&r), u, "sample {i}, branch {branch}");
                let mut low = r;
                low[31] &= 0x3f;
                assert!(!less(&HALF, &Fe::from_bytes(&low).0));
                assert_eq!(r[31] >> 6, top);
            }
        }
        // About half of the points have representatives, through both roots.
        assert!(on_curve > 80, "{on_curve} samples on the curve");
        assert!((on_curve / 2..=on_curve * 3 / 2).contains(&found), "{found} of {on_curve}");
    }
}
