//! Error types. Every failure of this crate is one of these; none of its functions panic on input.
#![allow(missing_docs, reason = "each variant is described by its #[error] message")]

use thiserror::Error;

/// An X25519 public key that cannot be a mix key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("mix public key must be 32 bytes, got {got}")]
    Length { got: usize },
    #[error("mix public key is not a canonical u-coordinate (top bit set or u >= 2^255-19)")]
    NonCanonical,
    #[error("mix public key is a point on the twist, not on Curve25519")]
    NotOnCurve,
    #[error("mix public key is a point of small order")]
    SmallOrder,
}

/// A route the sender cannot use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RouteError {
    #[error("path length {len} is outside {min}..={max}", min = crate::MIN_PATH_LEN, max = crate::MAX_PATH_LEN)]
    PathLength { len: usize },
    #[error("a path of {hops} hops needs {expected} intermediate delays, got {got}")]
    DelayCount { hops: usize, expected: usize, got: usize },
    #[error("intermediate hop {hop} has delay 0, which spec-literal receivers take for an exit")]
    ZeroDelay { hop: usize },
}

/// A packet or SURB that cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum BuildError {
    #[error("path length {len} exceeds the wire format's maximum of {max}")]
    PathTooLong { len: usize, max: usize },
    #[error("a shared secret came out all zero (a mix key of small order)")]
    DegenerateSecret,
    #[error("a SURB id must not be all zero: the exit would read it as a forward message")]
    ZeroSurbId,
}

/// Why a hop dropped a packet. [`ProcessError::reason`] gives a short label for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Error)]
#[non_exhaustive]
pub enum ProcessError {
    #[error("α is not a canonical u-coordinate")]
    NonCanonicalAlpha,
    #[error("α is a point of small order")]
    LowOrderAlpha,
    #[error("header MAC does not match")]
    MacMismatch,
    #[error("final routing block is neither a forward exit nor a SURB reply")]
    MalformedFinalBlock,
    #[error("payload integrity prefix is not zero")]
    PayloadIntegrity,
}

impl ProcessError {
    /// A stable label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NonCanonicalAlpha => "non_canonical_alpha",
            Self::LowOrderAlpha => "low_order_alpha",
            Self::MacMismatch => "mac_mismatch",
            Self::MalformedFinalBlock => "malformed_final_block",
            Self::PayloadIntegrity => "payload_integrity",
        }
    }
}

/// A SURB reply that does not decrypt under the secrets kept for its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ReplyError {
    #[error("reply payload integrity prefix is not zero")]
    PayloadIntegrity,
}

/// Bytes of the wrong length for a fixed-size structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("{what} must be {expected} bytes, got {got}")]
pub struct LengthError {
    pub what: &'static str,
    pub expected: usize,
    pub got: usize,
}

/// A message that cannot be framed into m, or an m that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum MessageError {
    #[error("message of {len} bytes exceeds the {max} bytes available")]
    TooLarge { len: usize, max: usize },
    #[error("{count} SURBs exceed the maximum of {max}")]
    TooManySurbs { count: usize, max: usize },
    #[error("codec of {len} bytes is too long (max {max})")]
    CodecTooLong { len: usize, max: usize },
    #[error("padding length {pad_len} exceeds {max}")]
    PaddingLength { pad_len: usize, max: usize },
    #[error("padding bytes are not zero")]
    NonZeroPadding,
    #[error("codec length prefix is malformed")]
    CodecLength,
    #[error("codec is not UTF-8")]
    CodecNotUtf8,
    #[error("message ends inside the {field}")]
    Truncated { field: &'static str },
    #[error("reply does not start with the empty codec")]
    NotAReply,
}

impl MessageError {
    /// A stable label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "too_large",
            Self::TooManySurbs { .. } => "too_many_surbs",
            Self::CodecTooLong { .. } => "codec_too_long",
            Self::PaddingLength { .. } => "padding_length",
            Self::NonZeroPadding => "non_zero_padding",
            Self::CodecLength => "codec_length",
            Self::CodecNotUtf8 => "codec_not_utf8",
            Self::Truncated { .. } => "truncated",
            Self::NotAReply => "not_a_reply",
        }
    }
}

/// A multiaddr/PeerId pair that does not fit the 94-byte address block, or a block that does
/// not decode.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AddressError {
    #[error("only /ip4 addresses can be encoded (got {got})")]
    NotIpv4 { got: String },
    #[error("transport must be /tcp/<port> or /udp/<port>/quic-v1 (got {got})")]
    UnsupportedTransport { got: String },
    #[error("after the transport only /p2p/<relay>/p2p-circuit may follow (got {got})")]
    UnsupportedSuffix { got: String },
    #[error("multiaddr has {count} components, at most 5 fit")]
    TooManyComponents { count: usize },
    #[error("multiaddr ends in /p2p/{found}, which is not the peer {expected}")]
    PeerIdMismatch { expected: String, found: String },
    #[error("peer id {peer} is {len} bytes; the address block needs 39-byte secp256k1 peer ids")]
    PeerIdNotSecp256k1 { peer: String, len: usize },
    #[error("address block is all zero")]
    Empty,
    #[error("address block has protocol byte {0}, expected 0 (tcp) or 1 (quic-v1)")]
    UnknownProtocol(u8),
    #[error("address block peer id is malformed")]
    MalformedPeerId,
    #[error("address block padding is not zero")]
    NonZeroPadding,
}
