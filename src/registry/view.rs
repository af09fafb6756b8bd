//! Prepared read bodies: a service's host list serialized once per change, with its ETag.
//!
//! The hot path (`GET /v1/registration/{service}`) hands out these bytes as they are. A view is
//! rebuilt when something consumers route on changes, or, for heartbeats that only refresh
//! `last_check_in`, at most once a second when it is next read.

use std::io::Write;
use std::net::IpAddr;

use bytes::Bytes;
use discovery_api::ServiceName;
use xxhash_rust::xxh3::Xxh3;

use super::clock::{rfc3339, Micros};
use super::record::Record;

/// A service's host list, ready to serve.
#[derive(Debug, Clone)]
pub struct ServiceView {
    /// The service's change index on this node (`X-Discovery-Index`).
    pub index: u64,
    /// A weak validator derived from the routing content: equal on every node that holds
    /// the same hosts.
    pub etag: String,
    /// The hash the ETag is made of, also Envoy's `version_info` basis.
    pub content_hash: u64,
    /// The `GET /v1/registration/{service}` body.
    pub body: Bytes,
    /// When the body was rendered.
    pub built_at: Micros,
    /// Hosts in the body.
    pub hosts: usize,
}

impl ServiceView {
    /// The list of a service with no hosts (a new one, or one never seen).
    pub fn empty(service: &ServiceName, env: &str) -> ServiceView {
        let mut body = Vec::new();
        open_list(&mut body, "service", service.as_str(), env);
        close_list(&mut body);
        let hash = ContentHasher::default().finish();
        ServiceView {
            index: 0,
            etag: etag(hash),
            content_hash: hash,
            body: body.into(),
            built_at: 0,
            hosts: 0,
        }
    }
}

/// Hashes what consumers route on, in body order.
#[derive(Default)]
pub(crate) struct ContentHasher(Xxh3);

impl ContentHasher {
    pub(crate) fn host(&mut self, ip: IpAddr, port: u16, record: &Record) {
        let Some(routing) = record.routing() else {
            return;
        };
        match ip {
            IpAddr::V4(v4) => self.0.update(&v4.octets()),
            IpAddr::V6(v6) => self.0.update(&v6.octets()),
        }
        self.0.update(&port.to_le_bytes());
        for field in [
            routing.revision.as_str(),
            routing.service_repo_name.as_str(),
            &routing.tags,
            routing.status.as_str(),
        ] {
            self.0.update(&(field.len() as u32).to_le_bytes());
            self.0.update(field.as_bytes());
        }
        self.0
            .update(&[record.weight_override().map_or(0, |w| w.get())]);
    }

    pub(crate) fn finish(&self) -> u64 {
        self.0.digest()
    }
}

/// The weak ETag of a content hash.
pub(crate) fn etag(hash: u64) -> String {
    format!("W/\"{hash:016x}\"")
}

/// Writes a JSON string literal with the escaping JSON requires.
fn json_str(out: &mut Vec<u8>, s: &str) {
    // serde_json never fails writing a str into a Vec.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Appends one host object, the shape of `discovery_api::Host`.
pub(crate) fn write_host(out: &mut Vec<u8>, service: &str, ip: IpAddr, port: u16, record: &Record) {
    let Some(routing) = record.routing() else {
        return;
    };
    out.extend_from_slice(b"{\"service\":");
    json_str(out, service);
    let _ = write!(
        out,
        ",\"ip_address\":\"{ip}\",\"port\":{port},\"revision\":"
    );
    json_str(out, routing.revision.as_str());
    out.extend_from_slice(b",\"service_repo_name\":");
    json_str(out, routing.service_repo_name.as_str());
    let override_weight = record.weight_override().map(|w| w.get());
    let _ = write!(
        out,
        ",\"last_check_in\":\"{}\",\"tags\":",
        rfc3339(record.hb.ts)
    );
    match override_weight {
        // As the seed did, an operator's override shows in the tags too: lyft's clients and
        // Envoy's v1 SDS read the weight from `tags.load_balancing_weight` only.
        Some(w) => write_tags_with_weight(out, &routing.tags, w),
        None => out.extend_from_slice(routing.tags.as_bytes()),
    }
    let _ = write!(
        out,
        ",\"status\":\"{}\",\"ttl\":{}",
        routing.status.as_str(),
        record.ttl()
    );
    if let Some(w) = override_weight.or_else(|| tag_weight(&routing.tags)) {
        let _ = write!(out, ",\"load_balancing_weight\":{w}");
    }
    out.push(b'}');
}

/// Writes canonical tag JSON with `load_balancing_weight` set to `weight` (key order kept:
/// the tags are a sorted map, so equal tags still give equal bytes).
fn write_tags_with_weight(out: &mut Vec<u8>, tags: &str, weight: u8) {
    let mut map: std::collections::BTreeMap<String, serde_json::Value> =
        serde_json::from_str(tags).unwrap_or_default();
    map.insert("load_balancing_weight".into(), weight.into());
    // serde_json never fails writing a map of JSON values into a Vec.
    let _ = serde_json::to_writer(&mut *out, &map);
}

/// The `load_balancing_weight` tag, read from canonical tag JSON.
pub(crate) fn tag_weight(tags: &str) -> Option<u8> {
    if !tags.contains("load_balancing_weight") {
        return None;
    }
    discovery_api::Tags::from_json_str(tags)
        .ok()?
        .weight()
        .map(|w| w.get())
}

/// Starts a host-list body: `{"<key>":<name>,"env":<env>,"hosts":[`.
pub(crate) fn open_list(out: &mut Vec<u8>, key: &str, name: &str, env: &str) {
    let _ = write!(out, "{{\"{key}\":");
    json_str(out, name);
    out.extend_from_slice(b",\"env\":");
    json_str(out, env);
    out.extend_from_slice(b",\"hosts\":[");
}

/// Ends a host-list body.
pub(crate) fn close_list(out: &mut Vec<u8>) {
    out.extend_from_slice(b"]}");
}
