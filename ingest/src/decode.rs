//! OTLP/HTTP payloads: content type, gzip with a size cap, protobuf or OTLP JSON, and the
//! `google.rpc.Status` error body in the request's encoding.

use crate::error::{Error, Result};
use flate2::read::MultiGzDecoder;
use prost::Message;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::io::Read;

/// How a request (and so its response) is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/x-protobuf`
    Protobuf,
    /// `application/json` (the OTLP JSON mapping)
    Json,
}

impl Encoding {
    /// From a `Content-Type` header value.
    pub fn from_content_type(ct: Option<&str>) -> Result<Self> {
        let Some(ct) = ct else {
            return Err(Error::Unsupported(
                "missing Content-Type: use application/x-protobuf or application/json".into(),
            ));
        };
        let media = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match media.as_str() {
            "application/x-protobuf" | "application/protobuf" => Ok(Encoding::Protobuf),
            "application/json" => Ok(Encoding::Json),
            _ => Err(Error::Unsupported(format!(
                "unsupported Content-Type `{ct}`: use application/x-protobuf or application/json"
            ))),
        }
    }

    /// The `Content-Type` of responses in this encoding.
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

/// Reads a whole request body of at most `limit` bytes (more is [`Error::TooLarge`], and
/// stops the read there); what `what` names the body in the error of a broken read.
pub async fn read_body<B>(body: B, limit: usize, timeout: std::time::Duration, what: &str) -> Result<bytes_like::Bytes>
where
    B: tonic::codegen::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use http_body_util::BodyExt;
    // The one place a body is collected, never past `limit` nor `timeout`.
    #[allow(clippy::disallowed_methods)]
    let collected = tokio::time::timeout(timeout, http_body_util::Limited::new(body, limit).collect())
        .await
        .map_err(|_| Error::Stalled { after: timeout })?;
    match collected {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(Error::TooLarge { limit }),
        Err(e) => Err(broken_read(e.as_ref(), what)),
    }
}

/// A body read that failed: the client went away ([`Error::Aborted`]) or sent something broken.
fn broken_read(e: &(dyn std::error::Error + 'static), what: &str) -> Error {
    if client_aborted(e) {
        Error::Aborted(format!("reading {what}: {e}"))
    } else {
        Error::BadInput(format!("reading {what} failed: {e}"))
    }
}

/// Reads a gRPC call's body: one length-prefixed message. `admit` is called with the length
/// the 5-byte prefix declares, before anything past the prefix is held, so a call's bytes are
/// charged against the ingest byte budget before they are read (a length over `limit` is refused
/// from the prefix alone); returns the framed bytes and what `admit` gave.
pub async fn read_grpc_body<B, P>(
    body: B,
    limit: usize,
    timeout: std::time::Duration,
    mut admit: impl FnMut(usize) -> Result<P>,
) -> Result<(bytes_like::Bytes, Option<P>)>
where
    B: tonic::codegen::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use http_body_util::BodyExt;
    use prost::bytes::{Buf, BufMut};
    let read = async {
        let mut body = std::pin::pin!(body);
        let mut buf: Vec<u8> = Vec::new();
        let mut permit = None;
        while let Some(frame) = body.as_mut().frame().await {
            let frame = frame.map_err(|e| {
                let e: Box<dyn std::error::Error + Send + Sync> = e.into();
                broken_read(e.as_ref(), "the request")
            })?;
            let Ok(data) = frame.into_data() else { continue };
            if buf.len().saturating_add(data.remaining()) > limit.saturating_add(5) {
                return Err(Error::TooLarge { limit });
            }
            buf.put(data);
            if permit.is_none() && buf.len() >= 5 {
                let declared = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
                if declared > limit {
                    return Err(Error::TooLarge { limit });
                }
                permit = Some(admit(declared)?);
                buf.reserve(declared.saturating_sub(buf.len() - 5));
            }
        }
        Ok((bytes_like::Bytes::from(buf), permit))
    };
    tokio::time::timeout(timeout, read).await.map_err(|_| Error::Stalled { after: timeout })?
}

/// Whether a body read failed because the client went away mid-body (its connection closed or
/// reset, its HTTP/2 stream reset) rather than because of what it sent.
fn client_aborted(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(err) = cause {
        if let Some(h) = err.downcast_ref::<hyper::Error>()
            && (h.is_incomplete_message() || h.is_canceled() || h.is_closed())
        {
            return true;
        }
        if let Some(h) = err.downcast_ref::<h2::Error>()
            && (h.is_reset() || h.is_go_away() || h.is_io())
        {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::BrokenPipe
            )
        {
            return true;
        }
        cause = err.source();
    }
    false
}

/// Undoes `Content-Encoding` (none, identity or gzip), refusing output beyond `limit` bytes.
pub fn decompress(body: bytes_like::Bytes, content_encoding: Option<&str>, limit: usize) -> Result<bytes_like::Bytes> {
    match content_encoding.map(|e| e.trim().to_ascii_lowercase()) {
        None => Ok(body),
        Some(e) if e.is_empty() || e == "identity" => Ok(body),
        Some(e) if e == "gzip" => {
            let mut out = Vec::new();
            // Every member: concatenated gzip streams are one valid body.
            MultiGzDecoder::new(&body[..])
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|err| Error::BadInput(format!("body is not valid gzip (Content-Encoding: gzip): {err}")))?;
            if out.len() > limit {
                return Err(Error::TooLarge { limit });
            }
            Ok(out.into())
        }
        Some(e) => Err(Error::Unsupported(format!("unsupported Content-Encoding `{e}`: use gzip or none"))),
    }
}

/// Decodes an OTLP request in `enc`.
pub fn decode<T: Message + Default + DeserializeOwned>(body: &[u8], enc: Encoding) -> Result<T> {
    match enc {
        Encoding::Protobuf => T::decode(body).map_err(|e| Error::BadInput(format!("invalid protobuf payload: {e}"))),
        Encoding::Json => {
            serde_json::from_slice(body).map_err(|e| Error::BadInput(format!("invalid OTLP JSON payload: {e}")))
        }
    }
}

/// Encodes an OTLP response in `enc`.
pub fn encode<T: Message + Serialize>(msg: &T, enc: Encoding) -> Vec<u8> {
    match enc {
        Encoding::Protobuf => msg.encode_to_vec(),
        Encoding::Json => {
            // Unset fields (a full success's `partial_success`) are left out, not sent as null.
            let mut v = serde_json::to_value(msg).unwrap_or_default();
            if let serde_json::Value::Object(map) = &mut v {
                map.retain(|_, v| !v.is_null());
            }
            v.to_string().into_bytes()
        }
    }
}

/// A `google.rpc.Status` body with `code` (a gRPC code number) and `message`.
pub fn status_body(code: i32, message: &str, enc: Encoding) -> Vec<u8> {
    match enc {
        Encoding::Protobuf => {
            tonic_types::pb::Status { code, message: message.to_string(), details: vec![] }.encode_to_vec()
        }
        Encoding::Json => serde_json::json!({ "code": code, "message": message }).to_string().into_bytes(),
    }
}

/// Bytes type used by the HTTP layer.
pub mod bytes_like {
    pub use axum::body::Bytes;
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use std::io::Write;

    #[test]
    fn gzip_is_capped_and_checked() {
        let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&[7u8; 10_000]).unwrap();
        let gz: bytes_like::Bytes = enc.finish().unwrap().into();
        assert_eq!(decompress(gz.clone(), Some("gzip"), 10_000).unwrap().len(), 10_000);
        assert!(matches!(decompress(gz, Some("gzip"), 9_999), Err(Error::TooLarge { .. })));
        let plain: bytes_like::Bytes = b"not gzip at all".to_vec().into();
        assert!(matches!(decompress(plain.clone(), Some("gzip"), 100), Err(Error::BadInput(_))));
        assert!(matches!(decompress(plain, Some("br"), 100), Err(Error::Unsupported(_))));
    }

    #[test]
    fn content_types() {
        assert_eq!(Encoding::from_content_type(Some("application/json; charset=utf-8")).unwrap(), Encoding::Json);
        assert_eq!(Encoding::from_content_type(Some("application/x-protobuf")).unwrap(), Encoding::Protobuf);
        assert!(Encoding::from_content_type(Some("text/plain")).is_err());
        assert!(Encoding::from_content_type(None).is_err());
    }
}
