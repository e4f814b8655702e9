//! X25519 through AWS-LC's assembly implementation.
//!
//! This is the crate's only `unsafe`. It exists for a measured gain: on the 2-core CI machine
//! x25519-dalek takes 61–63 µs per variable-base multiplication, AWS-LC's `X25519` 28 µs, and its
//! safe wrapper `aws_lc_rs::agreement` 37 µs (it allocates an `EVP_PKEY` per call). Every hop does
//! two such multiplications, so this is the difference between ~1.0× and ~2× the baseline.
#![allow(unsafe_code)]

/// RFC 7748 X25519(k, u). Returns `None` when the result is all zero (small-order `u`).
pub(super) fn x25519(k: &[u8; 32], u: &[u8; 32]) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    // SAFETY: the three pointers come from live 32-byte arrays, which is exactly what
    // `X25519(uint8_t out[32], const uint8_t private_key[32], const uint8_t peer_public[32])`
    // reads and writes; the function keeps no pointer after it returns and is thread-safe.
    let ok = unsafe { aws_lc_sys::X25519(out.as_mut_ptr(), k.as_ptr(), u.as_ptr()) };
    (ok == 1).then_some(out)
}

/// RFC 7748 X25519(k, 9).
pub(super) fn x25519_base(k: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    // SAFETY: as above; `X25519_public_from_private(uint8_t out[32], const uint8_t private[32])`.
    unsafe { aws_lc_sys::X25519_public_from_private(out.as_mut_ptr(), k.as_ptr()) };
    out
}
