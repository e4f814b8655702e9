//! The Sphinx packet format of the libp2p Mix Protocol (`/mix/1.0.0`), byte-compatible with
//! the Nim reference implementation (nim-libp2p-mix).
//!
//! This crate is the packet layer only: no I/O, no async, no clock. It builds packets and SURBs,
//! processes a packet at a hop, recovers replies, frames the message inside a packet, and maps
//! libp2p addresses to the 94-byte address blocks. Randomness is always passed in.
//!
//! # Layers
//!
//! ```text
//!  libp2p-mix's MixCore ── the node that uses it (path choice, delays, replay filter, I/O)
//!   └─ Route, Surb ─────── build: a forward packet or a reply block for a path of 3–5 hops
//!   └─ NodeSecretKey::open, OpenedPacket::peel ─ one hop: MAC check, replay tag, the action
//!   └─ message ─────────── the origin protocol and body inside the payload
//!   └─ AddressBlock ────── a libp2p peer id and address, as the header carries it
//! ```
//!
//! Embed it directly only to build or open packets yourself (a tool, another driver);
//! applications use `libp2p-mix`, which runs it.
//!
//! # Sending, hopping, receiving
//!
//! ```
//! use mix_sphinx::{message, Action, AddressBlock, Hop, NodeSecretKey, Route, WireFormat};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut rng = rand::rng();
//! let format = WireFormat::default();
//! let keys: Vec<NodeSecretKey> = (0..3).map(|_| NodeSecretKey::generate(&mut rng)).collect();
//! # let address = |i: u8| AddressBlock::from_bytes([i + 1; 94]);
//! let hops = keys.iter().enumerate()
//!     .map(|(i, k)| Hop { public_key: k.public_key(), address: address(i as u8) })
//!     .collect();
//! let route = Route::new(hops, vec![100, 100])?;
//!
//! let mut m = [0u8; mix_sphinx::MESSAGE_SIZE];
//! message::encode_forward(format.padding(), 0, "/ipfs/ping/1.0.0", &[], b"hello", &mut m)?;
//! let mut packet = route.forward_packet(&format, &AddressBlock::ZERO, &m, &mut rng)?;
//!
//! for key in &keys {
//!     let opened = key.open(&format, &mut packet)?;      // MAC checked
//!     let _tag = opened.replay_tag();                     // consult the replay filter here
//!     match opened.peel()? {
//!         Action::Forward { .. } => continue,             // `packet` is now the next hop's
//!         Action::Deliver { destination } => {
//!             assert!(destination.is_zero());
//!             let msg = message::decode_forward(format.padding(), packet.message())?;
//!             assert_eq!(msg.body, b"hello");
//!         }
//!         Action::Reply { .. } => unreachable!(),
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # Interoperability
//!
//! * Both payload ciphers exist in deployed reference nodes: see [`PayloadCipher`] and
//!   [`WireFormat`]. The header is the same under both.
//! * Reference nodes build and accept only paths of exactly 3 hops ([`DEFAULT_PATH_LEN`]).
//! * Address blocks hold only IPv4 TCP / QUIC-v1 addresses and secp256k1 peer ids.

#![deny(unsafe_code)]
#![deny(missing_docs)]

mod address;
mod crypto;
mod debug_hex;
mod error;
mod format;
mod header;
mod hop;
mod keys;
pub mod message;
mod packet;
mod params;
mod payload;
mod route;
mod surb;
#[cfg(feature = "test-util")]
pub mod testing;
#[cfg(feature = "vectors")]
pub mod vectors;

pub use address::{AddressBlock, PEER_ID_SIZE};
pub use error::{
    AddressError, BuildError, KeyError, LengthError, MessageError, ProcessError, ReplyError,
    RouteError,
};
pub use format::{Padding, PayloadCipher, WireFormat};
pub use hop::{Action, OpenedPacket, ReplayTag};
pub use keys::{EphemeralSecret, NodePublicKey, NodeSecretKey};
pub use packet::Packet;
pub use params::{
    ADDRESS_SIZE, ALPHA_SIZE, BETA_SIZE, DEFAULT_PATH_LEN, DELAY_SIZE, GAMMA_SIZE, HEADER_SIZE,
    INTEGRITY_PREFIX_SIZE, KAPPA, MAX_PATH_LEN, MESSAGE_SIZE, MIN_PATH_LEN, PACKET_SIZE,
    PAYLOAD_SIZE, ROUTING_BLOCK_SIZE, SURB_ID_SIZE, SURB_KEY_SIZE, SURB_SIZE,
};
pub use route::{Hop, Route};
pub use surb::{Surb, SurbId, SurbKey, SurbSecrets};
