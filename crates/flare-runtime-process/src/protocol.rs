//! Frames of the worker protocol (environments/PROTOCOL.md): a JSON header
//! and a byte body, each behind a big-endian u32 length.

use bytes::Bytes;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest header accepted from a worker.
const MAX_HEADER: u32 = 16 << 20;
/// Largest body accepted from a worker (a response).
pub(crate) const MAX_BODY: u32 = 64 << 20;

#[derive(Debug)]
pub(crate) struct Frame {
    pub header: Value,
    pub body: Bytes,
}

impl Frame {
    pub fn new(header: Value) -> Self {
        Frame {
            header,
            body: Bytes::new(),
        }
    }

    pub fn op(&self) -> &str {
        self.header.get("op").and_then(Value::as_str).unwrap_or("")
    }

    pub fn str(&self, field: &str) -> Option<&str> {
        self.header.get(field).and_then(Value::as_str)
    }
}

pub(crate) async fn read(reader: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Frame> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let header_len = reader.read_u32().await?;
    if header_len > MAX_HEADER {
        return Err(invalid(&format!(
            "a frame header of {header_len} bytes is larger than the limit of {MAX_HEADER} bytes"
        )));
    }
    let mut header = vec![0; header_len as usize];
    reader.read_exact(&mut header).await?;
    let header: Value =
        serde_json::from_slice(&header).map_err(|e| invalid(&format!("bad frame header: {e}")))?;
    let body_len = reader.read_u32().await?;
    if body_len > MAX_BODY {
        return Err(invalid(&format!(
            "a body of {body_len} bytes is larger than the limit of {MAX_BODY} bytes"
        )));
    }
    let mut body = vec![0; body_len as usize];
    reader.read_exact(&mut body).await?;
    Ok(Frame {
        header,
        body: body.into(),
    })
}

pub(crate) async fn write(
    writer: &mut (impl AsyncWrite + Unpin),
    frame: &Frame,
) -> std::io::Result<()> {
    let header = serde_json::to_vec(&frame.header)?;
    let mut buf = Vec::with_capacity(8 + header.len() + frame.body.len());
    buf.extend_from_slice(&(header.len() as u32).to_be_bytes());
    buf.extend_from_slice(&header);
    buf.extend_from_slice(&(frame.body.len() as u32).to_be_bytes());
    buf.extend_from_slice(&frame.body);
    writer.write_all(&buf).await?;
    writer.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let mut frame = Frame::new(serde_json::json!({"op": "invoke", "id": "x"}));
        frame.body = Bytes::from_static(b"hello");
        write(&mut a, &frame).await.unwrap();
        let got = read(&mut b).await.unwrap();
        assert_eq!(got.op(), "invoke");
        assert_eq!(got.str("id"), Some("x"));
        assert_eq!(&got.body[..], b"hello");
    }

    #[tokio::test]
    async fn refuses_oversized_headers() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(&(MAX_HEADER + 1).to_be_bytes()).await.unwrap();
        assert!(read(&mut b).await.is_err());
    }
}
