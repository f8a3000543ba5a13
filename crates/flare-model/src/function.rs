//! The `Function` resource.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Error, Kind, Result, Spec, validate_name};

/// How a function's code runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// A WASI 0.2 component exporting `wasi:http/incoming-handler`, run
    /// in-process by wasmtime.
    #[default]
    Wasm,
    /// Source code run by a sandboxed worker of an [`Environment`](crate::EnvironmentSpec).
    Process,
}

/// Most secrets (and most configs) one function takes: with
/// [`crate::MAX_VALUES_BYTES`] each, what its sandbox's `/secrets` must hold
/// is bounded.
pub const MAX_SECRETS: usize = 16;

/// Who may call a function over HTTP: at `/fn/...`, through HTTP
/// triggers, queued at `/async/fn/...` (like a function URL's auth type).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InvokeAuth {
    /// Anyone who reaches the router; an `Authorization` header goes to
    /// the function, which may check it itself.
    #[default]
    None,
    /// Only a bearer of an invoker, developer or admin token of the
    /// function's namespace; the header is checked and dropped.
    Token,
}

impl InvokeAuth {
    pub fn is_none(&self) -> bool {
        *self == InvokeAuth::None
    }
}

/// A content-addressed package: `sha256:<64 hex>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageRef {
    pub digest: String,
    pub size: u64,
}

impl PackageRef {
    /// The hex part of the digest, used as the blob's file name.
    pub fn hex(&self) -> &str {
        self.digest.strip_prefix("sha256:").unwrap_or(&self.digest)
    }

    fn validate(&self) -> Result<()> {
        let ok = self.digest.strip_prefix("sha256:").is_some_and(|hex| {
            hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        });
        if ok {
            Ok(())
        } else {
            Err(Error::invalid(format!(
                "package digest \"{}\" is not of the form sha256:<64 lowercase hex>",
                self.digest
            )))
        }
    }
}

/// Per-function limits. Every field has a default, so a spec may name only
/// the ones it changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Limits {
    /// Linear memory an instance may grow to, in MiB.
    pub memory_mb: u32,
    /// Wall-clock time an invocation may take, response body included.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Largest request body accepted; larger requests get 413.
    pub max_body_bytes: u64,
    /// wasm: requests (each its own instance) in flight at once; beyond it
    /// requests get 503.
    pub max_concurrency: u32,
    /// process: requests in flight per instance.
    pub instance_concurrency: u32,
    /// process: instances kept started and warm at all times (reserved).
    pub min_scale: u32,
    /// process: instances of the function at most.
    pub max_scale: u32,
    /// process: how long an idle instance is kept, or `adaptive`.
    pub keep_alive: KeepAlive,
    /// Requests that may wait for capacity when the function is saturated;
    /// beyond it, 503 with Retry-After. 0: no waiting.
    pub queue: u32,
    /// How long a queued request may wait before it gets 503.
    #[serde(with = "humantime_serde")]
    pub queue_timeout: Duration,
}

/// How long an idle instance is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    Fixed(Duration),
    /// Learned from the function's idle times (hybrid histogram policy).
    Adaptive,
}

impl Serialize for KeepAlive {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        match self {
            KeepAlive::Adaptive => serializer.serialize_str("adaptive"),
            KeepAlive::Fixed(d) => {
                serializer.serialize_str(&humantime::format_duration(*d).to_string())
            }
        }
    }
}

impl<'de> Deserialize<'de> for KeepAlive {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for KeepAlive {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s == "adaptive" {
            return Ok(KeepAlive::Adaptive);
        }
        if let Ok(secs) = s.parse::<u64>() {
            return Ok(KeepAlive::Fixed(Duration::from_secs(secs)));
        }
        humantime::parse_duration(s)
            .map(KeepAlive::Fixed)
            .map_err(|e| {
                format!("keep-alive \"{s}\" is neither a duration (30s, 5m) nor \"adaptive\": {e}")
            })
    }
}

impl std::fmt::Display for KeepAlive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeepAlive::Adaptive => f.write_str("adaptive"),
            KeepAlive::Fixed(d) => write!(f, "{}", humantime::format_duration(*d)),
        }
    }
}

impl Limits {
    pub const DEFAULT_MEMORY_MB: u32 = 128;
    pub const MAX_MEMORY_MB: u32 = 1024;
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
    pub const MAX_TIMEOUT: Duration = Duration::from_secs(15 * 60);
    pub const DEFAULT_MAX_BODY_BYTES: u64 = 1 << 20;
    pub const MAX_MAX_BODY_BYTES: u64 = 64 << 20;
    pub const DEFAULT_MAX_CONCURRENCY: u32 = 100;
    pub const MAX_MAX_CONCURRENCY: u32 = 10_000;
    pub const DEFAULT_MAX_SCALE: u32 = 10;
    pub const MAX_MAX_SCALE: u32 = 1000;
    pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(5 * 60);
    pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(10);
    pub const MAX_QUEUE: u32 = 100_000;

    pub fn memory_bytes(&self) -> usize {
        (self.memory_mb as usize) << 20
    }

    fn validate(&self) -> Result<()> {
        if !(1..=Self::MAX_MEMORY_MB).contains(&self.memory_mb) {
            return Err(Error::invalid(format!(
                "memory limit {} MiB is out of range 1..={} MiB",
                self.memory_mb,
                Self::MAX_MEMORY_MB
            )));
        }
        if self.timeout < Duration::from_millis(1) || self.timeout > Self::MAX_TIMEOUT {
            return Err(Error::invalid(format!(
                "timeout {} is out of range 1ms..=15m",
                humantime::format_duration(self.timeout)
            )));
        }
        if self.max_body_bytes > Self::MAX_MAX_BODY_BYTES {
            return Err(Error::invalid(format!(
                "max body size {} bytes is over the limit of {} bytes",
                self.max_body_bytes,
                Self::MAX_MAX_BODY_BYTES
            )));
        }
        if !(1..=Self::MAX_MAX_CONCURRENCY).contains(&self.max_concurrency) {
            return Err(Error::invalid(format!(
                "max concurrency {} is out of range 1..={}",
                self.max_concurrency,
                Self::MAX_MAX_CONCURRENCY
            )));
        }
        if !(1..=Self::MAX_MAX_CONCURRENCY).contains(&self.instance_concurrency) {
            return Err(Error::invalid(format!(
                "concurrency per instance {} is out of range 1..={}",
                self.instance_concurrency,
                Self::MAX_MAX_CONCURRENCY
            )));
        }
        if !(1..=Self::MAX_MAX_SCALE).contains(&self.max_scale) {
            return Err(Error::invalid(format!(
                "max scale {} is out of range 1..={}",
                self.max_scale,
                Self::MAX_MAX_SCALE
            )));
        }
        if matches!(self.keep_alive, KeepAlive::Fixed(d) if d > Duration::from_secs(24 * 3600)) {
            return Err(Error::invalid("keep-alive is over 24h"));
        }
        if self.min_scale > self.max_scale {
            return Err(Error::invalid(format!(
                "min scale {} is above max scale {}",
                self.min_scale, self.max_scale
            )));
        }
        if self.queue > Self::MAX_QUEUE {
            return Err(Error::invalid(format!(
                "queue {} is over the limit of {}",
                self.queue,
                Self::MAX_QUEUE
            )));
        }
        if self.queue_timeout > Self::MAX_TIMEOUT {
            return Err(Error::invalid("queue timeout is over 15m"));
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mb: Self::DEFAULT_MEMORY_MB,
            timeout: Self::DEFAULT_TIMEOUT,
            max_body_bytes: Self::DEFAULT_MAX_BODY_BYTES,
            max_concurrency: Self::DEFAULT_MAX_CONCURRENCY,
            instance_concurrency: 1,
            min_scale: 0,
            max_scale: Self::DEFAULT_MAX_SCALE,
            keep_alive: KeepAlive::Fixed(Self::DEFAULT_KEEP_ALIVE),
            queue: 0,
            queue_timeout: Self::DEFAULT_QUEUE_TIMEOUT,
        }
    }
}

/// A function: code plus how to run it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionSpec {
    #[serde(default)]
    pub runtime: RuntimeKind,
    /// The environment that runs a `process` function.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// process: what to call, e.g. `main` (in a single file) or
    /// `app.handler` (module `app` of an archive). Default: `main`, or
    /// the environment's convention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<String>,
    /// process: whether the sandbox gets a way out: Flare's egress proxy,
    /// reached from inside as `HTTP_PROXY`/`HTTPS_PROXY`, to the hosts in
    /// `allowedHosts` only. Listing hosts implies it. Default: none.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub network: bool,
    pub package: PackageRef,
    #[serde(default)]
    pub limits: Limits,
    /// Environment variables the function sees (nothing from the host).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Hosts (`name`, `name:port`, `*.domain`, or `*` for any) the function
    /// may call over outbound HTTP(S). Empty: no outbound connection at
    /// all. Every address is also checked against the server's egress
    /// policy (no loopback, private or link-local address by default).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_hosts: Vec<String>,
    /// Who may call it over HTTP. Default: anyone.
    #[serde(default, skip_serializing_if = "InvokeAuth::is_none")]
    pub auth: InvokeAuth,
    /// Secrets of its namespace it gets: each key as an environment
    /// variable (when the key is a valid name) and, for process
    /// functions, as the file `/secrets/<secret>/<key>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// Configs of its namespace it gets as environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<String>,
}

impl FunctionSpec {
    /// A wasm function of `package` with every default.
    pub fn wasm(package: PackageRef) -> Self {
        FunctionSpec {
            runtime: RuntimeKind::Wasm,
            environment: None,
            entrypoint: None,
            network: false,
            package,
            limits: Limits::default(),
            env: BTreeMap::new(),
            allowed_hosts: Vec::new(),
            auth: InvokeAuth::None,
            secrets: Vec::new(),
            configs: Vec::new(),
        }
    }

    /// Requests the function may have in flight at once.
    pub fn max_in_flight(&self) -> u64 {
        match self.runtime {
            RuntimeKind::Wasm => u64::from(self.limits.max_concurrency),
            RuntimeKind::Process => {
                u64::from(self.limits.instance_concurrency) * u64::from(self.limits.max_scale)
            }
        }
    }

    /// Whether outbound HTTP to `authority` (`host` or `host:port`) is allowed.
    pub fn allows_host(allowed: &[String], authority: &str) -> bool {
        let host = authority
            .rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(authority, |(host, _)| host);
        allowed.iter().any(|rule| {
            if rule == "*" {
                true
            } else if let Some(domain) = rule.strip_prefix("*.") {
                host.len() > domain.len() + 1
                    && host.ends_with(domain)
                    && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
            } else {
                rule.eq_ignore_ascii_case(authority) || rule.eq_ignore_ascii_case(host)
            }
        })
    }
}

/// One version of a function: what it served from an update on, kept
/// unchanged so that an alias, a weighted route or a rollback can name it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionVersionSpec {
    pub function: String,
    pub version: u64,
    pub spec: FunctionSpec,
}

impl FunctionVersionSpec {
    /// The stored name of `function`'s version `version`. A function name
    /// is a DNS label, so `-v<N>` at its end is unambiguous.
    pub fn name_of(function: &str, version: u64) -> String {
        format!("{function}-v{version}")
    }
}

impl Spec for FunctionVersionSpec {
    const KIND: Kind = Kind::FunctionVersion;

    fn validate(&self) -> Result<()> {
        self.spec.validate()
    }
}

impl Spec for FunctionSpec {
    const KIND: Kind = Kind::Function;

    fn validate(&self) -> Result<()> {
        self.package.validate()?;
        self.limits.validate()?;
        match (self.runtime, &self.environment) {
            (RuntimeKind::Wasm, Some(env)) => {
                return Err(Error::invalid(format!(
                    "a wasm function takes no environment (got \"{env}\"); set runtime to process"
                )));
            }
            (RuntimeKind::Process, None) => {
                return Err(Error::invalid("a process function needs an environment"));
            }
            (RuntimeKind::Process, Some(env)) => validate_name("environment name", env)?,
            (RuntimeKind::Wasm, None) => {
                if self.entrypoint.is_some() || self.network {
                    return Err(Error::invalid(
                        "entrypoint and network apply to process functions only",
                    ));
                }
            }
        }
        if let Some(entrypoint) = &self.entrypoint {
            let valid = entrypoint.split('.').all(|part| {
                part.bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                    && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            });
            if !valid {
                return Err(Error::invalid(format!(
                    "invalid entrypoint \"{entrypoint}\" (use a name like main or module.function)"
                )));
            }
        }
        if self.secrets.len() > MAX_SECRETS || self.configs.len() > MAX_SECRETS {
            return Err(Error::invalid(format!(
                "a function takes at most {MAX_SECRETS} secrets and {MAX_SECRETS} configs"
            )));
        }
        for name in &self.secrets {
            validate_name("secret name", name)?;
        }
        for name in &self.configs {
            validate_name("config name", name)?;
        }
        for (key, value) in &self.env {
            if !crate::is_env_name(key) {
                return Err(Error::invalid(format!(
                    "invalid environment variable name \"{key}\" (use letters, digits and '_', not starting with a digit)"
                )));
            }
            if value.contains('\0') {
                return Err(Error::invalid(format!(
                    "environment variable \"{key}\" contains a NUL byte"
                )));
            }
        }
        for host in &self.allowed_hosts {
            let bare = host.strip_prefix("*.").unwrap_or(host);
            let valid = host == "*"
                || !bare.is_empty()
                    && bare
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
            if !valid {
                return Err(Error::invalid(format!(
                    "invalid allowed host \"{host}\" (use a host name, host:port, *.domain or * for any)"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorCode, Resource};

    fn spec() -> FunctionSpec {
        FunctionSpec::wasm(PackageRef {
            digest: format!("sha256:{}", "ab".repeat(32)),
            size: 10,
        })
    }

    #[test]
    fn defaults_fill_a_minimal_spec() {
        let json = format!(
            r#"{{"apiVersion":"flare.dev/v1","kind":"Function","metadata":{{"name":"hello"}},
                "spec":{{"package":{{"digest":"sha256:{}","size":1}},"limits":{{"timeout":"2s"}}}}}}"#,
            "0".repeat(64)
        );
        let f: Resource<FunctionSpec> = serde_json::from_str(&json).unwrap();
        f.validate().unwrap();
        assert_eq!(f.spec.limits.timeout, Duration::from_secs(2));
        assert_eq!(f.spec.limits.memory_mb, Limits::DEFAULT_MEMORY_MB);
        assert_eq!(f.metadata.namespace, "default");
    }

    #[test]
    fn rejects_bad_limits_env_and_digest() {
        let mut s = spec();
        s.limits.memory_mb = 0;
        assert_eq!(s.validate().unwrap_err().code, ErrorCode::InvalidArgument);

        let mut s = spec();
        s.limits.memory_mb = Limits::MAX_MEMORY_MB + 1;
        assert!(s.validate().unwrap_err().message.contains("memory"));

        let mut s = spec();
        s.limits.timeout = Duration::ZERO;
        assert!(s.validate().unwrap_err().message.contains("timeout"));

        let mut s = spec();
        s.env.insert("1BAD".into(), "x".into());
        assert!(s.validate().unwrap_err().message.contains("1BAD"));

        let mut s = spec();
        s.package.digest = "md5:abc".into();
        assert!(s.validate().unwrap_err().message.contains("digest"));

        let mut s = spec();
        s.allowed_hosts.push("http://x/".into());
        assert!(s.validate().unwrap_err().message.contains("allowed host"));

        let mut s = spec();
        s.runtime = RuntimeKind::Process;
        assert!(
            s.validate()
                .unwrap_err()
                .message
                .contains("needs an environment")
        );
        s.environment = Some("python".into());
        s.validate().unwrap();
        s.entrypoint = Some("app.handler".into());
        s.validate().unwrap();
        s.entrypoint = Some("app..x".into());
        assert!(s.validate().unwrap_err().message.contains("entrypoint"));
        s.entrypoint = None;
        s.runtime = RuntimeKind::Wasm;
        assert!(s.validate().unwrap_err().message.contains("no environment"));
    }

    #[test]
    fn keep_alive_parses_durations_and_adaptive() {
        assert_eq!("adaptive".parse::<KeepAlive>(), Ok(KeepAlive::Adaptive));
        assert_eq!(
            "30s".parse::<KeepAlive>(),
            Ok(KeepAlive::Fixed(Duration::from_secs(30)))
        );
        assert_eq!(
            "90".parse::<KeepAlive>(),
            Ok(KeepAlive::Fixed(Duration::from_secs(90)))
        );
        assert!(
            "soon"
                .parse::<KeepAlive>()
                .unwrap_err()
                .contains("adaptive")
        );
        let json = serde_json::to_string(&KeepAlive::Fixed(Duration::from_secs(300))).unwrap();
        assert_eq!(json, "\"5m\"");
        let mut s = spec();
        s.limits.min_scale = 11;
        assert!(s.validate().unwrap_err().message.contains("min scale"));
    }

    #[test]
    fn host_allow_list() {
        let allowed = vec!["api.example.com".to_string(), "*.svc.local".to_string()];
        assert!(FunctionSpec::allows_host(&allowed, "api.example.com"));
        assert!(FunctionSpec::allows_host(&allowed, "api.example.com:443"));
        assert!(FunctionSpec::allows_host(&allowed, "a.svc.local:8080"));
        assert!(!FunctionSpec::allows_host(&allowed, "svc.local"));
        assert!(!FunctionSpec::allows_host(&allowed, "evilsvc.local"));
        assert!(!FunctionSpec::allows_host(&allowed, "example.com"));
        assert!(FunctionSpec::allows_host(&["*".into()], "any.example:8443"));
        assert!(!FunctionSpec::allows_host(&[], "api.example.com"));
    }
}
