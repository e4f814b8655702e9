//! Sizes of the LIBP2P-MIX Sphinx format (§8.3 of the spec).
//!
//! κ = 16 bytes, r = 5 (the longest path β has room for), t = 6 (an address-and-delay block is
//! tκ bytes). Every packet on the wire has exactly [`PACKET_SIZE`] bytes.

/// Security parameter κ in bytes.
pub const KAPPA: usize = 16;
/// r: the longest path the header has room for.
pub const MAX_PATH_LEN: usize = 5;
/// The shortest path the spec allows.
pub const MIN_PATH_LEN: usize = 3;
/// The path length of the Nim reference (a compile-time constant there). Other lengths only work
/// between nodes of this implementation.
pub const DEFAULT_PATH_LEN: usize = 3;
const T: usize = 6;

/// α: an X25519 u-coordinate.
pub const ALPHA_SIZE: usize = 32;
/// β: (r(t+1)+1)κ.
pub const BETA_SIZE: usize = (MAX_PATH_LEN * (T + 1) + 1) * KAPPA;
/// γ: a truncated HMAC-SHA-256.
pub const GAMMA_SIZE: usize = KAPPA;
/// α ‖ β ‖ γ.
pub const HEADER_SIZE: usize = ALPHA_SIZE + BETA_SIZE + GAMMA_SIZE;
/// A whole packet: header ‖ δ.
pub const PACKET_SIZE: usize = 4608;
/// δ, the encrypted payload.
pub const PAYLOAD_SIZE: usize = PACKET_SIZE - HEADER_SIZE;
/// The zero prefix inside δ that the exit and the reply recipient check.
pub const INTEGRITY_PREFIX_SIZE: usize = KAPPA;
/// m, the padded message a packet carries.
pub const MESSAGE_SIZE: usize = PAYLOAD_SIZE - INTEGRITY_PREFIX_SIZE;

/// A multiaddr + PeerId block.
pub const ADDRESS_SIZE: usize = T * KAPPA - DELAY_SIZE;
/// The big-endian u16 millisecond delay after an address.
pub const DELAY_SIZE: usize = 2;
/// One hop's routing block inside β: address ‖ delay ‖ γ of the next hop.
pub const ROUTING_BLOCK_SIZE: usize = (T + 1) * KAPPA;

/// A SURB's identifier, carried in the final routing block of its header.
pub const SURB_ID_SIZE: usize = KAPPA;
/// The key k̃ the exit uses for the reply payload.
pub const SURB_KEY_SIZE: usize = KAPPA;
/// first-hop address ‖ header ‖ k̃.
pub const SURB_SIZE: usize = ADDRESS_SIZE + HEADER_SIZE + SURB_KEY_SIZE;

/// Byte offsets of the fields inside a packet.
pub(crate) const ALPHA_RANGE: core::ops::Range<usize> = 0..ALPHA_SIZE;
pub(crate) const BETA_RANGE: core::ops::Range<usize> = ALPHA_SIZE..ALPHA_SIZE + BETA_SIZE;
pub(crate) const GAMMA_RANGE: core::ops::Range<usize> = ALPHA_SIZE + BETA_SIZE..HEADER_SIZE;

/// Length of β ‖ 0_{(t+1)κ}, the buffer a hop decrypts.
pub(crate) const EXTENDED_BETA_SIZE: usize = BETA_SIZE + ROUTING_BLOCK_SIZE;

/// The run of zero bytes right after the first routing block of a final hop's β, for a path of
/// length `path_len`: ((t+1)(r−L)+1)κ. The Nim reference detects the exit by this run (240 bytes
/// for L = 3), which is why the path length must be agreed.
pub(crate) const fn final_zero_run(path_len: usize) -> usize {
    ((T + 1) * (MAX_PATH_LEN - path_len) + 1) * KAPPA
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_the_spec() {
        assert_eq!(BETA_SIZE, 576);
        assert_eq!(HEADER_SIZE, 624);
        assert_eq!(PAYLOAD_SIZE, 3984);
        assert_eq!(MESSAGE_SIZE, 3968);
        assert_eq!(ADDRESS_SIZE, 94);
        assert_eq!(ROUTING_BLOCK_SIZE, 112);
        assert_eq!(SURB_SIZE, 734);
        assert_eq!(final_zero_run(3), 240);
        assert_eq!(final_zero_run(5), 16);
        for l in MIN_PATH_LEN..=MAX_PATH_LEN {
            // The final block, its zero run and the filler fill β exactly.
            assert_eq!(
                ROUTING_BLOCK_SIZE + final_zero_run(l) + (l - 1) * ROUTING_BLOCK_SIZE,
                BETA_SIZE
            );
        }
    }
}
