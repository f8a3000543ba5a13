//! Content-addressed package blobs: `<dir>/sha256-<hex>`.

use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use flare_model::{Error, ErrorCode, PackageRef, Result};
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;

/// Package blobs on disk, named by digest.
#[derive(Debug, Clone)]
pub struct PackageStore {
    dir: PathBuf,
}

/// An upload written to a temporary file and hashed, not yet visible under
/// its digest. Dropping it deletes the file.
#[derive(Debug)]
pub struct Staged {
    file: NamedTempFile,
    package: PackageRef,
    store: PackageStore,
}

fn io_err(what: &str, e: std::io::Error) -> Error {
    Error::internal(format!("packages: {what}: {e}"))
}

impl PackageStore {
    /// Opens the store in `dir`, removing uploads a crash left
    /// half-written: none can be under way before the store is open (one
    /// server per data dir), while one that is may be older than any grace
    /// a retention pass could give it (a slow client, a slow fsync).
    pub fn open(dir: &Path) -> Result<Self> {
        let staging = dir.join("tmp");
        std::fs::create_dir_all(&staging)
            .map_err(|e| io_err(&format!("cannot create {}", dir.display()), e))?;
        let leftovers =
            std::fs::read_dir(&staging).map_err(|e| io_err("cannot list uploads", e))?;
        for entry in leftovers.flatten() {
            if let Err(e) = std::fs::remove_file(entry.path()) {
                tracing::warn!("cannot remove a half-written upload: {e}");
            }
        }
        Ok(PackageStore {
            dir: dir.to_path_buf(),
        })
    }

    /// Where the blob with this digest lives (whether or not it exists).
    pub fn path(&self, package: &PackageRef) -> PathBuf {
        self.dir.join(format!("sha256-{}", package.hex()))
    }

    pub fn contains(&self, package: &PackageRef) -> bool {
        self.path(package).is_file()
    }

    /// Whether the blob is stored; marks it used now, so the retention
    /// pass keeps it for the package retention from here.
    pub fn touch(&self, package: &PackageRef) -> bool {
        let path = self.path(package);
        if !path.is_file() {
            return false;
        }
        if let Ok(file) = std::fs::File::options().append(true).open(&path) {
            let _ = file.set_modified(std::time::SystemTime::now());
        }
        true
    }

    /// Removes blobs whose digest (hex) is not in `keep` and that were not
    /// uploaded within `grace`. Returns how many files and bytes went.
    pub fn prune(
        &self,
        keep: &std::collections::HashSet<String>,
        grace: std::time::Duration,
    ) -> Result<(u64, u64)> {
        let mut removed = (0, 0);
        let blobs = std::fs::read_dir(&self.dir).map_err(|e| io_err("cannot list packages", e))?;
        for entry in blobs.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let in_use = name
                .strip_prefix("sha256-")
                .is_some_and(|hex| keep.contains(hex));
            let Ok(meta) = entry.metadata() else { continue };
            if in_use || !meta.is_file() || !crate::retention::older_than(&meta, grace) {
                continue;
            }
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    removed.0 += 1;
                    removed.1 += meta.len();
                }
                Err(e) => tracing::warn!("cannot remove package {name}: {e}"),
            }
        }
        Ok(removed)
    }

    /// Streams an upload to a temporary file, hashing as it goes. Stops
    /// reading as soon as `limit` bytes are exceeded (413) and refuses an
    /// empty upload (400); either way nothing is kept.
    pub async fn stage<S, E>(&self, mut body: S, limit: u64) -> Result<Staged>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let mut file = NamedTempFile::new_in(self.dir.join("tmp"))
            .map_err(|e| io_err("cannot create a temporary file", e))?;
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| Error::invalid(format!("upload interrupted: {e}")))?;
            size += chunk.len() as u64;
            if size > limit {
                return Err(Error::new(
                    ErrorCode::PayloadTooLarge,
                    format!("package is larger than the limit of {limit} bytes"),
                ));
            }
            hasher.update(&chunk);
            // Small synchronous writes into the page cache; the one fsync
            // happens in `commit`.
            file.write_all(&chunk)
                .map_err(|e| io_err("cannot write upload", e))?;
        }
        if size == 0 {
            return Err(Error::invalid("package is empty"));
        }
        let package = PackageRef {
            digest: format!("sha256:{}", hex::encode(hasher.finalize())),
            size,
        };
        Ok(Staged {
            file,
            package,
            store: self.clone(),
        })
    }

    /// An empty temporary file beside the blobs (a build's output before
    /// it is staged), removed when dropped.
    pub fn scratch(&self) -> Result<NamedTempFile> {
        NamedTempFile::new_in(self.dir.join("tmp"))
            .map_err(|e| io_err("cannot create a temporary file", e))
    }

    /// Stores bytes already in memory (used by tests and examples).
    pub async fn put(&self, bytes: Bytes, limit: u64) -> Result<PackageRef> {
        let staged = self
            .stage(
                futures::stream::iter([Ok::<_, std::convert::Infallible>(bytes)]),
                limit,
            )
            .await?;
        staged.commit()
    }

    pub fn read(&self, package: &PackageRef) -> Result<Vec<u8>> {
        std::fs::read(self.path(package)).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::not_found("package", &package.digest)
            } else {
                io_err(&format!("cannot read {}", package.digest), e)
            }
        })
    }
}

impl Staged {
    pub fn package(&self) -> &PackageRef {
        &self.package
    }

    /// The temporary file holding the upload.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Makes the blob durable and visible under its digest. Idempotent: the
    /// same content uploaded twice lands on the same name.
    pub fn commit(self) -> Result<PackageRef> {
        let target = self.store.path(&self.package);
        // Already stored: fresh again, retention measures from the last use.
        if self.store.touch(&self.package) {
            return Ok(self.package);
        }
        self.file
            .as_file()
            .sync_all()
            .map_err(|e| io_err("cannot sync upload", e))?;
        self.file
            .persist(&target)
            .map_err(|e| io_err("cannot store package", e.error))?;
        // Make the rename itself durable.
        if let Ok(dir) = std::fs::File::open(&self.store.dir) {
            let _ = dir.sync_all();
        }
        Ok(self.package)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(
        parts: &[&'static [u8]],
    ) -> impl Stream<Item = std::result::Result<Bytes, String>> + Unpin {
        futures::stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
    }

    #[tokio::test]
    async fn stages_hashes_and_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store = PackageStore::open(dir.path()).unwrap();
        let staged = store
            .stage(chunks(&[b"hello ", b"world"]), 100)
            .await
            .unwrap();
        let package = staged.commit().unwrap();
        // sha256("hello world")
        assert_eq!(
            package.digest,
            "sha256:b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
        assert_eq!(package.size, 11);
        assert_eq!(store.read(&package).unwrap(), b"hello world");
        // Same content again: same name, still fine.
        let again = store
            .put(Bytes::from_static(b"hello world"), 100)
            .await
            .unwrap();
        assert_eq!(again, package);
    }

    #[tokio::test]
    async fn refuses_empty_and_oversized_uploads_leaving_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = PackageStore::open(dir.path()).unwrap();
        let err = store.stage(chunks(&[]), 100).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument);
        let err = store
            .stage(chunks(&[b"0123456789", b"0"]), 10)
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::PayloadTooLarge);
        let staged = store.stage(chunks(&[b"abc"]), 10).await.unwrap();
        drop(staged);
        let leftovers = std::fs::read_dir(dir.path().join("tmp")).unwrap().count();
        assert_eq!(leftovers, 0);
        let blobs = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(blobs, 1, "only tmp/ remains");
    }

    #[tokio::test]
    async fn an_upload_under_way_outlives_a_pass_and_a_crashed_one_goes_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = PackageStore::open(dir.path()).unwrap();
        let staged = store.stage(chunks(&[b"abc"]), 10).await.unwrap();
        // A pass with no grace while the upload is staged (CI saw one go
        // between its fsync and its rename).
        std::thread::sleep(std::time::Duration::from_millis(5));
        store
            .prune(&Default::default(), std::time::Duration::ZERO)
            .unwrap();
        let package = staged.commit().unwrap();
        assert!(store.contains(&package));

        // A crash leaves a staged file; the next open removes it.
        let half = tempfile::NamedTempFile::new_in(dir.path().join("tmp")).unwrap();
        let (_, path) = half.keep().unwrap();
        PackageStore::open(dir.path()).unwrap();
        assert!(!path.exists());
    }
}
