//! From package bytes to a function ready to instantiate: validate, compile
//! (or load the cached artifact), link, check the `wasi:http` export.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flare_model::{Error, ErrorCode, PackageRef};
use wasmtime::component::Component;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::WasmRuntime;
use crate::host::Host;

/// A validated, compiled, linked function: instantiate it per request.
pub struct Prepared {
    pub(crate) pre: ProxyPre<Host>,
    digest: Arc<str>,
}

impl Prepared {
    pub fn digest(&self) -> &str {
        &self.digest
    }
}

/// Why a package cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// The package is not a usable wasi:http component; the user must fix it.
    #[error("{0}")]
    Invalid(String),
    /// Flare failed (disk, cache); the package may be fine.
    #[error("{0}")]
    Internal(String),
}

impl From<PrepareError> for Error {
    fn from(e: PrepareError) -> Self {
        match e {
            PrepareError::Invalid(m) => Error::new(ErrorCode::InvalidArgument, m),
            PrepareError::Internal(m) => Error::internal(m),
        }
    }
}

const WASM_MAGIC: &[u8; 4] = b"\0asm";
const CORE_VERSION: [u8; 4] = [1, 0, 0, 0];

/// Checks the header before handing bytes to the compiler, to say plainly
/// what is wrong with the common mistakes.
fn check_header(bytes: &[u8]) -> Result<(), PrepareError> {
    if bytes.len() < 8 || &bytes[..4] != WASM_MAGIC {
        return Err(PrepareError::Invalid(
            "package is not WebAssembly (no \\0asm header); expected a WASI 0.2 component".into(),
        ));
    }
    if bytes[4..8] == CORE_VERSION {
        return Err(PrepareError::Invalid(
            "package is a core WebAssembly module, not a component; build it for wasm32-wasip2 (or wrap it with `wasm-tools component new`)".into(),
        ));
    }
    Ok(())
}

impl WasmRuntime {
    /// Prepares the package whose bytes are at `source`, reusing what was
    /// prepared (and is still held) or compiled (and cached on disk) before
    /// for the same digest. Blocking: compiling takes a while.
    pub fn prepare(
        &self,
        package: &PackageRef,
        source: &Path,
    ) -> Result<Arc<Prepared>, PrepareError> {
        if let Some(prepared) = self.cached(&package.digest) {
            return Ok(prepared);
        }
        let artifact = self.artifact_path(package);
        let component = match self.load_artifact(&artifact) {
            Some(component) => component,
            None => self.compile(source, &artifact)?,
        };
        let pre = self.linker.instantiate_pre(&component).map_err(|e| {
            PrepareError::Invalid(format!(
                "component imports something Flare does not provide: {e:#}"
            ))
        })?;
        let pre = ProxyPre::new(pre).map_err(|e| {
            PrepareError::Invalid(format!(
                "component does not export wasi:http/incoming-handler@0.2: {e:#}"
            ))
        })?;
        let prepared = Arc::new(Prepared {
            pre,
            digest: package.digest.as_str().into(),
        });
        if let Ok(mut map) = self.prepared.lock() {
            map.retain(|_, held| held.strong_count() > 0);
            map.insert(package.digest.clone(), Arc::downgrade(&prepared));
        }
        Ok(prepared)
    }

    fn cached(&self, digest: &str) -> Option<Arc<Prepared>> {
        self.prepared.lock().ok()?.get(digest)?.upgrade()
    }

    fn artifact_path(&self, package: &PackageRef) -> PathBuf {
        self.cache_dir
            .join(format!("{}-{}.cwasm", package.hex(), self.engine_tag()))
    }

    /// Names this engine's artifacts apart from those of other versions or
    /// settings, which it cannot load.
    fn engine_tag(&self) -> String {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        format!("{:016x}", hasher.finish())
    }

    /// Removes compiled artifacts of packages not in `keep` (hex digests)
    /// and artifacts this engine cannot load, once older than `grace`.
    /// Returns how many went. Blocking.
    pub fn prune_cache(
        &self,
        keep: &std::collections::HashSet<String>,
        grace: std::time::Duration,
    ) -> u64 {
        let Ok(entries) = std::fs::read_dir(&self.cache_dir) else {
            return 0;
        };
        let ours = format!("-{}.cwasm", self.engine_tag());
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let wanted = name
                .strip_suffix(&ours)
                .is_some_and(|hex| keep.contains(hex));
            let old = entry
                .metadata()
                .is_ok_and(|meta| flare_store::retention::older_than(&meta, grace));
            if !wanted && old && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }

    #[allow(unsafe_code)]
    fn load_artifact(&self, path: &Path) -> Option<Component> {
        if !path.is_file() {
            return None;
        }
        // SAFETY: the file is one this runtime serialized into its own cache
        // directory (written to a temporary name and renamed into place, so
        // never partial), under a name that includes the engine's
        // compatibility hash; wasmtime also checks the header.
        match unsafe { Component::deserialize_file(&self.engine, path) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!("ignoring cached artifact {}: {e}", path.display());
                None
            }
        }
    }

    fn compile(&self, source: &Path, artifact: &Path) -> Result<Component, PrepareError> {
        let bytes = std::fs::read(source).map_err(|e| {
            // The path is the server's business, not the caller's.
            tracing::error!("cannot read package {}: {e}", source.display());
            PrepareError::Internal(format!("cannot read the package: {e}"))
        })?;
        check_header(&bytes)?;
        let component = Component::new(&self.engine, &bytes).map_err(|e| {
            PrepareError::Invalid(format!("package is not a valid component: {e:#}"))
        })?;
        // The cache is an optimisation: failing to write it is not an error.
        match component.serialize() {
            Ok(serialized) => {
                // A name of its own: two compiles of one digest at once must
                // not write the same file.
                static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let tmp = artifact.with_extension(format!("{}-{n}.tmp", std::process::id()));
                let written =
                    std::fs::write(&tmp, serialized).and_then(|()| std::fs::rename(&tmp, artifact));
                if let Err(e) = written {
                    tracing::warn!("cannot cache {}: {e}", artifact.display());
                    let _ = std::fs::remove_file(&tmp);
                }
            }
            Err(e) => tracing::warn!("cannot serialize component: {e}"),
        }
        Ok(component)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_check_names_the_mistake() {
        let core = [0, b'a', b's', b'm', 1, 0, 0, 0];
        let err = check_header(&core).unwrap_err().to_string();
        assert!(err.contains("core WebAssembly module"), "{err}");
        let err = check_header(b"#!/bin/sh\necho").unwrap_err().to_string();
        assert!(err.contains("not WebAssembly"), "{err}");
        let err = check_header(b"\0as").unwrap_err().to_string();
        assert!(err.contains("not WebAssembly"), "{err}");
        let component = [0, b'a', b's', b'm', 0x0d, 0, 1, 0];
        assert!(check_header(&component).is_ok());
    }
}
