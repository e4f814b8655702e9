//! The 4608-byte packet: α ‖ β ‖ γ ‖ δ, plain concatenation.

use crate::error::LengthError;
use crate::params::{
    ALPHA_RANGE, ALPHA_SIZE, BETA_RANGE, BETA_SIZE, GAMMA_RANGE, GAMMA_SIZE, HEADER_SIZE,
    INTEGRITY_PREFIX_SIZE, MESSAGE_SIZE, PACKET_SIZE, PAYLOAD_SIZE,
};

/// One Sphinx packet, heap-allocated once and then rewritten in place by each hop.
#[derive(Clone, PartialEq, Eq)]
pub struct Packet(Box<[u8; PACKET_SIZE]>);

/// Mutable views of the four fields, borrowed together.
pub(crate) struct Fields<'a> {
    pub(crate) alpha: &'a mut [u8; ALPHA_SIZE],
    pub(crate) beta: &'a mut [u8; BETA_SIZE],
    pub(crate) gamma: &'a mut [u8; GAMMA_SIZE],
    pub(crate) payload: &'a mut [u8; PAYLOAD_SIZE],
}

impl Packet {
    /// An all-zero packet, to be filled by a builder.
    pub fn zeroed() -> Self {
        Self(boxed_zeroes())
    }

    /// Copies a received frame, which must be exactly [`PACKET_SIZE`] bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, LengthError> {
        let array: &[u8; PACKET_SIZE] = bytes.try_into().map_err(|_| length_error(bytes.len()))?;
        let mut packet = Self::zeroed();
        packet.0.copy_from_slice(array);
        Ok(packet)
    }

    /// The 4608 bytes to send.
    pub fn as_bytes(&self) -> &[u8; PACKET_SIZE] {
        &self.0
    }

    /// The bytes, writable (e.g. to read a frame straight into the packet).
    pub fn as_bytes_mut(&mut self) -> &mut [u8; PACKET_SIZE] {
        &mut self.0
    }

    /// The bytes as a `Vec`, without copying.
    pub fn into_vec(self) -> Vec<u8> {
        let boxed: Box<[u8]> = self.0;
        boxed.into_vec()
    }

    /// m, once a hop has reported [`crate::Action::Deliver`] (or a reply was recovered).
    pub fn message(&self) -> &[u8; MESSAGE_SIZE] {
        self.0[HEADER_SIZE + INTEGRITY_PREFIX_SIZE..].try_into().expect("fixed layout")
    }

    pub(crate) fn alpha(&self) -> &[u8; ALPHA_SIZE] {
        self.0[ALPHA_RANGE].try_into().expect("fixed layout")
    }

    pub(crate) fn beta(&self) -> &[u8; BETA_SIZE] {
        self.0[BETA_RANGE].try_into().expect("fixed layout")
    }

    pub(crate) fn gamma(&self) -> &[u8; GAMMA_SIZE] {
        self.0[GAMMA_RANGE].try_into().expect("fixed layout")
    }

    pub(crate) fn header_mut(&mut self) -> &mut [u8; HEADER_SIZE] {
        (&mut self.0[..HEADER_SIZE]).try_into().expect("fixed layout")
    }

    pub(crate) fn payload_mut(&mut self) -> &mut [u8; PAYLOAD_SIZE] {
        (&mut self.0[HEADER_SIZE..]).try_into().expect("fixed layout")
    }

    pub(crate) fn fields_mut(&mut self) -> Fields<'_> {
        let (alpha, rest) = self.0.split_first_chunk_mut::<ALPHA_SIZE>().expect("fixed layout");
        let (beta, rest) = rest.split_first_chunk_mut::<BETA_SIZE>().expect("fixed layout");
        let (gamma, rest) = rest.split_first_chunk_mut::<GAMMA_SIZE>().expect("fixed layout");
        let payload = rest.try_into().expect("fixed layout");
        Fields { alpha, beta, gamma, payload }
    }
}

fn length_error(got: usize) -> LengthError {
    LengthError { what: "packet", expected: PACKET_SIZE, got }
}

fn boxed_zeroes() -> Box<[u8; PACKET_SIZE]> {
    // Built on the heap directly rather than moved there from the stack.
    vec![0u8; PACKET_SIZE].into_boxed_slice().try_into().expect("exact length")
}

impl TryFrom<Vec<u8>> for Packet {
    type Error = LengthError;

    /// Takes ownership of a received frame without copying it.
    fn try_from(bytes: Vec<u8>) -> Result<Self, Self::Error> {
        let len = bytes.len();
        bytes.into_boxed_slice().try_into().map(Self).map_err(|_| length_error(len))
    }
}

impl From<Packet> for Vec<u8> {
    fn from(packet: Packet) -> Self {
        packet.into_vec()
    }
}

impl AsRef<[u8]> for Packet {
    fn as_ref(&self) -> &[u8] {
        &self.0[..]
    }
}

impl core::fmt::Debug for Packet {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        crate::debug_hex::fmt_hex(f, "Packet", &self.0[..], 8)
    }
}
