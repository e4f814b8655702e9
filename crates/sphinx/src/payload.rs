//! The layers of δ: one per hop keyed by its shared secret, and one keyed by a SURB's k̃.

use crate::crypto::lioness::Lioness;
use crate::crypto::symmetric::{aes_ctr, kdf16, kdf32};
use crate::format::PayloadCipher;
use crate::params::PAYLOAD_SIZE;

pub(crate) type Payload = [u8; PAYLOAD_SIZE];

/// Where a layer's key comes from: the labels differ between hop secrets and SURB keys only
/// under LIONESS, which seeds the SURB layer with k̃ itself.
#[derive(Clone, Copy)]
pub(crate) enum LayerKey<'a> {
    /// A hop's shared secret s.
    Hop(&'a [u8; 32]),
    /// A SURB's k̃.
    Surb(&'a [u8; 16]),
}

impl LayerKey<'_> {
    fn seed(&self) -> &[u8] {
        match self {
            Self::Hop(s) => *s,
            Self::Surb(k) => *k,
        }
    }

    fn lioness(&self) -> Lioness {
        match self {
            Self::Hop(s) => Lioness::new(&*kdf32(b"payload_enc_key", *s)),
            Self::Surb(k) => Lioness::new(*k),
        }
    }

    fn aes_ctr(&self, payload: &mut Payload) {
        let key = kdf16(b"delta_aes_key", self.seed());
        let iv = kdf16(b"delta_iv", self.seed());
        aes_ctr(&key, &iv, payload);
    }
}

impl PayloadCipher {
    /// Adds a layer (the sender for each hop, the exit for a SURB's k̃).
    pub(crate) fn wrap(self, key: LayerKey<'_>, payload: &mut Payload) {
        match self {
            Self::AesCtr => key.aes_ctr(payload),
            Self::Lioness => key.lioness().encrypt(payload),
        }
    }

    /// Removes a layer (each hop, and the initiator for k̃).
    pub(crate) fn unwrap(self, key: LayerKey<'_>, payload: &mut Payload) {
        match self {
            Self::AesCtr => key.aes_ctr(payload),
            Self::Lioness => key.lioness().decrypt(payload),
        }
    }
}
