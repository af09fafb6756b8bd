//! The open xDS streams of this node, for `GET /v1/xds/clients`, the dashboard and logs.
//!
//! Written by the stream tasks on their events (a request, a response), read by the HTTP
//! layer through `NodeState`: a short mutex, never held across an `.await`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use discovery_api::{XdsClient, XdsTypeStatus};
use parking_lot::Mutex;

/// The most streams `GET /v1/xds/clients` lists (the oldest): its answer, and the time the
/// lock is held to copy it, stay bounded however many streams are open (the count is in
/// `discovery_xds_streams`).
pub(crate) const MAX_LISTED: usize = 1_000;

/// See the module docs.
#[derive(Default)]
pub(crate) struct Clients {
    next: AtomicU64,
    open: Mutex<BTreeMap<u64, XdsClient>>,
}

/// A stream's entry; dropping it removes the entry.
pub(crate) struct Entry<'a> {
    clients: &'a Clients,
    pub id: u64,
}

impl Clients {
    /// Registers a stream that just opened.
    pub(crate) fn open(&self, peer: String, protocol: &str, connected_at: String) -> Entry<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.open.lock().insert(
            id,
            XdsClient {
                stream: id,
                node_id: String::new(),
                node_cluster: String::new(),
                peer,
                protocol: protocol.to_owned(),
                connected_at,
                types: Vec::new(),
            },
        );
        Entry { clients: self, id }
    }

    /// The open streams, oldest first, at most [`MAX_LISTED`]. What each holds is small: its
    /// texts are cut when stored (`stream::clip`).
    pub(crate) fn snapshot(&self) -> Vec<XdsClient> {
        self.open
            .lock()
            .values()
            .take(MAX_LISTED)
            .cloned()
            .collect()
    }
}

impl Entry<'_> {
    /// Changes the stream's entry.
    pub(crate) fn update(&self, f: impl FnOnce(&mut XdsClient)) {
        if let Some(client) = self.clients.open.lock().get_mut(&self.id) {
            f(client);
        }
    }

    /// Changes the entry of one type, added when new.
    pub(crate) fn update_type(&self, type_url: &str, f: impl FnOnce(&mut XdsTypeStatus)) {
        self.update(|client| {
            let i = match client.types.iter().position(|t| t.type_url == type_url) {
                Some(i) => i,
                None => {
                    client.types.push(XdsTypeStatus {
                        type_url: type_url.to_owned(),
                        ..Default::default()
                    });
                    client.types.len() - 1
                }
            };
            f(&mut client.types[i]);
        });
    }
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        self.clients.open.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listing_stops_at_max_listed_streams_the_oldest() {
        let clients = Clients::default();
        let entries: Vec<_> = (0..=MAX_LISTED)
            .map(|i| clients.open(format!("peer{i}"), "ads", String::new()))
            .collect();
        let listed = clients.snapshot();
        assert_eq!(listed.len(), MAX_LISTED);
        assert_eq!(listed[0].stream, entries[0].id);
        drop(entries);
        assert!(clients.snapshot().is_empty(), "closed streams leave");
    }
}
