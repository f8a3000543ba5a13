//! Spec files: the resources a directory declares, checked offline and
//! applied idempotently.
//!
//! A spec directory holds `flare.yaml` and any `specs/*.yaml`, each a
//! stream of `apiVersion: flare.dev/v1` documents: one `kind: Project`
//! naming what the directory owns, then environments, functions, aliases
//! and triggers as the API stores them. A function says where its package is
//! with `spec.code`, a path relative to its file. Everything applied is
//! labelled `flare.dev/project: <project>`, which is how `apply --prune`
//! and `destroy` know what the directory owns and never touch anything
//! else.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use flare_model::{
    API_VERSION, Document, EnvironmentSpec, FunctionSpec, HttpTriggerSpec, Kind,
    MessageQueueTriggerSpec, Resource, Spec, TimerTriggerSpec, validate_name,
};
use serde_json::{Value, json};

/// The label that says which project a resource belongs to.
pub const PROJECT_LABEL: &str = "flare.dev/project";

/// The kinds a spec holds, in the order they are created (and deleted in
/// reverse): what a trigger or function refers to exists before it.
pub const ORDER: [Kind; 7] = [
    Kind::Environment,
    Kind::Function,
    Kind::Alias,
    // After the functions: a canary's versions exist once they are applied.
    Kind::Canary,
    Kind::HttpTrigger,
    Kind::TimerTrigger,
    Kind::MessageQueueTrigger,
];

/// Something wrong in a spec file, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// One declared resource.
#[derive(Debug, Clone)]
pub struct Declared {
    pub file: PathBuf,
    pub line: usize,
    /// The document as it is sent, labelled with the project; a function's
    /// `spec.code` is taken out into `code`.
    pub doc: Document,
    pub code: Option<PathBuf>,
}

impl Declared {
    pub fn kind(&self) -> Kind {
        self.doc.kind
    }

    pub fn name(&self) -> &str {
        &self.doc.metadata.name
    }
}

/// A spec directory, read and checked.
#[derive(Debug)]
pub struct SpecSet {
    pub project: String,
    pub declared: Vec<Declared>,
}

/// The spec files of `dir`: `flare.yaml`, then `specs/*.yaml` by name.
fn files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let main = dir.join("flare.yaml");
    if main.is_file() {
        files.push(main);
    }
    if let Ok(entries) = std::fs::read_dir(dir.join("specs")) {
        let mut more: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
            })
            .collect();
        more.sort();
        files.extend(more);
    }
    if files.is_empty() {
        anyhow::bail!(
            "no spec in {}: it has no flare.yaml and no specs/*.yaml (`flare spec init` writes one)",
            dir.display()
        );
    }
    Ok(files)
}

/// The documents of a YAML stream: each one's text and first line.
fn documents(text: &str) -> Vec<(String, usize)> {
    let mut docs = Vec::new();
    let (mut current, mut start) = (String::new(), 1);
    for (i, line) in text.lines().enumerate() {
        if line == "---" || line.starts_with("--- ") {
            docs.push((std::mem::take(&mut current), start));
            start = i + 2;
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    docs.push((current, start));
    docs.into_iter()
        .filter(|(text, _)| {
            text.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .collect()
}

/// The line of `text` (starting at `start`) where the key `key` is set.
fn line_of(text: &str, start: usize, key: &str) -> usize {
    text.lines()
        .position(|l| {
            let l = l.trim_start().trim_start_matches("- ");
            l.strip_prefix(key)
                .or_else(|| l.strip_prefix(&format!("\"{key}\"")))
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
        })
        .map(|i| start + i)
        .unwrap_or(start)
}

/// Decodes `value` as a `Resource<S>`, noting fields `S` does not know,
/// and validates it; returns its spec as Flare stores it (defaults in).
fn typed<S: Spec>(value: &Value, unknown: &mut Vec<String>) -> Result<Value, String> {
    let resource: Resource<S> =
        serde_ignored::deserialize(value.clone(), |path| unknown.push(path.to_string()))
            .map_err(|e| e.to_string())?;
    resource.validate().map_err(|e| e.message)?;
    serde_json::to_value(&resource.spec).map_err(|e| e.to_string())
}

/// The spec of `kind` in `value` as Flare stores it, with fields it does
/// not know in `unknown`.
pub fn normalize(kind: Kind, value: &Value, unknown: &mut Vec<String>) -> Result<Value, String> {
    match kind {
        Kind::Function => typed::<FunctionSpec>(value, unknown),
        Kind::HttpTrigger => typed::<HttpTriggerSpec>(value, unknown),
        Kind::Environment => typed::<EnvironmentSpec>(value, unknown),
        Kind::TimerTrigger => typed::<TimerTriggerSpec>(value, unknown),
        Kind::MessageQueueTrigger => typed::<MessageQueueTriggerSpec>(value, unknown),
        Kind::Alias => typed::<flare_model::AliasSpec>(value, unknown),
        // A canary's status is Flare's: what is compared is what was asked.
        Kind::Canary => typed::<flare_model::CanarySpec>(value, unknown).map(|mut spec| {
            if let Some(spec) = spec.as_object_mut() {
                spec.remove("status");
            }
            spec
        }),
        other => Err(format!("a {} does not belong in a spec file", other.noun())),
    }
}

/// A package digest that stands in for code not read yet.
const PLACEHOLDER_DIGEST: &str =
    "sha256:0000000000000000000000000000000000000000000000000000000000000000";

impl SpecSet {
    /// Reads and checks every spec file of `dir`. Problems are all
    /// reported, each with its file and line.
    pub fn load(dir: &Path) -> anyhow::Result<Result<SpecSet, Vec<Problem>>> {
        let mut problems = Vec::new();
        let mut project: Option<(String, PathBuf, usize)> = None;
        let mut declared: Vec<Declared> = Vec::new();
        for file in files(dir)? {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            let shown = file.strip_prefix(dir).unwrap_or(&file).to_path_buf();
            for (doc, start) in documents(&text) {
                let mut problem = |line: usize, message: String| {
                    problems.push(Problem {
                        file: shown.clone(),
                        line,
                        message,
                    })
                };
                let value: Value = match serde_yaml::from_str(&doc) {
                    Ok(value) => value,
                    Err(e) => {
                        let line = e.location().map(|l| start + l.line() - 1).unwrap_or(start);
                        problem(line, format!("not YAML: {e}"));
                        continue;
                    }
                };
                match read_document(value, &doc, start, dir, &file) {
                    Ok(Read::Project(name)) => match &project {
                        Some((_, first, at)) => problem(
                            start,
                            format!(
                                "a second Project; the first is at {}:{at}",
                                first.strip_prefix(dir).unwrap_or(first).display()
                            ),
                        ),
                        None => project = Some((name, shown.clone(), start)),
                    },
                    Ok(Read::Resource(d)) => {
                        let twin = declared
                            .iter()
                            .find(|o| o.kind() == d.kind() && o.name() == d.name());
                        match twin {
                            Some(o) => problem(
                                start,
                                format!(
                                    "{} \"{}\" is declared twice; also at {}:{}",
                                    d.kind().noun(),
                                    d.name(),
                                    o.file.display(),
                                    o.line
                                ),
                            ),
                            None => declared.push(Declared {
                                file: shown.clone(),
                                ..*d
                            }),
                        }
                    }
                    Err(found) => {
                        for (line, message) in found {
                            problem(line, message);
                        }
                    }
                }
            }
        }
        let project = match project {
            Some((name, _, _)) => name,
            None => {
                problems.push(Problem {
                    file: PathBuf::from("flare.yaml"),
                    line: 1,
                    message: format!(
                        "no Project document: add one (apiVersion: {API_VERSION}, kind: Project, metadata.name) so Flare knows what this directory owns"
                    ),
                });
                String::new()
            }
        };
        for d in &mut declared {
            d.doc
                .metadata
                .labels
                .insert(PROJECT_LABEL.into(), project.clone());
        }
        if !problems.is_empty() {
            problems.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
            return Ok(Err(problems));
        }
        Ok(Ok(SpecSet { project, declared }))
    }

    /// The declared resources of `kind`.
    pub fn of(&self, kind: Kind) -> impl Iterator<Item = &Declared> {
        self.declared.iter().filter(move |d| d.kind() == kind)
    }
}

enum Read {
    Project(String),
    Resource(Box<Declared>),
}

/// Reads one document: a Project, or a resource checked as the API would.
/// Errors are `(line, message)`.
fn read_document(
    mut value: Value,
    text: &str,
    start: usize,
    dir: &Path,
    file: &Path,
) -> Result<Read, Vec<(usize, String)>> {
    let at = |key: &str| line_of(text, start, key);
    let one = |line: usize, message: String| Err(vec![(line, message)]);
    if !value.is_object() {
        return one(
            start,
            "a document must be a mapping (apiVersion, kind, metadata, spec)".into(),
        );
    }
    match value.get("apiVersion").and_then(Value::as_str) {
        Some(API_VERSION) => {}
        Some(other) => {
            return one(
                at("apiVersion"),
                format!("unsupported apiVersion \"{other}\" (expected \"{API_VERSION}\")"),
            );
        }
        None => {
            return one(
                start,
                format!("apiVersion is missing (apiVersion: {API_VERSION})"),
            );
        }
    }
    let kinds = "Project, Environment, Function, Alias, Canary, HttpTrigger, TimerTrigger, MessageQueueTrigger";
    let kind = match value.get("kind").and_then(Value::as_str) {
        Some("Project") => {
            let name = value
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            return match validate_name("project name", name) {
                Ok(()) => Ok(Read::Project(name.to_string())),
                Err(e) => one(at("name"), e.message),
            };
        }
        Some(kind) => match serde_json::from_value::<Kind>(json!(kind)) {
            Ok(kind) if ORDER.contains(&kind) => kind,
            _ => {
                return one(
                    at("kind"),
                    format!("unknown kind \"{kind}\" (one of {kinds})"),
                );
            }
        },
        None => return one(start, format!("kind is missing (one of {kinds})")),
    };
    let mut code = None;
    if kind == Kind::Function
        && let Some(spec) = value.get_mut("spec").and_then(Value::as_object_mut)
    {
        match spec.remove("code") {
            Some(Value::String(path)) => {
                let base = file.parent().unwrap_or(dir);
                code = Some(base.join(path));
            }
            Some(_) => return one(at("code"), "code must be a path to the package".into()),
            None if spec.contains_key("package") => {}
            None => {
                return one(
                    start,
                    "a function needs spec.code: the path of its package (a .wasm component, a source file or an archive)"
                        .into(),
                );
            }
        }
        // A function in an environment runs as a process.
        if spec.contains_key("environment") && !spec.contains_key("runtime") {
            spec.insert("runtime".into(), json!("process"));
        }
    }
    if kind == Kind::Canary && value.pointer("/spec/status").is_some() {
        return one(
            at("status"),
            "a canary's status is Flare's (its weight, what it observed); leave spec.status out"
                .into(),
        );
    }
    // What is checked stands in a placeholder package for code not read.
    let mut checked = value.clone();
    if code.is_some()
        && let Some(spec) = checked.get_mut("spec").and_then(Value::as_object_mut)
    {
        spec.insert(
            "package".into(),
            json!({"digest": PLACEHOLDER_DIGEST, "size": 0}),
        );
    }
    let mut unknown = Vec::new();
    let result = normalize(kind, &checked, &mut unknown);
    let mut errors: Vec<(usize, String)> = unknown
        .iter()
        .map(|path| {
            let key = path.rsplit('.').next().unwrap_or(path);
            (at(key), format!("unknown field \"{path}\""))
        })
        .collect();
    if let Err(e) = result {
        // serde names the field it could not take: point at it.
        let line = e.split('`').nth(1).map(at).unwrap_or(start);
        errors.push((line, format!("invalid {}: {e}", kind.noun())));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let doc: Document = serde_json::from_value(value).map_err(|e| vec![(start, e.to_string())])?;
    Ok(Read::Resource(Box::new(Declared {
        file: file.to_path_buf(),
        line: start,
        doc,
        code,
    })))
}

/// The resources `d` refers to, by kind and name: they must be declared
/// in the set or exist on the server.
pub fn references(d: &Declared) -> Vec<(Kind, String)> {
    let spec = &d.doc.spec;
    let text = |key: &str| spec.get(key).and_then(Value::as_str).map(str::to_string);
    match d.kind() {
        Kind::Function => {
            let names = |key: &str, kind: Kind| {
                spec.get(key)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(move |name| (kind, name.to_string()))
                    .collect::<Vec<_>>()
            };
            text("environment")
                .map(|e| (Kind::Environment, e))
                .into_iter()
                .chain(names("secrets", Kind::Secret))
                .chain(names("configs", Kind::Config))
                .collect()
        }
        Kind::HttpTrigger => text("function")
            .map(|f| (Kind::Function, f))
            .into_iter()
            .chain(text("alias").map(|a| (Kind::Alias, a)))
            .collect(),
        Kind::Alias | Kind::Canary | Kind::TimerTrigger | Kind::MessageQueueTrigger => {
            text("function")
                .map(|f| vec![(Kind::Function, f)])
                .unwrap_or_default()
        }
        _ => Vec::new(),
    }
}

/// What `apply` will do with one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Create,
    Update,
    /// Deleted and created again: a canary, which cannot be changed in
    /// place (a changed canary starts over).
    Replace,
    Unchanged,
    Delete,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Create => "create",
            Step::Update => "update",
            Step::Replace => "replace",
            Step::Unchanged => "unchanged",
            Step::Delete => "delete",
        })
    }
}

/// The labels of a stored document.
pub fn labels(stored: &Value) -> BTreeMap<String, String> {
    stored
        .pointer("/metadata/labels")
        .and_then(|l| serde_json::from_value(l.clone()).ok())
        .unwrap_or_default()
}

/// The sha256 digest of a file, as Flare names packages.
pub fn digest(path: &Path) -> anyhow::Result<String> {
    use sha2::{Digest, Sha256};
    let mut file = std::fs::File::open(path).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the package {}: {e} (has it been built? `flare build`)",
            path.display()
        )
    })?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, file: &str, text: &str) {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    const PROJECT: &str = "apiVersion: flare.dev/v1\nkind: Project\nmetadata:\n  name: shop\n";

    #[test]
    fn a_spec_set_is_read_in_order_and_labelled() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "flare.yaml",
            &format!(
                "{PROJECT}---\napiVersion: flare.dev/v1\nkind: Function\nmetadata:\n  name: cart\nspec:\n  environment: python\n  code: build/cart.zip\n"
            ),
        );
        write(
            dir.path(),
            "specs/route.yaml",
            "apiVersion: flare.dev/v1\nkind: HttpTrigger\nmetadata:\n  name: cart\nspec:\n  path: /cart\n  function: cart\n",
        );
        let set = SpecSet::load(dir.path()).unwrap().unwrap();
        assert_eq!(set.project, "shop");
        let cart = &set.declared[0];
        assert_eq!((cart.kind(), cart.line), (Kind::Function, 6));
        assert_eq!(cart.code, Some(dir.path().join("build/cart.zip")));
        assert_eq!(cart.doc.spec["runtime"], "process");
        assert!(cart.doc.spec.get("code").is_none());
        assert_eq!(cart.doc.metadata.labels[PROJECT_LABEL], "shop");
        assert_eq!(set.declared[1].file, Path::new("specs/route.yaml"));
    }

    #[test]
    fn every_problem_is_reported_with_its_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "flare.yaml",
            &format!(
                "{PROJECT}---\napiVersion: flare.dev/v1\nkind: Function\nmetadata:\n  name: cart\nspec:\n  code: cart.wasm\n  limits:\n    timout: 5s\n---\napiVersion: flare.dev/v1\nkind: Gadget\nmetadata:\n  name: x\n---\napiVersion: flare.dev/v1\nkind: HttpTrigger\nmetadata:\n  name: bad\nspec:\n  function: cart\n---\napiVersion: flare.dev/v1\nkind: HttpTrigger\nmetadata:\n  name: cart\nspec:\n  path: /cart\n  function: cart\n"
            ),
        );
        write(
            dir.path(),
            "specs/more.yaml",
            &format!(
                "apiVersion: flare.dev/v1\nkind: HttpTrigger\nmetadata:\n  name: cart\nspec:\n  path: /a\n  function: cart\n---\nkey: [unclosed\n---\n{PROJECT}"
            ),
        );
        let problems = SpecSet::load(dir.path()).unwrap().unwrap_err();
        let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
        let has = |text: &str| shown.iter().any(|p| p.contains(text));
        assert!(
            has("flare.yaml:13: unknown field \"spec.limits.timout\""),
            "{shown:#?}"
        );
        assert!(has("flare.yaml:16: unknown kind \"Gadget\""), "{shown:#?}");
        assert!(
            has("flare.yaml:20: invalid http trigger: missing field `path`"),
            "{shown:#?}"
        );
        assert!(
            has(
                "specs/more.yaml:1: http trigger \"cart\" is declared twice; also at flare.yaml:27"
            ),
            "{shown:#?}"
        );
        assert!(has("specs/more.yaml:10: not YAML"), "{shown:#?}");
        assert!(
            has("specs/more.yaml:11: a second Project; the first is at flare.yaml:1"),
            "{shown:#?}"
        );
        assert_eq!(shown.len(), 6, "{shown:#?}");
    }

    #[test]
    fn a_directory_without_a_spec_or_a_project_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = SpecSet::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("no flare.yaml"), "{e}");
        write(
            dir.path(),
            "flare.yaml",
            "apiVersion: flare.dev/v1\nkind: Function\nmetadata:\n  name: f\nspec:\n  code: f.wasm\n",
        );
        let problems = SpecSet::load(dir.path()).unwrap().unwrap_err();
        assert!(
            problems[0].message.contains("no Project document"),
            "{problems:?}"
        );
    }
}
