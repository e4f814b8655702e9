//! The 94-byte address block: where a hop forwards to, or where the exit delivers.
//!
//! ```text
//! direct: ip4(4) ‖ proto(1) ‖ port BE16(2) ‖ peer id(39)                  ‖ 0^48
//! relay:  ip4(4) ‖ proto(1) ‖ port BE16(2) ‖ relay peer id(39) ‖ peer id(39) ‖ 0^9
//! proto:  0 = /tcp/<port>, 1 = /udp/<port>/quic-v1
//! ```
//!
//! A relay block stands for `/ip4/A/<transport>/p2p/<relay>/p2p-circuit` with the peer behind
//! it. Peer ids must be the 39-byte identity multihash of a secp256k1 key: that is all the slot
//! holds, and all the reference accepts.

use std::net::Ipv4Addr;

use libp2p_identity::PeerId;
use multiaddr::{Multiaddr, Protocol};

use crate::error::{AddressError, LengthError};
use crate::params::ADDRESS_SIZE;

/// Length of a secp256k1 PeerId: identity multihash of a protobuf public key.
pub const PEER_ID_SIZE: usize = 39;
/// `00 25` identity multihash of 37 bytes, `08 02` key type secp256k1, `12 21` 33 key bytes.
const SECP256K1_PEER_ID_PREFIX: [u8; 6] = [0x00, 0x25, 0x08, 0x02, 0x12, 0x21];

const IP: core::ops::Range<usize> = 0..4;
const PROTO: usize = 4;
const PORT: core::ops::Range<usize> = 5..7;
const FIRST_ID: core::ops::Range<usize> = 7..7 + PEER_ID_SIZE;
const SECOND_ID: core::ops::Range<usize> = FIRST_ID.end..FIRST_ID.end + PEER_ID_SIZE;

const PROTO_TCP: u8 = 0;
const PROTO_QUIC_V1: u8 = 1;

/// A 94-byte address block. The Sphinx layer carries it opaquely; [`AddressBlock::encode`] and
/// [`AddressBlock::decode`] map it to and from libp2p addresses.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddressBlock([u8; ADDRESS_SIZE]);

impl AddressBlock {
    /// The all-zero block: "no address" (the exit is the destination).
    pub const ZERO: Self = Self([0; ADDRESS_SIZE]);

    /// Wraps 94 raw bytes (no validation: the Sphinx layer carries blocks opaquely).
    pub const fn from_bytes(bytes: [u8; ADDRESS_SIZE]) -> Self {
        Self(bytes)
    }

    /// Like [`Self::from_bytes`] for a slice of exactly 94 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, LengthError> {
        bytes.try_into().map(Self).map_err(|_| LengthError {
            what: "address block",
            expected: ADDRESS_SIZE,
            got: bytes.len(),
        })
    }

    /// The raw 94 bytes.
    pub const fn as_bytes(&self) -> &[u8; ADDRESS_SIZE] {
        &self.0
    }

    /// Whether this is [`Self::ZERO`].
    pub fn is_zero(&self) -> bool {
        self.0 == [0; ADDRESS_SIZE]
    }

    /// Encodes how to reach `peer` at `addr`. `addr` may end in `/p2p/<peer>` (it is dropped)
    /// but must otherwise be one of the forms in the module documentation.
    pub fn encode(addr: &Multiaddr, peer: &PeerId) -> Result<Self, AddressError> {
        let mut components: Vec<Protocol<'_>> = addr.iter().collect();
        if let Some(Protocol::P2p(last)) = components.last() {
            if last != peer {
                return Err(AddressError::PeerIdMismatch {
                    expected: peer.to_base58(),
                    found: last.to_base58(),
                });
            }
            components.pop();
        }
        if components.len() > 5 {
            return Err(AddressError::TooManyComponents { count: components.len() });
        }

        let mut out = [0u8; ADDRESS_SIZE];
        let mut rest = components.into_iter();
        match rest.next() {
            Some(Protocol::Ip4(ip)) => out[IP].copy_from_slice(&ip.octets()),
            other => return Err(AddressError::NotIpv4 { got: describe(other) }),
        }
        let (proto, port) = match rest.next() {
            Some(Protocol::Tcp(port)) => (PROTO_TCP, port),
            Some(Protocol::Udp(port)) => match rest.next() {
                Some(Protocol::QuicV1) => (PROTO_QUIC_V1, port),
                other => {
                    return Err(AddressError::UnsupportedTransport {
                        got: format!("/udp/{port} followed by {}", describe(other)),
                    });
                }
            },
            other => return Err(AddressError::UnsupportedTransport { got: describe(other) }),
        };
        out[PROTO] = proto;
        out[PORT].copy_from_slice(&port.to_be_bytes());

        match (rest.next(), rest.next(), rest.next()) {
            (None, _, _) => out[FIRST_ID].copy_from_slice(&peer_id_bytes(peer)?),
            (Some(Protocol::P2p(relay)), Some(Protocol::P2pCircuit), None) => {
                out[FIRST_ID].copy_from_slice(&peer_id_bytes(&relay)?);
                out[SECOND_ID].copy_from_slice(&peer_id_bytes(peer)?);
            }
            (first, _, _) => return Err(AddressError::UnsupportedSuffix { got: describe(first) }),
        }
        Ok(Self(out))
    }

    /// The multiaddr (without a trailing `/p2p/<peer>`) and the peer it reaches.
    pub fn decode(&self) -> Result<(Multiaddr, PeerId), AddressError> {
        if self.is_zero() {
            return Err(AddressError::Empty);
        }
        let b = &self.0;
        let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
        let port = u16::from_be_bytes([b[PORT.start], b[PORT.start + 1]]);
        let mut addr = Multiaddr::empty().with(Protocol::Ip4(ip));
        addr = match b[PROTO] {
            PROTO_TCP => addr.with(Protocol::Tcp(port)),
            PROTO_QUIC_V1 => addr.with(Protocol::Udp(port)).with(Protocol::QuicV1),
            other => return Err(AddressError::UnknownProtocol(other)),
        };
        let relayed = b[SECOND_ID].iter().any(|&x| x != 0);
        let used = if relayed { SECOND_ID.end } else { FIRST_ID.end };
        if b[used..].iter().any(|&x| x != 0) {
            return Err(AddressError::NonZeroPadding);
        }
        let first = parse_peer_id(&b[FIRST_ID])?;
        if relayed {
            let peer = parse_peer_id(&b[SECOND_ID])?;
            Ok((addr.with(Protocol::P2p(first)).with(Protocol::P2pCircuit), peer))
        } else {
            Ok((addr, first))
        }
    }
}

fn describe(p: Option<Protocol<'_>>) -> String {
    p.map_or_else(|| "nothing".to_owned(), |p| p.to_string())
}

fn peer_id_bytes(peer: &PeerId) -> Result<[u8; PEER_ID_SIZE], AddressError> {
    let bytes = peer.to_bytes();
    let not_secp = || AddressError::PeerIdNotSecp256k1 { peer: peer.to_base58(), len: bytes.len() };
    let array: [u8; PEER_ID_SIZE] = bytes.as_slice().try_into().map_err(|_| not_secp())?;
    if array[..6] != SECP256K1_PEER_ID_PREFIX {
        return Err(not_secp());
    }
    Ok(array)
}

fn parse_peer_id(bytes: &[u8]) -> Result<PeerId, AddressError> {
    let compressed_point_tag = bytes.get(6).copied();
    if bytes[..6] != SECP256K1_PEER_ID_PREFIX || !matches!(compressed_point_tag, Some(2 | 3)) {
        return Err(AddressError::MalformedPeerId);
    }
    PeerId::from_bytes(bytes).map_err(|_| AddressError::MalformedPeerId)
}

impl core::fmt::Debug for AddressBlock {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.decode() {
            Ok((addr, peer)) => write!(f, "AddressBlock({addr}/p2p/{peer})"),
            Err(AddressError::Empty) => f.write_str("AddressBlock(zero)"),
            Err(_) => crate::debug_hex::fmt_hex(f, "AddressBlock", &self.0, 12),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p_identity::Keypair;

    fn secp_peer() -> PeerId {
        Keypair::generate_secp256k1().public().to_peer_id()
    }

    #[test]
    fn round_trips_every_supported_form() {
        let peer = secp_peer();
        let relay = secp_peer();
        for text in [
            "/ip4/127.0.0.1/tcp/4242".to_owned(),
            "/ip4/10.1.2.3/udp/9000/quic-v1".to_owned(),
            format!("/ip4/1.2.3.4/tcp/1/p2p/{relay}/p2p-circuit"),
            format!("/ip4/1.2.3.4/udp/65535/quic-v1/p2p/{relay}/p2p-circuit"),
        ] {
            let addr: Multiaddr = text.parse().unwrap();
            let block = AddressBlock::encode(&addr, &peer).unwrap();
            assert_eq!(block.decode().unwrap(), (addr.clone(), peer), "{text}");
            // A trailing /p2p/<peer> is accepted and dropped.
            let with_self = addr.clone().with(Protocol::P2p(peer));
            assert_eq!(AddressBlock::encode(&with_self, &peer).unwrap(), block);
        }
    }

    #[test]
    fn rejects_what_does_not_fit() {
        let peer = secp_peer();
        type Check = fn(&AddressError) -> bool;
        let cases: [(&str, Check); 6] = [
            ("/ip6/::1/tcp/1", |e| matches!(e, AddressError::NotIpv4 { .. })),
            ("/dns4/example.com/tcp/1", |e| matches!(e, AddressError::NotIpv4 { .. })),
            ("/ip4/1.2.3.4/udp/1", |e| matches!(e, AddressError::UnsupportedTransport { .. })),
            ("/ip4/1.2.3.4/tcp/1/ws", |e| matches!(e, AddressError::UnsupportedSuffix { .. })),
            ("/ip4/1.2.3.4/udp/1/quic", |e| matches!(e, AddressError::UnsupportedTransport { .. })),
            ("/ip4/1.2.3.4/tcp/1/ws/ws/ws/ws/ws", |e| {
                matches!(e, AddressError::TooManyComponents { count: 7 })
            }),
        ];
        for (text, check) in cases {
            let err = AddressBlock::encode(&text.parse().unwrap(), &peer).unwrap_err();
            assert!(check(&err), "{text}: {err}");
        }
        let ed = Keypair::generate_ed25519().public().to_peer_id();
        let err = AddressBlock::encode(&"/ip4/1.2.3.4/tcp/1".parse().unwrap(), &ed).unwrap_err();
        assert!(matches!(err, AddressError::PeerIdNotSecp256k1 { len: 38, .. }), "{err}");
        let other = secp_peer();
        let addr: Multiaddr = format!("/ip4/1.2.3.4/tcp/1/p2p/{other}").parse().unwrap();
        assert!(matches!(
            AddressBlock::encode(&addr, &peer),
            Err(AddressError::PeerIdMismatch { .. })
        ));
    }

    #[test]
    fn decode_rejects_malformed_blocks() {
        let peer = secp_peer();
        let good = AddressBlock::encode(&"/ip4/1.2.3.4/tcp/5".parse().unwrap(), &peer).unwrap();
        assert_eq!(AddressBlock::ZERO.decode(), Err(AddressError::Empty));
        let mut b = *good.as_bytes();
        b[PROTO] = 7;
        assert_eq!(AddressBlock(b).decode(), Err(AddressError::UnknownProtocol(7)));
        let mut b = *good.as_bytes();
        b[93] = 1;
        assert_eq!(AddressBlock(b).decode(), Err(AddressError::NonZeroPadding));
        let mut b = *good.as_bytes();
        b[8] = 0x99;
        assert_eq!(AddressBlock(b).decode(), Err(AddressError::MalformedPeerId));
    }
}
