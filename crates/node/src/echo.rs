//! The echo service the testnet's nodes offer as destinations: a request-response protocol
//! (one length-prefixed frame each way) whose reply is the request with `echo:` in front.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{StreamProtocol, request_response};
use libp2p_mix::framing;

/// A tiny request-response service the testnet's nodes offer as destinations: the reply is
/// the request with `echo:` in front. One varint length-prefixed frame each way.
pub(crate) const ECHO: &str = "/mixnode/echo/1.0.0";
pub(crate) const ECHO_MAX: usize = 4096;

#[derive(Debug, Clone, Default)]
pub(crate) struct EchoCodec;

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    let mut first = [0u8; 1];
    io.read_exact(&mut first).await?;
    framing::read_after(io, first[0], ECHO_MAX).await.map_err(io::Error::other)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, data: &[u8]) -> io::Result<()> {
    io.write_all(&length_prefixed(data)).await?;
    io.close().await
}

/// `data` behind its unsigned-varint length.
pub(crate) fn length_prefixed(data: &[u8]) -> Vec<u8> {
    framing::encode(data)
}

impl request_response::Codec for EchoCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        r: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &r).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        r: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &r).await
    }
}

/// The payload inside one length-prefixed frame, if `data` is exactly that.
pub(crate) fn unframe(data: &[u8]) -> Option<&[u8]> {
    framing::decode(data).filter(|(_, rest)| rest.is_empty()).map(|(frame, _)| frame)
}
