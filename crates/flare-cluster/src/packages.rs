//! Packages in a cluster: the NATS object store `flare-packages` holds every
//! function's code by digest; each node keeps its own copy in its
//! [`PackageStore`] (a cache: fetched on first need, checked against the
//! digest it is asked for, served from local disk after that).

use async_nats::jetstream::{self, object_store};
use flare_model::{Error, ErrorCode, PackageRef, Result};
use flare_store::PackageStore;

const PACKAGES_BUCKET: &str = "flare-packages";

/// The cluster's packages.
pub struct NatsPackages {
    bucket: object_store::ObjectStore,
    servers: String,
}

impl NatsPackages {
    /// Opens the cluster's package bucket, creating it with `replicas`
    /// when it is missing.
    pub async fn open(js: &jetstream::Context, replicas: usize, servers: &str) -> Result<Self> {
        let bucket = match js.get_object_store(PACKAGES_BUCKET).await {
            Ok(bucket) => bucket,
            Err(_) => js
                .create_object_store(object_store::Config {
                    bucket: PACKAGES_BUCKET.into(),
                    description: Some("Flare packages, by digest".into()),
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| {
                    Error::new(
                        ErrorCode::Unavailable,
                        format!("NATS at {servers}: cannot open the package bucket: {e}"),
                    )
                })?,
        };
        Ok(NatsPackages {
            bucket,
            servers: servers.to_string(),
        })
    }

    fn unavailable(&self, what: &str, e: impl std::fmt::Display) -> Error {
        Error::new(
            ErrorCode::Unavailable,
            format!("NATS at {}: cannot {what}: {e}", self.servers),
        )
    }

    /// Makes `package`, stored on this node, available to every node (a
    /// package the cluster holds already is not sent again).
    pub async fn publish(&self, local: &PackageStore, package: &PackageRef) -> Result<()> {
        if self.bucket.info(&package.digest).await.is_ok() {
            return Ok(());
        }
        let mut file = tokio::fs::File::open(local.path(package))
            .await
            .map_err(|e| Error::internal(format!("cannot read {}: {e}", package.digest)))?;
        self.bucket
            .put(package.digest.as_str(), &mut file)
            .await
            .map(|_| ())
            .map_err(|e| self.unavailable(&format!("store {}", package.digest), e))
    }

    /// Brings `package` into this node's store when it is not there yet.
    /// What arrives must hash to the digest asked for, within its size, or
    /// nothing is kept.
    pub async fn fetch(&self, local: &PackageStore, package: &PackageRef) -> Result<()> {
        if local.contains(package) {
            return Ok(());
        }
        let object = self.bucket.get(&package.digest).await.map_err(|e| {
            if e.kind() == object_store::GetErrorKind::NotFound {
                Error::not_found("package", &package.digest)
            } else {
                self.unavailable(&format!("fetch {}", package.digest), e)
            }
        })?;
        let staged = local
            .stage(tokio_util::io::ReaderStream::new(object), package.size)
            .await
            .map_err(|e| {
                Error::internal(format!(
                    "the cluster's copy of {} is not that package: {}",
                    package.digest, e.message
                ))
            })?;
        if staged.package() != package {
            return Err(Error::internal(format!(
                "the cluster's copy of {} is not that package (it hashes to {})",
                package.digest,
                staged.package().digest
            )));
        }
        staged.commit().map(|_| ())
    }
}
