//! Spam protection: a proof that a packet cost its sender something, checked before the node
//! spends work on it.
//!
//! The Mix Protocol leaves the mechanism pluggable ([`SpamProtection`]) and names two places
//! for the proof ([`Placement`]):
//! - [`Placement::Exit`]: the sender appends a proof to the message body, inside the
//!   encrypted payload; only the exit sees and checks it. It guards the exit (and the
//!   destinations behind it) against abuse, and costs nothing on the wire.
//! - [`Placement::PerHop`]: every frame is the 4608-byte packet followed by a proof bound to
//!   those bytes. Each hop checks it before any Sphinx work (so junk costs a hash, not a
//!   Diffie-Hellman), and makes a fresh proof for the packet it forwards. Every node of a
//!   network must agree on the proof's length.
//!
//! [`ProofOfWork`] follows the PoW appendix of the first Mix draft and its reference code:
//! `SHA-256(binding ‖ timestamp ‖ nonce)` must start with `difficulty` zero bits, the timestamp
//! is Unix seconds as 8 bytes little-endian, the nonce 4 bytes little-endian, and proofs older
//! than the window (5 minutes) are refused. A proof seen before is refused too, for as long as
//! its timestamp is inside the window; the set that remembers them is bounded.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// Where the proof travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Appended to the message body; checked by the exit.
    Exit,
    /// Appended to every frame after the packet; checked and renewed at every hop.
    PerHop,
}

/// Why a proof was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// The proof has the wrong length (or the message is too short to carry one).
    #[error("malformed proof")]
    Malformed,
    /// The proof's timestamp is older than the window.
    #[error("stale proof")]
    Stale,
    /// The proof's timestamp is ahead of this node's clock by more than the allowed skew.
    #[error("proof from the future")]
    Future,
    /// The proof does not meet the difficulty.
    #[error("insufficient work")]
    Insufficient,
    /// The proof was seen before.
    #[error("replayed proof")]
    Replayed,
    /// No proof could be made (e.g. the nonce space ran out).
    #[error("could not generate a proof")]
    Exhausted,
}

impl ProofError {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Malformed => "proof_malformed",
            Self::Stale => "proof_stale",
            Self::Future => "proof_future",
            Self::Insufficient => "proof_insufficient",
            Self::Replayed => "proof_replayed",
            Self::Exhausted => "proof_exhausted",
        }
    }
}

/// A spam-protection mechanism: proofs bound to some bytes, of a fixed length.
///
/// `unix_secs` is the node's wall clock, passed in so that the mechanism stays free of I/O.
pub trait SpamProtection: Send + fmt::Debug {
    /// The length of every proof.
    fn proof_len(&self) -> usize;

    /// Writes a proof for `binding` into `proof` (exactly [`Self::proof_len`] bytes). `seed`
    /// varies the search so that two proofs for the same bytes differ.
    fn generate(
        &mut self,
        binding: &[u8],
        unix_secs: u64,
        seed: u32,
        proof: &mut [u8],
    ) -> Result<(), ProofError>;

    /// Checks `proof` for `binding` and remembers it, so that it is accepted once.
    fn verify(&mut self, binding: &[u8], proof: &[u8], unix_secs: u64) -> Result<(), ProofError>;
}

/// A mechanism and where its proofs go.
#[derive(Debug)]
pub struct SpamConfig {
    /// Where proofs travel.
    pub placement: Placement,
    /// The mechanism.
    pub protection: Box<dyn SpamProtection>,
}

/// Proof of work: 8-byte timestamp then 4-byte nonce.
pub const POW_PROOF_LEN: usize = 12;

/// Settings of [`ProofOfWork`].
///
/// Every proof carries the Unix second it was made at, in clear to whoever checks it (the
/// spec requires it, for interop). With [`Placement::Exit`] the exit therefore learns when a
/// message was built, to the second, which narrows its sender down to the nodes that sent at
/// that moment; a sender that builds ahead of time or batches its sends blurs it. Per-hop
/// proofs are renewed at every hop and tell each hop only when the previous one forwarded
/// the packet. The anonymity simulator is where the cost is to be measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PowConfig {
    /// Leading zero bits required (the draft recommends 16–18).
    pub difficulty: u32,
    /// How old a proof may be.
    pub window: Duration,
    /// How far ahead of this node's clock a timestamp may be.
    pub max_skew: Duration,
    /// Proofs remembered to refuse replays. When full the oldest is forgotten early (counted
    /// by [`ProofOfWork::forgotten_early`]); at the default difficulty that takes far more work
    /// per second than a sender can spend.
    pub max_remembered: usize,
}

impl Default for PowConfig {
    fn default() -> Self {
        Self {
            difficulty: 18,
            window: Duration::from_secs(300),
            max_skew: Duration::from_secs(30),
            max_remembered: 1 << 20,
        }
    }
}

/// SHA-256 proof of work (see the module documentation).
#[derive(Debug)]
pub struct ProofOfWork {
    config: PowConfig,
    seen: HashSet<[u8; 16]>,
    /// (timestamp, digest prefix) in arrival order, to forget proofs once out of the window.
    order: VecDeque<(u64, [u8; 16])>,
    forgotten_early: u64,
}

impl ProofOfWork {
    /// A prover and verifier with `config`.
    pub fn new(config: PowConfig) -> Self {
        Self { config, seen: HashSet::new(), order: VecDeque::new(), forgotten_early: 0 }
    }

    /// The settings.
    pub fn config(&self) -> &PowConfig {
        &self.config
    }

    /// Proofs forgotten before their window ended because the set was full.
    pub fn forgotten_early(&self) -> u64 {
        self.forgotten_early
    }

    /// Proofs remembered now.
    pub fn remembered(&self) -> usize {
        self.seen.len()
    }

    fn forget_old(&mut self, unix_secs: u64) {
        let window = self.config.window.as_secs();
        while let Some(&(ts, digest)) = self.order.front() {
            if ts.saturating_add(window) >= unix_secs {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&digest);
        }
    }
}

impl Default for ProofOfWork {
    fn default() -> Self {
        Self::new(PowConfig::default())
    }
}

/// Whether `digest` starts with `bits` zero bits.
pub fn leading_zero_bits(digest: &[u8]) -> u32 {
    let mut n = 0;
    for &b in digest {
        if b == 0 {
            n += 8;
        } else {
            return n + b.leading_zeros();
        }
    }
    n
}

/// Finds a nonce for `binding` at `timestamp`, starting the search at `start`. Returns the
/// nonce, or `None` when none of the 2³² works.
pub fn solve(binding: &[u8], timestamp: u64, start: u32, difficulty: u32) -> Option<u32> {
    // The binding is absorbed once; each attempt only hashes the last 12 bytes from there.
    let mut prefix = Sha256::new();
    prefix.update(binding);
    prefix.update(timestamp.to_le_bytes());
    let mut nonce = start;
    loop {
        let mut h = prefix.clone();
        h.update(nonce.to_le_bytes());
        if leading_zero_bits(&h.finalize()) >= difficulty {
            return Some(nonce);
        }
        nonce = nonce.wrapping_add(1);
        if nonce == start {
            return None;
        }
    }
}

fn pow_digest(binding: &[u8], timestamp: u64, nonce: u32) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(binding);
    h.update(timestamp.to_le_bytes());
    h.update(nonce.to_le_bytes());
    h.finalize().into()
}

impl SpamProtection for ProofOfWork {
    fn proof_len(&self) -> usize {
        POW_PROOF_LEN
    }

    fn generate(
        &mut self,
        binding: &[u8],
        unix_secs: u64,
        seed: u32,
        proof: &mut [u8],
    ) -> Result<(), ProofError> {
        if proof.len() != POW_PROOF_LEN {
            return Err(ProofError::Malformed);
        }
        // Should 2³² nonces fail (only at absurd difficulties), an older second within the
        // window gives a fresh search space.
        for back in 0..self.config.window.as_secs().min(4) {
            let ts = unix_secs.saturating_sub(back);
            if let Some(nonce) = solve(binding, ts, seed, self.config.difficulty) {
                proof[..8].copy_from_slice(&ts.to_le_bytes());
                proof[8..].copy_from_slice(&nonce.to_le_bytes());
                return Ok(());
            }
        }
        Err(ProofError::Exhausted)
    }

    fn verify(&mut self, binding: &[u8], proof: &[u8], unix_secs: u64) -> Result<(), ProofError> {
        let (Some(ts), Some(nonce)) = (
            proof.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()),
            proof.get(8..).and_then(|b| <[u8; 4]>::try_from(b).ok()),
        ) else {
            return Err(ProofError::Malformed);
        };
        let (ts, nonce) = (u64::from_le_bytes(ts), u32::from_le_bytes(nonce));
        if ts.saturating_add(self.config.window.as_secs()) < unix_secs {
            return Err(ProofError::Stale);
        }
        if ts > unix_secs.saturating_add(self.config.max_skew.as_secs()) {
            return Err(ProofError::Future);
        }
        let digest = pow_digest(binding, ts, nonce);
        if leading_zero_bits(&digest) < self.config.difficulty {
            return Err(ProofError::Insufficient);
        }
        self.forget_old(unix_secs);
        let key: [u8; 16] = digest[16..].try_into().expect("16 bytes");
        if !self.seen.insert(key) {
            return Err(ProofError::Replayed);
        }
        self.order.push_back((ts, key));
        while self.order.len() > self.config.max_remembered {
            if let Some((_, old)) = self.order.pop_front() {
                self.seen.remove(&old);
                self.forgotten_early += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn pow(difficulty: u32) -> ProofOfWork {
        ProofOfWork::new(PowConfig { difficulty, ..PowConfig::default() })
    }

    fn proof(p: &mut ProofOfWork, binding: &[u8], at: u64, seed: u32) -> [u8; POW_PROOF_LEN] {
        let mut out = [0u8; POW_PROOF_LEN];
        p.generate(binding, at, seed, &mut out).unwrap();
        out
    }

    #[test]
    fn a_proof_is_accepted_once_and_meets_the_difficulty() {
        let mut p = pow(12);
        let proof = proof(&mut p, b"message", NOW, 7);
        assert_eq!(u64::from_le_bytes(proof[..8].try_into().unwrap()), NOW);
        let nonce = u32::from_le_bytes(proof[8..].try_into().unwrap());
        assert!(leading_zero_bits(&pow_digest(b"message", NOW, nonce)) >= 12);
        assert_eq!(p.verify(b"message", &proof, NOW + 10), Ok(()));
        assert_eq!(p.verify(b"message", &proof, NOW + 11), Err(ProofError::Replayed));
    }

    #[test]
    fn invalid_stale_future_and_short_proofs_are_refused() {
        let mut p = pow(12);
        let good = proof(&mut p, b"m", NOW, 0);
        assert_eq!(p.verify(b"other", &good, NOW), Err(ProofError::Insufficient));
        let mut bad = good;
        bad[11] ^= 0x55;
        assert_eq!(p.verify(b"m", &bad, NOW), Err(ProofError::Insufficient));
        assert_eq!(p.verify(b"m", &good, NOW + 301), Err(ProofError::Stale));
        assert_eq!(p.verify(b"m", &good, NOW - 31), Err(ProofError::Future));
        assert_eq!(p.verify(b"m", &good[..11], NOW), Err(ProofError::Malformed));
        assert_eq!(p.verify(b"m", &[], NOW), Err(ProofError::Malformed));
        // Still valid at the edge of the window.
        assert_eq!(p.verify(b"m", &good, NOW + 300), Ok(()));
    }

    #[test]
    fn seeds_give_distinct_proofs_and_memory_is_bounded() {
        let mut p = ProofOfWork::new(PowConfig {
            difficulty: 4,
            max_remembered: 8,
            ..PowConfig::default()
        });
        let a = proof(&mut p, b"m", NOW, 0);
        let b = proof(&mut p, b"m", NOW, 1 << 31);
        assert_ne!(a, b);
        for i in 0..20u32 {
            let pr = proof(&mut p, &i.to_le_bytes(), NOW, 0);
            p.verify(&i.to_le_bytes(), &pr, NOW).unwrap();
        }
        assert_eq!(p.remembered(), 8);
        assert_eq!(p.forgotten_early(), 12);
        // Proofs leave the set once their window has passed.
        p.verify(b"m", &a, NOW + 200).unwrap();
        let later = proof(&mut p, b"n", NOW + 400, 0);
        p.verify(b"n", &later, NOW + 400).unwrap();
        assert_eq!(p.remembered(), 1);
    }

    #[test]
    fn the_format_matches_the_reference_layout() {
        // SHA-256(binding ‖ ts as u64 LE ‖ nonce as u32 LE), checked against a direct hash.
        let mut p = pow(8);
        let pr = proof(&mut p, b"abc", 0x0102_0304_0506_0708, 0);
        let mut whole = b"abc".to_vec();
        whole.extend_from_slice(&pr);
        let digest: [u8; 32] = Sha256::digest(&whole).into();
        assert!(leading_zero_bits(&digest) >= 8);
        assert_eq!(&pr[..8], &[8, 7, 6, 5, 4, 3, 2, 1]);
    }
}
