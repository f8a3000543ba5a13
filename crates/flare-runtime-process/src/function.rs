//! A deployed process function: its instances and its scaling policy.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flare_model::{KeepAlive, Limits};
use flare_scaling::{AdaptiveKeepAlive, Autoscaler};
use tokio::sync::Notify;

use flare_runtime::Instances;

use crate::ADAPTIVE_FALLBACK;
use crate::packages::Code;
use crate::worker::Worker;

/// One specialized worker of a function.
pub(crate) struct Instance {
    pub(crate) worker: Worker,
    pub(crate) last_used: Mutex<Instant>,
}

#[derive(Default)]
pub(crate) struct InstanceList {
    pub(crate) live: Vec<Arc<Instance>>,
    pub(crate) starting: u32,
}

/// A deployed process function and its instances.
pub struct ProcessFunction {
    pub(crate) name: Arc<str>,
    pub(crate) environment: String,
    /// Its package, unpacked (shared with functions of the same digest).
    pub(crate) code: Arc<Code>,
    pub(crate) entrypoint: Option<String>,
    /// Environment variables (its spec's, its config's, its secrets').
    pub(crate) env: Vec<(String, String)>,
    /// Files under `/secrets`, written by the worker when it specializes.
    pub(crate) files: Vec<(String, Vec<u8>)>,
    /// The egress proxy's rules, for a function that may call out.
    pub(crate) egress: Option<Arc<flare_egress::proxy::Rules>>,
    pub(crate) limits: Limits,
    pub(crate) instances: Mutex<InstanceList>,
    pub(crate) freed: Notify,
    /// Requests of this function in flight, over all instances.
    pub(crate) in_flight: AtomicU32,
    pub(crate) policy: Mutex<Policy>,
    /// Requests that had to specialize a new instance.
    pub(crate) cold_starts: AtomicU64,
    /// Instances started (on demand, reserved, pre-warmed) and removed.
    pub(crate) scale_ups: AtomicU64,
    pub(crate) scale_downs: AtomicU64,
}

/// The scaling state of one function: the autoscaler on its concurrency
/// and, with `keepAlive: adaptive`, its learned idle times.
pub(crate) struct Policy {
    pub(crate) autoscaler: Autoscaler,
    pub(crate) adaptive: Option<AdaptiveKeepAlive>,
    /// When the function last became idle.
    pub(crate) idle_since: Option<Instant>,
    pub(crate) origin: Instant,
}

impl ProcessFunction {
    /// Its instances and their counters.
    pub fn counts(&self) -> Instances {
        let (live, busy, starting) = match self.instances.lock() {
            Ok(state) => (
                state.live.len(),
                state
                    .live
                    .iter()
                    .filter(|i| i.worker.in_flight.load(Ordering::Acquire) > 0)
                    .count(),
                state.starting,
            ),
            Err(_) => (0, 0, 0),
        };
        Instances {
            live,
            busy,
            starting,
            cold_starts: self.cold_starts.load(Ordering::Relaxed),
            scale_ups: self.scale_ups.load(Ordering::Relaxed),
            scale_downs: self.scale_downs.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn drop_instance(&self, gone: &Arc<Instance>) {
        if let Ok(mut state) = self.instances.lock() {
            state.live.retain(|i| !Arc::ptr_eq(i, gone));
        }
    }

    pub(crate) fn begin(&self) {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) == 0
            && let Ok(mut policy) = self.policy.lock()
        {
            let idle = policy.idle_since.take().map(|t| t.elapsed());
            if let (Some(adaptive), Some(idle)) = (policy.adaptive.as_mut(), idle) {
                adaptive.record(idle);
            }
        }
    }

    pub(crate) fn end(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1
            && let Ok(mut policy) = self.policy.lock()
        {
            policy.idle_since = Some(Instant::now());
        }
    }

    /// One scaling decision: how many instances to keep, from the
    /// autoscaler, the reserved minimum and (adaptive keep-alive) the
    /// learned pre-warm window; and which idle instances may go.
    pub(crate) fn decide(&self) -> (u32, Duration) {
        let Ok(mut policy) = self.policy.lock() else {
            return (self.limits.min_scale, Duration::MAX);
        };
        let live = self.counts().live as u32;
        let now = policy.origin.elapsed();
        let concurrency = f64::from(self.in_flight.load(Ordering::Acquire));
        policy.autoscaler.record(now, concurrency);
        let mut floor = policy
            .autoscaler
            .desired(now, live)
            .max(self.limits.min_scale);
        let idle_since = policy.idle_since;
        let keep_alive = match (&mut policy.adaptive, self.limits.keep_alive) {
            (Some(adaptive), _) => {
                let windows = adaptive.windows();
                // Unloaded during the pre-warm window, one instance loaded
                // for the keep-alive window after it.
                if let Some(idle) = idle_since.map(|t| t.elapsed())
                    && windows.is_warm(idle)
                    && windows.keep_alive > Duration::ZERO
                {
                    floor = floor.max(1);
                }
                Duration::ZERO
            }
            (None, KeepAlive::Fixed(keep_alive)) => keep_alive,
            (None, KeepAlive::Adaptive) => ADAPTIVE_FALLBACK,
        };
        (floor, keep_alive)
    }

    /// Removes idle instances beyond `floor` that have idled `keep_alive`.
    pub(crate) async fn reap(&self, floor: u32, keep_alive: Duration) {
        let expired: Vec<Arc<Instance>> = match self.instances.lock() {
            Ok(mut state) => {
                let mut excess = (state.live.len() as u32).saturating_sub(floor) as usize;
                let mut expired = Vec::new();
                state.live.retain(|i| {
                    let idle = i.worker.in_flight.load(Ordering::Acquire) == 0
                        && i.last_used
                            .lock()
                            .map(|t| t.elapsed() >= keep_alive)
                            .unwrap_or(false);
                    if excess > 0 && idle {
                        excess -= 1;
                        expired.push(i.clone());
                        false
                    } else {
                        true
                    }
                });
                expired
            }
            Err(_) => return,
        };
        for instance in expired {
            tracing::debug!(
                "function {}: instance {} removed (idle past keep-alive)",
                self.name,
                instance.worker.id()
            );
            self.scale_downs.fetch_add(1, Ordering::Relaxed);
            instance.worker.kill().await;
        }
    }
}

/// A request of `function` in flight, for its scaling policy: from the
/// moment it asks for an instance until it ends, however it ends.
pub(crate) struct Active<'a>(&'a ProcessFunction);

impl<'a> Active<'a> {
    pub(crate) fn begin(function: &'a ProcessFunction) -> Self {
        function.begin();
        Active(function)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.end();
    }
}
