//! LIONESS wide-block cipher as LIP-183 instantiates it: AES-128-CTR as the stream cipher and
//! SHA-256 as the keyed hash, with a 32-byte left half.
//!
//! Unlike a stream cipher, a change to any bit of the block garbles all of it, so a hop cannot
//! tag a payload and recognise the tag later on the path.

use zeroize::Zeroizing;

use super::symmetric::{aes_ctr, sha256};

const LEFT: usize = 32;
const ROUND_LABELS: [&[u8]; 4] =
    [b"lioness_key1", b"lioness_key2", b"lioness_key3", b"lioness_key4"];

/// The four round keys derived from one seed.
pub(crate) struct Lioness {
    round_keys: [Zeroizing<[u8; 32]>; 4],
}

impl Lioness {
    /// K_j = SHA-256("lioness_key{j}" ‖ seed).
    pub(crate) fn new(seed: &[u8]) -> Self {
        Self { round_keys: ROUND_LABELS.map(|label| Zeroizing::new(sha256(&[label, seed]))) }
    }

    /// Encrypts `block` in place. The block must be longer than 32 bytes.
    pub(crate) fn encrypt(&self, block: &mut [u8]) {
        let (left, right) = split(block);
        stream_round(&self.round_keys[0], left, right);
        hash_round(&self.round_keys[1], left, right);
        stream_round(&self.round_keys[2], left, right);
        hash_round(&self.round_keys[3], left, right);
    }

    /// Decrypts `block` in place: the rounds of [`Self::encrypt`] in reverse.
    pub(crate) fn decrypt(&self, block: &mut [u8]) {
        let (left, right) = split(block);
        hash_round(&self.round_keys[3], left, right);
        stream_round(&self.round_keys[2], left, right);
        hash_round(&self.round_keys[1], left, right);
        stream_round(&self.round_keys[0], left, right);
    }
}

fn split(block: &mut [u8]) -> (&mut [u8; LEFT], &mut [u8]) {
    let (left, right) =
        block.split_first_chunk_mut::<LEFT>().expect("LIONESS block longer than 32 bytes");
    (left, right)
}

/// R ^= S(K ⊕ L), where S keys AES-128-CTR with the first half and starts the counter at the second.
fn stream_round(key: &[u8; 32], left: &[u8; LEFT], right: &mut [u8]) {
    let mut k = Zeroizing::new([0u8; 32]);
    for (out, (a, b)) in k.iter_mut().zip(key.iter().zip(left)) {
        *out = a ^ b;
    }
    let (aes_key, iv) = k.split_at(16);
    aes_ctr(aes_key.try_into().expect("16 bytes"), iv.try_into().expect("16 bytes"), right);
}

/// L ^= SHA-256(K ‖ R).
fn hash_round(key: &[u8; 32], left: &mut [u8; LEFT], right: &[u8]) {
    let h = sha256(&[key, right]);
    for (l, h) in left.iter_mut().zip(h) {
        *l ^= h;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decrypt_inverts_encrypt_and_any_flip_garbles_the_block() {
        let cipher = Lioness::new(&[5u8; 32]);
        let plain: Vec<u8> = (0..3984u32).map(|i| (i * 31 + 7) as u8).collect();
        let mut block = plain.clone();
        cipher.encrypt(&mut block);
        assert_ne!(block, plain);
        let mut flipped = block.clone();
        cipher.decrypt(&mut block);
        assert_eq!(block, plain);

        flipped[2000] ^= 1;
        cipher.decrypt(&mut flipped);
        // Both halves change, not just the flipped bit.
        assert_ne!(flipped[..16], plain[..16]);
        assert!(flipped.iter().zip(&plain).filter(|(a, b)| a != b).count() > 3900);
    }
}
