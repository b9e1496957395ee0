//! Request-response framing: a u32 big-endian length, then that many bytes (a signed protocol
//! envelope). Each frame is capped at its message kind's own size ([`Limits::frame_cap`]): the
//! kind is read from the envelope's first bytes, and a frame over its kind's cap is refused
//! before the rest is read. The buffer grows as bytes arrive; a claimed length is never
//! allocated up front.
//!
//! A request carries a [`Written`] flag that the codec sets when it starts writing it: a request
//! that failed before that point never left, so sending it again cannot deliver it twice.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{StreamProtocol, request_response};
use protocol::Limits;
use protocol::codec::{ENVELOPE_HEADER_BYTES, peek_kind};

/// The protocol name spoken over request-response.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/fedistil/1");

/// Bytes reserved for a frame before its bytes arrive; beyond, the buffer grows as they do.
const INITIAL_BUFFER: usize = 64 << 10;

/// Length-prefixed byte frames, each capped at its message kind's size under `limits`.
#[derive(Clone, Debug)]
pub struct FrameCodec {
    /// The caps of the frames read; frames written are capped at the largest kind's.
    pub limits: Limits,
}

/// Whether the codec has started writing a request (shared by the request's clones).
#[derive(Clone, Debug, Default)]
pub struct Written(Arc<AtomicBool>);

impl Written {
    /// Whether any byte of the request may have been written.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// A request's frame, and (outbound) whether the codec has started writing it.
#[derive(Clone, Debug, Default)]
pub struct Request {
    /// The frame's bytes.
    pub bytes: Vec<u8>,
    /// Set when the codec starts writing them.
    pub written: Written,
}

fn invalid(detail: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, detail)
}

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T, limits: &Limits) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let n = u32::from_be_bytes(len) as usize;
    let max = limits.max_frame();
    if n > max {
        return Err(invalid(format!("frame of {n} bytes exceeds the cap of {max}")));
    }
    let mut buf = Vec::with_capacity(n.min(INITIAL_BUFFER));
    read_up_to(io, n.min(ENVELOPE_HEADER_BYTES), &mut buf).await?;
    let kind = peek_kind(&buf);
    let cap = limits.frame_cap(kind);
    if n > cap {
        return Err(invalid(format!("frame of {n} bytes exceeds the cap of {cap} for {kind:?}")));
    }
    read_up_to(io, n, &mut buf).await?;
    Ok(buf)
}

/// Reads until `buf` holds `n` bytes, growing it as bytes arrive.
async fn read_up_to<T: AsyncRead + Unpin + Send>(io: &mut T, n: usize, buf: &mut Vec<u8>) -> io::Result<()> {
    let missing = n.saturating_sub(buf.len()) as u64;
    io.take(missing).read_to_end(buf).await?;
    if buf.len() < n {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("frame ended after {} of {n} bytes", buf.len()),
        ));
    }
    Ok(())
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, data: &[u8], max: usize) -> io::Result<()> {
    if data.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame of {} bytes exceeds the cap of {max}", data.len()),
        ));
    }
    io.write_all(&(data.len() as u32).to_be_bytes()).await?;
    io.write_all(data).await?;
    io.flush().await
}

impl request_response::Codec for FrameCodec {
    type Protocol = StreamProtocol;
    type Request = Request;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        Ok(Request { bytes: read_frame(io, &self.limits).await?, written: Written::default() })
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, &self.limits).await
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: Request) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        req.written.set();
        write_frame(io, &req.bytes, self.limits.max_frame()).await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, res: Vec<u8>) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &res, self.limits.max_frame()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::futures::executor::block_on;
    use libp2p::futures::io::Cursor;
    use protocol::MessageKind;

    fn framed(data: &[u8]) -> Cursor<Vec<u8>> {
        let mut v = (data.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(data);
        Cursor::new(v)
    }

    /// An envelope header (version 1, `kind`) padded with zeros to `n` bytes.
    fn envelope_of(kind: MessageKind, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        v[0] = protocol::PROTOCOL_VERSION as u8;
        v[1] = kind as u8;
        v
    }

    #[test]
    fn frames_round_trip_and_each_kind_is_capped_at_its_own_size() {
        block_on(async {
            let limits = Limits {
                max_samples: 100,
                max_classes: 10,
                encoding: Some(protocol::Encoding::Q8),
                ..Limits::default()
            };
            let mut buf = Cursor::new(Vec::new());
            let hello = envelope_of(MessageKind::Hello, 40);
            write_frame(&mut buf, &hello, limits.max_frame()).await.unwrap();
            buf.set_position(0);
            assert_eq!(read_frame(&mut buf, &limits).await.unwrap(), hello);
            let mut big = Cursor::new(Vec::new());
            assert!(write_frame(&mut big, &vec![0u8; limits.max_frame() + 1], limits.max_frame()).await.is_err());
            // A hello one byte over its kind's cap is refused, though a submission of that size
            // would be read.
            let hello_cap = limits.frame_cap(Some(MessageKind::Hello));
            let e =
                read_frame(&mut framed(&envelope_of(MessageKind::Hello, hello_cap + 1)), &limits).await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            assert!(read_frame(&mut framed(&envelope_of(MessageKind::Hello, hello_cap)), &limits).await.is_ok());
            assert!(
                read_frame(&mut framed(&envelope_of(MessageKind::Submission, hello_cap + 1)), &limits).await.is_ok()
            );
            let sub_cap = limits.frame_cap(Some(MessageKind::Submission));
            assert!(
                read_frame(&mut framed(&envelope_of(MessageKind::Submission, sub_cap + 1)), &limits).await.is_err()
            );
            // Bytes that name no kind get the smallest cap.
            assert!(read_frame(&mut framed(&vec![0u8; hello_cap + 1]), &limits).await.is_err());
            let mut claim = Cursor::new(((1u32 << 31).to_be_bytes()).to_vec());
            assert_eq!(read_frame(&mut claim, &limits).await.unwrap_err().kind(), io::ErrorKind::InvalidData);
            let mut short = Cursor::new(vec![0, 0, 0, 9, 1, 2]);
            assert_eq!(read_frame(&mut short, &limits).await.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        });
    }

    #[test]
    fn a_claimed_length_is_not_reserved_before_its_bytes_arrive() {
        block_on(async {
            let limits = Limits::default();
            // A submission frame claiming 16 MiB of which 100 bytes arrive.
            let n = 16 << 20;
            assert!(n <= limits.frame_cap(Some(MessageKind::Submission)));
            let mut input = (n as u32).to_be_bytes().to_vec();
            input.extend(envelope_of(MessageKind::Submission, 100));
            let mut io = Cursor::new(input);
            let mut len = [0u8; 4];
            io.read_exact(&mut len).await.unwrap();
            let mut buf = Vec::with_capacity(INITIAL_BUFFER);
            let e = read_up_to(&mut io, n, &mut buf).await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
            assert_eq!(buf.len(), 100);
            assert!(buf.capacity() < 1 << 20, "{} bytes reserved for 100 received", buf.capacity());
        });
    }

    #[test]
    fn a_request_is_marked_written_when_the_codec_starts_writing_it() {
        block_on(async {
            let mut codec = FrameCodec { limits: Limits::default() };
            let hello = envelope_of(MessageKind::Hello, 40);
            let request = Request { bytes: hello.clone(), written: Written::default() };
            let written = request.written.clone();
            assert!(!written.get(), "not yet written: it may be sent again");
            let mut wire = Cursor::new(Vec::new());
            request_response::Codec::write_request(&mut codec, &PROTOCOL, &mut wire, request).await.unwrap();
            assert!(written.get(), "written: it must not be sent again");
            wire.set_position(0);
            let read = request_response::Codec::read_request(&mut codec, &PROTOCOL, &mut wire).await.unwrap();
            assert_eq!(read.bytes, hello);
        });
    }
}
