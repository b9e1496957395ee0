//! Request-response framing: a u32 big-endian length, then that many bytes (a signed protocol
//! envelope). Reads refuse a length above the cap before allocating.

use std::io;

use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{request_response, StreamProtocol};

/// The protocol name spoken over request-response.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/fedistil/1");

/// Length-prefixed byte frames, capped at `max` bytes.
#[derive(Clone, Debug)]
pub struct FrameCodec {
    /// Largest frame accepted or sent.
    pub max: usize,
}

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let n = u32::from_be_bytes(len) as usize;
    if n > max {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("frame of {n} bytes exceeds the cap of {max}")));
    }
    let mut buf = vec![0u8; n];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, data: &[u8], max: usize) -> io::Result<()> {
    if data.len() > max {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("frame of {} bytes exceeds the cap of {max}", data.len())));
    }
    io.write_all(&(data.len() as u32).to_be_bytes()).await?;
    io.write_all(data).await?;
    io.flush().await
}

impl request_response::Codec for FrameCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.max).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.max).await
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: Vec<u8>) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req, self.max).await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, res: Vec<u8>) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &res, self.max).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::futures::executor::block_on;
    use libp2p::futures::io::Cursor;

    #[test]
    fn frames_round_trip_and_oversized_frames_are_refused() {
        block_on(async {
            let mut buf = Cursor::new(Vec::new());
            write_frame(&mut buf, b"hello", 16).await.unwrap();
            buf.set_position(0);
            assert_eq!(read_frame(&mut buf, 16).await.unwrap(), b"hello");
            let mut big = Cursor::new(Vec::new());
            assert!(write_frame(&mut big, &[0u8; 17], 16).await.is_err());
            let mut claim = Cursor::new(((1u32 << 31).to_be_bytes()).to_vec());
            let e = read_frame(&mut claim, 1024).await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            let mut short = Cursor::new(vec![0, 0, 0, 9, 1, 2]);
            assert!(read_frame(&mut short, 1024).await.is_err());
        });
    }
}
