//! Timer triggers: cron schedules that invoke functions.
//!
//! Invariants: a trigger fires at most once per scheduled slot; the slot is
//! recorded in the store as fired before the function is invoked, so a
//! crash between the two loses that run rather than repeating it (timers
//! are at-most-once per slot); on start, a trigger whose next slot after
//! its last firing has already passed fires once, immediately — not once
//! per missed slot.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use flare_executor::Executor;
use flare_model::{Cron, Document, Kind, Resource, TimerTriggerSpec, qualified};
use flare_store::{Change, Follower, Revision, Store, Update, advance};
use tokio::sync::watch;

struct Timer {
    function: String,
    cron: Cron,
    tz: Tz,
    generation: u64,
    next: Option<DateTime<Utc>>,
}

/// The timer component: one task for every timer trigger.
pub struct Timers {
    store: Arc<dyn Store>,
    executor: Arc<Executor>,
    applied: watch::Sender<Revision>,
}

fn state_key(name: &str) -> String {
    format!("timer/{name}/last")
}

impl Timers {
    pub fn new(store: Arc<dyn Store>, executor: Arc<Executor>) -> Arc<Self> {
        Arc::new(Timers {
            store,
            executor,
            applied: watch::Sender::new(0),
        })
    }

    /// The store revision the timers reflect.
    pub fn applied(&self) -> watch::Receiver<Revision> {
        self.applied.subscribe()
    }

    fn last_fired(&self, name: &str) -> Option<DateTime<Utc>> {
        let text = self.store.get_state(&state_key(name)).ok()??;
        DateTime::parse_from_rfc3339(&text)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// Builds a timer; `starting` decides whether a slot missed since the
    /// last firing fires now.
    fn timer(&self, doc: Document, now: DateTime<Utc>, starting: bool) -> Option<(String, Timer)> {
        // Timers, their records and events go by qualified names: the
        // same name may be taken in two namespaces.
        let name = qualified(&doc.metadata.name, &doc.metadata.namespace);
        let created = doc
            .metadata
            .created_at
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        let generation = doc.metadata.generation;
        let trigger = match Resource::<TimerTriggerSpec>::from_document(doc) {
            Ok(trigger) => trigger,
            Err(e) => {
                tracing::error!("{e}");
                return None;
            }
        };
        let (cron, tz) = match trigger.spec.schedule() {
            Ok(schedule) => schedule,
            Err(e) => {
                tracing::error!("timer trigger {name}: {e}");
                return None;
            }
        };
        let since = if starting {
            self.last_fired(&name).or(created).unwrap_or(now)
        } else {
            now
        };
        let next = match cron.next_after(since, tz) {
            // Missed while down: fire once, now.
            Some(slot) if slot <= now => Some(now),
            other => other,
        };
        Some((
            name,
            Timer {
                function: qualified(&trigger.spec.function, &trigger.metadata.namespace),
                cron,
                tz,
                generation,
                next,
            },
        ))
    }

    fn load(&self, now: DateTime<Utc>) -> HashMap<String, Timer> {
        match self.store.list(Kind::TimerTrigger) {
            Ok(docs) => docs
                .into_iter()
                .filter_map(|doc| self.timer(doc, now, true))
                .collect(),
            Err(e) => {
                tracing::error!("cannot list timer triggers: {e}");
                HashMap::new()
            }
        }
    }

    /// Fires schedules until the store closes.
    pub async fn run(self: Arc<Self>) {
        let mut follower = Follower::new(&*self.store);
        let mut timers: HashMap<String, Timer> = HashMap::new();
        loop {
            let now = Utc::now();
            let due = timers.values().filter_map(|t| t.next).min();
            let wait = due.map_or(Duration::from_secs(3600), |due| {
                (due - now).to_std().unwrap_or(Duration::ZERO)
            });
            tokio::select! {
                () = tokio::time::sleep(wait) => {
                    let now = Utc::now();
                    for (name, timer) in timers.iter_mut() {
                        if timer.next.is_some_and(|next| next <= now) {
                            let slot = timer.next.unwrap_or(now);
                            timer.next = timer.cron.next_after(now, timer.tz);
                            self.fire(name, &timer.function, slot).await;
                        }
                    }
                }
                update = follower.next(&*self.store) => {
                    let Some(update) = update else { return };
                    let revision = update.revision();
                    match update {
                        Update::Reload { revision } => {
                            // Fire nothing before the functions are deployed:
                            // a run missed while the server was down would
                            // otherwise find no function.
                            let mut deployed = self.executor.applied();
                            let _ = deployed.wait_for(|r| *r >= revision).await;
                            timers = self.load(Utc::now());
                        }
                        Update::Change(event) if event.kind == Kind::TimerTrigger => {
                            match event.change {
                                Change::Put(doc) => {
                                    let unchanged = timers
                                        .get(&qualified(&event.name, &event.namespace))
                                        .is_some_and(|t| t.generation == doc.metadata.generation);
                                    if !unchanged
                                        && let Some((name, timer)) = self.timer(*doc, Utc::now(), false)
                                    {
                                        timers.insert(name, timer);
                                    }
                                }
                                Change::Deleted => {
                                    timers.remove(&qualified(&event.name, &event.namespace));
                                }
                            }
                        }
                        Update::Change(_) => {}
                    }
                    advance(&self.applied, revision);
                }
            }
        }
    }

    /// Records the slot as fired, then invokes the function in the
    /// background so a slow function delays no other timer.
    async fn fire(&self, name: &str, function: &str, slot: DateTime<Utc>) {
        // In order, one at a time (the record is the last slot fired), but
        // on a blocking thread: it waits for an fsync.
        // Every node of a cluster runs every timer: the one that claims
        // the slot first fires it (one node alone always does).
        let (store, key, value) = (self.store.clone(), state_key(name), slot.to_rfc3339());
        let claim = format!("{key}@{}", slot.timestamp());
        let recorded = tokio::task::spawn_blocking(move || {
            if !store.claim(&claim)? {
                return Ok(false);
            }
            store.put_state(&key, &value).map(|()| true)
        })
        .await
        .unwrap_or_else(|e| Err(flare_model::Error::internal(e.to_string())));
        if let Ok(false) = recorded {
            tracing::debug!("timer trigger {name}: slot {slot} fired by another node");
            return;
        }
        if let Err(e) = recorded {
            tracing::error!("timer trigger {name}: cannot record its firing, skipping it: {e}");
            return;
        }
        let body = serde_json::json!({"trigger": name, "scheduled": slot.to_rfc3339()});
        let request = crate::cloud_event(
            "dev.flare.timer",
            &format!("/timertriggers/{name}"),
            name,
            slot,
            Bytes::from(body.to_string()),
        );
        let (executor, name, function) = (
            self.executor.clone(),
            name.to_string(),
            function.to_string(),
        );
        tokio::spawn(async move {
            let invoked = executor.invoke(&function, request).await;
            if let Err(e) = invoked.result {
                tracing::warn!("timer trigger {name} -> function {function}: {}", e.message);
            }
        });
    }
}
