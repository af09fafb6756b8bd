//! Responses as gRPC sends them: each resource's `Any` is encoded once, in its snapshot
//! ([`Resource::any`]), and a stream's response is written around those bytes, field by field,
//! straight into tonic's buffer. Prost's generated `DiscoveryResponse` would make every stream
//! clone each `Any` (two allocations and copies) and encode it again: with SotW, a whole
//! type's set per update and stream.
//!
//! [`Codec`] is tonic's codec for these: our encoding out, prost's decoding in. The field
//! numbers are Envoy's (`envoy/service/discovery/v3/discovery.proto`); the tests decode what is
//! written here with prost's generated messages.

use std::marker::PhantomData;
use std::sync::Arc;

use bytes::BufMut;
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
use tonic::codec::{DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

use super::resources::Resource;

/// A state-of-the-world `DiscoveryResponse`.
#[derive(Debug)]
pub(crate) struct SotwResponse {
    pub version_info: String,
    pub resources: Vec<Arc<Resource>>,
    pub type_url: &'static str,
    pub nonce: String,
}

/// A `DeltaDiscoveryResponse`.
#[derive(Debug)]
pub(crate) struct DeltaResponse {
    pub system_version_info: String,
    pub resources: Vec<Arc<Resource>>,
    pub type_url: &'static str,
    pub removed_resources: Vec<String>,
    pub nonce: String,
}

/// A response written as protobuf.
pub(crate) trait Encode {
    fn encode(&self, buf: &mut impl BufMut);
}

/// A string field; empty ones are left out, as proto3 (and prost) do.
fn string(tag: u32, value: &str, buf: &mut impl BufMut) {
    if !value.is_empty() {
        bytes_field(tag, value.as_bytes(), buf);
    }
}

fn bytes_field(tag: u32, value: &[u8], buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(value.len() as u64, buf);
    buf.put_slice(value);
}

fn string_len(tag: u32, value: &str) -> usize {
    if value.is_empty() {
        0
    } else {
        bytes_len(tag, value.len())
    }
}

/// The length of a length-delimited field of `len` bytes (tags here are below 16: one byte).
fn bytes_len(_tag: u32, len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

impl Encode for SotwResponse {
    fn encode(&self, buf: &mut impl BufMut) {
        string(1, &self.version_info, buf);
        for r in &self.resources {
            bytes_field(2, &r.any, buf);
        }
        string(4, self.type_url, buf);
        string(5, &self.nonce, buf);
    }
}

impl Encode for DeltaResponse {
    fn encode(&self, buf: &mut impl BufMut) {
        string(1, &self.system_version_info, buf);
        for r in &self.resources {
            // envoy.service.discovery.v3.Resource: name 3, version 1, resource 2.
            let len =
                string_len(3, &r.name) + string_len(1, &r.version) + bytes_len(2, r.any.len());
            encode_key(2, WireType::LengthDelimited, buf);
            encode_varint(len as u64, buf);
            string(1, &r.version, buf);
            bytes_field(2, &r.any, buf);
            string(3, &r.name, buf);
        }
        string(4, self.type_url, buf);
        string(5, &self.nonce, buf);
        for name in &self.removed_resources {
            bytes_field(6, name.as_bytes(), buf);
        }
    }
}

/// Tonic's codec for a stream of `E` responses to `D` requests.
pub(crate) struct Codec<E, D>(PhantomData<fn(E) -> D>);

impl<E, D> Default for Codec<E, D> {
    fn default() -> Self {
        Codec(PhantomData)
    }
}

impl<E, D> tonic::codec::Codec for Codec<E, D>
where
    E: Encode + Send + 'static,
    D: prost::Message + Default + Send + 'static,
{
    type Encode = E;
    type Decode = D;
    type Encoder = Writer<E>;
    type Decoder = Reader<D>;

    fn encoder(&mut self) -> Writer<E> {
        Writer(PhantomData)
    }

    fn decoder(&mut self) -> Reader<D> {
        Reader(PhantomData)
    }
}

/// Writes responses (see [`Encode`]).
pub(crate) struct Writer<E>(PhantomData<fn(E)>);

impl<E: Encode> Encoder for Writer<E> {
    type Item = E;
    type Error = Status;

    fn encode(&mut self, item: E, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst);
        Ok(())
    }
}

/// Reads requests with prost, as tonic's own codec does.
pub(crate) struct Reader<D>(PhantomData<fn() -> D>);

impl<D: prost::Message + Default> Decoder for Reader<D> {
    type Item = D;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<D>, Status> {
        D::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryResponse, DiscoveryResponse, Resource as DeltaResource,
    };
    use envoy_types::pb::google::protobuf::Any;
    use prost::Message;

    use super::*;

    fn resource(name: &str, version: &str, value: &[u8]) -> (Arc<Resource>, Any) {
        let any = Any {
            type_url: "type.googleapis.com/x".into(),
            value: value.to_vec(),
        };
        let r = Resource::new(name.into(), version.into(), &any);
        (Arc::new(r), any)
    }

    #[test]
    fn responses_decode_as_envoys_messages() {
        let (a, a_any) = resource("web", "1", b"a");
        let (b, b_any) = resource("db", "", &[7; 300]);
        let sotw = SotwResponse {
            version_info: "v".into(),
            resources: vec![a.clone(), b.clone()],
            type_url: "t",
            nonce: "1".into(),
        };
        let mut buf = Vec::new();
        sotw.encode(&mut buf);
        assert_eq!(
            DiscoveryResponse::decode(&buf[..]).unwrap(),
            DiscoveryResponse {
                version_info: "v".into(),
                resources: vec![a_any.clone(), b_any.clone()],
                type_url: "t".into(),
                nonce: "1".into(),
                ..Default::default()
            }
        );

        let delta = DeltaResponse {
            system_version_info: String::new(),
            resources: vec![a, b],
            type_url: "t",
            removed_resources: vec!["gone".into(), "also".into()],
            nonce: "2".into(),
        };
        let mut buf = Vec::new();
        delta.encode(&mut buf);
        let held = |name: &str, version: &str, any: Any| DeltaResource {
            name: name.into(),
            version: version.into(),
            resource: Some(any),
            ..Default::default()
        };
        assert_eq!(
            DeltaDiscoveryResponse::decode(&buf[..]).unwrap(),
            DeltaDiscoveryResponse {
                resources: vec![held("web", "1", a_any), held("db", "", b_any)],
                type_url: "t".into(),
                removed_resources: vec!["gone".into(), "also".into()],
                nonce: "2".into(),
                ..Default::default()
            }
        );
    }
}
