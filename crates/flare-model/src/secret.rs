//! Secrets and config: named sets of values a function gets as
//! environment variables (and, for secrets, as files under
//! `/secrets/<name>/<key>` in a process function's sandbox).
//!
//! Both are stored sealed (encrypted by the API with a key in the data
//! dir) and never shown again: reads list their keys.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Error, Kind, Result, Spec};

/// Most bytes the values of one secret or config may hold.
pub const MAX_VALUES_BYTES: usize = 1 << 20;
/// Most keys in one secret or config.
pub const MAX_KEYS: usize = 256;

/// Checks a key: a file name and, when it fits, an environment variable
/// name (letters, digits, `_`, `-` and `.`; not `.` or `..`).
pub fn validate_key(kind: Kind, key: &str) -> Result<()> {
    let fine = !key.is_empty()
        && key.len() <= 253
        && key != "."
        && key != ".."
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if fine {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid {kind} key \"{key}\": use 1-253 letters, digits, '_', '-' or '.'"
        )))
    }
}

/// Whether a key can be an environment variable name.
pub fn is_env_name(key: &str) -> bool {
    let mut bytes = key.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Checks keys and their count.
fn check_keys<'a>(kind: Kind, keys: impl ExactSizeIterator<Item = &'a String>) -> Result<()> {
    if keys.len() > MAX_KEYS {
        return Err(Error::invalid(format!(
            "a {kind} holds at most {MAX_KEYS} keys"
        )));
    }
    for key in keys {
        validate_key(kind, key)?;
    }
    Ok(())
}

/// Checks the values of a secret or config as they are sent (before they
/// are sealed): keys, count and total size.
pub fn check_values<'a>(
    kind: Kind,
    values: impl ExactSizeIterator<Item = (&'a String, usize)> + Clone,
) -> Result<()> {
    check_keys(kind, values.clone().map(|(k, _)| k))?;
    let bytes: usize = values.map(|(k, len)| k.len() + len).sum();
    if bytes > MAX_VALUES_BYTES {
        return Err(Error::new(
            crate::ErrorCode::PayloadTooLarge,
            format!("a {kind} holds at most {MAX_VALUES_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// A stored secret: each value sealed (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretSpec {
    /// Key -> sealed value.
    #[serde(default)]
    pub sealed: BTreeMap<String, String>,
}

impl Spec for SecretSpec {
    const KIND: Kind = Kind::Secret;

    /// Keys only: the sizes were checked before sealing
    /// ([`check_values`]).
    fn validate(&self) -> Result<()> {
        check_keys(Kind::Secret, self.sealed.keys())
    }
}

/// A config: settings, sent in clear and stored sealed like a secret's
/// values (a config's keys are not files, a secret's are).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigSpec {
    #[serde(default)]
    pub data: BTreeMap<String, String>,
}

impl Spec for ConfigSpec {
    const KIND: Kind = Kind::Config;

    /// Keys only: the sizes are checked before sealing ([`check_values`]).
    fn validate(&self) -> Result<()> {
        check_keys(Kind::Config, self.data.keys())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_file_names_and_some_are_env_names() {
        for key in ["PASSWORD", "tls.key", "a-b_c", "x"] {
            assert!(validate_key(Kind::Secret, key).is_ok(), "{key}");
        }
        for key in ["", ".", "..", "a/b", "a b", "ключ", &"k".repeat(254)] {
            assert!(validate_key(Kind::Secret, key).is_err(), "{key}");
        }
        assert!(is_env_name("DB_PASSWORD") && is_env_name("_x1"));
        assert!(!is_env_name("tls.key") && !is_env_name("1A") && !is_env_name("a-b"));
        let key = "k".to_string();
        assert!(check_values(Kind::Config, [(&key, MAX_VALUES_BYTES)].into_iter()).is_err());
        assert!(check_values(Kind::Config, [(&key, 10)].into_iter()).is_ok());
        let many: Vec<String> = (0..=MAX_KEYS).map(|i| format!("k{i}")).collect();
        assert!(check_values(Kind::Secret, many.iter().map(|k| (k, 1))).is_err());
    }
}
