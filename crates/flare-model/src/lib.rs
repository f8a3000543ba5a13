//! Flare's resource model: the documents every other layer stores, watches
//! and serves, their validation, and the error codes the whole platform
//! speaks.
//!
//! - [`Resource`] is the `{apiVersion, kind, metadata, spec}` document of
//!   every kind; [`Spec`] ties a spec type to its [`Kind`] and validation.
//! - [`FunctionSpec`] and [`HttpTriggerSpec`] are the specs served today.
//! - [`PathPattern`] is the parsed form of an HTTP trigger's URL pattern.
//! - [`Error`] carries an [`ErrorCode`]; the code alone decides the HTTP
//!   status ([`ErrorCode::status`]) so every server maps errors the same way.
//!
//! Everything here is validated once, when it enters the system (`validate`
//! on create and update); inner layers trust what they read back.

mod access;
mod build;
mod canary;
mod cron;
mod environment;
mod error;
mod failure;
mod function;
mod logs;
mod name;
mod namespace;
mod pattern;
mod resource;
mod secret;
mod trigger;

pub use access::{ALL_NAMESPACES, Grant, Permission, Role, TokenSpec};
pub use build::{BuildState, BuildStatus, MAX_BUILD_LOG, PackageSpec};
pub use canary::{CanarySpec, CanaryState, CanaryStatus, MAX_CANARY_INTERVAL, MIN_CANARY_INTERVAL};
pub use cron::{Cron, parse_timezone};
pub use environment::{EnvironmentRuntime, EnvironmentSpec, Isolation};
pub use error::{Error, ErrorCode, Result};
pub use failure::Failure;
pub use function::{
    FunctionSpec, FunctionVersionSpec, InvokeAuth, KeepAlive, Limits, MAX_SECRETS, PackageRef,
    RuntimeKind,
};
pub use logs::{
    INVOCATION_LOG_BUDGET, LineSplitter, LogEntry, LogRecord, LogStream, MAX_LOG_LINE, now_us,
    printable, split_long_line,
};
pub use name::validate_name;
pub use namespace::NamespaceSpec;
pub use pattern::{PathPattern, Segment};
pub use resource::{
    API_VERSION, DEFAULT_NAMESPACE, Document, Kind, Metadata, Resource, Spec, qualified,
    split_qualified,
};
pub use secret::{
    ConfigSpec, MAX_VALUES_BYTES, SecretSpec, check_values, is_env_name, validate_key,
};
pub use trigger::{AliasSpec, HttpTriggerSpec, MessageQueueTriggerSpec, MqKind, TimerTriggerSpec};

/// Most headers a function's response may carry, and their total size in
/// bytes (names and values); past either the caller gets a 502.
pub const MAX_RESPONSE_HEADERS: usize = 100;
pub const MAX_RESPONSE_HEADER_BYTES: usize = 64 << 10;
