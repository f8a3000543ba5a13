//! A namespace: where a team's functions and triggers live, and the quotas
//! that bound them. The resource's name is the namespace's.

use serde::{Deserialize, Serialize};

use crate::{Error, FunctionSpec, Kind, Result, Spec};

/// Quotas of a namespace; each is unlimited when absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespaceSpec {
    /// Functions the namespace may hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_functions: Option<u32>,
    /// Memory limit (MiB) any one function may ask for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_mb: Option<u32>,
    /// Instances the namespace's functions may keep warm in total
    /// (the sum of their minimum scales).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_min_scale: Option<u32>,
    /// Requests any one function may have in flight (its concurrency, per
    /// instance for process functions, times its maximum scale).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
}

impl Spec for NamespaceSpec {
    const KIND: Kind = Kind::Namespace;

    fn validate(&self) -> Result<()> {
        Ok(())
    }
}

impl NamespaceSpec {
    /// Checks that `function` (named `name`) may be stored in `namespace`
    /// beside `others` (the namespace's other functions, without it).
    pub fn admit(
        &self,
        namespace: &str,
        name: &str,
        function: &FunctionSpec,
        others: &[FunctionSpec],
    ) -> Result<()> {
        let refuse = |what: String| {
            Err(Error::new(
                crate::ErrorCode::Forbidden,
                format!(
                    "function \"{name}\" is over the quota of namespace \"{namespace}\": {what}"
                ),
            ))
        };
        if let Some(max) = self.max_functions
            && others.len() as u64 + 1 > u64::from(max)
        {
            return refuse(format!(
                "it may hold {max} functions and holds {}",
                others.len()
            ));
        }
        let limits = &function.limits;
        if let Some(max) = self.max_memory_mb
            && limits.memory_mb > max
        {
            return refuse(format!(
                "memory {} MiB is over the {max} MiB a function may have",
                limits.memory_mb
            ));
        }
        if let Some(max) = self.max_min_scale {
            let total: u64 = others
                .iter()
                .chain([function])
                .map(|f| u64::from(f.limits.min_scale))
                .sum();
            if total > u64::from(max) {
                return refuse(format!(
                    "its functions would keep {total} instances warm (min scale) and may keep {max}"
                ));
            }
        }
        if let Some(max) = self.max_concurrency {
            let concurrency = function.max_in_flight();
            if concurrency > u64::from(max) {
                return refuse(format!(
                    "{concurrency} requests in flight are over the {max} a function may have"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PackageRef;

    fn function(memory_mb: u32, min_scale: u32, concurrency: u32) -> FunctionSpec {
        let mut f = FunctionSpec::wasm(PackageRef {
            digest: format!("sha256:{}", "a".repeat(64)),
            size: 1,
        });
        f.limits.memory_mb = memory_mb;
        f.limits.min_scale = min_scale;
        f.limits.max_concurrency = concurrency;
        f
    }

    #[test]
    fn each_quota_refuses_only_what_is_over_it() {
        let quota = NamespaceSpec {
            max_functions: Some(2),
            max_memory_mb: Some(256),
            max_min_scale: Some(3),
            max_concurrency: Some(50),
        };
        let ok = function(128, 1, 10);
        let admit = |f: &FunctionSpec, others: &[FunctionSpec]| {
            quota.admit("team-a", "f", f, others).map_err(|e| e.message)
        };
        assert!(admit(&ok, std::slice::from_ref(&ok)).is_ok());
        let why = admit(&ok, &[ok.clone(), ok.clone()]).unwrap_err();
        assert!(why.contains("may hold 2 functions"), "{why}");
        let why = admit(&function(512, 0, 10), &[]).unwrap_err();
        assert!(why.contains("512 MiB"), "{why}");
        let why = admit(&function(128, 3, 10), std::slice::from_ref(&ok)).unwrap_err();
        assert!(why.contains("4 instances warm"), "{why}");
        let why = admit(&function(128, 0, 100), &[]).unwrap_err();
        assert!(why.contains("100 requests"), "{why}");
        assert!(
            NamespaceSpec::default()
                .admit("n", "f", &function(4096, 100, 1000), &vec![ok; 1000])
                .is_ok()
        );
    }
}
