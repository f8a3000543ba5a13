//! How many instances a function should have, from observed concurrency.
//!
//! The model is Knative's KPA: average the concurrency over a stable window
//! (60 s) and over a panic window (6 s). Normally follow the stable
//! average, which ignores blips. When the panic average asks for at least
//! twice the instances there are, panic: follow the panic average, and do
//! not scale down until the load has been calm for a stable window. Scale
//! up at most [`AutoscalerConfig::max_scale_up_rate`] times per decision,
//! never beyond the bounds; to zero when nothing ran for a stable window
//! and `min_scale` is 0 (the keep-alive then removes the idle instances).

use std::collections::VecDeque;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AutoscalerConfig {
    /// Requests in flight one instance should carry.
    pub target_per_instance: f64,
    pub min_scale: u32,
    pub max_scale: u32,
    pub stable_window: Duration,
    pub panic_window: Duration,
    /// Panic when the panic window asks for this many times the instances
    /// that are ready.
    pub panic_threshold: f64,
    pub max_scale_up_rate: f64,
}

impl AutoscalerConfig {
    pub fn new(target_per_instance: u32, min_scale: u32, max_scale: u32) -> Self {
        AutoscalerConfig {
            target_per_instance: f64::from(target_per_instance.max(1)),
            min_scale,
            max_scale: max_scale.max(min_scale).max(1),
            stable_window: Duration::from_secs(60),
            panic_window: Duration::from_secs(6),
            panic_threshold: 2.0,
            max_scale_up_rate: 10.0,
        }
    }
}

/// One function's autoscaler. Feed it samples of the concurrency (requests
/// in flight) at times of your choosing; ask it for the desired scale.
#[derive(Debug, Clone)]
pub struct Autoscaler {
    config: AutoscalerConfig,
    /// (time since an arbitrary origin, concurrency)
    samples: VecDeque<(Duration, f64)>,
    panicking_until: Option<Duration>,
    last_desired: u32,
}

impl Autoscaler {
    pub fn new(config: AutoscalerConfig) -> Self {
        Autoscaler {
            config,
            samples: VecDeque::new(),
            panicking_until: None,
            last_desired: config.min_scale,
        }
    }

    pub fn config(&self) -> &AutoscalerConfig {
        &self.config
    }

    pub fn record(&mut self, now: Duration, concurrency: f64) {
        self.samples.push_back((now, concurrency));
        let horizon = now.saturating_sub(self.config.stable_window);
        while self.samples.front().is_some_and(|(t, _)| *t < horizon) {
            self.samples.pop_front();
        }
    }

    fn average(&self, now: Duration, window: Duration) -> f64 {
        let since = now.saturating_sub(window);
        let (sum, n) = self
            .samples
            .iter()
            .filter(|(t, _)| *t >= since)
            .fold((0.0, 0u32), |(s, n), (_, c)| (s + c, n + 1));
        if n == 0 { 0.0 } else { sum / f64::from(n) }
    }

    pub fn panicking(&self, now: Duration) -> bool {
        self.panicking_until.is_some_and(|until| now < until)
    }

    /// The number of instances wanted now, given `ready` instances.
    pub fn desired(&mut self, now: Duration, ready: u32) -> u32 {
        let c = &self.config;
        let stable = (self.average(now, c.stable_window) / c.target_per_instance).ceil() as u32;
        let panic = (self.average(now, c.panic_window) / c.target_per_instance).ceil() as u32;
        if f64::from(panic) >= c.panic_threshold * f64::from(ready.max(1)) && panic > ready {
            self.panicking_until = Some(now + c.stable_window);
        }
        let mut desired = if self.panicking(now) {
            panic.max(self.last_desired)
        } else {
            self.panicking_until = None;
            stable
        };
        let ceiling = (f64::from(ready.max(1)) * c.max_scale_up_rate).ceil() as u32;
        desired = desired.min(ceiling).clamp(c.min_scale, c.max_scale);
        self.last_desired = desired;
        desired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    /// Runs a load shape for `secs` seconds, sampling every second, with
    /// the instances following the decisions; returns the decisions.
    fn run(config: AutoscalerConfig, secs: u64, load: impl Fn(u64) -> f64) -> Vec<u32> {
        let mut scaler = Autoscaler::new(config);
        let mut ready = config.min_scale;
        (0..secs)
            .map(|s| {
                scaler.record(SEC * s as u32, load(s));
                ready = scaler.desired(SEC * s as u32, ready);
                ready
            })
            .collect()
    }

    #[test]
    fn steady_load_settles_on_load_over_target() {
        let d = run(AutoscalerConfig::new(1, 0, 50), 120, |_| 4.0);
        assert!(d[100..].iter().all(|&n| n == 4), "{d:?}");
    }

    #[test]
    fn a_burst_triggers_panic_and_fast_scale_up_then_a_calm_scale_down() {
        let config = AutoscalerConfig::new(1, 0, 50);
        let d = run(config, 300, |s| {
            if (100..130).contains(&s) { 20.0 } else { 1.0 }
        });
        // Before the burst: 1 instance.
        assert_eq!(d[99], 1);
        // At 20 within the panic window (6 s) of the burst's start; the
        // stable average alone would have taken most of a minute.
        assert!(d[100..108].iter().any(|&n| n >= 20), "{:?}", &d[95..110]);
        let stable_only = run(
            AutoscalerConfig {
                panic_threshold: f64::INFINITY,
                ..config
            },
            300,
            |s| {
                if (100..130).contains(&s) { 20.0 } else { 1.0 }
            },
        );
        assert!(
            stable_only[100..108].iter().all(|&n| n < 5),
            "{:?}",
            &stable_only[100..110]
        );
        // No scale-down while panicking (one stable window after the burst).
        assert!(d[108..150].iter().all(|&n| n >= 20), "{:?}", &d[100..160]);
        // Back to 1 after the stable window has forgotten the burst.
        assert_eq!(*d.last().unwrap(), 1, "{:?}", &d[200..]);
    }

    #[test]
    fn diurnal_load_is_followed() {
        let day = 600.0;
        let load = |s: u64| 10.0 + 8.0 * (2.0 * std::f64::consts::PI * s as f64 / day).sin();
        let d = run(AutoscalerConfig::new(2, 1, 50), 1200, load);
        let (low, high) = (
            d[700..].iter().min().unwrap(),
            d[700..].iter().max().unwrap(),
        );
        assert!(*high >= 7 && *low <= 3, "low {low}, high {high}");
    }

    #[test]
    fn sparse_load_scales_to_zero_or_min_scale() {
        let sparse = |s: u64| if s.is_multiple_of(300) { 1.0 } else { 0.0 };
        let d = run(AutoscalerConfig::new(1, 0, 10), 1000, sparse);
        assert_eq!(d[250], 0, "nothing ran for a minute: zero");
        assert!(d.iter().all(|&n| n <= 1));
        let d = run(AutoscalerConfig::new(1, 2, 10), 1000, sparse);
        assert!(d.iter().all(|&n| n == 2), "min scale holds");
    }

    #[test]
    fn bounds_and_scale_up_rate_hold() {
        let d = run(AutoscalerConfig::new(1, 0, 5), 60, |_| 100.0);
        assert!(d.iter().all(|&n| n <= 5));
        let mut config = AutoscalerConfig::new(1, 0, 1000);
        config.max_scale_up_rate = 2.0;
        let d = run(config, 10, |_| 100.0);
        assert_eq!(&d[..4], &[2, 4, 8, 16], "doubling from one");
    }
}
