//! Replays synthetic invocation traces shaped like those reported for Azure
//! Functions (Shahrad et al., ATC 2020: most functions are invoked rarely;
//! timers are periodic; some are bursty or follow the day) against a fixed
//! 10-minute keep-alive and the adaptive policy, and prints cold-start rate
//! and wasted (loaded but idle) instance time for each.
//!
//!   cargo run --release -p flare-scaling --example keepalive_sim [FUNCTIONS] [DAYS] [SEED]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use flare_scaling::{AdaptiveKeepAlive, Windows};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const MIN: f64 = 60.0;
const HOUR: f64 = 3600.0;
const DAY: f64 = 24.0 * HOUR;
const FIXED: Duration = Duration::from_secs(600);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    Sparse,
    Periodic,
    Bursty,
    Diurnal,
    Frequent,
}

const SHAPES: [(Shape, f64); 5] = [
    (Shape::Sparse, 0.40),
    (Shape::Periodic, 0.25),
    (Shape::Bursty, 0.15),
    (Shape::Diurnal, 0.10),
    (Shape::Frequent, 0.10),
];

fn exp(rng: &mut StdRng, mean: f64) -> f64 {
    -mean * (1.0 - rng.random::<f64>()).ln()
}

/// Invocation times in seconds for one function over `span` seconds.
fn trace(shape: Shape, rng: &mut StdRng, span: f64) -> Vec<f64> {
    let mut times = Vec::new();
    let mut t = rng.random::<f64>() * HOUR;
    match shape {
        Shape::Sparse => {
            let mean = rng.random_range(2.0..24.0) * HOUR;
            while t < span {
                times.push(t);
                t += exp(rng, mean);
            }
        }
        Shape::Periodic => {
            let period = [5.0, 15.0, 30.0, 60.0, 120.0][rng.random_range(0..5)] * MIN;
            while t < span {
                times.push(t);
                t += period * rng.random_range(0.98..1.02);
            }
        }
        Shape::Bursty => {
            let gap = rng.random_range(20.0..120.0) * MIN;
            while t < span {
                let size = rng.random_range(3..20);
                let mut u = t;
                for _ in 0..size {
                    times.push(u);
                    u += exp(rng, 5.0);
                }
                t = u + exp(rng, gap);
            }
        }
        Shape::Diurnal => {
            let mean = rng.random_range(3.0..20.0) * MIN;
            while t < span {
                times.push(t);
                // Busy by day, quiet by night: the rate follows a sine.
                let phase = (2.0 * std::f64::consts::PI * t / DAY).sin();
                let rate = (1.0 + 0.9 * phase) / mean;
                t += exp(rng, 1.0 / rate.max(1e-6));
            }
        }
        Shape::Frequent => {
            let mean = rng.random_range(5.0..60.0);
            while t < span {
                times.push(t);
                t += exp(rng, mean);
            }
        }
    }
    times
}

#[derive(Default, Clone, Copy)]
struct Tally {
    functions: u32,
    invocations: u64,
    cold: u64,
    wasted: f64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.functions += other.functions;
        self.invocations += other.invocations;
        self.cold += other.cold;
        self.wasted += other.wasted;
    }
}

/// Replays one trace under a policy that chooses the windows after each
/// invocation. The first invocation is always cold.
fn replay(times: &[f64], mut windows: impl FnMut(Option<Duration>) -> Windows) -> Tally {
    let mut tally = Tally {
        functions: 1,
        invocations: times.len() as u64,
        cold: u64::from(!times.is_empty()),
        wasted: 0.0,
    };
    let mut current = windows(None);
    for pair in times.windows(2) {
        let gap = Duration::from_secs_f64((pair[1] - pair[0]).max(0.0));
        if !current.is_warm(gap) {
            tally.cold += 1;
        }
        tally.wasted += current.idle_loaded(gap).as_secs_f64();
        current = windows(Some(gap));
    }
    // After the last invocation the instance idles out its keep-alive.
    tally.wasted += current.keep_alive.as_secs_f64();
    tally
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let functions: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(500);
    let days: f64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(7.0);
    let seed: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(2020);
    let mut rng = StdRng::seed_from_u64(seed);

    let mut fixed = vec![Tally::default(); SHAPES.len()];
    let mut adaptive = vec![Tally::default(); SHAPES.len()];
    for _ in 0..functions {
        let pick: f64 = rng.random();
        let mut acc = 0.0;
        let index = SHAPES
            .iter()
            .position(|(_, weight)| {
                acc += weight;
                pick < acc
            })
            .unwrap_or(SHAPES.len() - 1);
        let times = trace(SHAPES[index].0, &mut rng, days * DAY);
        fixed[index].add(replay(&times, |_| Windows::fixed(FIXED)));
        let mut policy = AdaptiveKeepAlive::new(FIXED);
        adaptive[index].add(replay(&times, |gap| {
            if let Some(gap) = gap {
                policy.record(gap);
            }
            policy.windows()
        }));
    }

    println!(
        "{functions} functions, {days} days of synthetic traces (seed {seed}); fixed = 10 min keep-alive"
    );
    println!(
        "{:<10} {:>5} {:>11} {:>13} {:>13} {:>15} {:>15}",
        "shape",
        "fns",
        "invocations",
        "cold fixed",
        "cold adaptive",
        "idle-h fixed",
        "idle-h adaptive"
    );
    let mut total_fixed = Tally::default();
    let mut total_adaptive = Tally::default();
    let row = |name: &str, f: Tally, a: Tally| {
        let pct = |t: Tally| 100.0 * t.cold as f64 / (t.invocations.max(1)) as f64;
        println!(
            "{:<10} {:>5} {:>11} {:>12.2}% {:>12.2}% {:>15.1} {:>15.1}",
            name,
            f.functions,
            f.invocations,
            pct(f),
            pct(a),
            f.wasted / HOUR,
            a.wasted / HOUR
        );
    };
    for (i, (shape, _)) in SHAPES.iter().enumerate() {
        row(&format!("{shape:?}").to_lowercase(), fixed[i], adaptive[i]);
        total_fixed.add(fixed[i]);
        total_adaptive.add(adaptive[i]);
    }
    row("all", total_fixed, total_adaptive);
    let fewer_cold = total_adaptive.cold < total_fixed.cold;
    let no_more_waste = total_adaptive.wasted <= total_fixed.wasted;
    println!(
        "\nadaptive vs fixed: cold starts {:+.1}%, wasted instance-time {:+.1}%  (target: fewer cold starts at no more wasted time: {})",
        100.0 * (total_adaptive.cold as f64 / total_fixed.cold as f64 - 1.0),
        100.0 * (total_adaptive.wasted / total_fixed.wasted - 1.0),
        if fewer_cold && no_more_waste {
            "met"
        } else {
            "NOT met"
        }
    );
}
