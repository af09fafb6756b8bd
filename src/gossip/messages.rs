//! The gossip wire format: one request and one response message, and their encoding.
//!
//! A message is JSON compressed with raw deflate. JSON keeps it inspectable (`curl
//! --compressed` does not help here, but `zlib-flate -uncompress` style tools do) and lets
//! fields be added later; deflate removes what JSON repeats from record to record (service
//! names, tags, revisions), which is most of a heartbeat refresh. Origins (node id and
//! generation) are interned once per message in a table and referenced by index.
//!
//! Decoding never trusts the peer: sizes are bounded before and after decompression, every
//! index is checked, and the registry's own validation runs again when records are merged.
//! This module does no IO.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::sync::Arc;

use discovery_api::ServiceName;
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;
use flate2::Compression;
use serde::{Deserialize, Serialize};

use crate::registry::{Delta, Digest, NodeId, Origin, Record, Replica, Span, Version};

/// The largest encoded (compressed) message accepted, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;
/// The largest decompressed message accepted, in bytes: bounds a "zip bomb".
pub const MAX_DECODED_BYTES: usize = 64 * 1024 * 1024;
/// Most records one delta carries; a larger backlog travels in pages.
pub const MAX_RECORDS: usize = 5000;
/// Most peer addresses one message carries.
pub const MAX_PEERS: usize = 64;
/// Most origins one digest or message may name.
const MAX_ORIGINS: usize = 10_000;

/// Who sends a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sender {
    /// The sender's `--node-id`.
    pub node_id: String,
    /// The sender's base URL when it knows a routable one; otherwise the receiver combines
    /// the connection's source address with `port`.
    pub addr: Option<String>,
    /// The port the sender listens on.
    pub port: u16,
    /// Whether the sender holds a usable state (SPEC 4.4): only a ready peer's snapshot
    /// makes a starting node ready.
    pub ready: bool,
}

/// One message of a push-pull exchange. The initiator's request ("here is what I hold, and
/// what I think you lack; send me what I lack") and the peer's answer have the same shape.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncMessage {
    /// The sending node.
    pub from: Sender,
    /// The sender's digest (in an answer: after merging the request's delta), for the delta
    /// that comes back.
    pub digest: Digest,
    /// Records the sender believes the receiver lacks (may be empty; an answer's may be cut at
    /// [`MAX_RECORDS`]: ask again).
    pub delta: Delta,
    /// Peers the sender knows to be alive, so membership spreads.
    pub peers: Vec<String>,
}

/// The initiator's message.
pub type SyncRequest = SyncMessage;
/// The peer's answer.
pub type SyncResponse = SyncMessage;

/// Why bytes from a peer were not a message.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Over [`MAX_MESSAGE_BYTES`] or [`MAX_DECODED_BYTES`].
    #[error("gossip message too large")]
    TooLarge,
    /// Not deflate, not JSON, or not our shape.
    #[error("malformed gossip message: {0}")]
    Malformed(String),
}

#[derive(Serialize, Deserialize)]
struct WireRecord {
    s: ServiceName,
    ip: IpAddr,
    p: u16,
    /// Index into the origin table.
    o: u32,
    q: u64,
    r: Record,
}

#[derive(Serialize, Deserialize)]
struct WireMessage {
    /// Format version.
    v: u32,
    from: Sender,
    /// Interned origins: `(node, generation)`.
    origins: Vec<(NodeId, u64)>,
    /// `(origin index, seq)`.
    digest: Vec<(u32, u64)>,
    records: Vec<WireRecord>,
    /// `(origin index, after, upto)`.
    spans: Vec<(u32, u64, u64)>,
    truncated: bool,
    peers: Vec<String>,
}

const VERSION: u32 = 1;

#[derive(Default)]
struct Interner {
    index: HashMap<Arc<Origin>, u32>,
    table: Vec<(NodeId, u64)>,
}

impl Interner {
    fn get(&mut self, origin: &Arc<Origin>) -> u32 {
        if let Some(i) = self.index.get(origin) {
            return *i;
        }
        let i = self.table.len() as u32;
        self.table.push((origin.node.clone(), origin.generation));
        self.index.insert(origin.clone(), i);
        i
    }
}

fn to_wire(from: &Sender, digest: &Digest, delta: &Delta, peers: &[String]) -> WireMessage {
    let mut origins = Interner::default();
    let mut digest: Vec<(u32, u64)> = digest.iter().map(|(o, s)| (origins.get(o), *s)).collect();
    digest.sort_unstable();
    let records = delta
        .records
        .iter()
        .map(|r| WireRecord {
            s: r.service.clone(),
            ip: r.ip,
            p: r.port,
            o: origins.get(&r.version.origin),
            q: r.version.seq,
            r: r.record.clone(),
        })
        .collect();
    let spans = delta
        .spans
        .iter()
        .map(|s| (origins.get(&s.origin), s.after, s.upto))
        .collect();
    WireMessage {
        v: VERSION,
        from: from.clone(),
        origins: origins.table,
        digest,
        records,
        spans,
        truncated: delta.truncated,
        peers: peers.iter().take(MAX_PEERS).cloned().collect(),
    }
}

type Parts = (Sender, Digest, Delta, Vec<String>);

fn from_wire(wire: WireMessage) -> Result<Parts, DecodeError> {
    let bad = |what: &str| DecodeError::Malformed(what.to_owned());
    if wire.v != VERSION {
        return Err(bad("unknown format version"));
    }
    if wire.origins.len() > MAX_ORIGINS || wire.digest.len() > MAX_ORIGINS {
        return Err(bad("too many origins"));
    }
    if wire.records.len() > MAX_RECORDS {
        return Err(bad("too many records"));
    }
    let origins: Vec<Arc<Origin>> = wire
        .origins
        .into_iter()
        .map(|(node, generation)| Arc::new(Origin { node, generation }))
        .collect();
    let origin = |i: u32| {
        origins
            .get(i as usize)
            .cloned()
            .ok_or_else(|| bad("origin index out of range"))
    };
    let mut digest = Digest::with_capacity(wire.digest.len());
    for (i, seq) in wire.digest {
        digest.insert(origin(i)?, seq);
    }
    let mut records = Vec::with_capacity(wire.records.len());
    for r in wire.records {
        records.push(Replica {
            service: r.s,
            ip: r.ip,
            port: r.p,
            version: Version {
                origin: origin(r.o)?,
                seq: r.q,
            },
            record: r.r,
        });
    }
    let mut spans = Vec::with_capacity(wire.spans.len());
    for (i, after, upto) in wire.spans {
        if upto < after {
            return Err(bad("span ends before it starts"));
        }
        spans.push(Span {
            origin: origin(i)?,
            after,
            upto,
        });
    }
    let mut peers = wire.peers;
    peers.truncate(MAX_PEERS);
    Ok((
        wire.from,
        digest,
        Delta {
            records,
            spans,
            truncated: wire.truncated,
        },
        peers,
    ))
}

fn compress(wire: &WireMessage) -> Vec<u8> {
    let json = serde_json::to_vec(wire).expect("gossip messages always serialize");
    // Level 3: most of the gain of deflate at a fraction of the CPU of the default level.
    let mut encoder = DeflateEncoder::new(Vec::with_capacity(json.len() / 4), Compression::new(3));
    encoder
        .write_all(&json)
        .expect("writing to a Vec cannot fail");
    encoder.finish().expect("writing to a Vec cannot fail")
}

fn decompress(bytes: &[u8]) -> Result<WireMessage, DecodeError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(DecodeError::TooLarge);
    }
    let mut json = Vec::new();
    DeflateDecoder::new(bytes)
        .take(MAX_DECODED_BYTES as u64 + 1)
        .read_to_end(&mut json)
        .map_err(|e| DecodeError::Malformed(format!("not deflate: {e}")))?;
    if json.len() > MAX_DECODED_BYTES {
        return Err(DecodeError::TooLarge);
    }
    serde_json::from_slice(&json).map_err(|e| DecodeError::Malformed(e.to_string()))
}

impl SyncMessage {
    /// The message as bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        compress(&to_wire(&self.from, &self.digest, &self.delta, &self.peers))
    }

    /// Parses bytes from a peer.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (from, digest, delta, peers) = from_wire(decompress(bytes)?)?;
        Ok(SyncMessage {
            from,
            digest,
            delta,
            peers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Micros, Registry, RegistryConfig};
    use discovery_api::{Port, Registration, RepoName, Revision, Tags};

    fn registry_with_hosts(n: u16, now: Micros) -> Registry {
        let r = Registry::new(RegistryConfig::new("test", "a"));
        let svc = ServiceName::parse("web").unwrap();
        for i in 0..n {
            let reg = Registration {
                port: Port::new(8000 + i64::from(i)).unwrap(),
                revision: Revision::parse("4f2a9c1").unwrap(),
                service_repo_name: RepoName::empty(),
                tags: Tags::default(),
                ttl: None,
                status: discovery_api::HostStatus::Up,
                ip: None,
                auto_ip: false,
            };
            r.heartbeat(&svc, "10.0.0.1".parse().unwrap(), &reg, now)
                .unwrap();
        }
        r
    }

    fn sender() -> Sender {
        Sender {
            node_id: "a".into(),
            addr: Some("http://a".into()),
            port: 80,
            ready: true,
        }
    }

    #[test]
    fn a_request_survives_encoding_with_origins_interned() {
        let r = registry_with_hosts(20, 1_000_000);
        let req = SyncRequest {
            from: sender(),
            digest: r.digest(),
            delta: r.delta(&Digest::new(), 100),
            peers: vec!["http://b".into()],
        };
        let bytes = req.encode();
        let back = SyncRequest::decode(&bytes).unwrap();
        assert_eq!(back, req);
        let json =
            serde_json::to_vec(&to_wire(&req.from, &req.digest, &req.delta, &req.peers)).unwrap();
        assert!(bytes.len() * 3 < json.len(), "deflate pays off");
    }

    #[test]
    fn garbage_and_bad_indexes_are_refused() {
        assert!(SyncRequest::decode(b"not deflate at all").is_err());
        let mut wire = to_wire(&sender(), &Digest::new(), &Delta::default(), &[]);
        wire.digest.push((7, 1));
        assert!(matches!(
            SyncResponse::decode(&compress(&wire)),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn a_decompression_bomb_is_refused() {
        let zeros = vec![b' '; MAX_DECODED_BYTES + 10];
        let mut encoder = DeflateEncoder::new(Vec::new(), Compression::fast());
        encoder.write_all(&zeros).unwrap();
        let bomb = encoder.finish().unwrap();
        assert!(bomb.len() < MAX_MESSAGE_BYTES);
        assert!(matches!(
            SyncRequest::decode(&bomb),
            Err(DecodeError::TooLarge)
        ));
    }
}
