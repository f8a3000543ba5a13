//! Scaling decisions, kept apart from the runtimes so that they are plain
//! functions of what was observed, testable on synthetic load.
//!
//! - [`Autoscaler`] decides how many instances a function should have from
//!   its observed concurrency, over a stable window and a short panic
//!   window for bursts (the model of Knative's KPA) — not from CPU.
//! - [`AdaptiveKeepAlive`] learns a function's idle times and decides how
//!   long to keep an idle instance and when to pre-warm one (the hybrid
//!   histogram policy of Shahrad et al., "Serverless in the Wild", USENIX
//!   ATC 2020).
//!
//! Time is passed in, never read, so the same code runs in the server and
//! in `examples/keepalive_sim.rs`.

mod autoscale;
mod keepalive;

pub use autoscale::{Autoscaler, AutoscalerConfig};
pub use keepalive::{AdaptiveKeepAlive, IdleTimes, Learned, Windows};
