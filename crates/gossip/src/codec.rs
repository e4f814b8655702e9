//! Frames on the wire, padded to size buckets.
//!
//! ```text
//! frame = body_len u16 | body | zero padding          (the whole frame is one bucket long)
//! body  = kind u8 | topic [32] | fields
//! ```
//!
//! Publications (GOSSIP, STEM) go in frames of 512, 1024, 2048 or 4096 bytes, control in
//! frames of 128 or 512: an observer of an encrypted connection sees only which bucket a frame
//! fell in. Fields (integers big-endian; a peer is `len u8 | PeerId bytes`):
//!
//! ```text
//! 0x01 JOIN             -
//! 0x02 FORWARD_JOIN     ttl u8 | peer
//! 0x03 NEIGHBOR         high u8
//! 0x04 NEIGHBOR_ACCEPT  -
//! 0x05 DISCONNECT       alive u8
//! 0x06 SHUFFLE          ttl u8 | nonce u64 | origin peer | count u8 | count × peer
//! 0x07 SHUFFLE_REPLY    nonce u64 | count u8 | count × peer
//! 0x08 GOSSIP           id [32] | data (the rest of the body)
//! 0x09 IHAVE            count u8 | count × id [32]
//! 0x0a GRAFT            flag u8 | id [32] if flag is 1
//! 0x0b PRUNE            -
//! 0x0c STEM             id [32] | data (the rest of the body)
//! 0x0d PING             reply u8  (liveness; the topic is all zeros)
//! ```

use libp2p_identity::PeerId;

use crate::proto::{Body, Message, MessageId, TopicId};

pub use crate::limits::{CONTROL_BUCKETS, MAX_IDS, MAX_PAYLOAD, MAX_PEERS, PAYLOAD_BUCKETS};

/// Why bytes are not a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// Shorter than its fields say.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// An unknown message kind.
    #[error("unknown message kind {0:#04x}")]
    UnknownKind(u8),
    /// A peer id that does not parse.
    #[error("malformed peer id")]
    BadPeer,
    /// More peers or ids than a message may carry, or a body larger than any bucket.
    #[error("oversized {0}")]
    Oversized(&'static str),
    /// A frame that parses but is not what the encoder writes: a flag other than 0 or 1,
    /// bytes after a control message's fields, or padding that is not zero. Accepting them
    /// would let a sender mark its frames (and tell implementations apart).
    #[error("non-canonical {0}")]
    NonCanonical(&'static str),
    /// The frame length is not the bucket its body falls in.
    #[error("frame of {len} bytes for a body of {body}: not its bucket")]
    WrongBucket {
        /// The frame's length.
        len: usize,
        /// Its body's.
        body: usize,
    },
}

/// The bucket a frame with a body of `body` bytes is padded to, if any.
pub fn bucket(body: usize, payload: bool) -> Option<usize> {
    let buckets: &[usize] = if payload { &PAYLOAD_BUCKETS } else { &CONTROL_BUCKETS };
    buckets.iter().copied().find(|b| body + 2 <= *b)
}

fn put_peer(out: &mut Vec<u8>, peer: &PeerId) {
    let bytes = peer.to_bytes();
    out.push(bytes.len() as u8);
    out.extend_from_slice(&bytes);
}

/// Peers that fit a control frame along with `used` bytes.
fn fitting(peers: &[PeerId], used: usize) -> &[PeerId] {
    let mut room = CONTROL_BUCKETS[CONTROL_BUCKETS.len() - 1] - 2 - used;
    let mut n = 0;
    for peer in peers.iter().take(MAX_PEERS) {
        let len = peer.to_bytes().len() + 1;
        if len > room {
            break;
        }
        room -= len;
        n += 1;
    }
    &peers[..n]
}

/// The frame of `message`, padded to its bucket. Membership messages carry as many peers as
/// fit; a publication larger than [`MAX_PAYLOAD`] is refused.
pub fn encode(message: &Message<PeerId>) -> Result<Vec<u8>, CodecError> {
    let mut body = Vec::with_capacity(64);
    let (kind, payload) = match &message.body {
        Body::Join => (0x01, false),
        Body::ForwardJoin { .. } => (0x02, false),
        Body::Neighbor { .. } => (0x03, false),
        Body::NeighborAccept => (0x04, false),
        Body::Disconnect { .. } => (0x05, false),
        Body::Shuffle { .. } => (0x06, false),
        Body::ShuffleReply { .. } => (0x07, false),
        Body::Gossip { .. } => (0x08, true),
        Body::IHave { .. } => (0x09, false),
        Body::Graft { .. } => (0x0a, false),
        Body::Prune => (0x0b, false),
        Body::Stem { .. } => (0x0c, true),
        Body::Ping { .. } => (0x0d, false),
    };
    body.push(kind);
    body.extend_from_slice(&message.topic.0);
    match &message.body {
        Body::Join | Body::NeighborAccept | Body::Prune => {}
        Body::ForwardJoin { peer, ttl } => {
            body.push(*ttl);
            put_peer(&mut body, peer);
        }
        Body::Neighbor { high } => body.push(u8::from(*high)),
        Body::Disconnect { alive } => body.push(u8::from(*alive)),
        Body::Ping { reply } => body.push(u8::from(*reply)),
        Body::Shuffle { origin, ttl, nonce, peers } => {
            body.push(*ttl);
            body.extend_from_slice(&nonce.to_be_bytes());
            put_peer(&mut body, origin);
            let peers = fitting(peers, body.len() + 1);
            body.push(peers.len() as u8);
            peers.iter().for_each(|p| put_peer(&mut body, p));
        }
        Body::ShuffleReply { nonce, peers } => {
            body.extend_from_slice(&nonce.to_be_bytes());
            let peers = fitting(peers, body.len() + 1);
            body.push(peers.len() as u8);
            peers.iter().for_each(|p| put_peer(&mut body, p));
        }
        Body::Gossip { id, data } | Body::Stem { id, data } => {
            if data.len() > MAX_PAYLOAD {
                return Err(CodecError::Oversized("publication"));
            }
            body.extend_from_slice(&id.0);
            body.extend_from_slice(data);
        }
        Body::IHave { ids } => {
            if ids.len() > MAX_IDS {
                return Err(CodecError::Oversized("IHAVE"));
            }
            body.push(ids.len() as u8);
            ids.iter().for_each(|id| body.extend_from_slice(&id.0));
        }
        Body::Graft { id } => match id {
            Some(id) => {
                body.push(1);
                body.extend_from_slice(&id.0);
            }
            None => body.push(0),
        },
    }
    let size = bucket(body.len(), payload).ok_or(CodecError::Oversized("body"))?;
    let mut frame = Vec::with_capacity(size);
    frame.extend_from_slice(&(body.len() as u16).to_be_bytes());
    frame.extend_from_slice(&body);
    frame.resize(size, 0);
    Ok(frame)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], CodecError> {
        let (head, rest) = self.0.split_at_checked(n).ok_or(CodecError::Truncated(what))?;
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, CodecError> {
        Ok(self.take(1, what)?[0])
    }

    fn flag(&mut self, what: &'static str) -> Result<bool, CodecError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(CodecError::NonCanonical(what)),
        }
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, CodecError> {
        Ok(u64::from_be_bytes(self.take(8, what)?.try_into().expect("8 bytes")))
    }

    fn id(&mut self) -> Result<MessageId, CodecError> {
        Ok(MessageId(self.take(32, "id")?.try_into().expect("32 bytes")))
    }

    fn peer(&mut self) -> Result<PeerId, CodecError> {
        let len = usize::from(self.u8("peer")?);
        PeerId::from_bytes(self.take(len, "peer")?).map_err(|_| CodecError::BadPeer)
    }

    fn peers(&mut self) -> Result<Vec<PeerId>, CodecError> {
        let count = usize::from(self.u8("peer count")?);
        if count > MAX_PEERS {
            return Err(CodecError::Oversized("peer list"));
        }
        (0..count).map(|_| self.peer()).collect()
    }
}

/// The body length a frame announces in its first two bytes, and the frame's total length
/// (body and padding) once the body's kind is known: what a reader must take off the stream.
pub fn frame_len(prefix: [u8; 2], kind: u8) -> Option<usize> {
    let body = usize::from(u16::from_be_bytes(prefix));
    bucket(body, matches!(kind, 0x08 | 0x0c))
}

/// Parses one whole frame (padding included).
pub fn decode(frame: &[u8]) -> Result<Message<PeerId>, CodecError> {
    let len = usize::from(u16::from_be_bytes(
        frame.get(..2).ok_or(CodecError::Truncated("length"))?.try_into().expect("2 bytes"),
    ));
    let body = frame.get(2..2 + len).ok_or(CodecError::Truncated("body"))?;
    let mut r = Reader(body);
    let kind = r.u8("kind")?;
    let topic = TopicId(r.take(32, "topic")?.try_into().expect("32 bytes"));
    let body = match kind {
        0x01 => Body::Join,
        0x02 => {
            let ttl = r.u8("ttl")?;
            Body::ForwardJoin { ttl, peer: r.peer()? }
        }
        0x03 => Body::Neighbor { high: r.flag("priority")? },
        0x04 => Body::NeighborAccept,
        0x05 => Body::Disconnect { alive: r.flag("alive")? },
        0x06 => {
            let ttl = r.u8("ttl")?;
            let nonce = r.u64("nonce")?;
            let origin = r.peer()?;
            Body::Shuffle { ttl, origin, nonce, peers: r.peers()? }
        }
        0x07 => {
            let nonce = r.u64("nonce")?;
            Body::ShuffleReply { nonce, peers: r.peers()? }
        }
        0x08 | 0x0c => {
            let id = r.id()?;
            let data = std::mem::take(&mut r.0).to_vec();
            if kind == 0x08 { Body::Gossip { id, data } } else { Body::Stem { id, data } }
        }
        0x09 => {
            let count = usize::from(r.u8("id count")?);
            if count > MAX_IDS {
                return Err(CodecError::Oversized("IHAVE"));
            }
            Body::IHave { ids: (0..count).map(|_| r.id()).collect::<Result<_, _>>()? }
        }
        0x0a => match r.flag("graft flag")? {
            false => Body::Graft { id: None },
            true => Body::Graft { id: Some(r.id()?) },
        },
        0x0b => Body::Prune,
        0x0d => Body::Ping { reply: r.flag("reply")? },
        other => return Err(CodecError::UnknownKind(other)),
    };
    if !r.0.is_empty() {
        return Err(CodecError::NonCanonical("trailing bytes"));
    }
    let expected = bucket(len, body.is_payload()).ok_or(CodecError::Oversized("body"))?;
    if frame.len() != expected {
        return Err(CodecError::WrongBucket { len: frame.len(), body: len });
    }
    if frame[2 + len..].iter().any(|b| *b != 0) {
        return Err(CodecError::NonCanonical("padding"));
    }
    Ok(Message { topic, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerId {
        libp2p_identity::Keypair::generate_secp256k1().public().to_peer_id()
    }

    fn samples() -> Vec<Body<PeerId>> {
        let id = MessageId([7; 32]);
        vec![
            Body::Join,
            Body::ForwardJoin { peer: peer(), ttl: 6 },
            Body::Neighbor { high: true },
            Body::NeighborAccept,
            Body::Disconnect { alive: true },
            Body::Shuffle {
                origin: peer(),
                ttl: 6,
                nonce: u64::MAX - 1,
                peers: (0..7).map(|_| peer()).collect(),
            },
            Body::ShuffleReply { nonce: 9, peers: (0..7).map(|_| peer()).collect() },
            Body::Gossip { id, data: vec![1; 10] },
            Body::Gossip { id, data: vec![2; 1000] },
            Body::Gossip { id, data: vec![3; MAX_PAYLOAD] },
            Body::IHave { ids: vec![id; MAX_IDS] },
            Body::Graft { id: Some(id) },
            Body::Graft { id: None },
            Body::Prune,
            Body::Stem { id, data: vec![4; 3000] },
            Body::Ping { reply: false },
            Body::Ping { reply: true },
        ]
    }

    #[test]
    fn every_frame_is_a_bucket_and_decodes_to_what_was_encoded() {
        let topic = TopicId::from_name("t");
        for body in samples() {
            let message = Message { topic, body };
            let frame = encode(&message).unwrap();
            let buckets: &[usize] =
                if message.body.is_payload() { &PAYLOAD_BUCKETS } else { &CONTROL_BUCKETS };
            assert!(buckets.contains(&frame.len()), "{} in {}", message.body.kind(), frame.len());
            assert_eq!(decode(&frame).unwrap(), message);
            assert_eq!(frame_len(frame[..2].try_into().unwrap(), frame[2]), Some(frame.len()));
        }
        let big = Message {
            topic,
            body: Body::Gossip { id: MessageId([0; 32]), data: vec![0; MAX_PAYLOAD + 1] },
        };
        assert_eq!(encode(&big), Err(CodecError::Oversized("publication")));
        // Too many peers for a control frame: as many as fit are kept.
        let many = Message {
            topic,
            body: Body::ShuffleReply { nonce: 1, peers: (0..30).map(|_| peer()).collect() },
        };
        let Body::ShuffleReply { peers, .. } = decode(&encode(&many).unwrap()).unwrap().body else {
            panic!()
        };
        assert!(peers.len() >= 7 && peers.len() <= MAX_PEERS);
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        let topic = TopicId::from_name("t");
        for body in samples() {
            let frame = encode(&Message { topic, body }).unwrap();
            for cut in 0..frame.len() {
                let _ = decode(&frame[..cut]);
            }
            for i in 0..frame.len().min(120) {
                let mut bad = frame.clone();
                bad[i] ^= 0xff;
                let _ = decode(&bad);
            }
        }
        assert_eq!(decode(&[0, 33, 0x7f]), Err(CodecError::Truncated("body")));
        let mut unknown = vec![0, 33, 0x7f];
        unknown.extend([0; 32]);
        unknown.resize(128, 0);
        assert_eq!(decode(&unknown), Err(CodecError::UnknownKind(0x7f)));
        let mut wrong = encode(&Message { topic, body: Body::Prune }).unwrap();
        wrong.resize(512, 0);
        assert!(matches!(decode(&wrong), Err(CodecError::WrongBucket { .. })));
    }

    /// The encoding is canonical: changing any one bit of a frame (padding included) gives
    /// another message or an error, never the same message. Padding and the flags used to
    /// take any value, so a sender could mark its frames.
    #[test]
    fn a_changed_frame_never_decodes_to_the_same_message() {
        let topic = TopicId::from_name("t");
        for body in samples() {
            let message = Message { topic, body };
            let frame = encode(&message).unwrap();
            for i in 0..frame.len() {
                for bit in [0x01, 0x80] {
                    let mut changed = frame.clone();
                    changed[i] ^= bit;
                    assert_ne!(
                        decode(&changed).as_ref(),
                        Ok(&message),
                        "byte {i} of {}",
                        frame.len()
                    );
                }
            }
        }
        let mut trailing = encode(&Message { topic, body: Body::Prune }).unwrap();
        trailing[1] += 1;
        assert_eq!(decode(&trailing), Err(CodecError::NonCanonical("trailing bytes")));
    }

    fn arbitrary_body(kind: u8, n: usize, len: usize, byte: u8) -> Body<PeerId> {
        let peers = |n: usize| (0..n).map(|_| PeerId::random()).collect::<Vec<_>>();
        let id = MessageId([byte; 32]);
        match kind % 13 {
            0 => Body::Join,
            1 => Body::ForwardJoin { peer: PeerId::random(), ttl: byte },
            2 => Body::Neighbor { high: byte & 1 == 1 },
            3 => Body::NeighborAccept,
            4 => Body::Disconnect { alive: byte & 1 == 1 },
            5 => Body::Shuffle {
                origin: PeerId::random(),
                ttl: byte,
                nonce: n as u64,
                peers: peers(n % 12),
            },
            6 => Body::ShuffleReply { nonce: u64::from(byte), peers: peers(n % 12) },
            7 => Body::Gossip { id, data: vec![byte; len] },
            8 => Body::IHave { ids: vec![id; n % (MAX_IDS + 1)] },
            9 => Body::Graft { id: (byte & 1 == 1).then_some(id) },
            10 => Body::Prune,
            11 => Body::Ping { reply: byte & 1 == 1 },
            _ => Body::Stem { id, data: vec![byte; len] },
        }
    }

    proptest::proptest! {
        #[test]
        fn any_message_encodes_to_a_bucket_and_back(
            kind in 0u8..13,
            n in 0usize..16,
            len in 0usize..=MAX_PAYLOAD,
            byte: u8,
            name in "[a-z]{1,12}",
        ) {
            let message = Message { topic: TopicId::from_name(&name), body: arbitrary_body(kind, n, len, byte) };
            let frame = encode(&message).unwrap();
            let buckets: &[usize] =
                if message.body.is_payload() { &PAYLOAD_BUCKETS } else { &CONTROL_BUCKETS };
            proptest::prop_assert!(buckets.contains(&frame.len()));
            proptest::prop_assert_eq!(frame_len(frame[..2].try_into().unwrap(), frame[2]), Some(frame.len()));
            let decoded = decode(&frame).unwrap();
            match (&message.body, &decoded.body) {
                // Membership messages keep the peers that fit a control frame, in order.
                (Body::Shuffle { peers: sent, .. }, Body::Shuffle { peers: got, .. })
                | (Body::ShuffleReply { peers: sent, .. }, Body::ShuffleReply { peers: got, .. }) => {
                    proptest::prop_assert!(got.len() >= sent.len().min(7));
                    proptest::prop_assert_eq!(&sent[..got.len()], &got[..]);
                }
                _ => proptest::prop_assert_eq!(&decoded, &message),
            }
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..4200)) {
            if let Ok(message) = decode(&bytes) {
                // Whatever decodes was a well-formed frame: it encodes to the same length.
                proptest::prop_assert_eq!(encode(&message).unwrap().len(), bytes.len());
            }
        }
    }
}
