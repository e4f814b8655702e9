//! Unsigned-varint length-prefixed frames, the framing of `/mix/1.0.0` (the reference's
//! `writeLp` / `readLp`) and of every other stream this project opens: exits' pooled
//! deliveries, the stream layer's frames, the testnet's echo service. One implementation, so
//! that the limits (the largest frame, a whole frame within a timeout once it has started)
//! hold the same everywhere.

use std::io;
use std::task::Poll;
use std::time::Duration;

use futures::future::{Either, select};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures_timer::Delay;

/// The longest varint a frame length may take here (frames are far below 2 MiB).
const MAX_VARINT_LEN: usize = 3;

/// A frame that could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The stream failed, or ended inside a frame.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// The prefix announced more than the reader accepts.
    #[error("frame of {0} bytes exceeds the maximum")]
    Oversized(u64),
    /// The frame started but did not complete in time.
    #[error("frame did not complete within the timeout")]
    Timeout,
    /// The prefix is not a varint this reader accepts.
    #[error("malformed length prefix")]
    BadPrefix,
    /// A whole frame, of a length the protocol does not use (a packet must be 4608 bytes).
    #[error("frame of {0} bytes is not a packet")]
    WrongLength(usize),
}

/// `data` behind its unsigned-varint length prefix, as one buffer: on a muxed stream every
/// write becomes a frame of its own (and often a syscall), so prefix and body go out together.
pub fn encode(data: &[u8]) -> Vec<u8> {
    let mut prefix = unsigned_varint::encode::usize_buffer();
    let prefix = unsigned_varint::encode::usize(data.len(), &mut prefix);
    let mut out = Vec::with_capacity(prefix.len() + data.len());
    out.extend_from_slice(prefix);
    out.extend_from_slice(data);
    out
}

/// Writes frames already carrying their length prefix (see [`encode`]), then flushes once.
/// `written` counts the frames written whole as they go, so that a caller whose write fails,
/// or is given up on, puts back only the others.
pub async fn write_all<W: AsyncWrite + Unpin>(
    io: &mut W,
    frames: &[Vec<u8>],
    written: &mut usize,
) -> io::Result<()> {
    for frame in frames {
        io.write_all(frame).await?;
        *written += 1;
    }
    io.flush().await
}

/// Reads the next frame. `Ok(None)` is a clean end of stream between frames. Waiting for a
/// frame to start is unbounded (pooled streams idle between packets), but once its first byte
/// arrived the whole frame must follow within `timeout`.
pub async fn read<R: AsyncRead + Unpin>(
    io: &mut R,
    max: usize,
    timeout: Duration,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut first = [0u8; 1];
    if io.read(&mut first).await? == 0 {
        return Ok(None);
    }
    match within(timeout, read_after(io, first[0], max)).await {
        Some(result) => result.map(Some),
        None => Err(FrameError::Timeout),
    }
}

/// `future`'s output, or `None` if it takes longer than `timeout`. A future that is ready at
/// once (usually: the whole frame is buffered already) finishes without arming a timer, which
/// would cost a wake-up of the global timer thread per frame.
pub async fn within<T>(timeout: Duration, future: impl Future<Output = T>) -> Option<T> {
    futures::pin_mut!(future);
    if let Poll::Ready(output) = futures::poll!(future.as_mut()) {
        return Some(output);
    }
    match select(future, Delay::new(timeout)).await {
        Either::Left((output, _)) => Some(output),
        Either::Right(_) => None,
    }
}

/// The rest of a frame whose first byte, `first`, was read already (a reader that waits for a
/// frame to start without a deadline, then gives the rest one).
pub async fn read_after<R: AsyncRead + Unpin>(
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

/// The frame at the start of `data` and what follows it, if `data` starts with a whole frame.
pub fn decode(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = unsigned_varint::decode::usize(data).ok()?;
    (rest.len() >= len).then(|| rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use futures::io::Cursor;

    #[test]
    fn frames_round_trip_and_limits_hold() {
        let frames = vec![vec![1u8; 4608], vec![], vec![7u8; 300]];
        let framed: Vec<Vec<u8>> = frames.iter().map(|f| encode(f)).collect();
        let mut buf = Cursor::new(Vec::new());
        let mut written = 0;
        block_on(write_all(&mut buf, &framed, &mut written)).unwrap();
        assert_eq!(written, frames.len());
        assert_eq!(
            &buf.get_ref()[..2],
            &[0x80, 0x24],
            "4608 is prefixed 80 24 as in the reference"
        );
        let mut reader = Cursor::new(buf.into_inner());
        for f in &frames {
            let got = block_on(read(&mut reader, 4608, Duration::from_secs(1))).unwrap();
            assert_eq!(got.as_ref(), Some(f));
        }
        assert!(block_on(read(&mut reader, 4608, Duration::from_secs(1))).unwrap().is_none());

        let mut big = Cursor::new(vec![0x81, 0x24]); // 4609
        let err = block_on(read(&mut big, 4608, Duration::from_secs(1))).unwrap_err();
        assert!(matches!(err, FrameError::Oversized(4609)));
        let mut endless = Cursor::new(vec![0xff, 0xff, 0xff, 0x01]);
        let err = block_on(read(&mut endless, 4608, Duration::from_secs(1))).unwrap_err();
        assert!(matches!(err, FrameError::BadPrefix));
        let mut short = Cursor::new(vec![0x05, 1, 2]);
        let err = block_on(read(&mut short, 4608, Duration::from_secs(1))).unwrap_err();
        assert!(matches!(err, FrameError::Io(_)));
    }

    #[test]
    fn a_buffer_decodes_to_its_first_frame() {
        let mut data = encode(b"abc");
        data.push(9);
        assert_eq!(decode(&data), Some((&b"abc"[..], &[9u8][..])));
        assert_eq!(decode(&data[..3]), None, "cut short");
        assert_eq!(decode(&[]), None);
    }
}
