//! The hybrid histogram keep-alive policy.
//!
//! Each function keeps a histogram of its idle times (the gap between one
//! invocation and the next) in one-minute bins over four hours, as in
//! Shahrad et al. From it the policy picks two windows for after each
//! invocation: stay unloaded for `prewarm`, then keep a loaded instance for
//! `keep_alive`. A periodic function is thus unloaded right away and
//! pre-warmed just before it is due; a frequent one stays loaded.
//!
//! The paper reads the windows off the 5th and 99th percentiles. Replaying
//! synthetic traces (`examples/keepalive_sim.rs`) showed that rule keeping
//! instances loaded for hours after bursty and sparse functions, wasting
//! 31% more instance-time than a fixed 10-minute keep-alive. So Flare picks
//! the windows that minimise, over the learned distribution, the number of
//! cold starts plus the idle instance-time divided by the fallback
//! keep-alive: one cold start is worth as much as one fallback keep-alive
//! of idle memory, the trade a fixed keep-alive makes implicitly. Until
//! [`MIN_SAMPLES`] idle times are known, the fallback keep-alive applies.
//!
//! In a cluster, an instance lives on one node and is warm for the next
//! request that node gets, so each node learns the gaps between its own
//! invocations. What the nodes share is those samples: each publishes its
//! own as [`IdleTimes`] and learns from the others' ([`AdaptiveKeepAlive::
//! learn`]), so a function spread over n nodes learns n times as fast. The
//! gaps of the cluster as a whole would be the wrong signal: spread over n
//! nodes they are about n times shorter than any one node's.

use std::time::Duration;

use serde::{Deserialize, Serialize};

const BIN: Duration = Duration::from_secs(60);
const BINS: usize = 240;
/// Samples needed before the histogram is trusted.
pub const MIN_SAMPLES: u32 = 10;

/// What to do after an invocation ends: stay unloaded for `prewarm`, then
/// keep a loaded instance for `keep_alive`. `prewarm` zero: stay loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    pub prewarm: Duration,
    pub keep_alive: Duration,
}

impl Windows {
    pub fn fixed(keep_alive: Duration) -> Self {
        Windows {
            prewarm: Duration::ZERO,
            keep_alive,
        }
    }

    /// Whether an invocation arriving `gap` after the last one ended finds
    /// an instance loaded.
    pub fn is_warm(&self, gap: Duration) -> bool {
        gap >= self.prewarm && gap <= self.prewarm + self.keep_alive
    }

    /// How long an instance sat loaded and idle during a gap of `gap`.
    pub fn idle_loaded(&self, gap: Duration) -> Duration {
        if gap < self.prewarm {
            Duration::ZERO
        } else {
            (gap - self.prewarm).min(self.keep_alive)
        }
    }
}

/// Idle times as one node exchanges them: its counts per one-minute bin
/// (the bins it has seen, ascending) and those beyond the last bin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdleTimes {
    pub bins: Vec<(u16, u32)>,
    pub beyond: u32,
}

impl IdleTimes {
    /// How many idle times these are.
    pub fn samples(&self) -> u64 {
        self.bins.iter().map(|&(_, c)| u64::from(c)).sum::<u64>() + u64::from(self.beyond)
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &IdleTimes) {
        let mut dense = self.dense();
        for &(bin, count) in &other.bins {
            if let Some(c) = dense.get_mut(usize::from(bin)) {
                *c = c.saturating_add(count);
            }
        }
        let beyond = self.beyond.saturating_add(other.beyond);
        *self = IdleTimes::sparse(&dense, beyond);
    }

    fn dense(&self) -> Vec<u32> {
        let mut dense = vec![0u32; BINS];
        for &(bin, count) in &self.bins {
            // Bins another node cannot have meant are ignored.
            if let Some(c) = dense.get_mut(usize::from(bin)) {
                *c = c.saturating_add(count);
            }
        }
        dense
    }

    fn sparse(dense: &[u32], beyond: u32) -> IdleTimes {
        IdleTimes {
            bins: dense
                .iter()
                .enumerate()
                .filter(|&(_, &c)| c > 0)
                .map(|(b, &c)| (b as u16, c))
                .collect(),
            beyond,
        }
    }
}

/// What a function's keep-alive has learned: from how many idle times
/// (`from_peers` of them other nodes'), whether that is enough to trust,
/// and the windows it applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Learned {
    pub samples: u64,
    pub from_peers: u64,
    pub learned: bool,
    pub windows: Windows,
}

/// One function's learned idle-time distribution: its own samples and
/// those other nodes reported.
#[derive(Debug, Clone)]
pub struct AdaptiveKeepAlive {
    bins: Vec<u32>,
    samples: u32,
    out_of_range: u32,
    /// The other nodes' samples, as last learned.
    peers: Vec<u32>,
    peers_beyond: u32,
    fallback: Duration,
    /// The last decision and the sample count it was made at.
    cached: Option<(u64, Windows)>,
}

impl AdaptiveKeepAlive {
    /// `fallback` is used until the pattern is learned.
    pub fn new(fallback: Duration) -> Self {
        AdaptiveKeepAlive {
            bins: vec![0; BINS],
            samples: 0,
            out_of_range: 0,
            peers: vec![0; BINS],
            peers_beyond: 0,
            fallback,
            cached: None,
        }
    }

    /// This node's own samples, to share with the others.
    pub fn own(&self) -> IdleTimes {
        IdleTimes::sparse(&self.bins, self.out_of_range)
    }

    /// Adds `seen` to this node's own samples: what an earlier policy of
    /// the same function learned here.
    pub fn resume(&mut self, seen: &IdleTimes) {
        for (own, &count) in self.bins.iter_mut().zip(&seen.dense()) {
            *own = own.saturating_add(count);
        }
        self.samples = self.bins.iter().fold(0u32, |n, &c| n.saturating_add(c));
        self.out_of_range = self.out_of_range.saturating_add(seen.beyond);
        self.cached = None;
    }

    /// Replaces what is known of the other nodes' samples with `peers`.
    /// The windows are chosen again when they changed.
    pub fn learn(&mut self, peers: &IdleTimes) {
        let dense = peers.dense();
        if dense != self.peers || peers.beyond != self.peers_beyond {
            self.peers = dense;
            self.peers_beyond = peers.beyond;
            self.cached = None;
        }
    }

    /// Records the idle time before an invocation.
    pub fn record(&mut self, idle: Duration) {
        let bin = (idle.as_secs() / BIN.as_secs()) as usize;
        match self.bins.get_mut(bin) {
            Some(count) => {
                *count += 1;
                self.samples += 1;
            }
            None => self.out_of_range += 1,
        }
    }

    /// What it has learned so far, for operators.
    pub fn learned(&mut self) -> Learned {
        let own = u64::from(self.samples) + u64::from(self.out_of_range);
        let from_peers = self.peer_samples();
        Learned {
            samples: own + from_peers,
            from_peers,
            learned: own + from_peers >= u64::from(MIN_SAMPLES),
            windows: self.windows(),
        }
    }

    fn peer_samples(&self) -> u64 {
        self.peers.iter().map(|&c| u64::from(c)).sum::<u64>() + u64::from(self.peers_beyond)
    }

    /// The windows to apply after the next invocation ends. Recomputed
    /// when the sample count has grown by a tenth since the last time.
    pub fn windows(&mut self) -> Windows {
        let total = u64::from(self.samples) + u64::from(self.out_of_range) + self.peer_samples();
        if total < u64::from(MIN_SAMPLES) {
            return Windows::fixed(self.fallback);
        }
        if let Some((at, windows)) = self.cached
            && total < at + (at / 10).max(1)
        {
            return windows;
        }
        let windows = self.choose();
        self.cached = Some((total, windows));
        windows
    }

    /// The windows of least cost: cold starts + idle time / fallback.
    fn choose(&self) -> Windows {
        let bin = BIN.as_secs_f64();
        let exchange = self.fallback.as_secs_f64().max(1.0);
        // Prefix sums of counts and of count x bin middle.
        let mut count = vec![0.0f64; BINS + 1];
        let mut middle = vec![0.0f64; BINS + 1];
        for (b, (&own, &peers)) in self.bins.iter().zip(&self.peers).enumerate() {
            let c = f64::from(own) + f64::from(peers);
            count[b + 1] = count[b] + c;
            middle[b + 1] = middle[b] + c * (b as f64 + 0.5) * bin;
        }
        let beyond_range = f64::from(self.out_of_range) + f64::from(self.peers_beyond);
        let total = count[BINS] + beyond_range;
        // Keeping nothing: every invocation cold, nothing wasted.
        let mut best = (total, Windows::fixed(Duration::ZERO));
        for p in 0..BINS {
            let prewarm = p as f64 * bin;
            for e in p + 1..=BINS {
                let end = e as f64 * bin;
                let hits = count[e] - count[p];
                // Gaps inside [prewarm, end] idle loaded from prewarm to
                // their middle; longer ones for the whole window.
                let waste = (middle[e] - middle[p]) - prewarm * hits
                    + (end - prewarm) * (count[BINS] - count[e] + beyond_range);
                let cost = (total - hits) + waste / exchange;
                if cost < best.0 {
                    best = (
                        cost,
                        Windows {
                            prewarm: Duration::from_secs_f64(prewarm),
                            keep_alive: Duration::from_secs_f64(end - prewarm),
                        },
                    );
                }
            }
        }
        best.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn falls_back_until_the_pattern_is_learned() {
        let mut policy = AdaptiveKeepAlive::new(10 * MIN);
        assert_eq!(policy.windows(), Windows::fixed(10 * MIN));
        for _ in 0..MIN_SAMPLES - 1 {
            policy.record(30 * MIN);
        }
        assert_eq!(
            policy.windows(),
            Windows::fixed(10 * MIN),
            "too few samples"
        );
    }

    #[test]
    fn periodic_function_is_prewarmed_just_before_it_is_due() {
        let mut policy = AdaptiveKeepAlive::new(10 * MIN);
        for _ in 0..20 {
            policy.record(30 * MIN + Duration::from_secs(10));
        }
        let w = policy.windows();
        // Unloaded for 30 minutes, loaded for the minute it is due in.
        assert_eq!(
            w,
            Windows {
                prewarm: 30 * MIN,
                keep_alive: MIN
            }
        );
        assert!(w.is_warm(30 * MIN + Duration::from_secs(10)));
        assert_eq!(
            w.idle_loaded(30 * MIN + Duration::from_secs(10)),
            Duration::from_secs(10)
        );
        // Fixed 10 minutes would be cold every time and waste 10 minutes.
        assert!(!Windows::fixed(10 * MIN).is_warm(30 * MIN));
    }

    #[test]
    fn frequent_function_stays_loaded_for_short_gaps() {
        let mut policy = AdaptiveKeepAlive::new(10 * MIN);
        for _ in 0..100 {
            policy.record(Duration::from_secs(20));
        }
        assert_eq!(policy.windows(), Windows::fixed(MIN));
    }

    #[test]
    fn rare_functions_are_not_kept_at_all() {
        let mut policy = AdaptiveKeepAlive::new(10 * MIN);
        for _ in 0..20 {
            policy.record(10 * 60 * MIN);
        }
        assert_eq!(policy.windows(), Windows::fixed(Duration::ZERO));
    }

    #[test]
    fn peers_samples_teach_a_node_that_has_seen_few() {
        let mut node = AdaptiveKeepAlive::new(10 * MIN);
        for _ in 0..3 {
            node.record(30 * MIN + Duration::from_secs(10));
        }
        assert_eq!(node.windows(), Windows::fixed(10 * MIN), "3 samples");
        // Two other nodes saw the same period, 10 times each.
        let mut other = AdaptiveKeepAlive::new(10 * MIN);
        for _ in 0..10 {
            other.record(30 * MIN + Duration::from_secs(20));
        }
        let mut peers = other.own();
        peers.add(&other.own());
        assert_eq!(peers.samples(), 20);
        node.learn(&peers);
        let learned = node.learned();
        assert_eq!((learned.samples, learned.from_peers), (23, 20));
        assert!(learned.learned);
        assert_eq!(
            node.windows(),
            Windows {
                prewarm: 30 * MIN,
                keep_alive: MIN
            }
        );
        // A new deployment of the function goes on from what it learned.
        let mut next = AdaptiveKeepAlive::new(10 * MIN);
        next.resume(&node.own());
        assert_eq!(next.own(), node.own());
        // What it shares is its own samples only, so nothing echoes back.
        assert_eq!(node.own().samples(), 3);
        assert_eq!(node.own().bins, vec![(30, 3)]);
        // Learning again replaces the peers' samples; it does not add.
        node.learn(&IdleTimes::default());
        assert_eq!(node.windows(), Windows::fixed(10 * MIN));
    }

    #[test]
    fn idle_times_from_another_node_are_bounded() {
        let mut times = IdleTimes {
            bins: vec![(1, 2), (9999, 5)],
            beyond: 1,
        };
        times.add(&IdleTimes {
            bins: vec![(1, u32::MAX), (2, 1)],
            beyond: 2,
        });
        // An out-of-range bin is dropped; counts saturate.
        assert_eq!(times.bins, vec![(1, u32::MAX), (2, 1)]);
        assert_eq!(times.beyond, 3);
    }

    #[test]
    fn bimodal_gaps_keep_only_the_short_mode_when_the_long_one_is_spread() {
        let mut policy = AdaptiveKeepAlive::new(10 * MIN);
        for i in 0..200u32 {
            policy.record(Duration::from_secs(5));
            // Long gaps spread over hours: not worth keeping for.
            policy.record(MIN * (30 + i));
        }
        let w = policy.windows();
        assert_eq!(w.prewarm, Duration::ZERO);
        assert_eq!(w.keep_alive, MIN, "{w:?}");
    }
}
