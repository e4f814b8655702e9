//! The primitives of LIBP2P-MIX §8.2 and LIP-183.

#[cfg(feature = "aws-lc")]
mod aws_lc;
pub(crate) mod curve;
pub(crate) mod lioness;
pub(crate) mod symmetric;
