//! What fits one frame: the sizes the [`crate::codec`] pads to and the most a message may
//! carry. The state machine's settings are checked against them; they depend on nothing.

/// Frame sizes of publications.
pub const PAYLOAD_BUCKETS: [usize; 4] = [512, 1024, 2048, 4096];
/// Frame sizes of control messages.
pub const CONTROL_BUCKETS: [usize; 2] = [128, 512];
/// The largest publication: what fills the largest payload bucket.
pub const MAX_PAYLOAD: usize = 4096 - 2 - 1 - 32 - 32;
/// Peers one membership message carries at most (they must fit a control frame).
pub const MAX_PEERS: usize = 10;
/// Ids one IHAVE carries at most.
pub const MAX_IDS: usize = 14;
