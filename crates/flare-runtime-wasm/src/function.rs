//! The wasm runtime behind the executor's [`Runtime`] trait.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use flare_model::{Error, Failure, FunctionSpec, Limits, PackageRef, Result, RuntimeKind};
use flare_runtime::{Call, Function, Injected, ResponseBody, Runtime};

use crate::{Prepared, WasmRuntime};

/// A wasm function ready to serve: its compiled component and what each
/// instance of it is given.
struct WasmFunction {
    runtime: Arc<WasmRuntime>,
    prepared: Arc<Prepared>,
    name: Arc<str>,
    limits: Limits,
    env: Arc<[(String, String)]>,
    config: Arc<wasmtime_wasi_config::WasiConfigVariables>,
    allowed_hosts: Arc<[String]>,
}

impl WasmRuntime {
    /// [`WasmRuntime::prepare`] on a blocking thread.
    async fn prepare_blocking(
        self: Arc<Self>,
        package: &PackageRef,
        source: &Path,
    ) -> Result<Arc<Prepared>> {
        let (package, source): (PackageRef, PathBuf) = (package.clone(), source.to_path_buf());
        tokio::task::spawn_blocking(move || {
            WasmRuntime::prepare(&self, &package, &source).map_err(Error::from)
        })
        .await
        .map_err(|e| Error::internal(format!("prepare task failed: {e}")))?
    }
}

#[async_trait::async_trait]
impl Runtime for WasmRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Wasm
    }

    async fn check(self: Arc<Self>, spec: &FunctionSpec, package: &Path) -> Result<()> {
        self.prepare_blocking(&spec.package, package)
            .await
            .map(drop)
    }

    async fn prepare(
        self: Arc<Self>,
        name: &str,
        spec: &FunctionSpec,
        package: &Path,
        injected: &Injected,
    ) -> Result<Arc<dyn Function>> {
        let prepared = self
            .clone()
            .prepare_blocking(&spec.package, package)
            .await?;
        Ok(Arc::new(WasmFunction {
            runtime: self,
            prepared,
            name: name.into(),
            limits: spec.limits,
            env: spec
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .chain(injected.env.iter().cloned())
                .collect(),
            config: Arc::new(injected.config.iter().cloned().collect()),
            allowed_hosts: spec.allowed_hosts.iter().cloned().collect(),
        }))
    }
}

#[async_trait::async_trait]
impl Function for WasmFunction {
    async fn invoke(
        &self,
        call: Call,
    ) -> std::result::Result<http::Response<ResponseBody>, Failure> {
        let call = crate::Call {
            function: self.name.clone(),
            invocation: call.invocation,
            request: call.request,
            limits: self.limits,
            env: self.env.clone(),
            config: self.config.clone(),
            allowed_hosts: self.allowed_hosts.clone(),
            guard: Some(call.guard),
        };
        self.runtime.invoke(&self.prepared, call).await
    }

    fn capacity(&self) -> usize {
        self.limits.max_concurrency as usize
    }
}
