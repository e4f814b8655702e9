//! Wire framing: `/mix/1.0.0` streams carry unsigned-varint length-prefixed frames, several per
//! stream, one packet per frame (the reference's `writeLp` / `readLp`). The exit's reads from
//! destinations follow a [`ReadRule`].

use std::io;
use std::task::Poll;
use std::time::Duration;

use futures::future::{Either, select};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures_timer::Delay;
use libp2p_swarm::StreamProtocol;

/// The protocol id of the Mix Protocol.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/mix/1.0.0");

/// The longest varint a frame length may take (4608 needs 2 bytes).
const MAX_VARINT_LEN: usize = 3;

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

/// A frame that could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("frame of {0} bytes exceeds the maximum")]
    Oversized(u64),
    #[error("frame did not complete within the timeout")]
    Timeout,
    #[error("malformed length prefix")]
    BadPrefix,
    #[error("frame of {0} bytes is not a packet")]
    WrongLength(usize),
}

/// `data` behind its unsigned-varint length prefix, as one buffer: on a muxed stream every
/// write becomes a frame of its own (and often a syscall), so prefix and body go out together.
pub(crate) fn length_prefixed(data: &[u8]) -> Vec<u8> {
    let mut prefix = unsigned_varint::encode::usize_buffer();
    let prefix = unsigned_varint::encode::usize(data.len(), &mut prefix);
    let mut out = Vec::with_capacity(prefix.len() + data.len());
    out.extend_from_slice(prefix);
    out.extend_from_slice(data);
    out
}

/// Writes frames already carrying their length prefix (see [`length_prefixed`]), then flushes
/// once.
pub(crate) async fn write_frames<W: AsyncWrite + Unpin>(
    io: &mut W,
    frames: &[Vec<u8>],
) -> io::Result<()> {
    for frame in frames {
        io.write_all(frame).await?;
    }
    io.flush().await
}

/// Reads the next frame. `Ok(None)` is a clean end of stream between frames. Waiting for a
/// frame to start is unbounded (pooled streams idle between packets), but once its first byte
/// arrived the whole frame must follow within `timeout`.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    io: &mut R,
    max: usize,
    timeout: Duration,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut first = [0u8; 1];
    if io.read(&mut first).await? == 0 {
        return Ok(None);
    }
    let rest = read_rest(io, first[0], max);
    futures::pin_mut!(rest);
    // Usually the whole frame is already buffered: finish it without arming a timer, which
    // would cost a wake-up of the global timer thread per packet.
    if let Poll::Ready(result) = futures::poll!(rest.as_mut()) {
        return result.map(Some);
    }
    match select(rest, Delay::new(timeout)).await {
        Either::Left((result, _)) => result.map(Some),
        Either::Right(_) => Err(FrameError::Timeout),
    }
}

async fn read_rest<R: AsyncRead + Unpin>(
    io: &mut R,
    first: u8,
    max: usize,
) -> Result<Vec<u8>, FrameError> {
    let mut prefix = [0u8; MAX_VARINT_LEN];
    prefix[0] = first;
    let mut len = 1;
    while prefix[len - 1] & 0x80 != 0 {
        if len == MAX_VARINT_LEN {
            return Err(FrameError::BadPrefix);
        }
        io.read_exact(&mut prefix[len..=len]).await?;
        len += 1;
    }
    let (size, _) =
        unsigned_varint::decode::u64(&prefix[..len]).map_err(|_| FrameError::BadPrefix)?;
    if size > max as u64 {
        return Err(FrameError::Oversized(size));
    }
    let mut frame = vec![0u8; size as usize];
    io.read_exact(&mut frame).await?;
    Ok(frame)
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
            let frame = read_rest(io, first[0], max).await?;
            let mut prefix = unsigned_varint::encode::usize_buffer();
            let mut reply = unsigned_varint::encode::usize(frame.len(), &mut prefix).to_vec();
            reply.extend_from_slice(&frame);
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
    fn frames_round_trip_and_limits_hold() {
        let frames = vec![vec![1u8; 4608], vec![], vec![7u8; 300]];
        let framed: Vec<Vec<u8>> = frames.iter().map(|f| length_prefixed(f)).collect();
        let mut buf = Cursor::new(Vec::new());
        block_on(write_frames(&mut buf, &framed)).unwrap();
        assert_eq!(
            &buf.get_ref()[..2],
            &[0x80, 0x24],
            "4608 is prefixed 80 24 as in the reference"
        );
        let mut reader = Cursor::new(buf.into_inner());
        for f in &frames {
            let got = block_on(read_frame(&mut reader, 4608, Duration::from_secs(1))).unwrap();
            assert_eq!(got.as_ref(), Some(f));
        }
        assert!(block_on(read_frame(&mut reader, 4608, Duration::from_secs(1))).unwrap().is_none());

        let mut big = Cursor::new(vec![0x81, 0x24]); // 4609
        let err = block_on(read_frame(&mut big, 4608, Duration::from_secs(1))).unwrap_err();
        assert!(matches!(err, FrameError::Oversized(4609)));
        let mut endless = Cursor::new(vec![0xff, 0xff, 0xff, 0x01]);
        let err = block_on(read_frame(&mut endless, 4608, Duration::from_secs(1))).unwrap_err();
        assert!(matches!(err, FrameError::BadPrefix));
        let mut short = Cursor::new(vec![0x05, 1, 2]);
        let err = block_on(read_frame(&mut short, 4608, Duration::from_secs(1))).unwrap_err();
        assert!(matches!(err, FrameError::Io(_)));
    }

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
}
