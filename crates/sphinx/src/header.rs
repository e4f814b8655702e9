//! Sender-side header construction (LIBP2P-MIX §8.5.2): per-hop secrets, filler, β and γ.

use zeroize::Zeroizing;

use crate::address::AddressBlock;
use crate::crypto::curve::ScalarChain;
use crate::crypto::symmetric::{aes_ctr, aes_ctr_at, kdf16, mac16, sha256};
use crate::error::BuildError;
use crate::keys::{EphemeralSecret, NodePublicKey};
use crate::params::{
    ADDRESS_SIZE, ALPHA_SIZE, BETA_SIZE, DELAY_SIZE, EXTENDED_BETA_SIZE, GAMMA_SIZE, HEADER_SIZE,
    KAPPA, MAX_PATH_LEN, ROUTING_BLOCK_SIZE, SURB_ID_SIZE,
};

/// α_i and s_i for every hop of one packet.
pub(crate) struct PathSecrets {
    alphas: [[u8; 32]; MAX_PATH_LEN],
    secrets: Zeroizing<[[u8; 32]; MAX_PATH_LEN]>,
    len: usize,
}

impl PathSecrets {
    /// α_i = u([x·b_0⋯b_{i−1}]G), s_i = u([x·b_0⋯b_{i−1}]Y_i), b_i = SHA-256(α_i ‖ s_i).
    pub(crate) fn derive<'a>(
        ephemeral: &EphemeralSecret,
        keys: impl ExactSizeIterator<Item = &'a NodePublicKey>,
    ) -> Result<Self, BuildError> {
        let mut out = Self {
            alphas: [[0; 32]; MAX_PATH_LEN],
            secrets: Zeroizing::new([[0; 32]; MAX_PATH_LEN]),
            len: keys.len(),
        };
        let mut chain = ScalarChain::new(ephemeral.as_scalar());
        for (i, key) in keys.enumerate() {
            let alpha = chain.alpha();
            let secret = chain.shared_secret(key.as_bytes()).ok_or(BuildError::DegenerateSecret)?;
            chain.blind(&sha256(&[&alpha, &secret]));
            out.alphas[i] = alpha;
            out.secrets[i] = secret;
        }
        Ok(out)
    }

    pub(crate) fn secrets(&self) -> &[[u8; 32]] {
        &self.secrets[..self.len]
    }

    #[cfg_attr(not(feature = "vectors"), allow(dead_code, reason = "read by the vector verifier"))]
    pub(crate) fn alphas(&self) -> &[[u8; 32]] {
        &self.alphas[..self.len]
    }
}

/// The header keys a hop derives from its shared secret.
#[derive(Default)]
pub(crate) struct RoutingKeys {
    pub(crate) aes: Zeroizing<[u8; 16]>,
    pub(crate) iv: Zeroizing<[u8; 16]>,
}

impl RoutingKeys {
    pub(crate) fn derive(secret: &[u8; 32]) -> Self {
        Self { aes: kdf16(b"aes_key", secret), iv: kdf16(b"iv", secret) }
    }
}

pub(crate) fn mac_key(secret: &[u8; 32]) -> Zeroizing<[u8; 16]> {
    kdf16(b"mac_key", secret)
}

/// Writes α_0 ‖ β_0 ‖ γ_0. `next(i)` is what hop `i` learns of the next one: hop `i + 1`'s
/// address and hop `i`'s delay. The final routing block holds `final_address` and
/// `final_id`: the destination and zero for a forward packet, zero and the SURB id for a SURB.
pub(crate) fn write<'r>(
    path: &PathSecrets,
    next: impl Fn(usize) -> (&'r AddressBlock, u16),
    final_address: &AddressBlock,
    final_id: &[u8; SURB_ID_SIZE],
    header: &mut [u8; HEADER_SIZE],
) {
    let len = path.len;
    let keys: [RoutingKeys; MAX_PATH_LEN] = core::array::from_fn(|i| {
        if i < len { RoutingKeys::derive(&path.secrets[i]) } else { RoutingKeys::default() }
    });

    // Φ_i = (Φ_{i−1} ‖ 0_{(t+1)κ}) ⊕ the last 112·i bytes of hop i−1's 688-byte keystream: what
    // hop i−1 will append to β when it shifts its routing block out.
    let mut filler = [0u8; (MAX_PATH_LEN - 1) * ROUTING_BLOCK_SIZE];
    for i in 1..len {
        let filler_len = i * ROUTING_BLOCK_SIZE;
        let offset_blocks = ((EXTENDED_BETA_SIZE - filler_len) / KAPPA) as u64;
        aes_ctr_at(&keys[i - 1].aes, &keys[i - 1].iv, offset_blocks, &mut filler[..filler_len]);
    }

    let (alpha, rest) = header.split_first_chunk_mut::<ALPHA_SIZE>().expect("fixed layout");
    let (beta, gamma) = rest.split_first_chunk_mut::<BETA_SIZE>().expect("fixed layout");
    let gamma: &mut [u8; GAMMA_SIZE] = gamma.try_into().expect("fixed layout");

    // The final block: address ‖ zero delay ‖ id ‖ zero run, then the filler.
    let plain_len = EXTENDED_BETA_SIZE - len * ROUTING_BLOCK_SIZE;
    beta.fill(0);
    beta[..ADDRESS_SIZE].copy_from_slice(final_address.as_bytes());
    beta[ADDRESS_SIZE + DELAY_SIZE..ROUTING_BLOCK_SIZE].copy_from_slice(final_id);
    let last = &keys[len - 1];
    aes_ctr(&last.aes, &last.iv, &mut beta[..plain_len]);
    beta[plain_len..].copy_from_slice(&filler[..(len - 1) * ROUTING_BLOCK_SIZE]);
    let mut next_gamma = mac16(&mac_key(&path.secrets[len - 1]), beta);

    for i in (0..len - 1).rev() {
        beta.copy_within(..BETA_SIZE - ROUTING_BLOCK_SIZE, ROUTING_BLOCK_SIZE);
        let (address, delay_ms) = next(i);
        beta[..ADDRESS_SIZE].copy_from_slice(address.as_bytes());
        beta[ADDRESS_SIZE..ADDRESS_SIZE + DELAY_SIZE].copy_from_slice(&delay_ms.to_be_bytes());
        beta[ADDRESS_SIZE + DELAY_SIZE..ROUTING_BLOCK_SIZE].copy_from_slice(&next_gamma);
        aes_ctr(&keys[i].aes, &keys[i].iv, beta);
        next_gamma = mac16(&mac_key(&path.secrets[i]), beta);
    }
    *alpha = path.alphas[0];
    *gamma = next_gamma;
}
