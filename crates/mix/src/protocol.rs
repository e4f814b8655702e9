//! The protocol id, and how exits deliver to destinations: `/mix/1.0.0` streams carry
//! [`crate::framing`] frames, one packet each; the exit's reads from destinations follow a
//! [`ReadRule`].

use futures::{AsyncRead, AsyncReadExt};
use libp2p_swarm::StreamProtocol;

use crate::framing::{self, FrameError};

/// The protocol id of the Mix Protocol.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/mix/1.0.0");

/// How an exit reads a destination's reply, registered per origin protocol. Without a rule
/// the exit writes the message and reads nothing.
///
/// Each delivery opens a new stream to the destination. Protocols that keep a single inbound
/// stream per connection can drop it in favour of another: libp2p-ping, for one, replaces its
/// inbound stream whenever a new one arrives, so an exit that itself runs ping may see its
/// delivery displaced by its own first ping on a fresh connection (the request then times out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadRule {
    /// Exactly this many bytes (e.g. 32 for `/ipfs/ping/1.0.0`).
    Exact(usize),
    /// One unsigned-varint length-prefixed frame of at most `max` bytes; the reply carries the
    /// prefix too, as the destination wrote it.
    LengthPrefixed {
        /// The largest frame accepted.
        max: usize,
    },
    /// Everything until the destination closes its side, at most `max` bytes: how
    /// rust-libp2p's request-response codecs (`json`, `cbor`) answer. More than `max` fails
    /// the delivery.
    ToEnd {
        /// The longest reply accepted.
        max: usize,
    },
}

/// How the exit delivers messages of one origin protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExitProtocol {
    /// How to read the destination's reply when the sender attached SURBs; `None` writes the
    /// message and reads nothing.
    pub read: Option<ReadRule>,
    /// If the destination resets or closes the stream before replying, open a second stream
    /// and deliver once more. Only for protocols where a repeated message is harmless (ping,
    /// lookups): the destination may have acted on the first one.
    pub retry_on_reset: bool,
    /// Deliver messages that expect no reply as unsigned-varint length-prefixed frames, several
    /// per stream, on one stream per connection kept open (as `/mix/1.0.0` carries packets),
    /// instead of a stream per message. Only for protocols whose destinations read them that
    /// way; it spares a stream negotiation per message.
    pub pooled: bool,
}

/// Reads a destination's reply by `rule`.
pub(crate) async fn read_reply<R: AsyncRead + Unpin>(
    io: &mut R,
    rule: ReadRule,
) -> Result<Vec<u8>, FrameError> {
    match rule {
        ReadRule::Exact(n) => {
            let mut reply = vec![0u8; n];
            io.read_exact(&mut reply).await?;
            Ok(reply)
        }
        ReadRule::LengthPrefixed { max } => {
            let mut first = [0u8; 1];
            io.read_exact(&mut first).await?;
            let frame = framing::read_after(io, first[0], max).await?;
            Ok(framing::encode(&frame))
        }
        ReadRule::ToEnd { max } => {
            let mut reply = Vec::new();
            let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
            io.take(limit).read_to_end(&mut reply).await?;
            if reply.len() > max {
                return Err(FrameError::Oversized(reply.len() as u64));
            }
            Ok(reply)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use futures::io::Cursor;

    #[test]
    fn replies_are_read_by_rule() {
        let mut io = Cursor::new(vec![3u8, b'a', b'b', b'c', 9, 9]);
        let reply = block_on(read_reply(&mut io, ReadRule::LengthPrefixed { max: 10 })).unwrap();
        assert_eq!(reply, vec![3, b'a', b'b', b'c']);
        let reply = block_on(read_reply(&mut io, ReadRule::Exact(2))).unwrap();
        assert_eq!(reply, vec![9, 9]);
        let mut io = Cursor::new(vec![50u8]);
        assert!(block_on(read_reply(&mut io, ReadRule::LengthPrefixed { max: 10 })).is_err());
    }

    #[test]
    fn a_reply_to_the_end_is_bounded() {
        let reply = block_on(read_reply(
            &mut Cursor::new(b"{\"ok\":1}".to_vec()),
            ReadRule::ToEnd { max: 8 },
        ));
        assert_eq!(reply.unwrap(), b"{\"ok\":1}");
        let long = block_on(read_reply(&mut Cursor::new(vec![7u8; 9]), ReadRule::ToEnd { max: 8 }));
        assert!(matches!(long, Err(FrameError::Oversized(9))), "{long:?}");
    }
}
