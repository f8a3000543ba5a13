//! Each function's recent metrics at a coarse grain, kept in memory for
//! charts (`flare fn metrics`, the console): one point per [`STEP`] for
//! the last [`SPAN`], so no Prometheus is needed to see a function's rate,
//! errors, latency, cold starts and instances over time.
//!
//! A sampler reads, every step, the counters the data path already keeps;
//! nothing is added to a request. Only steps in which something happened
//! are stored, so an idle function costs nothing; a read fills the gaps
//! with zeros.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Executor;
use crate::deploy::State;
use crate::metrics::BUCKETS;

/// The width of a point.
pub const STEP: Duration = Duration::from_secs(10);
/// How far back points are kept.
pub const SPAN: Duration = Duration::from_secs(3600);

/// What one function did in one step (on this node).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricPoint {
    /// The step's end, in Unix seconds.
    pub at: u64,
    pub requests: u64,
    /// Requests answered with a 5xx (timeouts included).
    pub errors: u64,
    /// Duration percentiles of the step's requests, in milliseconds: the
    /// upper bound of the histogram bucket they fall in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
    /// Requests that specialized a new instance (process functions).
    pub cold_starts: u64,
    /// Instances at the step's end (process functions), and those busy.
    pub instances: u64,
    pub busy: u64,
}

/// A function's counters when last sampled.
#[derive(Default, Clone)]
struct Counters {
    requests: u64,
    errors: u64,
    buckets: [u64; BUCKETS.len()],
    cold_starts: u64,
}

/// The points of every function, and what the next step is measured from.
#[derive(Default)]
pub(crate) struct History {
    last: HashMap<String, Counters>,
    points: HashMap<String, VecDeque<SharedPoint>>,
}

/// One node's step of one function as nodes exchange it: counts that add
/// up across nodes (the duration histogram's cumulative buckets, not its
/// quantiles, which do not).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SharedPoint {
    pub at: u64,
    pub requests: u64,
    pub errors: u64,
    /// Requests at or under each bound of the duration histogram.
    pub buckets: Vec<u64>,
    pub cold_starts: u64,
    pub instances: u64,
    pub busy: u64,
}

impl SharedPoint {
    /// Adds `other`'s counts (another node's answer: saturating, and only
    /// as many buckets as this node has, whatever it sent).
    fn add(&mut self, other: &SharedPoint) {
        self.requests = self.requests.saturating_add(other.requests);
        self.errors = self.errors.saturating_add(other.errors);
        self.buckets.resize(BUCKETS.len(), 0);
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine = mine.saturating_add(*theirs);
        }
        self.cold_starts = self.cold_starts.saturating_add(other.cold_starts);
        self.instances = self.instances.saturating_add(other.instances);
        self.busy = self.busy.saturating_add(other.busy);
    }

    fn point(&self) -> MetricPoint {
        let mut buckets = [0u64; BUCKETS.len()];
        for (to, from) in buckets.iter_mut().zip(&self.buckets) {
            *to = *from;
        }
        MetricPoint {
            at: self.at,
            requests: self.requests,
            errors: self.errors,
            p50_ms: quantile(&buckets, self.requests, 0.5),
            p99_ms: quantile(&buckets, self.requests, 0.99),
            cold_starts: self.cold_starts,
            instances: self.instances,
            busy: self.busy,
        }
    }
}

/// One point per step for the span ending at `now` (the latest step end
/// at or before it) from `points` of any number of nodes, added up where
/// they share a step; zeros where nothing happened.
pub fn combine(points: impl IntoIterator<Item = SharedPoint>, now: u64) -> Vec<MetricPoint> {
    let step = STEP.as_secs();
    let count = SPAN.as_secs() / step;
    let first = (now - now % step).saturating_sub((count - 1) * step);
    let mut by_step: std::collections::BTreeMap<u64, SharedPoint> = Default::default();
    for point in points {
        if point.at >= first && point.at % step == 0 {
            by_step
                .entry(point.at)
                .or_insert_with(|| SharedPoint {
                    at: point.at,
                    ..SharedPoint::default()
                })
                .add(&point);
        }
    }
    (0..count)
        .map(|i| {
            let at = first + i * step;
            by_step.get(&at).map_or(
                MetricPoint {
                    at,
                    ..MetricPoint::default()
                },
                SharedPoint::point,
            )
        })
        .collect()
}

/// The bound (ms) of the bucket holding the `q` quantile of the requests
/// whose cumulative bucket counts are `buckets` (out of `count`); the last
/// bound when it is past every bucket.
fn quantile(buckets: &[u64; BUCKETS.len()], count: u64, q: f64) -> Option<f64> {
    if count == 0 {
        return None;
    }
    let wanted = (q * count as f64).ceil().max(1.0) as u64;
    let bound = BUCKETS
        .iter()
        .zip(buckets)
        .find(|(_, n)| **n >= wanted)
        .map_or(BUCKETS[BUCKETS.len() - 1], |(bound, _)| *bound);
    Some(bound * 1000.0)
}

impl History {
    /// Records the step ending at `at` for `name`, whose counters are now
    /// `now` and whose instances are `(instances, busy)`.
    fn record(&mut self, name: &str, at: u64, now: Counters, instances: (u64, u64)) {
        let before = self.last.insert(name.to_string(), now.clone());
        // A function first seen starts from zero: its first step counts
        // what it did before, once.
        let before = before.unwrap_or_default();
        let requests = now.requests.saturating_sub(before.requests);
        let mut buckets = [0u64; BUCKETS.len()];
        for (i, n) in buckets.iter_mut().enumerate() {
            *n = now.buckets[i].saturating_sub(before.buckets[i]);
        }
        let point = SharedPoint {
            at,
            requests,
            errors: now.errors.saturating_sub(before.errors),
            buckets: buckets.to_vec(),
            cold_starts: now.cold_starts.saturating_sub(before.cold_starts),
            instances: instances.0,
            busy: instances.1,
        };
        let points = self.points.entry(name.to_string()).or_default();
        if point.requests > 0 || point.cold_starts > 0 || point.instances > 0 {
            points.push_back(point);
        }
        let oldest = at.saturating_sub(SPAN.as_secs());
        while points.front().is_some_and(|p| p.at <= oldest) {
            points.pop_front();
        }
        if points.is_empty() {
            self.points.remove(name);
        }
    }

    /// One point per step for the span ending at `now` (the latest step
    /// end at or before it), zeros where nothing happened.
    fn points(&self, name: &str, now: u64) -> Vec<MetricPoint> {
        combine(self.shared(name), now)
    }

    /// The steps of `name` in which something happened, oldest first.
    fn shared(&self, name: &str) -> Vec<SharedPoint> {
        self.points
            .get(name)
            .map(|points| points.iter().cloned().collect())
            .unwrap_or_default()
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Executor {
    /// Takes one step's points of every function.
    fn sample(&self, at: u64) {
        let metrics: Vec<(String, Arc<crate::metrics::FunctionMetrics>)> = self
            .metrics
            .read()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let instances: HashMap<String, flare_runtime::Instances> = self
            .deployments
            .read()
            .map(|d| {
                d.values()
                    .filter_map(|d| match &d.state {
                        State::Ready(ready) => {
                            Some((d.name.to_string(), ready.function.instances()?))
                        }
                        State::Failed(_) => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let Ok(mut history) = self.history.lock() else {
            return;
        };
        for (name, m) in metrics {
            let live = instances.get(&name);
            let mut counters = Counters {
                requests: m.count.load(Ordering::Relaxed),
                errors: m.errors(),
                cold_starts: live.map_or(0, |c| c.cold_starts),
                ..Counters::default()
            };
            for (i, bucket) in m.buckets.iter().enumerate() {
                counters.buckets[i] = bucket.load(Ordering::Relaxed);
            }
            let now = live.map_or((0, 0), |c| (c.live as u64, c.busy as u64));
            history.record(&name, at, counters, now);
        }
    }

    /// Samples every [`STEP`], on step boundaries, while the executor
    /// lives. Call once, inside the tokio runtime.
    pub fn keep_history(self: &Arc<Self>) {
        let executor = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                let step = STEP.as_millis() as u64;
                let into = now.as_millis() as u64 % step;
                tokio::time::sleep(Duration::from_millis(step - into)).await;
                let Some(executor) = executor.upgrade() else {
                    return;
                };
                let at = unix_now();
                executor.sample(at - at % STEP.as_secs());
            }
        });
    }

    /// `name`'s points over the last [`SPAN`], one per [`STEP`], oldest
    /// first.
    pub fn history(&self, name: &str) -> Vec<MetricPoint> {
        self.history
            .lock()
            .map(|h| h.points(name, unix_now()))
            .unwrap_or_default()
    }

    /// `name`'s steps on this node in which something happened, as nodes
    /// exchange them (to be [`combine`]d with the other nodes').
    pub fn shared_history(&self, name: &str) -> Vec<SharedPoint> {
        self.history
            .lock()
            .map(|h| h.shared(name))
            .unwrap_or_default()
    }

    /// `points` of every node (this one's included) as one series over the
    /// last [`SPAN`].
    pub fn combined_history(&self, points: Vec<SharedPoint>) -> Vec<MetricPoint> {
        combine(points, unix_now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(requests: u64, errors: u64, fast: u64) -> Counters {
        // `fast` requests of 1 ms or less, the rest of 1 s or less.
        let mut c = Counters {
            requests,
            errors,
            ..Counters::default()
        };
        for (i, bound) in BUCKETS.iter().enumerate() {
            c.buckets[i] = if *bound >= 1.0 {
                requests
            } else if *bound >= 0.001 {
                fast
            } else {
                0
            };
        }
        c
    }

    #[test]
    fn a_step_holds_what_happened_in_it_and_gaps_are_zeros() {
        const T: u64 = 1_800_000_000;
        let mut h = History::default();
        h.record("f", T + 100, counters(10, 0, 10), (0, 0));
        h.record("f", T + 110, counters(110, 5, 100), (2, 1));
        // Nothing in the next two steps.
        h.record("f", T + 120, counters(110, 5, 100), (0, 0));
        h.record("f", T + 130, counters(110, 5, 100), (0, 0));
        let points = h.points("f", T + 135);
        assert_eq!(points.len(), 360);
        assert_eq!(points.last().unwrap().at, T + 130);
        let at = |t: u64| points.iter().find(|p| p.at == T + t).unwrap().clone();
        assert_eq!(at(100).requests, 10, "the first step counts from zero");
        assert_eq!(at(100).p99_ms, Some(1.0));
        let busy = at(110);
        assert_eq!((busy.requests, busy.errors), (100, 5));
        assert_eq!((busy.instances, busy.busy), (2, 1));
        // 90 of 100 at 1 ms, 10 at 1 s: p50 is 1 ms, p99 is 1 s.
        assert_eq!(busy.p50_ms, Some(1.0));
        assert_eq!(busy.p99_ms, Some(1000.0));
        assert_eq!(
            at(120),
            MetricPoint {
                at: T + 120,
                ..Default::default()
            }
        );
        // Points older than the span go.
        h.record("f", T + 130 + 3600, counters(111, 5, 101), (0, 0));
        let later = h.points("f", T + 130 + 3600);
        assert!(later.iter().all(|p| p.at != T + 110));
        assert_eq!(later.iter().map(|p| p.requests).sum::<u64>(), 1);
        // An idle function keeps nothing.
        h.record("idle", T + 100, Counters::default(), (0, 0));
        assert!(!h.points.contains_key("idle"));
    }

    #[test]
    fn nodes_points_add_up_by_step_and_their_quantiles_from_the_sum() {
        const T: u64 = 1_800_000_000;
        let (mut a, mut b) = (History::default(), History::default());
        // a: 100 fast requests; b: 100 at 1 s, in the same step.
        a.record("f", T + 100, counters(100, 0, 100), (1, 0));
        b.record("f", T + 100, counters(100, 3, 0), (2, 1));
        b.record("f", T + 110, counters(101, 3, 0), (2, 0));
        let mut all = a.shared("f");
        all.extend(b.shared("f"));
        let points = combine(all, T + 115);
        assert_eq!(points.len(), 360);
        let at = |t: u64| points.iter().find(|p| p.at == T + t).unwrap().clone();
        let both = at(100);
        assert_eq!((both.requests, both.errors), (200, 3));
        assert_eq!((both.instances, both.busy), (3, 1));
        // Half at 1 ms, half at 1 s: p50 1 ms, p99 1 s; neither node's own.
        assert_eq!((both.p50_ms, both.p99_ms), (Some(1.0), Some(1000.0)));
        assert_eq!(at(110).requests, 1);
        // Another node's answer cannot overflow the sum or grow it.
        let hostile = SharedPoint {
            at: T + 100,
            requests: u64::MAX,
            buckets: vec![u64::MAX; 1000],
            ..SharedPoint::default()
        };
        let mut sum = a.shared("f");
        sum.push(hostile);
        let summed = combine(sum, T + 115);
        let step = summed.iter().find(|p| p.at == T + 100).unwrap();
        assert_eq!(step.requests, u64::MAX);
        assert_eq!(step.p99_ms, Some(0.5), "the first bucket holds them all");
        // A point off the step grid or out of the span is not counted.
        let odd = SharedPoint {
            at: T + 105,
            requests: 7,
            ..SharedPoint::default()
        };
        let old = SharedPoint {
            at: T - 7200,
            requests: 9,
            ..SharedPoint::default()
        };
        let total: u64 = combine([odd, old], T + 115)
            .iter()
            .map(|p| p.requests)
            .sum();
        assert_eq!(total, 0);
    }

    #[test]
    fn quantiles_come_from_the_bucket_they_fall_in() {
        let mut buckets = [0u64; BUCKETS.len()];
        assert_eq!(quantile(&buckets, 0, 0.5), None);
        // All slower than the last bucket: its bound.
        assert_eq!(quantile(&buckets, 4, 0.5), Some(10_000.0));
        buckets.iter_mut().for_each(|b| *b = 4);
        assert_eq!(quantile(&buckets, 4, 0.99), Some(0.5));
    }
}
