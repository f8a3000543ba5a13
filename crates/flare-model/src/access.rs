//! Who may do what: the four roles, what each allows, and the stored form
//! of an API token.
//!
//! A token is a random secret shown once, at creation; the store keeps only
//! its SHA-256 ([`TokenSpec::hash`]), a role and the namespace that bounds
//! it. Secrets are 256 random bits, so a plain hash is enough: there is
//! nothing to guess that a slow hash would protect.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::{Error, ErrorCode, Kind, Result, Spec, validate_name};

/// The namespace of a token that may act in every namespace.
pub const ALL_NAMESPACES: &str = "*";

/// What a request wants to do, as far as access goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Read resources, logs and invocation records.
    Read,
    /// Create, change or delete resources.
    Write,
    /// Call a function.
    Invoke,
    /// Manage tokens, namespaces and environments, and read the audit
    /// trail: the admin's own work.
    Manage,
}

impl Permission {
    fn describe(self) -> &'static str {
        match self {
            Permission::Read => "read resources",
            Permission::Write => "change resources",
            Permission::Invoke => "invoke functions",
            Permission::Manage => "do this (admin only: tokens, namespaces, environments, audit)",
        }
    }
}

/// A token's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, in every namespace: tokens and namespaces too.
    Admin,
    /// Create, change, delete, read and invoke in its namespace.
    Developer,
    /// Read resources, logs and invocations in its namespace.
    Viewer,
    /// Invoke functions of its namespace, nothing else.
    Invoker,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Developer, Role::Viewer, Role::Invoker];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Developer => "developer",
            Role::Viewer => "viewer",
            Role::Invoker => "invoker",
        }
    }

    pub fn parse(s: &str) -> Result<Role> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "unknown role \"{s}\" (use admin, developer, viewer or invoker)"
                ))
            })
    }

    pub fn allows(self, permission: Permission) -> bool {
        use Permission::*;
        match self {
            Role::Admin => true,
            Role::Developer => matches!(permission, Read | Write | Invoke),
            Role::Viewer => permission == Read,
            Role::Invoker => permission == Invoke,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored API token. The resource's name is the token's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenSpec {
    pub role: Role,
    /// The namespace everything the token does is bounded by, or
    /// [`ALL_NAMESPACES`].
    pub namespace: String,
    /// Lowercase hex SHA-256 of the secret.
    pub hash: String,
    /// When the token stops working (RFC 3339, UTC); never when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

impl TokenSpec {
    /// When the token stops working; `None` for never (or an expiry that
    /// does not parse, which validation keeps out of the store).
    pub fn expires(&self) -> Option<OffsetDateTime> {
        self.expires_at
            .as_deref()
            .and_then(|at| OffsetDateTime::parse(at, &Rfc3339).ok())
    }
}

impl Spec for TokenSpec {
    const KIND: Kind = Kind::Token;

    fn validate(&self) -> Result<()> {
        if self.namespace != ALL_NAMESPACES {
            validate_name("namespace", &self.namespace)?;
        }
        if self.role == Role::Admin && self.namespace != ALL_NAMESPACES {
            return Err(Error::invalid(
                "an admin token acts in every namespace; leave out the namespace",
            ));
        }
        if self.hash.len() != 64 || !self.hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::invalid("a token hash is 64 hex digits"));
        }
        if let Some(at) = &self.expires_at {
            OffsetDateTime::parse(at, &Rfc3339)
                .map_err(|e| Error::invalid(format!("invalid expiry \"{at}\": {e}")))?;
        }
        Ok(())
    }
}

/// What a valid token lets its bearer do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The token's name, for messages and the audit trail.
    pub token: String,
    pub role: Role,
    pub namespace: String,
}

impl Grant {
    /// Whether `namespace` is within this grant's bound, whatever the role.
    pub fn reaches(&self, namespace: &str) -> bool {
        self.namespace == ALL_NAMESPACES || self.namespace == namespace
    }

    /// Whether this grant may do `permission` in `namespace`. A resource
    /// named in the request (`named`) of a namespace the token does not
    /// reach is not found rather than forbidden: its existence is not the
    /// bearer's to learn.
    pub fn check(&self, permission: Permission, namespace: &str, named: bool) -> Result<()> {
        if !self.role.allows(permission) {
            return Err(Error::new(
                ErrorCode::Forbidden,
                format!(
                    "token \"{}\" ({}) may not {}",
                    self.token,
                    self.role,
                    permission.describe()
                ),
            ));
        }
        if self.reaches(namespace) {
            return Ok(());
        }
        if named {
            return Err(Error::new(
                ErrorCode::NotFound,
                "not found in the namespace of this token",
            ));
        }
        Err(Error::new(
            ErrorCode::Forbidden,
            format!(
                "token \"{}\" is bound to namespace \"{}\", not \"{namespace}\"",
                self.token, self.namespace
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(role: Role, namespace: &str) -> Grant {
        Grant {
            token: "t".into(),
            role,
            namespace: namespace.into(),
        }
    }

    #[test]
    fn each_role_allows_only_its_row() {
        use Permission::*;
        let rows = [
            (Role::Admin, [true, true, true, true]),
            (Role::Developer, [true, true, true, false]),
            (Role::Viewer, [true, false, false, false]),
            (Role::Invoker, [false, false, true, false]),
        ];
        for (role, allowed) in rows {
            for (permission, allowed) in [Read, Write, Invoke, Manage].into_iter().zip(allowed) {
                assert_eq!(role.allows(permission), allowed, "{role} {permission:?}");
            }
        }
    }

    #[test]
    fn a_namespace_bounds_the_grant_and_hides_what_it_does_not_reach() {
        let dev = grant(Role::Developer, "team-a");
        assert!(dev.check(Permission::Write, "team-a", true).is_ok());
        let named = dev.check(Permission::Read, "default", true).unwrap_err();
        assert_eq!(named.code, ErrorCode::NotFound);
        let listed = dev.check(Permission::Read, "default", false).unwrap_err();
        assert_eq!(listed.code, ErrorCode::Forbidden);
        let role = dev.check(Permission::Manage, "team-a", false).unwrap_err();
        assert_eq!(role.code, ErrorCode::Forbidden);
        assert!(
            grant(Role::Viewer, ALL_NAMESPACES)
                .check(Permission::Read, "any", true)
                .is_ok()
        );
    }

    #[test]
    fn token_specs_are_checked() {
        let spec = |role, namespace: &str, hash: &str, expires: Option<&str>| TokenSpec {
            role,
            namespace: namespace.into(),
            hash: hash.into(),
            expires_at: expires.map(str::to_string),
        };
        let hash = "a".repeat(64);
        assert!(spec(Role::Admin, "*", &hash, None).validate().is_ok());
        assert!(
            spec(Role::Viewer, "team-a", &hash, Some("2030-01-01T00:00:00Z"))
                .validate()
                .is_ok()
        );
        assert!(spec(Role::Admin, "team-a", &hash, None).validate().is_err());
        assert!(
            spec(Role::Viewer, "Team A", &hash, None)
                .validate()
                .is_err()
        );
        assert!(spec(Role::Viewer, "*", "abc", None).validate().is_err());
        assert!(
            spec(Role::Viewer, "*", &hash, Some("tomorrow"))
                .validate()
                .is_err()
        );
        assert!(Role::parse("root").is_err());
        assert_eq!(Role::parse("invoker").unwrap(), Role::Invoker);
    }
}
