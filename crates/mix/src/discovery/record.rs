//! The mix record a node publishes about itself, signed with its libp2p identity.
//!
//! It travels as a libp2p signed envelope (domain [`DOMAIN`], payload type [`PAYLOAD_TYPE`]), so
//! the signing key, and hence the PeerId, comes with it. The payload is:
//!
//! ```text
//! version u8 (1 or 2) | flags u8 (bit 0: exit) | seq u64 | valid_from u64 | valid_until u64
//! | mix_key [32] | next_mix_key [32] (all zero: none) | epoch u64 (version 2 only)
//! | n_addrs u8 (1..=8) | n_addrs × (len u16 | multiaddr bytes (≤ 256))
//! ```
//!
//! Version 2 is for nodes that rotate their keys: `mix_key` serves `epoch` and `next_mix_key`
//! the epoch after (see [`crate::core::RotationConfig`]). A version-1 record has one key.
//!
//! integers big-endian, times in Unix seconds. Decoding checks every length and rejects
//! trailing bytes; a record is usable only if its signature verifies, its signer is the peer
//! it is stored for, it is within its validity window, that window ends within
//! [`MAX_RECORD_LIFETIME`] of now, and one of its addresses fits an address block.

use libp2p_core::SignedEnvelope;
use libp2p_identity::{Keypair, PeerId};
use mix_sphinx::NodePublicKey;
use multiaddr::Multiaddr;

use crate::core::{EpochKeys, MixNode};

/// Domain separation string of the signature.
pub const DOMAIN: &str = "libp2p-mix-record";
/// Payload type inside the signed envelope.
pub const PAYLOAD_TYPE: &[u8] = b"/mix/record/1";
const VERSION: u8 = 1;
const VERSION_EPOCHS: u8 = 2;
const MAX_ADDRS: usize = 8;
const MAX_ADDR_LEN: usize = 256;
/// The largest encoded envelope we accept (the payload is at most ~2.2 KB).
pub const MAX_RECORD_SIZE: usize = 4096;
/// The longest a record may still be valid when received, in seconds (one day). A node that
/// vanished stays in others' pools, and its stale addresses in use, until its record runs
/// out; a longer claim is refused.
pub const MAX_RECORD_LIFETIME: u64 = 24 * 3600;
/// How far behind a receiver's clock may run: records are valid from this long before they
/// are made, and may end this long past [`MAX_RECORD_LIFETIME`] from a receiver's now.
pub const CLOCK_SLACK: u64 = 60;

/// The Kademlia key under which `peer`'s record is stored.
pub fn record_key(peer: &PeerId) -> Vec<u8> {
    let mut key = b"/mix/record/".to_vec();
    key.extend_from_slice(&peer.to_bytes());
    key
}

/// What a mix node says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MixRecord {
    /// Addresses to dial, most preferred first.
    pub addrs: Vec<Multiaddr>,
    /// The current X25519 mix key.
    pub mix_key: NodePublicKey,
    /// The key that will replace it at the next rotation, if already chosen.
    pub next_mix_key: Option<NodePublicKey>,
    /// The epoch `mix_key` serves, for a node that rotates its keys.
    pub epoch: Option<u64>,
    /// Whether the node delivers to destinations outside the mixnet.
    pub exit: bool,
    /// Start of validity, Unix seconds.
    pub valid_from: u64,
    /// End of validity, Unix seconds.
    pub valid_until: u64,
    /// Increases with every publication; a newer record replaces an older one.
    pub seq: u64,
}

/// Why a record was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// Not a signed envelope, or too large.
    #[error("not a signed envelope")]
    Envelope,
    /// The signature does not verify, or the envelope is of another type.
    #[error("invalid signature")]
    Signature,
    /// Signed by a key other than the peer's it is stored for.
    #[error("signed by {signer}, not by {expected}")]
    WrongSigner {
        /// The key's PeerId.
        signer: String,
        /// The PeerId the record was stored for.
        expected: String,
    },
    /// The payload does not parse.
    #[error("malformed payload: {0}")]
    Malformed(&'static str),
    /// Outside its validity window.
    #[error("not valid now ({valid_from}..{valid_until}, now {now})")]
    Expired {
        /// Start of validity.
        valid_from: u64,
        /// End of validity.
        valid_until: u64,
        /// The time checked.
        now: u64,
    },
    /// No address fits a Sphinx address block.
    #[error("no address fits an address block")]
    NoUsableAddress,
    /// Valid for longer than [`MAX_RECORD_LIFETIME`] (and [`CLOCK_SLACK`]) from now.
    #[error("valid until {valid_until}, more than a day after now ({now})")]
    TooLong {
        /// End of validity.
        valid_until: u64,
        /// The time checked.
        now: u64,
    },
}

impl RecordError {
    /// A stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Envelope => "envelope",
            Self::Signature => "signature",
            Self::WrongSigner { .. } => "wrong_signer",
            Self::Malformed(_) => "malformed",
            Self::Expired { .. } => "expired",
            Self::NoUsableAddress => "no_usable_address",
            Self::TooLong { .. } => "too_long",
        }
    }
}

impl MixRecord {
    /// The payload bytes (see the module documentation).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.push(if self.epoch.is_some() { VERSION_EPOCHS } else { VERSION });
        out.push(u8::from(self.exit));
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.valid_from.to_be_bytes());
        out.extend_from_slice(&self.valid_until.to_be_bytes());
        out.extend_from_slice(self.mix_key.as_bytes());
        out.extend_from_slice(&self.next_mix_key.map_or([0u8; 32], NodePublicKey::to_bytes));
        if let Some(epoch) = self.epoch {
            out.extend_from_slice(&epoch.to_be_bytes());
        }
        let addrs: Vec<&Multiaddr> = self
            .addrs
            .iter()
            .filter(|a| a.as_ref().len() <= MAX_ADDR_LEN)
            .take(MAX_ADDRS)
            .collect();
        out.push(addrs.len() as u8);
        for addr in addrs {
            out.extend_from_slice(&(addr.as_ref().len() as u16).to_be_bytes());
            out.extend_from_slice(addr.as_ref());
        }
        out
    }

    /// Parses a payload, strictly.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let mut r = Reader(bytes);
        let version = r.u8()?;
        if version != VERSION && version != VERSION_EPOCHS {
            return Err(RecordError::Malformed("unknown version"));
        }
        let flags = r.u8()?;
        if flags & !1 != 0 {
            return Err(RecordError::Malformed("unknown flags"));
        }
        let seq = r.u64()?;
        let valid_from = r.u64()?;
        let valid_until = r.u64()?;
        let mix_key =
            NodePublicKey::from_bytes(r.array()?).map_err(|_| RecordError::Malformed("mix key"))?;
        let next: [u8; 32] = r.array()?;
        let next_mix_key = if next == [0; 32] {
            None
        } else {
            Some(
                NodePublicKey::from_bytes(next)
                    .map_err(|_| RecordError::Malformed("next mix key"))?,
            )
        };
        let epoch = if version == VERSION_EPOCHS {
            if next_mix_key.is_none() {
                return Err(RecordError::Malformed("epoch without a next key"));
            }
            Some(r.u64()?)
        } else {
            None
        };
        let count = usize::from(r.u8()?);
        if count == 0 || count > MAX_ADDRS {
            return Err(RecordError::Malformed("address count"));
        }
        let mut addrs = Vec::with_capacity(count);
        for _ in 0..count {
            let len = usize::from(u16::from_be_bytes(r.array()?));
            if len > MAX_ADDR_LEN {
                return Err(RecordError::Malformed("address length"));
            }
            let addr = Multiaddr::try_from(r.take(len)?.to_vec())
                .map_err(|_| RecordError::Malformed("address"))?;
            addrs.push(addr);
        }
        if !r.0.is_empty() {
            return Err(RecordError::Malformed("trailing bytes"));
        }
        Ok(Self {
            addrs,
            mix_key,
            next_mix_key,
            epoch,
            exit: flags & 1 == 1,
            valid_from,
            valid_until,
            seq,
        })
    }

    /// Signs the record with the node's identity, as a signed envelope.
    pub fn sign(&self, identity: &Keypair) -> Vec<u8> {
        SignedEnvelope::new(identity, DOMAIN.to_owned(), PAYLOAD_TYPE.to_vec(), self.encode())
            .map(SignedEnvelope::into_protobuf_encoding)
            // Signing fails only for key types that cannot sign; mix identities are secp256k1.
            .unwrap_or_default()
    }

    /// Verifies a signed record stored for `peer` at Unix time `now` and returns the record
    /// and the pool entry it describes.
    pub fn verify(bytes: &[u8], peer: &PeerId, now: u64) -> Result<(Self, MixNode), RecordError> {
        if bytes.len() > MAX_RECORD_SIZE {
            return Err(RecordError::Envelope);
        }
        let envelope =
            SignedEnvelope::from_protobuf_encoding(bytes).map_err(|_| RecordError::Envelope)?;
        let (payload, key) = envelope
            .payload_and_signing_key(DOMAIN.to_owned(), PAYLOAD_TYPE)
            .map_err(|_| RecordError::Signature)?;
        let signer = key.to_peer_id();
        if signer != *peer {
            return Err(RecordError::WrongSigner {
                signer: signer.to_base58(),
                expected: peer.to_base58(),
            });
        }
        let record = Self::decode(payload)?;
        if now < record.valid_from || now >= record.valid_until {
            return Err(RecordError::Expired {
                valid_from: record.valid_from,
                valid_until: record.valid_until,
                now,
            });
        }
        // `now < valid_until` here.
        if record.valid_until - now > MAX_RECORD_LIFETIME + CLOCK_SLACK {
            return Err(RecordError::TooLong { valid_until: record.valid_until, now });
        }
        let mut node = record
            .addrs
            .iter()
            .find_map(|addr| MixNode::new(*peer, addr.clone(), record.mix_key, record.exit).ok())
            .ok_or(RecordError::NoUsableAddress)?;
        if let (Some(epoch), Some(next)) = (record.epoch, record.next_mix_key) {
            node = node.with_epoch_keys(EpochKeys { epoch, current: record.mix_key, next });
        }
        Ok((record, node))
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.0.len() < n {
            return Err(RecordError::Malformed("truncated"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        Ok(self.take(N)?.try_into().expect("length checked"))
    }

    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.array::<1>()?[0])
    }

    fn u64(&mut self) -> Result<u64, RecordError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mix_sphinx::NodeSecretKey;

    fn record(now: u64) -> MixRecord {
        let mut rng = rand::rng();
        MixRecord {
            addrs: vec![
                "/ip6/::1/tcp/1".parse().unwrap(),
                "/ip4/127.0.0.1/tcp/4242".parse().unwrap(),
            ],
            mix_key: NodeSecretKey::generate(&mut rng).public_key(),
            next_mix_key: Some(NodeSecretKey::generate(&mut rng).public_key()),
            epoch: None,
            exit: true,
            valid_from: now - 10,
            valid_until: now + 3600,
            seq: 7,
        }
    }

    #[test]
    fn signed_records_verify_for_their_signer_only() {
        let identity = Keypair::generate_secp256k1();
        let peer = identity.public().to_peer_id();
        let now = 1_800_000_000;
        let r = record(now);
        let signed = r.sign(&identity);
        let (back, node) = MixRecord::verify(&signed, &peer, now).unwrap();
        assert_eq!(back, r);
        // The first address that fits an address block is used (IPv6 does not).
        assert_eq!(node.addr(), &r.addrs[1]);
        assert!(node.is_exit());

        // Stored under another peer's key: the signer does not match.
        let other = Keypair::generate_secp256k1().public().to_peer_id();
        assert!(matches!(
            MixRecord::verify(&signed, &other, now),
            Err(RecordError::WrongSigner { .. })
        ));
        // Outside the window.
        assert!(matches!(
            MixRecord::verify(&signed, &peer, now + 3600),
            Err(RecordError::Expired { .. })
        ));
        assert!(matches!(
            MixRecord::verify(&signed, &peer, now - 11),
            Err(RecordError::Expired { .. })
        ));
    }

    #[test]
    fn records_valid_for_too_long_are_refused() {
        let identity = Keypair::generate_secp256k1();
        let peer = identity.public().to_peer_id();
        let now = 1_800_000_000;
        for (until, ok) in [
            (now + MAX_RECORD_LIFETIME + CLOCK_SLACK, true),
            (now + MAX_RECORD_LIFETIME + CLOCK_SLACK + 1, false),
            (u64::MAX, false),
        ] {
            let signed = MixRecord { valid_until: until, ..record(now) }.sign(&identity);
            let verified = MixRecord::verify(&signed, &peer, now);
            assert_eq!(verified.is_ok(), ok, "{until}: {verified:?}");
            if !ok {
                assert!(matches!(verified, Err(RecordError::TooLong { .. })), "{verified:?}");
            }
        }
    }

    #[test]
    fn rotating_nodes_advertise_their_epoch_keys() {
        let identity = Keypair::generate_secp256k1();
        let peer = identity.public().to_peer_id();
        let now = 1_800_000_000;
        let mut r = record(now);
        r.epoch = Some(42);
        let encoded = r.encode();
        assert_eq!(encoded[0], VERSION_EPOCHS);
        assert_eq!(encoded.len(), record(now).encode().len() + 8);
        let (back, node) = MixRecord::verify(&r.sign(&identity), &peer, now).unwrap();
        assert_eq!(back, r);
        let keys = node.epoch_keys().unwrap();
        assert_eq!((keys.epoch, keys.current, Some(keys.next)), (42, r.mix_key, r.next_mix_key));
        assert_eq!(node.key_for(Some(43)), r.next_mix_key.as_ref());
        assert_eq!(node.key_for(Some(44)), None, "two epochs old");
        // An epoch needs the next key it announces.
        r.next_mix_key = None;
        assert_eq!(
            MixRecord::decode(&r.encode()),
            Err(RecordError::Malformed("epoch without a next key"))
        );
    }

    #[test]
    fn forged_and_malformed_records_are_rejected() {
        let identity = Keypair::generate_secp256k1();
        let peer = identity.public().to_peer_id();
        let now = 1_800_000_000;
        let mut signed = record(now).sign(&identity);
        // Flip a byte inside the payload: the signature no longer verifies.
        let at = signed.len() / 2;
        signed[at] ^= 1;
        let err = MixRecord::verify(&signed, &peer, now).unwrap_err();
        assert!(matches!(err, RecordError::Signature | RecordError::Envelope), "{err}");
        assert_eq!(MixRecord::verify(b"garbage", &peer, now), Err(RecordError::Envelope));
        assert_eq!(
            MixRecord::verify(&vec![0; MAX_RECORD_SIZE + 1], &peer, now),
            Err(RecordError::Envelope)
        );

        // A validly signed but malformed payload.
        let bad =
            SignedEnvelope::new(&identity, DOMAIN.into(), PAYLOAD_TYPE.to_vec(), vec![1, 0, 0])
                .unwrap()
                .into_protobuf_encoding();
        assert_eq!(MixRecord::verify(&bad, &peer, now), Err(RecordError::Malformed("truncated")));
        // Another payload type signed by the right key.
        let other =
            SignedEnvelope::new(&identity, DOMAIN.into(), b"/other".to_vec(), record(now).encode())
                .unwrap()
                .into_protobuf_encoding();
        assert_eq!(MixRecord::verify(&other, &peer, now), Err(RecordError::Signature));
        // No address that fits.
        let mut r = record(now);
        r.addrs.remove(1);
        assert_eq!(
            MixRecord::verify(&r.sign(&identity), &peer, now),
            Err(RecordError::NoUsableAddress)
        );
    }

    #[test]
    fn decoding_any_bytes_never_panics() {
        let r = record(1_800_000_000).encode();
        for cut in 0..r.len() {
            assert!(MixRecord::decode(&r[..cut]).is_err());
        }
        let mut long = r.clone();
        long.push(0);
        assert_eq!(MixRecord::decode(&long), Err(RecordError::Malformed("trailing bytes")));
        for i in 0..r.len() {
            let mut x = r.clone();
            x[i] ^= 0xff;
            let _ = MixRecord::decode(&x);
        }
    }
}
