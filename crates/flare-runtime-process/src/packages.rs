//! Packages on disk: unpacked once per digest while a function uses them,
//! removed when the last one lets go, linked into each worker's `/code`.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use flare_model::{EnvironmentRuntime, Error, Result};

use crate::{ProcessRuntime, internal, unpack};

/// A package unpacked under the work dir, for as long as a function holds
/// it: dropping the last holder removes the tree.
pub(crate) struct Code {
    pub(crate) dir: PathBuf,
    /// The source file's name in `dir`, for a single-file package.
    pub(crate) file: Option<String>,
}

impl Drop for Code {
    fn drop(&mut self) {
        let dir = std::mem::take(&mut self.dir);
        let remove = move || {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!("cannot remove {}: {e}", dir.display());
            }
        };
        // Removing a tree is disk work: never on an async worker thread.
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => drop(handle.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}

impl ProcessRuntime {
    /// The package at `package` unpacked for `environment`'s runtime:
    /// shared with every function that holds the same digest, unpacked
    /// (within [`unpack::UnpackLimits`]: bombs, links, traversal) when none
    /// does. Blocking.
    pub(crate) fn code(&self, environment: &str, hex: &str, package: &Path) -> Result<Arc<Code>> {
        let pool = self.inner.pool(environment).ok_or_else(|| {
            Error::invalid(format!("environment \"{environment}\" does not exist"))
        })?;
        let file_name = source_file_name(pool.spec.runtime);
        let key = format!("{hex}-{file_name}");
        let held = |key: &str| {
            self.inner
                .unpacked
                .lock()
                .ok()
                .and_then(|map| map.get(key).and_then(Weak::upgrade))
        };
        if let Some(code) = held(&key) {
            return Ok(code);
        }
        let bytes = std::fs::read(package).map_err(internal("read package"))?;
        // A name of its own: a tree being removed never clashes with a new one.
        let n = self.inner.next_worker.fetch_add(1, Ordering::Relaxed);
        let dir = self
            .inner
            .config
            .work_dir
            .join("packages")
            .join(format!("{key}-{n}"));
        let file = match unpack::unpack(&bytes, &dir, file_name, unpack::UnpackLimits::default())? {
            unpack::Unpacked::File(name) => Some(name),
            unpack::Unpacked::Archive => None,
        };
        let code = Arc::new(Code { dir, file });
        if let Ok(mut map) = self.inner.unpacked.lock() {
            map.retain(|_, held| held.strong_count() > 0);
            map.insert(key, Arc::downgrade(&code));
        }
        Ok(code)
    }
}

/// The name a single-file package gets in `/code`.
fn source_file_name(runtime: EnvironmentRuntime) -> &'static str {
    match runtime {
        EnvironmentRuntime::Python => "main.py",
        EnvironmentRuntime::Node => "index.js",
        EnvironmentRuntime::Java => "function.jar",
        EnvironmentRuntime::Custom => "function",
    }
}

pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(internal("chmod"))
}

/// Hard-links (or copies) a tree of files into `to`. Blocking.
pub(crate) fn link_tree(from: &Path, to: &Path) -> Result<()> {
    for entry in std::fs::read_dir(from).map_err(internal("read package dir"))? {
        let entry = entry.map_err(internal("read package dir"))?;
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            std::fs::create_dir_all(&target).map_err(internal("create dir"))?;
            set_mode(&target, 0o755)?;
            link_tree(&entry.path(), &target)?;
        } else if std::fs::hard_link(entry.path(), &target).is_err() {
            std::fs::copy(entry.path(), &target).map_err(internal("copy code"))?;
        }
    }
    Ok(())
}
