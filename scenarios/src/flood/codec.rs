//! The flooder's framing: the aggregator's (a u32 big-endian length, then the bytes), except
//! that a request may claim a length other than the bytes it carries, and nothing is capped on
//! the way out. Answers are read with a cap.

use std::io;

use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{StreamProtocol, request_response};

/// What the aggregator speaks (`net::codec::PROTOCOL`).
pub(crate) const PROTOCOL: StreamProtocol = StreamProtocol::new("/fedistil/1");

/// Largest answer read (a reference-set chunk is at most 1 MiB).
const MAX_ANSWER: usize = 2 << 20;

/// A frame as sent: `bytes` after a length prefix of `claimed` (their own length if None).
#[derive(Clone, Debug)]
pub(crate) struct Frame {
    pub(crate) claimed: Option<u32>,
    pub(crate) bytes: Vec<u8>,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct FloodCodec;

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let n = u32::from_be_bytes(len) as usize;
    if n > MAX_ANSWER {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("frame of {n} bytes")));
    }
    let mut buf = Vec::new();
    io.take(n as u64).read_to_end(&mut buf).await?;
    if buf.len() < n {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(buf)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, claimed: u32, bytes: &[u8]) -> io::Result<()> {
    io.write_all(&claimed.to_be_bytes()).await?;
    io.write_all(bytes).await?;
    io.flush().await
}

impl request_response::Codec for FloodCodec {
    type Protocol = StreamProtocol;
    type Request = Frame;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Frame>
    where
        T: AsyncRead + Unpin + Send,
    {
        Ok(Frame { claimed: None, bytes: read_frame(io).await? })
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io).await
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: Frame) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, req.claimed.unwrap_or(req.bytes.len() as u32), &req.bytes).await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, res: Vec<u8>) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, res.len() as u32, &res).await
    }
}
