//! What a client that does not speak TLS is told on a TLS port, in its own protocol, so that it
//! fails at once naming the cause instead of "connection closed" or a retry loop: plain HTTP
//! on `--listen` gets a 400 saying to use `https://`; plaintext HTTP/2 (gRPC) on
//! `--xds-listen` gets its first call ended with `UNAVAILABLE` and the reason.
//!
//! [`crate::tls`] calls it once a connection's first byte is not a TLS record. The xDS
//! listener also ends, through [`refuse_call`], the first call of a TLS connection whose
//! client certificate `all` refuses, with `UNAUTHENTICATED` and the reason. Either way it
//! writes a fixed answer and reads at most [`PLAINTEXT_FRAMES`] frames and [`PLAINTEXT_READ`]
//! bytes within a bounded time, then closes.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::accept::Port;

/// What every HTTP/2 client sends first (RFC 9113 section 3.4); the xDS listener waits for it
/// too.
pub(crate) const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a plain HTTP request to the TLS port gets.
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 74\r\nconnection: close\r\n\r\n{\"error\":\"this port speaks HTTPS only: use an https:// URL for this node\"}";

/// Tells a client that does not speak TLS on `port` why it is refused, then closes.
pub(crate) async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, port: Port) {
    let answer = async {
        match port {
            Port::Http => {
                stream.write_all(PLAIN_HTTP_ANSWER).await?;
                drain_and_close(&mut stream).await
            }
            Port::Xds => refuse_grpc(stream).await,
        }
    };
    let _ = tokio::time::timeout(REFUSAL_TIME, answer).await;
}

/// How long a refused client (one that does not speak the port's protocol) is given to read
/// why before its connection is closed.
const REFUSAL_TIME: Duration = Duration::from_secs(2);

/// Most bytes read from a refused client while it reads why (see [`drain_and_close`]).
const REFUSAL_BYTES: usize = 64 * 1024;

/// Closes our side of a refused connection once its answer is written, then reads what the
/// client sent (at most [`REFUSAL_BYTES`]) until it closes its side: closing with its bytes
/// unread would reset the connection, and a reset can destroy the answer before the client has
/// read it. [`refuse`] bounds it in time ([`REFUSAL_TIME`]).
async fn drain_and_close<S>(stream: &mut S) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.shutdown().await?;
    let mut sink = [0u8; 1024];
    let mut left = REFUSAL_BYTES;
    while left > 0 {
        match stream.read(&mut sink).await? {
            0 => break,
            n => left = left.saturating_sub(n),
        }
    }
    Ok(())
}

/// What a plaintext gRPC client on the TLS port is told, as its call's status message.
const PLAINTEXT_REFUSED: &str =
    "this xDS port speaks TLS only: use TLS channel credentials (in an xDS bootstrap: channel_creds type tls)";

/// HTTP/2 frame types and flags (RFC 9113 section 6) used by [`refuse_grpc`].
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_STREAM_AND_HEADERS: u8 = END_STREAM | 0x4;

/// Most bytes (frame headers included) read from a plaintext client before its first
/// request's headers.
const PLAINTEXT_READ: usize = 64 * 1024;

/// Most frames read from a plaintext client before its first request's headers: a client sends
/// its SETTINGS, maybe a WINDOW_UPDATE and a PING, then HEADERS. Empty frames cost nothing in
/// bytes, so without this a client could keep the connection busy for all of [`REFUSAL_TIME`].
const PLAINTEXT_FRAMES: usize = 32;

/// An HTTP/2 frame header: payload length (24 bits), type, flags, stream id.
const FRAME_HEADER: usize = 9;

/// Answers a plaintext HTTP/2 client on the TLS port in a way gRPC reports: its first call ends
/// at once with `UNAVAILABLE` and [`PLAINTEXT_REFUSED`] as the message (see [`refuse_call`]).
async fn refuse_grpc<S: AsyncRead + AsyncWrite + Unpin>(stream: S) -> std::io::Result<()> {
    refuse_call(stream, GRPC_UNAVAILABLE, PLAINTEXT_REFUSED).await
}

/// gRPC status codes [`refuse_call`] answers with.
pub(crate) const GRPC_UNAVAILABLE: u8 = 14;
/// The client is not who it must be (a client certificate refused under `all`).
pub(crate) const GRPC_UNAUTHENTICATED: u8 = 16;

/// Answers the first call of an HTTP/2 client (from its connection preface on) with a
/// trailers-only response of gRPC status `status` and `message` (printable ASCII, as gRPC
/// sends it unencoded), then a GOAWAY, then closes, within [`REFUSAL_TIME`]. Anything short of
/// a gRPC answer (a GOAWAY alone, a TLS alert, a reset) reaches gRPC users as a parse error or
/// as a connection that keeps being retried, naming no cause. A client that is not HTTP/2, or
/// sends more than [`PLAINTEXT_FRAMES`] frames or [`PLAINTEXT_READ`] bytes before its first
/// request, gets nothing.
pub(crate) async fn refuse_call<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    status: u8,
    message: &str,
) -> std::io::Result<()> {
    // Frames are read a header at a time: buffered, a flood of small frames costs one read(2)
    // per buffer, not two per frame.
    let mut stream = tokio::io::BufReader::new(stream);
    let answer = async {
        let mut preface = [0u8; PREFACE.len()];
        stream.read_exact(&mut preface).await?;
        if &preface != PREFACE {
            return drain_and_close(&mut stream).await;
        }
        stream.write_all(&frame(SETTINGS, 0, 0, &[])).await?;
        let mut budget = Budget::default();
        let first = budget
            .until(&mut stream, |kind, _, _| kind == HEADERS)
            .await?;
        let Some(stream_id) = first else {
            return drain_and_close(&mut stream).await;
        };
        // Trailers-only, HPACK without the dynamic table or Huffman: `:status: 200` (static
        // index 8), `content-type` (static name 31), then two literal names.
        let mut block = vec![0x88, 0x0f, 31 - 15];
        hpack_string(&mut block, b"application/grpc");
        for (name, value) in [
            ("grpc-status", status.to_string().as_str()),
            ("grpc-message", message),
        ] {
            block.push(0);
            hpack_string(&mut block, name.as_bytes());
            hpack_string(&mut block, value.as_bytes());
        }
        stream
            .write_all(&frame(HEADERS, END_STREAM_AND_HEADERS, stream_id, &block))
            .await?;
        stream.flush().await?;
        // The GOAWAY waits for the client to be done with the call (gRPC resets it on the
        // answer, or half-closes it): one that reads both at once may drop the call's status
        // and report the GOAWAY instead ("Stream removed"). Bounded by the same budget, and
        // by CALL_DONE_WAIT.
        let done = |kind, flags, id| {
            id == stream_id && (kind == RST_STREAM || (kind == DATA && flags & END_STREAM != 0))
        };
        let _ = tokio::time::timeout(CALL_DONE_WAIT, budget.until(&mut stream, done)).await;
        let mut goaway = stream_id.to_be_bytes().to_vec();
        goaway.extend_from_slice(&0u32.to_be_bytes()); // NO_ERROR: the call was answered
        goaway.extend_from_slice(message.as_bytes());
        stream.write_all(&frame(GOAWAY, 0, 0, &goaway)).await?;
        drain_and_close(&mut stream).await
    };
    tokio::time::timeout(REFUSAL_TIME, answer)
        .await
        .unwrap_or(Ok(()))
}

/// How long a refused call's client is given to end its side of the call before the GOAWAY.
const CALL_DONE_WAIT: Duration = Duration::from_millis(500);

/// What is left of the frames and bytes read from a refused client ([`PLAINTEXT_FRAMES`],
/// [`PLAINTEXT_READ`]).
struct Budget {
    frames: usize,
    bytes: usize,
}

impl Default for Budget {
    fn default() -> Budget {
        Budget {
            frames: PLAINTEXT_FRAMES,
            bytes: PLAINTEXT_READ,
        }
    }
}

impl Budget {
    /// Reads frames up to one that `wanted(type, flags, stream id)`; its stream id, or `None`
    /// once the client sent more frames or bytes than are left.
    async fn until<S: AsyncRead + Unpin>(
        &mut self,
        stream: &mut S,
        wanted: impl Fn(u8, u8, u32) -> bool,
    ) -> std::io::Result<Option<u32>> {
        while let Some(frames) = self.frames.checked_sub(1) {
            self.frames = frames;
            let mut head = [0u8; FRAME_HEADER];
            stream.read_exact(&mut head).await?;
            let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let Some(bytes) = self.bytes.checked_sub(FRAME_HEADER + length) else {
                return Ok(None);
            };
            self.bytes = bytes;
            let mut payload = vec![0u8; length];
            stream.read_exact(&mut payload).await?;
            let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            if wanted(head[3], head[4], id) {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }
}

/// One HTTP/2 frame.
fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut frame = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    frame.extend_from_slice(&[kind, flags]);
    frame.extend_from_slice(&stream_id.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// An HPACK string literal, not Huffman-coded (RFC 7541 5.1 and 5.2).
fn hpack_string(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut length = bytes.len();
    if length < 127 {
        out.push(length as u8);
    } else {
        out.push(127);
        length -= 127;
        while length >= 128 {
            out.push((length % 128 + 128) as u8);
            length /= 128;
        }
        out.push(length as u8);
    }
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpack_lengths_of_127_and_more_take_more_bytes() {
        let mut out = Vec::new();
        hpack_string(&mut out, &[b'x'; 126]);
        assert_eq!(out[0], 126);
        out.clear();
        hpack_string(&mut out, &[b'x'; 127]);
        assert_eq!(&out[..2], &[127, 0]);
        out.clear();
        hpack_string(&mut out, &[b'x'; 300]);
        assert_eq!(&out[..3], &[127, 173, 1]);
        assert_eq!(out.len(), 3 + 300);
    }

    /// What a client that sends `before` (after the preface) then a request's HEADERS is
    /// answered.
    async fn answer_after(before: &[u8]) -> Vec<u8> {
        let (mut client, server) = tokio::io::duplex(256 * 1024);
        let refused = tokio::spawn(refuse_grpc(server));
        client.write_all(PREFACE).await.unwrap();
        client.write_all(before).await.unwrap();
        client
            .write_all(&frame(HEADERS, 0x4, 1, &[0x83, 0x86]))
            .await
            .unwrap();
        client.shutdown().await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        refused.await.unwrap().unwrap();
        answer
    }

    #[tokio::test]
    async fn a_plaintext_client_is_answered_within_32_frames_and_not_one_more() {
        let settings = frame(SETTINGS, 0, 0, &[]);
        let empty = frame(SETTINGS, 0, 0, &[]);
        let within = answer_after(&empty.repeat(PLAINTEXT_FRAMES - 1)).await;
        assert!(within.len() > settings.len(), "answered: {within:?}");
        let past = answer_after(&empty.repeat(PLAINTEXT_FRAMES)).await;
        assert_eq!(past, settings, "one frame past: no answer, closed");
    }

    #[tokio::test]
    async fn frame_headers_count_against_the_bytes_read_from_a_plaintext_client() {
        let settings = frame(SETTINGS, 0, 0, &[]);
        // With the request's HEADERS (9 + 2 bytes), exactly PLAINTEXT_READ: answered.
        let fits = frame(0x8, 0, 0, &vec![0; PLAINTEXT_READ - 2 * FRAME_HEADER - 2]);
        assert!(answer_after(&fits).await.len() > settings.len());
        // One byte more: its payload alone would have fit, headers not counted.
        let over = frame(0x8, 0, 0, &vec![0; PLAINTEXT_READ - 2 * FRAME_HEADER - 1]);
        assert_eq!(answer_after(&over).await, settings);
    }

    #[tokio::test]
    async fn a_plaintext_grpc_call_gets_a_trailers_only_unavailable_with_the_reason() {
        let answer = answer_after(&frame(SETTINGS, 0, 0, &[])).await;
        assert_eq!(&answer[..9], &frame(SETTINGS, 0, 0, &[])[..]);
        let headers = &answer[9..];
        let length = u32::from_be_bytes([0, headers[0], headers[1], headers[2]]) as usize;
        assert_eq!(
            &headers[3..9],
            &[HEADERS, END_STREAM_AND_HEADERS, 0, 0, 0, 1]
        );
        let block = &headers[9..9 + length];
        let text = String::from_utf8_lossy(block);
        assert!(text.contains("grpc-status\x0214"), "{text:?}");
        assert!(text.contains(PLAINTEXT_REFUSED), "{text:?}");
        let goaway = &headers[9 + length..];
        assert_eq!(goaway[3], GOAWAY);
    }
}
