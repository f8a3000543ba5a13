//! The boundary between the executor and the ways it runs functions.
//!
//! A [`Runtime`] turns a stored function into a [`Function`] it can serve
//! (compile, unpack, start reserved instances) and checks packages before
//! they are stored; a [`Function`] runs one [`Call`] at a time per
//! request and reports its instances. The wasm and process crates each
//! implement both; the executor holds them as trait objects and never asks
//! which one it has, so a further runtime (a microVM, say) is one crate and
//! one line in the binary.
//!
//! Every way a call can fail is a [`Failure`]; the executor maps it to the
//! caller's error in one place.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use flare_model::{EnvironmentSpec, Failure, FunctionSpec, Result, RuntimeKind};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;

/// An error inside a response body (the function failed mid-stream).
/// A named type rather than a bare `Box<dyn Error>`: futures that hold a
/// body across an await then stay `Send` for every lifetime.
#[derive(Debug)]
pub struct BodyError(Box<dyn std::error::Error + Send + Sync>);

impl BodyError {
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        BodyError(error.into())
    }
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// The body of a function's response, streamed while the function writes
/// it. Every runtime answers with it; the router sends it as is.
pub type ResponseBody = UnsyncBoxBody<Bytes, BodyError>;

/// A response body holding `bytes`, for answers written whole.
pub fn full_body(bytes: Bytes) -> ResponseBody {
    http_body_util::Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// One request to one function.
pub struct Call {
    pub invocation: Arc<str>,
    /// The request, its body already read within the function's limit.
    pub request: http::Request<Bytes>,
    /// Held until the function has finished, response body included, or
    /// is stopped: the caller's concurrency permit. A runtime drops it
    /// however the call ends, a caller that went away included.
    pub guard: Box<dyn Send>,
    /// For a traced call: where the runtime notes an instance it started
    /// for this call.
    pub cold_start: Option<Arc<ColdStart>>,
}

/// When an instance was started and specialized for one call, noted by
/// the runtime that started it.
#[derive(Debug, Default)]
pub struct ColdStart(std::sync::OnceLock<(std::time::SystemTime, std::time::SystemTime)>);

impl ColdStart {
    pub fn record(&self, start: std::time::SystemTime, end: std::time::SystemTime) {
        let _ = self.0.set((start, end));
    }

    /// From when to when, if the call had a cold start.
    pub fn get(&self) -> Option<(std::time::SystemTime, std::time::SystemTime)> {
        self.0.get().copied()
    }
}

/// What the executor resolves for a function beyond its spec: the values
/// of the secrets and config it names. Held in memory while it is
/// deployed; never stored, logged or shown.
#[derive(Clone, Default)]
pub struct Injected {
    /// Environment variables, applied after the spec's own (config, then
    /// secrets: a secret wins over a config key of the same name).
    pub env: Vec<(String, String)>,
    /// Files the function finds in its sandbox (`/secrets/<secret>/<key>`),
    /// for runtimes that give it a file system.
    pub files: Vec<(String, Vec<u8>)>,
    /// Every key of its configs and secrets (text values), for runtimes
    /// that offer `wasi:config/store`.
    pub config: Vec<(String, String)>,
}

impl std::fmt::Debug for Injected {
    /// Names only: values are secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Injected")
            .field("env", &self.env.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .field(
                "files",
                &self.files.iter().map(|(p, _)| p).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A way of running functions.
#[async_trait::async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// The functions this runtime serves.
    fn kind(&self) -> RuntimeKind;

    /// Checks that `package` can serve `spec` (it compiles, it unpacks
    /// within the limits), so that nothing unservable is stored. What it
    /// learns may be kept for [`Runtime::prepare`].
    async fn check(self: Arc<Self>, spec: &FunctionSpec, package: &Path) -> Result<()>;

    /// Makes the function `name` servable from `package`; a function with
    /// reserved instances has them warm when this returns.
    async fn prepare(
        self: Arc<Self>,
        name: &str,
        spec: &FunctionSpec,
        package: &Path,
        injected: &Injected,
    ) -> Result<Arc<dyn Function>>;

    /// Checks that this host can run `spec`'s workers (an isolation level
    /// needs its tools: runsc, KVM), so that nothing unservable is stored.
    fn check_environment(&self, _spec: &EnvironmentSpec) -> Result<()> {
        Ok(())
    }

    /// An environment was created or changed (`Some`) or removed (`None`).
    fn environment(&self, _name: &str, _spec: Option<&EnvironmentSpec>) {}

    /// Generic workers ready in an environment's pool, for runtimes that
    /// keep one.
    fn idle_workers(&self, _environment: &str) -> Option<usize> {
        None
    }
}

/// A function a [`Runtime`] prepared: what the executor invokes.
#[async_trait::async_trait]
pub trait Function: Send + Sync + 'static {
    /// Runs `call`; returns once the function has sent its response head.
    /// The call's guard is held until the function is done with it.
    async fn invoke(
        &self,
        call: Call,
    ) -> std::result::Result<http::Response<ResponseBody>, Failure>;

    /// Requests the function may have in flight at once.
    fn capacity(&self) -> usize;

    /// Its instances right now, for runtimes that keep them.
    fn instances(&self) -> Option<Instances> {
        None
    }

    /// With an adaptive keep-alive: the idle times this node saw, to share
    /// with the cluster's other nodes.
    fn idle_times(&self) -> Option<flare_scaling::IdleTimes> {
        None
    }

    /// With an adaptive keep-alive: learns the other nodes' idle times,
    /// replacing what it knew of them.
    fn learn_idle_times(&self, _peers: &flare_scaling::IdleTimes) {}

    /// With an adaptive keep-alive: goes on from the idle times the
    /// function's previous deployment on this node saw.
    fn resume_idle_times(&self, _seen: &flare_scaling::IdleTimes) {}

    /// With an adaptive keep-alive: what it has learned.
    fn keep_alive(&self) -> Option<flare_scaling::Learned> {
        None
    }
}

/// A function's instances, for `flare fn get` and `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Instances {
    /// Started and specialized, busy or not.
    pub live: usize,
    /// Live ones with a request in flight.
    pub busy: usize,
    /// Being started.
    pub starting: u32,
    /// Requests that had to start a new instance.
    pub cold_starts: u64,
    /// Instances started (on demand, reserved, pre-warmed) and removed.
    pub scale_ups: u64,
    pub scale_downs: u64,
}
