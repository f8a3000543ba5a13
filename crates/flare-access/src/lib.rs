//! API tokens: how a secret is made and stored, and [`Tokens`], the table
//! of valid tokens that the API and the router check requests against.
//!
//! A secret is 256 random bits from the OS; the store keeps only its
//! SHA-256 (there is nothing to guess that a slow hash would protect). The
//! table follows the store like every component's state, so a revoked
//! token stops working as soon as the store has the revoke.

pub mod seal;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use flare_model::{Error, ErrorCode, Grant, Kind, Resource, Result, TokenSpec};
use flare_store::{Follower, Revision, Store, Update};
use http::HeaderMap;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::watch;

/// What every token starts with, so a leaked one is recognizable (secret
/// scanners, logs) for what it is.
pub const TOKEN_PREFIX: &str = "flr_";

/// The file the first start writes the admin token to, in the data dir.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// A new secret: the prefix and 256 random bits from the OS, in hex.
pub fn new_secret() -> Result<String> {
    use rand::TryRngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| Error::internal(format!("no randomness for a token: {e}")))?;
    Ok(format!("{TOKEN_PREFIX}{}", hex::encode(bytes)))
}

pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

struct Entry {
    grant: Grant,
    expires: Option<OffsetDateTime>,
}

/// The valid tokens, by the hash of their secret.
pub struct Tokens {
    by_hash: RwLock<HashMap<String, Entry>>,
    applied: watch::Sender<Revision>,
}

impl Tokens {
    pub fn new() -> Arc<Self> {
        Arc::new(Tokens {
            by_hash: RwLock::new(HashMap::new()),
            applied: watch::Sender::new(0),
        })
    }

    /// The store revision this table reflects.
    pub fn applied(&self) -> watch::Receiver<Revision> {
        self.applied.subscribe()
    }

    /// Follows the store's tokens until the store closes.
    pub async fn run(self: Arc<Self>, store: Arc<dyn Store>) {
        let mut follower = Follower::new(&*store);
        while let Some(update) = follower.next(&*store).await {
            let revision = update.revision();
            match update {
                Update::Change(event) if event.kind != Kind::Token => {}
                _ => self.reload(&*store),
            }
            flare_store::advance(&self.applied, revision);
        }
    }

    fn reload(&self, store: &dyn Store) {
        let tokens = store.list(Kind::Token).and_then(|docs| {
            docs.into_iter()
                .map(Resource::<TokenSpec>::from_document)
                .collect::<Result<Vec<_>>>()
        });
        let tokens = match tokens {
            Ok(tokens) => tokens,
            Err(e) => {
                tracing::error!("cannot read tokens: {e}");
                return;
            }
        };
        let table = tokens
            .into_iter()
            .map(|t| {
                let entry = Entry {
                    expires: t.spec.expires(),
                    grant: Grant {
                        token: t.metadata.name,
                        role: t.spec.role,
                        namespace: t.spec.namespace,
                    },
                };
                (t.spec.hash, entry)
            })
            .collect();
        if let Ok(mut by_hash) = self.by_hash.write() {
            *by_hash = table;
        }
    }

    /// The grant of the bearer token in `headers`.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Grant> {
        let refused = |why: &str| Err(Error::new(ErrorCode::Unauthenticated, why));
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return refused("this needs a token: send Authorization: Bearer <token>");
        };
        let secret = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, secret)| secret.trim());
        let Some(secret) = secret else {
            return refused("the Authorization header is not \"Bearer <token>\"");
        };
        let by_hash = self
            .by_hash
            .read()
            .map_err(|_| Error::internal("token table poisoned"))?;
        let Some(entry) = by_hash.get(&hash(secret)) else {
            return refused("the token is not valid: unknown or revoked");
        };
        if let Some(expires) = entry.expires
            && expires <= OffsetDateTime::now_utc()
        {
            return Err(Error::new(
                ErrorCode::Unauthenticated,
                format!(
                    "token \"{}\" expired at {}",
                    entry.grant.token,
                    expires.format(&Rfc3339).unwrap_or_default()
                ),
            ));
        }
        Ok(entry.grant.clone())
    }
}

/// Writes `contents` to `path`, readable only by its owner (0600), whole
/// or not at all: into a new file beside it, synced, renamed into place,
/// and the directory synced so that the rename survives a crash too (a
/// secrets key that vanished with a power cut would leave every sealed
/// value unreadable).
pub fn write_private(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let partial = dir.join(format!(".{name}.{}.partial", std::process::id()));
    let _ = std::fs::remove_file(&partial);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&partial, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_are_0600_and_replaced_whole() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.token");
        write_private(&path, b"one").unwrap();
        write_private(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no partial file is left behind");
    }

    #[test]
    fn secrets_are_long_random_and_prefixed() {
        let a = new_secret().unwrap();
        let b = new_secret().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 64);
        assert_eq!(hash(&a).len(), 64);
        assert_ne!(hash(&a), hash(&b));
    }

    #[test]
    fn only_a_bearer_of_a_known_unexpired_token_is_let_in() {
        let tokens = Tokens::new();
        let secret = new_secret().unwrap();
        let expired = new_secret().unwrap();
        let entry = |name: &str, expires| Entry {
            grant: Grant {
                token: name.into(),
                role: flare_model::Role::Viewer,
                namespace: "default".into(),
            },
            expires,
        };
        let past = OffsetDateTime::now_utc() - time::Duration::seconds(1);
        *tokens.by_hash.write().unwrap() = HashMap::from([
            (hash(&secret), entry("ok", None)),
            (hash(&expired), entry("old", Some(past))),
        ]);
        let headers = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(http::header::AUTHORIZATION, value.parse().unwrap());
            headers
        };
        let ok = tokens.authenticate(&headers(&format!("Bearer {secret}")));
        assert_eq!(ok.unwrap().token, "ok");
        let lower = tokens.authenticate(&headers(&format!("bearer {secret}")));
        assert!(lower.is_ok());
        for refused in [
            format!("Basic {secret}"),
            format!("Bearer {expired}"),
            format!("Bearer {secret}0"),
            "Bearer".to_string(),
        ] {
            let e = tokens.authenticate(&headers(&refused)).unwrap_err();
            assert_eq!(e.code, ErrorCode::Unauthenticated, "{refused}");
        }
        assert!(tokens.authenticate(&HeaderMap::new()).is_err());
    }
}
