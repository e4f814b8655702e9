//! The per-network choices every node of a mixnet must share.

use crate::params::{DEFAULT_PATH_LEN, MAX_PATH_LEN, MIN_PATH_LEN};

/// How δ is encrypted at each layer. The header is the same under both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PayloadCipher {
    /// AES-128-CTR per layer: LIBP2P-MIX as written up to early 2026. Malleable: a flipped bit
    /// of δ outside the integrity prefix reaches the exit as the same flipped bit of m.
    AesCtr,
    /// LIONESS per layer (LIP-183). Any change to δ garbles the whole block, so tagging attacks
    /// fail at the exit's integrity check.
    #[default]
    Lioness,
}

/// How a message is padded into the 3968-byte m.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Padding {
    /// `BE16(padLen) ‖ 0^padLen ‖ X ‖ BE32(seqNo)`: the reference up to nim-libp2p-mix 48c77ad.
    SeqNo,
    /// `BE16(padLen) ‖ 0^padLen ‖ X`: the newest reference.
    #[default]
    Plain,
}

/// The wire format of one mixnet: payload cipher, inner padding and the longest path accepted.
///
/// [`WireFormat::default`] is [`WireFormat::LIP_183`], the current specification;
/// [`WireFormat::LIBP2P_MIX_V1`] talks to nodes of the earlier generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WireFormat {
    cipher: PayloadCipher,
    padding: Padding,
    max_path_len: usize,
}

impl WireFormat {
    /// AES-CTR payload with sequence-number padding (spec text of Oct 2025 – Apr 2026,
    /// nim-libp2p-mix ≤ 48c77ad).
    pub const LIBP2P_MIX_V1: Self = Self::new(PayloadCipher::AesCtr, Padding::SeqNo);
    /// LIONESS payload with plain padding: LIP-183, and the newest nim-libp2p-mix.
    pub const LIP_183: Self = Self::new(PayloadCipher::Lioness, Padding::Plain);
    /// The former name of [`Self::LIP_183`].
    #[deprecated(note = "named by what speaks it now: use WireFormat::LIP_183")]
    pub const LIBP2P_MIX_V2: Self = Self::LIP_183;

    /// Accepts paths of up to [`MAX_PATH_LEN`] hops; see [`Self::with_max_path_len`].
    pub const fn new(cipher: PayloadCipher, padding: Padding) -> Self {
        Self { cipher, padding, max_path_len: MAX_PATH_LEN }
    }

    /// The longest path this node builds or accepts, in `3..=5` (clamped into that range).
    ///
    /// A hop recognises the exit by a run of zero bytes whose length depends on the path
    /// length; accepting up to 5 checks the shortest run (16 bytes), which an intermediate hop
    /// of any shorter path fails with probability 1 − 2⁻¹²⁸, so the default loses nothing
    /// against senders that use the reference's fixed L = 3. Senders that talk to reference
    /// nodes must still build paths of exactly [`DEFAULT_PATH_LEN`] hops.
    pub const fn with_max_path_len(mut self, max: usize) -> Self {
        self.max_path_len = if max < MIN_PATH_LEN {
            MIN_PATH_LEN
        } else if max > MAX_PATH_LEN {
            MAX_PATH_LEN
        } else {
            max
        };
        self
    }

    /// The payload cipher.
    pub const fn cipher(&self) -> PayloadCipher {
        self.cipher
    }

    /// The padding inside m.
    pub const fn padding(&self) -> Padding {
        self.padding
    }

    /// The longest path built or accepted.
    pub const fn max_path_len(&self) -> usize {
        self.max_path_len
    }
}

impl Default for WireFormat {
    fn default() -> Self {
        Self::LIP_183
    }
}

const _: () = assert!(DEFAULT_PATH_LEN >= MIN_PATH_LEN && DEFAULT_PATH_LEN <= MAX_PATH_LEN);
