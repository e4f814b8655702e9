//! Large messages and streams over a mixnet, as a sans-IO pipeline.
//!
//! A sender turns each block of application bytes into shards that each fit one Sphinx
//! message, and a receiver rebuilds blocks from whichever shards arrive:
//!
//! ```text
//!   block ─> zstd (kept only if smaller) ─> ChaCha20-Poly1305 ─> Reed-Solomon k + m ─> shards
//!   shards (any k of k + m, any order, duplicates ignored) ─> block
//! ```
//!
//! Keys are agreed per stream: the sender draws a fresh X25519 key pair and combines it with
//! the receiver's static key, so streams are unlinkable to each other and forward secret
//! against a later compromise of the sender. Everything here is pure: no I/O, no clock (time
//! comes in as arguments), randomness passed in.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod keys;
mod ordering;
mod reassembly;
mod session;
mod shard;
mod stream;

pub use keys::{ReceiverKey, StreamKeys};
pub use ordering::{InOrder, OrderError};
pub use reassembly::{Delivered, Reassembler, ReassemblyConfig, ReassemblyError};
pub use session::{Ack, Incoming, IncomingError, Outgoing, Readable, SessionConfig, SessionError};
pub use shard::{SHARD_HEADER_LEN, ShardError, ShardHeader};
pub use stream::{Block, CodingConfig, EncodeError, MAX_INPUT_BLOCKS, StreamSender};
