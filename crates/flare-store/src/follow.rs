//! How a component follows the store: everything once, then each change,
//! and everything again whenever it fell behind.
//!
//! One policy for every follower (executor, router, timers, message-queue
//! triggers): events a slow follower missed are never skipped, they make
//! it reload the whole state, so it cannot drift from the store.

use tokio::sync::{broadcast, watch};

use crate::{Event, Revision, Store};

/// What a follower must do next.
#[derive(Debug)]
pub enum Update {
    /// Make your state equal to the store's (at the start, and after
    /// events were missed). `revision` is what the store held before the
    /// reload began: everything up to it will be reflected.
    Reload { revision: Revision },
    /// Apply one committed write.
    Change(Event),
}

impl Update {
    /// The store revision this update brings the follower to.
    pub fn revision(&self) -> Revision {
        match self {
            Update::Reload { revision } => *revision,
            Update::Change(event) => event.revision,
        }
    }
}

/// A subscription to the store's changes; see the module docs.
pub struct Follower {
    events: broadcast::Receiver<Event>,
    started: bool,
}

impl Follower {
    /// Subscribes now, so that nothing written after this call is missed
    /// by the first [`Update::Reload`].
    pub fn new(store: &dyn Store) -> Self {
        Follower {
            events: store.watch(),
            started: false,
        }
    }

    /// The next update, or `None` once the store is closed. Cancel-safe.
    pub async fn next(&mut self, store: &dyn Store) -> Option<Update> {
        self.next_with(|| store.revision()).await
    }

    async fn next_with(&mut self, revision: impl Fn() -> Revision) -> Option<Update> {
        if !self.started {
            self.started = true;
            return Some(Update::Reload {
                revision: revision(),
            });
        }
        match self.events.recv().await {
            Ok(event) => Some(Update::Change(event)),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!("missed {missed} store events; reloading");
                // Everything queued is older than what the reload reads.
                self.events = self.events.resubscribe();
                Some(Update::Reload {
                    revision: revision(),
                })
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

/// Publishes that a follower has applied everything up to `revision`
/// (never moving back).
pub fn advance(applied: &watch::Sender<Revision>, revision: Revision) {
    applied.send_if_modified(|current| {
        let newer = revision > *current;
        if newer {
            *current = revision;
        }
        newer
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Change;
    use flare_model::Kind;

    fn event(revision: Revision) -> Event {
        Event {
            revision,
            kind: Kind::Function,
            namespace: "default".into(),
            name: format!("f{revision}"),
            change: Change::Deleted,
        }
    }

    #[tokio::test]
    async fn reloads_first_then_follows_and_reloads_after_missing_events() {
        let (tx, rx) = broadcast::channel(2);
        let mut follower = Follower {
            events: rx,
            started: false,
        };
        let at = |r: Revision| move || r;
        let first = follower.next_with(at(0)).await.unwrap();
        assert!(matches!(first, Update::Reload { revision: 0 }));
        tx.send(event(1)).unwrap();
        let next = follower.next_with(at(1)).await.unwrap();
        assert!(matches!(next, Update::Change(ref e) if e.revision == 1));
        // Five writes into a buffer of two: the follower missed three and
        // must reload rather than carry on from what is left.
        for r in 2..=6 {
            tx.send(event(r)).unwrap();
        }
        let next = follower.next_with(at(6)).await.unwrap();
        assert!(matches!(next, Update::Reload { revision: 6 }), "{next:?}");
        // What was queued before the reload is covered by it.
        tx.send(event(7)).unwrap();
        let next = follower.next_with(at(7)).await.unwrap();
        assert_eq!(next.revision(), 7);
        drop(tx);
        assert!(follower.next_with(at(7)).await.is_none());
    }

    #[test]
    fn advance_never_moves_back() {
        let applied = watch::Sender::new(5);
        advance(&applied, 3);
        assert_eq!(*applied.borrow(), 5);
        advance(&applied, 8);
        assert_eq!(*applied.borrow(), 8);
    }
}
