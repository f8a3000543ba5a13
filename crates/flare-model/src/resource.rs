//! The document shape shared by every kind of resource.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{Error, Result, validate_name};

pub const API_VERSION: &str = "flare.dev/v1";
pub const DEFAULT_NAMESPACE: &str = "default";

/// The kinds of resource Flare stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    Function,
    HttpTrigger,
    Environment,
    TimerTrigger,
    MessageQueueTrigger,
    /// An API token: who may do what (see [`crate::TokenSpec`]).
    Token,
    /// A namespace and its quotas (see [`crate::NamespaceSpec`]).
    Namespace,
    /// Values a function gets without anyone seeing them again (see
    /// [`crate::SecretSpec`]).
    Secret,
    /// Plain settings a function gets (see [`crate::ConfigSpec`]).
    Config,
    /// One immutable version of a function (see
    /// [`crate::FunctionVersionSpec`]), written by the API.
    FunctionVersion,
    /// A name for one version of a function (see [`crate::AliasSpec`]).
    Alias,
    /// Traffic shifted step by step to a new version (see
    /// [`crate::CanarySpec`]).
    Canary,
    /// A function's source and the build that makes its package (see
    /// [`crate::PackageSpec`]).
    Package,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Function => "Function",
            Kind::HttpTrigger => "HttpTrigger",
            Kind::Environment => "Environment",
            Kind::TimerTrigger => "TimerTrigger",
            Kind::MessageQueueTrigger => "MessageQueueTrigger",
            Kind::Token => "Token",
            Kind::Namespace => "Namespace",
            Kind::Secret => "Secret",
            Kind::Config => "Config",
            Kind::FunctionVersion => "FunctionVersion",
            Kind::Alias => "Alias",
            Kind::Canary => "Canary",
            Kind::Package => "Package",
        }
    }

    /// How users name the kind in messages ("function", "http trigger").
    pub fn noun(self) -> &'static str {
        match self {
            Kind::Function => "function",
            Kind::HttpTrigger => "http trigger",
            Kind::Environment => "environment",
            Kind::TimerTrigger => "timer trigger",
            Kind::MessageQueueTrigger => "message queue trigger",
            Kind::Token => "token",
            Kind::Namespace => "namespace",
            Kind::Secret => "secret",
            Kind::Config => "config",
            Kind::FunctionVersion => "function version",
            Kind::Alias => "alias",
            Kind::Canary => "canary",
            Kind::Package => "package",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "Function" => Some(Kind::Function),
            "HttpTrigger" => Some(Kind::HttpTrigger),
            "Environment" => Some(Kind::Environment),
            "TimerTrigger" => Some(Kind::TimerTrigger),
            "MessageQueueTrigger" => Some(Kind::MessageQueueTrigger),
            "Token" => Some(Kind::Token),
            "Namespace" => Some(Kind::Namespace),
            "Secret" => Some(Kind::Secret),
            "Config" => Some(Kind::Config),
            "FunctionVersion" => Some(Kind::FunctionVersion),
            "Alias" => Some(Kind::Alias),
            "Canary" => Some(Kind::Canary),
            "Package" => Some(Kind::Package),
            _ => None,
        }
    }
}

impl Kind {
    /// Whether resources of this kind live in a namespace. The others
    /// (environments, which the operator offers to every namespace; tokens;
    /// namespaces themselves) are cluster-wide and stored under
    /// [`DEFAULT_NAMESPACE`].
    pub fn namespaced(self) -> bool {
        matches!(
            self,
            Kind::Function
                | Kind::HttpTrigger
                | Kind::TimerTrigger
                | Kind::MessageQueueTrigger
                | Kind::Secret
                | Kind::Config
                | Kind::FunctionVersion
                | Kind::Alias
                | Kind::Canary
                | Kind::Package
        )
    }
}

/// How a namespaced resource is named where namespaces meet (executor,
/// logs, metrics, the router's `/fn/{name}.{namespace}`): the bare name in
/// [`DEFAULT_NAMESPACE`], `name.namespace` elsewhere. A name cannot hold a
/// dot, so this is unambiguous.
pub fn qualified(name: &str, namespace: &str) -> String {
    if namespace == DEFAULT_NAMESPACE {
        name.to_string()
    } else {
        format!("{name}.{namespace}")
    }
}

/// The name and namespace of a [`qualified`] name.
pub fn split_qualified(qualified: &str) -> (&str, &str) {
    qualified
        .split_once('.')
        .unwrap_or((qualified, DEFAULT_NAMESPACE))
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.noun())
    }
}

/// Identity and bookkeeping of a resource. `uid`, `generation` and
/// `created_at` are set by the store; on update, `generation` is the one the
/// writer read (optimistic concurrency), or 0 to skip the check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(default)]
    pub generation: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// A function's: the version it serves (set by the API; 0 for one
    /// stored before versions were kept).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub version: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn default_namespace() -> String {
    DEFAULT_NAMESPACE.to_string()
}

impl Metadata {
    pub fn named(name: impl Into<String>) -> Self {
        Metadata {
            name: name.into(),
            namespace: default_namespace(),
            uid: String::new(),
            generation: 0,
            created_at: None,
            labels: BTreeMap::new(),
            version: 0,
        }
    }
}

/// A resource document: `{apiVersion, kind, metadata, spec}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource<S> {
    #[serde(default = "api_version")]
    pub api_version: String,
    pub kind: Kind,
    pub metadata: Metadata,
    pub spec: S,
}

fn api_version() -> String {
    API_VERSION.to_string()
}

/// A resource whose spec has not been decoded: what the store keeps.
pub type Document = Resource<serde_json::Value>;

/// A spec type: knows its kind and how to validate itself.
pub trait Spec: Serialize + DeserializeOwned {
    const KIND: Kind;

    /// Checks everything that can be checked without looking at other
    /// resources.
    fn validate(&self) -> Result<()>;
}

impl<S: Spec> Resource<S> {
    pub fn new(name: impl Into<String>, spec: S) -> Self {
        Resource {
            api_version: api_version(),
            kind: S::KIND,
            metadata: Metadata::named(name),
            spec,
        }
    }

    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    /// Validates the whole document: version, kind, name, namespace, spec.
    pub fn validate(&self) -> Result<()> {
        if self.api_version != API_VERSION {
            return Err(Error::invalid(format!(
                "unsupported apiVersion \"{}\" (expected \"{API_VERSION}\")",
                self.api_version
            )));
        }
        if self.kind != S::KIND {
            return Err(Error::invalid(format!(
                "expected kind {}, got {}",
                S::KIND.as_str(),
                self.kind.as_str()
            )));
        }
        validate_name(&format!("{} name", S::KIND.noun()), &self.metadata.name)?;
        if S::KIND.namespaced() {
            validate_name("namespace", &self.metadata.namespace)?;
        } else if self.metadata.namespace != DEFAULT_NAMESPACE {
            return Err(Error::invalid(format!(
                "a{} {} is not in a namespace; leave metadata.namespace out",
                if S::KIND.noun().starts_with(['a', 'e', 'i', 'o', 'u']) {
                    "n"
                } else {
                    ""
                },
                S::KIND.noun()
            )));
        }
        self.spec.validate()
    }

    /// Its name where namespaces meet; see [`qualified`].
    pub fn qualified_name(&self) -> String {
        qualified(&self.metadata.name, &self.metadata.namespace)
    }

    /// Encodes this resource as a store document.
    pub fn to_document(&self) -> Result<Document> {
        let spec = serde_json::to_value(&self.spec)
            .map_err(|e| Error::internal(format!("cannot encode {} spec: {e}", S::KIND)))?;
        Ok(Resource {
            api_version: self.api_version.clone(),
            kind: self.kind,
            metadata: self.metadata.clone(),
            spec,
        })
    }

    /// Decodes a store document of this kind.
    pub fn from_document(doc: Document) -> Result<Self> {
        if doc.kind != S::KIND {
            return Err(Error::internal(format!(
                "expected a {} document, got a {}",
                S::KIND,
                doc.kind
            )));
        }
        let spec = serde_json::from_value(doc.spec).map_err(|e| {
            Error::internal(format!(
                "stored {} \"{}\" cannot be decoded: {e}",
                S::KIND,
                doc.metadata.name
            ))
        })?;
        Ok(Resource {
            api_version: doc.api_version,
            kind: doc.kind,
            metadata: doc.metadata,
            spec,
        })
    }
}
