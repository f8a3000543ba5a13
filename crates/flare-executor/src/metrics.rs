//! Prometheus text metrics of the data path.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::Executor;
use crate::deploy::State;

/// Upper bounds of the duration histogram, in seconds.
pub(crate) const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Counters of one function; they outlive redeployments of it.
#[derive(Default)]
pub(crate) struct FunctionMetrics {
    /// By status class: 1xx .. 5xx.
    by_class: [AtomicU64; 5],
    pub(crate) buckets: [AtomicU64; BUCKETS.len()],
    sum_us: AtomicU64,
    pub(crate) count: AtomicU64,
    pub queued: AtomicU64,
    pub rejected: AtomicU64,
}

impl FunctionMetrics {
    pub fn record(&self, status: u16, elapsed: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_us
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests answered with a 5xx (timeouts included).
    pub(crate) fn errors(&self) -> u64 {
        self.by_class[4].load(Ordering::Relaxed)
    }
}

impl Executor {
    /// Requests `name` has answered on this node, and how many of them
    /// failed (5xx, timeouts included).
    pub fn outcomes(&self, name: &str) -> (u64, u64) {
        let metrics = self.metrics_for(name);
        let requests = metrics.count.load(Ordering::Relaxed);
        (requests, metrics.errors())
    }
}

fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

impl Executor {
    pub(crate) fn metrics_for(&self, function: &str) -> Arc<FunctionMetrics> {
        if let Some(m) = self
            .metrics
            .read()
            .ok()
            .and_then(|m| m.get(function).cloned())
        {
            return m;
        }
        match self.metrics.write() {
            Ok(mut all) => all.entry(function.to_string()).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }

    /// Functions ready to serve without a cold start (a wasm function
    /// always is; a process function while it has a live instance), and
    /// instances serving a request now: what a node reports of its load.
    pub fn load(&self) -> (u64, u64) {
        let Ok(deployments) = self.deployments.read() else {
            return (0, 0);
        };
        let (mut warm, mut busy) = (0u64, 0u64);
        for d in deployments.values() {
            if let State::Ready(ready) = &d.state {
                match ready.function.instances() {
                    Some(c) => {
                        warm += u64::from(c.live > 0);
                        busy += c.busy as u64;
                    }
                    None => warm += 1,
                }
            }
        }
        (warm, busy)
    }

    /// Everything in Prometheus' text format.
    pub fn render_metrics(&self) -> String {
        let mut out = String::new();
        let metrics: Vec<(String, Arc<FunctionMetrics>)> = self
            .metrics
            .read()
            .map(|m| {
                let mut v: Vec<_> = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                v.sort_by(|a, b| a.0.cmp(&b.0));
                v
            })
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "# HELP flare_invocations_total Invocations by function and status class."
        );
        let _ = writeln!(out, "# TYPE flare_invocations_total counter");
        for (name, m) in &metrics {
            for (i, counter) in m.by_class.iter().enumerate() {
                let n = counter.load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "flare_invocations_total{{function=\"{}\",status=\"{}xx\"}} {n}",
                        label(name),
                        i + 1
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP flare_invocation_duration_seconds Time to the response head."
        );
        let _ = writeln!(out, "# TYPE flare_invocation_duration_seconds histogram");
        for (name, m) in &metrics {
            let name = label(name);
            for (bound, bucket) in BUCKETS.iter().zip(&m.buckets) {
                let _ = writeln!(
                    out,
                    "flare_invocation_duration_seconds_bucket{{function=\"{name}\",le=\"{bound}\"}} {}",
                    bucket.load(Ordering::Relaxed)
                );
            }
            let count = m.count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "flare_invocation_duration_seconds_bucket{{function=\"{name}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "flare_invocation_duration_seconds_sum{{function=\"{name}\"}} {}",
                m.sum_us.load(Ordering::Relaxed) as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "flare_invocation_duration_seconds_count{{function=\"{name}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP flare_queue_depth Requests waiting for capacity."
        );
        let _ = writeln!(out, "# TYPE flare_queue_depth gauge");
        for (name, m) in &metrics {
            let _ = writeln!(
                out,
                "flare_queue_depth{{function=\"{}\"}} {}",
                label(name),
                m.queued.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP flare_queue_rejections_total Requests refused with 503 for lack of capacity."
        );
        let _ = writeln!(out, "# TYPE flare_queue_rejections_total counter");
        for (name, m) in &metrics {
            let _ = writeln!(
                out,
                "flare_queue_rejections_total{{function=\"{}\"}} {}",
                label(name),
                m.rejected.load(Ordering::Relaxed)
            );
        }

        let deployments: Vec<_> = self
            .deployments
            .read()
            .map(|d| {
                let mut v: Vec<_> = d.values().cloned().collect();
                v.sort_by(|a, b| a.name.cmp(&b.name));
                v
            })
            .unwrap_or_default();
        // Functions whose runtime keeps instances (process functions).
        let process: Vec<_> = deployments
            .iter()
            .filter_map(|d| match &d.state {
                State::Ready(ready) => Some((label(&d.name), ready.function.instances()?)),
                State::Failed(_) => None,
            })
            .collect();
        let _ = writeln!(
            out,
            "# HELP flare_cold_starts_total Requests that specialized a new instance (process functions; a wasm request always runs in a fresh instance from the pool)."
        );
        let _ = writeln!(out, "# TYPE flare_cold_starts_total counter");
        for (name, f) in &process {
            let _ = writeln!(
                out,
                "flare_cold_starts_total{{function=\"{name}\"}} {}",
                f.cold_starts
            );
        }
        let _ = writeln!(
            out,
            "# HELP flare_instances Instances by state (process functions)."
        );
        let _ = writeln!(out, "# TYPE flare_instances gauge");
        for (name, c) in &process {
            let _ = writeln!(
                out,
                "flare_instances{{function=\"{name}\",state=\"warm\"}} {}",
                c.live - c.busy
            );
            let _ = writeln!(
                out,
                "flare_instances{{function=\"{name}\",state=\"busy\"}} {}",
                c.busy
            );
            let _ = writeln!(
                out,
                "flare_instances{{function=\"{name}\",state=\"specializing\"}} {}",
                c.starting
            );
        }
        let _ = writeln!(
            out,
            "# HELP flare_scale_events_total Instances started and removed (process functions)."
        );
        let _ = writeln!(out, "# TYPE flare_scale_events_total counter");
        for (name, f) in &process {
            let _ = writeln!(
                out,
                "flare_scale_events_total{{function=\"{name}\",direction=\"up\"}} {}",
                f.scale_ups
            );
            let _ = writeln!(
                out,
                "flare_scale_events_total{{function=\"{name}\",direction=\"down\"}} {}",
                f.scale_downs
            );
        }
        let _ = writeln!(out, "# HELP flare_functions Functions deployed.");
        let _ = writeln!(out, "# TYPE flare_functions gauge");
        let _ = writeln!(out, "flare_functions {}", deployments.len());
        let _ = writeln!(
            out,
            "# HELP flare_log_lines_dropped_total Log lines dropped because the writer fell behind."
        );
        let _ = writeln!(out, "# TYPE flare_log_lines_dropped_total counter");
        let _ = writeln!(out, "flare_log_lines_dropped_total {}", self.logs.dropped());
        let envs: Vec<String> = self
            .environments
            .read()
            .map(|e| e.keys().cloned().collect())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "# HELP flare_pool_idle_workers Generic workers waiting in an environment's pool."
        );
        let _ = writeln!(out, "# TYPE flare_pool_idle_workers gauge");
        for env in envs {
            let idle = self.idle_workers(&env).unwrap_or(0);
            let _ = writeln!(
                out,
                "flare_pool_idle_workers{{environment=\"{}\"}} {idle}",
                label(&env)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = FunctionMetrics::default();
        m.record(200, Duration::from_micros(700));
        m.record(503, Duration::from_millis(30));
        assert_eq!(m.buckets[0].load(Ordering::Relaxed), 0, "0.5ms");
        assert_eq!(m.buckets[1].load(Ordering::Relaxed), 1, "1ms");
        assert_eq!(m.buckets[6].load(Ordering::Relaxed), 2, "50ms");
        assert_eq!(m.by_class[1].load(Ordering::Relaxed), 1);
        assert_eq!(m.by_class[4].load(Ordering::Relaxed), 1);
        assert_eq!(m.count.load(Ordering::Relaxed), 2);
    }
}
