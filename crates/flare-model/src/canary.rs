//! The `Canary` resource: a new version of a function takes a growing
//! share of its traffic, step by step, and gives it all back to the old
//! one when it fails more than allowed.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Error, Kind, Result, Spec, validate_name};

/// How a canary stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CanaryState {
    #[default]
    Running,
    /// The new version took all the traffic; the function serves it.
    Succeeded,
    /// The new version failed too often; the function serves the old one.
    Failed,
}

/// What Flare has observed and decided; set by Flare, not by its author
/// (every field may be left out).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CanaryStatus {
    pub state: CanaryState,
    /// The new version's share of the traffic, in percent.
    pub weight: u32,
    /// Requests the new version answered in the last interval, and the
    /// percent of them that failed (5xx, timeouts).
    #[serde(default)]
    pub requests: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_rate: Option<f64>,
    /// What the last interval led to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the last interval ended (Unix seconds): the next ends an
    /// interval later, whichever node judges it.
    #[serde(default)]
    pub judged_at: u64,
}

/// Shifts a function's traffic from version `from` to version `to`: every
/// `interval`, if `to` failed more than `failure_threshold` percent of
/// its requests, all traffic goes back to `from` (failed); otherwise its
/// share grows by `step` until 100 (succeeded). No traffic, no step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CanarySpec {
    pub function: String,
    pub from: u64,
    pub to: u64,
    /// Percent added each healthy interval.
    pub step: u32,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Percent of failed requests above which the canary fails.
    pub failure_threshold: u32,
    #[serde(default)]
    pub status: CanaryStatus,
}

/// The shortest interval: a shorter one judges too few requests.
pub const MIN_CANARY_INTERVAL: Duration = Duration::from_secs(1);
/// The longest interval.
pub const MAX_CANARY_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);

impl Spec for CanarySpec {
    const KIND: Kind = Kind::Canary;

    fn validate(&self) -> Result<()> {
        validate_name("function name", &self.function)?;
        if self.from == 0 || self.to == 0 {
            return Err(Error::invalid("versions start at 1"));
        }
        if self.from == self.to {
            return Err(Error::invalid(format!(
                "a canary moves traffic between two versions; from and to are both {}",
                self.from
            )));
        }
        if !(1..=100).contains(&self.step) {
            return Err(Error::invalid(format!(
                "step is a percent from 1 to 100, not {}",
                self.step
            )));
        }
        if self.failure_threshold > 100 {
            return Err(Error::invalid(format!(
                "failure threshold is a percent from 0 to 100, not {}",
                self.failure_threshold
            )));
        }
        if !(MIN_CANARY_INTERVAL..=MAX_CANARY_INTERVAL).contains(&self.interval) {
            return Err(Error::invalid(format!(
                "interval {} is out of range (1s to 24h)",
                humantime::format_duration(self.interval)
            )));
        }
        Ok(())
    }
}
