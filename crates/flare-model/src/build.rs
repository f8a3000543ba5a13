//! The `Package` resource: a function's source, built into its package
//! by Flare (the survey's builder step). A build runs in a sandbox whose
//! only way out is the operator's package registries; when it succeeds
//! the function is created or updated with the package it made, and when
//! it fails the function is left as it was.

use serde::{Deserialize, Serialize};

use crate::{Kind, PackageRef, Result, Spec, validate_name};

/// Where a build stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildState {
    /// Accepted, not started.
    #[default]
    Pending,
    Running,
    /// The package was made and the function serves it.
    Succeeded,
    /// The function was left as it was; the log says why.
    Failed,
}

impl BuildState {
    pub fn finished(self) -> bool {
        matches!(self, BuildState::Succeeded | BuildState::Failed)
    }
}

/// What Flare did with the source; set by Flare.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BuildStatus {
    pub state: BuildState,
    /// The package the build made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package: Option<PackageRef>,
    /// The function version it became.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// Why it failed, in one line (the log has the rest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The node that builds it (cluster mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// When it started and finished (Unix seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<u64>,
    /// The build's output (its last [`MAX_BUILD_LOG`] bytes); only
    /// `/v1/packages/{name}/log` shows it.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub log: String,
}

/// A build of `function`'s source: `source` is the uploaded archive,
/// `target` the function document's spec to store with the package made
/// (`update`: the function exists and is updated; otherwise created).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PackageSpec {
    pub function: String,
    pub environment: String,
    pub source: PackageRef,
    pub target: serde_json::Value,
    #[serde(default)]
    pub update: bool,
    #[serde(default)]
    pub status: BuildStatus,
}

/// The longest build log kept: its end, where a failure shows.
pub const MAX_BUILD_LOG: usize = 256 << 10;

impl Spec for PackageSpec {
    const KIND: Kind = Kind::Package;

    fn validate(&self) -> Result<()> {
        validate_name("function name", &self.function)?;
        validate_name("environment name", &self.environment)
    }
}
