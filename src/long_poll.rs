//! Long-poll wake-ups: one `watch` channel per service that somebody is waiting on, carrying
//! the service's latest index. (The gossip layer's push trigger is another notifier,
//! [`NodeState::local_writes`](crate::state::NodeState::local_writes).)
//!
//! Channels exist only while a poll waits on them (the last poll to leave removes its
//! channel), so polls on arbitrary names cost nothing once they end, and their number is
//! bounded by the long-poll limit.

use dashmap::DashMap;
use discovery_api::ServiceName;
use tokio::sync::watch;

use crate::registry::Change;

/// The channels of the services long polls wait on, by service.
#[derive(Default)]
pub(crate) struct LongPollWakers {
    channels: DashMap<ServiceName, watch::Sender<u64>>,
}

/// A poll's subscription; dropping it cleans up the channel when it was the last one.
pub(crate) struct Subscription<'a> {
    wakers: &'a LongPollWakers,
    service: ServiceName,
    rx: Option<watch::Receiver<u64>>,
}

impl LongPollWakers {
    /// Subscribes to a service's changes. Subscribe before reading the current index, so a
    /// change in between is not missed.
    pub(crate) fn subscribe(&self, service: &ServiceName) -> Subscription<'_> {
        let rx = self
            .channels
            .entry(service.clone())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        Subscription {
            wakers: self,
            service: service.clone(),
            rx: Some(rx),
        }
    }

    /// Publishes a change to the service's waiting polls, if any.
    pub(crate) fn notify(&self, change: &Change) {
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

    /// Services with waiting polls.
    #[cfg(test)]
    pub(crate) fn watched(&self) -> usize {
        self.channels.len()
    }
}

impl Subscription<'_> {
    /// Waits until the service's index exceeds `index` per the wakers (the caller re-checks the
    /// registry). Returns when notified; never returns if nothing changes.
    pub(crate) async fn changed_past(&mut self, index: u64) {
        if let Some(rx) = self.rx.as_mut() {
            // The sender lives in the wakers until the last subscription leaves, so this
            // only fails if the wakers is gone; then waiting forever is right (the caller
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
        self.wakers
            .channels
            .remove_if(&self.service, |_, tx| tx.receiver_count() == 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_poll_wakes_on_a_newer_index_and_its_channel_goes_with_it() {
        let wakers = LongPollWakers::default();
        let web = ServiceName::parse("web").unwrap();
        let mut sub = wakers.subscribe(&web);
        assert_eq!(wakers.watched(), 1);
        wakers.notify(&Change {
            service: web.clone(),
            index: 3,
        });
        tokio::time::timeout(std::time::Duration::from_secs(5), sub.changed_past(2))
            .await
            .expect("woken");
        drop(sub);
        assert_eq!(wakers.watched(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_older_index_does_not_wake_a_poll() {
        let wakers = LongPollWakers::default();
        let web = ServiceName::parse("web").unwrap();
        let mut sub = wakers.subscribe(&web);
        wakers.notify(&Change {
            service: web.clone(),
            index: 3,
        });
        let waited =
            tokio::time::timeout(std::time::Duration::from_secs(30), sub.changed_past(5)).await;
        assert!(waited.is_err());
    }
}
