//! Secrets at rest: each value sealed with ChaCha20-Poly1305 (ring) under
//! a key kept in the data dir (`secrets.key`, 0600, made on the first
//! start). The nonce is random per value; the associated data names where
//! the value belongs (kind, namespace, name, key), so a sealed value moved
//! to another secret, key or kind (a secret's value into a config, which
//! is shown) does not open.

use std::path::Path;

use flare_model::{Error, Kind, Result};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// The key file, in the data dir.
pub const KEY_FILE: &str = "secrets.key";

/// What every sealed value starts with (the format's version).
const PREFIX: &str = "v1:";

/// Seals and opens secret values.
pub struct Sealer {
    key: LessSafeKey,
    random: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer")
    }
}

/// Where a value belongs.
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    pub kind: Kind,
    pub namespace: &'a str,
    pub name: &'a str,
    pub key: &'a str,
}

impl Place<'_> {
    fn aad(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.kind.as_str(),
            self.namespace,
            self.name,
            self.key
        )
    }
}

impl Sealer {
    /// The sealer of `data_dir`, making its key on the first start.
    pub fn open_dir(data_dir: &Path) -> Result<Sealer> {
        let path = data_dir.join(KEY_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                SystemRandom::new()
                    .fill(&mut key)
                    .map_err(|_| Error::internal("no randomness for the secrets key"))?;
                crate::write_private(&path, &key).map_err(|e| {
                    Error::internal(format!("cannot write {}: {e}", path.display()))
                })?;
                key.to_vec()
            }
            Err(e) => {
                return Err(Error::internal(format!(
                    "cannot read {}: {e}",
                    path.display()
                )));
            }
        };
        Sealer::new(&bytes)
    }

    /// The sealer of a key file the operator made (the same on every node
    /// of a cluster): 32 bytes, readable by its owner only.
    pub fn open_file(path: &Path) -> Result<Sealer> {
        use std::os::unix::fs::PermissionsExt;
        let shown = path.display();
        let meta = std::fs::metadata(path)
            .map_err(|e| Error::invalid(format!("cannot read the secrets key {shown}: {e}")))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(Error::invalid(format!(
                "the secrets key {shown} is readable by others: chmod 600 {shown}"
            )));
        }
        let bytes = std::fs::read(path)
            .map_err(|e| Error::invalid(format!("cannot read the secrets key {shown}: {e}")))?;
        if bytes.len() != 32 {
            return Err(Error::invalid(format!(
                "the secrets key {shown} holds {} bytes, not 32 (make one with: head -c 32 /dev/urandom > {shown}; chmod 600 {shown})",
                bytes.len()
            )));
        }
        Sealer::new(&bytes)
    }

    pub fn new(key: &[u8]) -> Result<Sealer> {
        let key = UnboundKey::new(&CHACHA20_POLY1305, key)
            .map_err(|_| Error::internal("the secrets key is not 32 bytes"))?;
        Ok(Sealer {
            key: LessSafeKey::new(key),
            random: SystemRandom::new(),
        })
    }

    /// `value`, sealed for its place.
    pub fn seal(&self, place: Place<'_>, value: &[u8]) -> Result<String> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| Error::internal("no randomness for a nonce"))?;
        let mut sealed = value.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(place.aad().as_bytes()),
                &mut sealed,
            )
            .map_err(|_| Error::internal("cannot seal a secret"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(format!("{PREFIX}{}", hex::encode(out)))
    }

    /// The value sealed for `place`.
    pub fn open(&self, place: Place<'_>, sealed: &str) -> Result<Vec<u8>> {
        let broken = || {
            Error::internal(format!(
                "{} \"{}\" key \"{}\" does not open with this data dir's key",
                place.kind, place.name, place.key
            ))
        };
        let bytes = sealed
            .strip_prefix(PREFIX)
            .and_then(|hex| hex::decode(hex).ok())
            .filter(|b| b.len() >= NONCE_LEN)
            .ok_or_else(broken)?;
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| broken())?;
        let mut sealed = sealed.to_vec();
        let opened = self
            .key
            .open_in_place(nonce, Aad::from(place.aad().as_bytes()), &mut sealed)
            .map_err(|_| broken())?;
        Ok(opened.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at<'a>(kind: Kind, namespace: &'a str, name: &'a str, key: &'a str) -> Place<'a> {
        Place {
            kind,
            namespace,
            name,
            key,
        }
    }

    #[test]
    fn a_sealed_value_opens_only_where_it_was_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let sealer = Sealer::open_dir(dir.path()).unwrap();
        let here = at(Kind::Secret, "default", "db", "PASSWORD");
        let sealed = sealer.seal(here, b"s3cret").unwrap();
        assert!(!sealed.contains("s3cret"));
        assert_ne!(sealed, sealer.seal(here, b"s3cret").unwrap());
        assert_eq!(sealer.open(here, &sealed).unwrap(), b"s3cret");
        // Moved to another key, secret, namespace or kind: it does not open.
        for elsewhere in [
            at(Kind::Secret, "default", "db", "USER"),
            at(Kind::Secret, "default", "other", "PASSWORD"),
            at(Kind::Secret, "team-a", "db", "PASSWORD"),
            at(Kind::Config, "default", "db", "PASSWORD"),
        ] {
            assert!(sealer.open(elsewhere, &sealed).is_err(), "{elsewhere:?}");
        }
        assert!(sealer.open(here, "v1:00").is_err());
        // The key persists, 0600; another data dir's key opens nothing.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = Sealer::open_dir(dir.path()).unwrap();
        assert_eq!(again.open(here, &sealed).unwrap(), b"s3cret");
        let other = Sealer::open_dir(tempfile::tempdir().unwrap().path()).unwrap();
        assert!(other.open(here, &sealed).is_err());
    }
}
