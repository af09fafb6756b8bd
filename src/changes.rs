//! Change notification for long polls: one `watch` channel per service that somebody is
//! waiting on, carrying the service's latest index.
//!
//! Channels exist only while a poll waits on them (the last poll to leave removes its
//! channel), so polls on arbitrary names cost nothing once they end, and their number is
//! bounded by the long-poll limit.

use dashmap::DashMap;
use discovery_api::ServiceName;
use tokio::sync::watch;

use crate::registry::Change;

/// See the module docs.
pub struct ChangeHub {
    channels: DashMap<ServiceName, watch::Sender<u64>>,
    /// Counts every change of any service, and readiness turning on: what xDS streams,
    /// which watch many services each, wake on.
    any: watch::Sender<u64>,
}

impl Default for ChangeHub {
    fn default() -> Self {
        ChangeHub {
            channels: DashMap::new(),
            any: watch::Sender::new(0),
        }
    }
}

/// A poll's subscription; dropping it cleans up the channel when it was the last one.
pub struct Subscription<'a> {
    hub: &'a ChangeHub,
    service: ServiceName,
    rx: Option<watch::Receiver<u64>>,
}

impl ChangeHub {
    /// Subscribes to a service's changes. Subscribe before reading the current index, so a
    /// change in between is not missed.
    pub fn subscribe(&self, service: &ServiceName) -> Subscription<'_> {
        let rx = self
            .channels
            .entry(service.clone())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        Subscription {
            hub: self,
            service: service.clone(),
            rx: Some(rx),
        }
    }

    /// A receiver of the count of all changes (see the `any` field).
    pub fn any_change(&self) -> watch::Receiver<u64> {
        self.any.subscribe()
    }

    /// Wakes the watchers of all changes without a change: what they may send depends on
    /// more than the hosts (the node became ready).
    pub fn poke(&self) {
        self.any.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Publishes a change to the service's waiting polls, if any.
    pub fn notify(&self, change: &Change) {
        self.poke();
        if let Some(tx) = self.channels.get(&change.service) {
            tx.send_if_modified(|index| {
                let newer = change.index > *index;
                if newer {
                    *index = change.index;
                }
                newer
            });
        }
    }

    /// Services with waiting polls (for metrics and tests).
    pub fn watched(&self) -> usize {
        self.channels.len()
    }
}

impl Subscription<'_> {
    /// Waits until the service's index exceeds `index` per the hub (the caller re-checks the
    /// registry). Returns when notified; never returns if nothing changes.
    pub async fn changed_past(&mut self, index: u64) {
        if let Some(rx) = self.rx.as_mut() {
            // The sender lives in the hub until the last subscription leaves, so this
            // only fails if the hub is gone; then waiting forever is right (the caller
            // times out).
            if rx.wait_for(|latest| *latest > index).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

impl Drop for Subscription<'_> {
    fn drop(&mut self) {
        drop(self.rx.take());
        self.hub
            .channels
            .remove_if(&self.service, |_, tx| tx.receiver_count() == 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_poll_wakes_on_a_newer_index_and_its_channel_goes_with_it() {
        let hub = ChangeHub::default();
        let web = ServiceName::parse("web").unwrap();
        let mut sub = hub.subscribe(&web);
        assert_eq!(hub.watched(), 1);
        hub.notify(&Change {
            service: web.clone(),
            index: 3,
        });
        tokio::time::timeout(std::time::Duration::from_secs(5), sub.changed_past(2))
            .await
            .expect("woken");
        drop(sub);
        assert_eq!(hub.watched(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_older_index_does_not_wake_a_poll() {
        let hub = ChangeHub::default();
        let web = ServiceName::parse("web").unwrap();
        let mut sub = hub.subscribe(&web);
        hub.notify(&Change {
            service: web.clone(),
            index: 3,
        });
        let waited =
            tokio::time::timeout(std::time::Duration::from_secs(30), sub.changed_past(5)).await;
        assert!(waited.is_err());
    }
}
