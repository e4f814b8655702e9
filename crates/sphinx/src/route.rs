//! A validated path through mix nodes, and the packets built along it.

use rand_core::CryptoRng;

use crate::address::AddressBlock;
use crate::error::{BuildError, RouteError};
use crate::format::WireFormat;
use crate::header::{self, PathSecrets};
use crate::keys::{EphemeralSecret, NodePublicKey};
use crate::packet::Packet;
use crate::params::{
    INTEGRITY_PREFIX_SIZE, MAX_PATH_LEN, MESSAGE_SIZE, MIN_PATH_LEN, SURB_ID_SIZE,
};
use crate::payload::LayerKey;

/// One mix node on a path: its mix key and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// The node's X25519 mix key.
    pub public_key: NodePublicKey,
    /// How the previous hop reaches it.
    pub address: AddressBlock,
}

/// A path of 3 to 5 mix nodes and the delay each intermediate hop is told to apply.
///
/// `delays_ms[i]` is what hop `i` reads from its own routing block: the (mean) delay before it
/// forwards to hop `i + 1`. The last hop gets no delay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    hops: Vec<Hop>,
    delays_ms: Vec<u16>,
}

impl Route {
    /// A route for sending. Intermediate delays must be non-zero: receivers that follow the
    /// current spec text literally take a zero delay for an exit.
    pub fn new(hops: Vec<Hop>, delays_ms: Vec<u16>) -> Result<Self, RouteError> {
        let route = Self::allowing_zero_delay(hops, delays_ms)?;
        if let Some(hop) = route.delays_ms.iter().position(|&d| d == 0) {
            return Err(RouteError::ZeroDelay { hop });
        }
        Ok(route)
    }

    /// Like [`Route::new`] but lets intermediate delays be 0, as the reference's default delay
    /// strategy encodes them. For reproducing such packets (test vectors); do not send with it.
    pub fn allowing_zero_delay(hops: Vec<Hop>, delays_ms: Vec<u16>) -> Result<Self, RouteError> {
        let len = hops.len();
        if !(MIN_PATH_LEN..=MAX_PATH_LEN).contains(&len) {
            return Err(RouteError::PathLength { len });
        }
        if delays_ms.len() != len - 1 {
            return Err(RouteError::DelayCount {
                hops: len,
                expected: len - 1,
                got: delays_ms.len(),
            });
        }
        Ok(Self { hops, delays_ms })
    }

    /// The hops, first to last.
    pub fn hops(&self) -> &[Hop] {
        &self.hops
    }

    /// The delay of each intermediate hop.
    pub fn delays_ms(&self) -> &[u16] {
        &self.delays_ms
    }

    /// The number of hops.
    pub fn len(&self) -> usize {
        self.hops.len()
    }

    /// Always false: a route has at least [`MIN_PATH_LEN`] hops.
    pub fn is_empty(&self) -> bool {
        self.hops.is_empty()
    }

    /// Where the sender sends the packet.
    pub fn first_hop(&self) -> &AddressBlock {
        &self.hops[0].address
    }

    /// Builds the packet that carries `message` along this route to `destination` (the zero
    /// block when the exit itself is the destination), with a fresh ephemeral secret.
    pub fn forward_packet<R: CryptoRng + ?Sized>(
        &self,
        format: &WireFormat,
        destination: &AddressBlock,
        message: &[u8; MESSAGE_SIZE],
        rng: &mut R,
    ) -> Result<Packet, BuildError> {
        self.forward_packet_with_secret(format, destination, message, &EphemeralSecret::random(rng))
    }

    /// [`Route::forward_packet`] with a given ephemeral secret, to reproduce a packet exactly.
    pub fn forward_packet_with_secret(
        &self,
        format: &WireFormat,
        destination: &AddressBlock,
        message: &[u8; MESSAGE_SIZE],
        ephemeral: &EphemeralSecret,
    ) -> Result<Packet, BuildError> {
        let path = self.secrets(format, ephemeral)?;
        let mut packet = Packet::zeroed();
        header::write(
            &path,
            |i| self.next_hop(i),
            destination,
            &[0; SURB_ID_SIZE],
            packet.header_mut(),
        );

        let payload = packet.payload_mut();
        payload[INTEGRITY_PREFIX_SIZE..].copy_from_slice(message);
        for secret in path.secrets().iter().rev() {
            format.cipher().wrap(LayerKey::Hop(secret), payload);
        }
        Ok(packet)
    }

    /// What hop `i` learns of the next: hop `i + 1`'s address and its own delay.
    pub(crate) fn next_hop(&self, i: usize) -> (&AddressBlock, u16) {
        (&self.hops[i + 1].address, self.delays_ms[i])
    }

    pub(crate) fn secrets(
        &self,
        format: &WireFormat,
        ephemeral: &EphemeralSecret,
    ) -> Result<PathSecrets, BuildError> {
        if self.len() > format.max_path_len() {
            return Err(BuildError::PathTooLong { len: self.len(), max: format.max_path_len() });
        }
        PathSecrets::derive(ephemeral, self.hops.iter().map(|h| &h.public_key))
    }
}
