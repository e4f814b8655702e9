//! Hash, KDF, MAC and AES-128-CTR exactly as LIBP2P-MIX §8.2 uses them.

use aes::Aes128;
use ctr::cipher::{KeyIvInit, StreamCipher};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

type Aes128Ctr = ctr::Ctr128BE<Aes128>;

/// SHA-256 over the concatenation of `parts`.
pub(crate) fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// KDF(label, seed) = SHA-256(label ‖ seed), all 32 bytes (LIP-183 keys).
pub(crate) fn kdf32(label: &[u8], seed: &[u8]) -> Zeroizing<[u8; 32]> {
    Zeroizing::new(sha256(&[label, seed]))
}

/// The first 16 bytes of KDF(label, seed) (header keys and the v1 payload keys).
pub(crate) fn kdf16(label: &[u8], seed: &[u8]) -> Zeroizing<[u8; 16]> {
    let full = kdf32(label, seed);
    let mut out = Zeroizing::new([0u8; 16]);
    out.copy_from_slice(&full[..16]);
    out
}

/// HMAC-SHA-256 truncated to 16 bytes.
pub(crate) fn mac16(key: &[u8; 16], data: &[u8]) -> [u8; 16] {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    let tag = mac.finalize().into_bytes();
    let mut out = [0u8; 16];
    out.copy_from_slice(&tag[..16]);
    out
}

/// XORs `buf` with the AES-128-CTR keystream whose first counter block is `iv` (a 128-bit
/// big-endian counter).
pub(crate) fn aes_ctr(key: &[u8; 16], iv: &[u8; 16], buf: &mut [u8]) {
    let mut cipher = Aes128Ctr::new(key.into(), iv.into());
    cipher.apply_keystream(buf);
}

/// XORs `buf` with the same keystream started `blocks` 16-byte blocks in.
///
/// The reference adds the block offset to the low 64 bits of the IV without a carry into the
/// high half; we do the same so that even the (≈2⁻⁵⁷) overflow case stays byte-identical.
pub(crate) fn aes_ctr_at(key: &[u8; 16], iv: &[u8; 16], blocks: u64, buf: &mut [u8]) {
    let mut shifted = *iv;
    let (_, low) = shifted.split_at_mut(8);
    let low_value = u64::from_be_bytes(low.try_into().expect("8 bytes")).wrapping_add(blocks);
    low.copy_from_slice(&low_value.to_be_bytes());
    aes_ctr(key, &shifted, buf);
}

#[cfg(test)]
mod tests {
    use super::*;

    // Known answers from the reference's own tests (tests/test_crypto.nim, tests/test_lioness.nim).
    #[test]
    fn reference_known_answers() {
        assert_eq!(
            hex::encode(sha256(&[b"thisisdata"])),
            "b53a20ecf0814267a83be82f941778ffda4b85fbf93a07847539f645ff5f1b9b"
        );
        assert_eq!(hex::encode(*kdf16(b"", b"thisiskey")), "37c9842d37dc404854428a0a3554dcaa");
        assert_eq!(hex::encode(*kdf16(b"", b"")), "e3b0c44298fc1c149afbf4c8996fb924");
        let mut key = [0u8; 16];
        key[..9].copy_from_slice(b"thisiskey");
        // The reference MACs with the raw 9-byte key; HMAC pads keys with zeros, so the
        // zero-extended 16-byte key gives the same tag.
        assert_eq!(hex::encode(mac16(&key, b"thisisdata")), "b075dd302655e085d35e8cef5dfdf101");
        assert_eq!(hex::encode(mac16(&[0; 16], b"")), "b613679a0814d9ec772f95d778c35fc5");
        let seed: Vec<u8> = (0u8..32).collect();
        assert_eq!(
            hex::encode(*kdf32(b"payload_enc_key", &seed)),
            "8628ce30f82298838478ebd2744a6a31ef34a7d6a5a600b8e0c7de533510f85d"
        );
        assert_eq!(
            hex::encode(sha256(&[&seed, b"abc"])),
            "42fd4a8c529fdb402d577c701b291018f0b2c52207f96e2a057483fd349a9868"
        );
    }

    #[test]
    fn lip183_stream_known_answer() {
        // aesCtrStream(key = 00..1f, data = 00..2f): AES key = k[0..16], IV = k[16..32].
        let k: Vec<u8> = (0u8..32).collect();
        let mut data: Vec<u8> = (0u8..48).collect();
        aes_ctr(k[..16].try_into().unwrap(), k[16..].try_into().unwrap(), &mut data);
        assert_eq!(
            hex::encode(data),
            "07ffed77e5d005699807e41a82999c9c82d3d717cc1994155e60677997e4c017ea001a4411c0de8c4dbfa0078df81355"
        );
    }

    #[test]
    fn offset_keystream_is_a_suffix_of_the_full_one() {
        let (key, iv) = ([7u8; 16], [9u8; 16]);
        let mut full = [0u8; 688];
        aes_ctr(&key, &iv, &mut full);
        let mut tail = [0u8; 224];
        aes_ctr_at(&key, &iv, 29, &mut tail);
        assert_eq!(&full[464..], &tail[..]);
    }
}
