//! The `Environment` resource: a language runtime for process functions.

use serde::{Deserialize, Serialize};

use crate::{Error, Kind, Result, Spec};

/// Which worker program an environment runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnvironmentRuntime {
    /// Flare's Python worker (`environments/python`), on the host's python3.
    Python,
    /// Flare's Node.js worker (`environments/node`), on the host's node.
    Node,
    /// Flare's Java worker (`environments/java`), on the host's JDK: a
    /// function is a jar whose handler class implements `flare.Handler`.
    Java,
    /// Any program that speaks the worker protocol (`environments/PROTOCOL.md`).
    Custom,
}

/// The wall between an environment's workers and the host: each level is
/// a sandbox backend behind the same pool, specialization, limits, logs
/// and scaling.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// Namespaces, seccomp and cgroups on the host kernel (bubblewrap).
    #[default]
    Namespace,
    /// The same walls inside gVisor (`runsc`): a user-space kernel answers
    /// the worker's system calls instead of the host's.
    Gvisor,
    /// Each worker in its own lightweight VM on KVM, with its own kernel.
    Microvm,
}

impl Isolation {
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Namespace => "namespace",
            Isolation::Gvisor => "gvisor",
            Isolation::Microvm => "microvm",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentSpec {
    pub runtime: EnvironmentRuntime,
    /// custom: the worker program and its arguments; the program is made
    /// visible read-only inside the sandbox at the same path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Generic workers kept started, waiting to be specialized.
    #[serde(default = "default_poolsize")]
    pub poolsize: u32,
    /// How strongly its workers are walled off from the host.
    #[serde(default)]
    pub isolation: Isolation,
}

fn default_poolsize() -> u32 {
    EnvironmentSpec::DEFAULT_POOLSIZE
}

impl EnvironmentSpec {
    pub const DEFAULT_POOLSIZE: u32 = 3;
    pub const MAX_POOLSIZE: u32 = 64;
}

impl Spec for EnvironmentSpec {
    const KIND: Kind = Kind::Environment;

    fn validate(&self) -> Result<()> {
        if self.poolsize > Self::MAX_POOLSIZE {
            return Err(Error::invalid(format!(
                "poolsize {} is over the limit of {}",
                self.poolsize,
                Self::MAX_POOLSIZE
            )));
        }
        match (self.runtime, self.command.first()) {
            (EnvironmentRuntime::Custom, None) => Err(Error::invalid(
                "a custom environment needs a command (the worker program)",
            )),
            (EnvironmentRuntime::Custom, Some(program)) if !program.starts_with('/') => {
                Err(Error::invalid(format!(
                    "the worker program \"{program}\" must be an absolute path"
                )))
            }
            (
                EnvironmentRuntime::Python | EnvironmentRuntime::Node | EnvironmentRuntime::Java,
                Some(_),
            ) => Err(Error::invalid("only custom environments take a command")),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_needs_an_absolute_command_and_others_none() {
        let env = |runtime, command: &[&str]| EnvironmentSpec {
            runtime,
            command: command.iter().map(|s| s.to_string()).collect(),
            poolsize: 3,
            isolation: Isolation::Namespace,
        };
        env(EnvironmentRuntime::Python, &[]).validate().unwrap();
        env(EnvironmentRuntime::Custom, &["/bin/worker", "-v"])
            .validate()
            .unwrap();
        assert!(env(EnvironmentRuntime::Custom, &[]).validate().is_err());
        assert!(
            env(EnvironmentRuntime::Custom, &["worker"])
                .validate()
                .is_err()
        );
        assert!(
            env(EnvironmentRuntime::Node, &["/bin/x"])
                .validate()
                .is_err()
        );
        let mut big = env(EnvironmentRuntime::Python, &[]);
        big.poolsize = 65;
        assert!(big.validate().unwrap_err().message.contains("poolsize"));
    }
}
