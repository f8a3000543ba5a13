//! `flare new`, `flare build`, `flare deploy`: from an empty directory to a
//! function served, with the language's own tools.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use clap::Args;

use super::spec::{DirFlag, PlanFlags};
use crate::spec::SpecSet;

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    Rust,
    Python,
    Node,
    Java,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerKind {
    /// An HTTP route, /<name> (the function is also at /fn/<name>).
    Http,
    /// A schedule: every five minutes.
    Cron,
    /// Each message on a NATS subject named after the function.
    Mq,
}

#[derive(Args, Debug)]
pub struct NewArgs {
    /// The function's name; the project's directory is named after it.
    name: String,
    /// The language.
    #[arg(short, long, value_enum)]
    language: Language,
    /// What calls the function.
    #[arg(long, value_enum, default_value = "http")]
    trigger: TriggerKind,
    /// Where to create the project. [default: ./<name>]
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    #[command(flatten)]
    dir: DirFlag,
}

#[derive(Args, Debug)]
pub struct DeployArgs {
    #[command(flatten)]
    api: super::ApiFlag,
    #[command(flatten)]
    dir: DirFlag,
    #[command(flatten)]
    plan: PlanFlags,
}

/// A template's files: path and text, with `{{name}}` and `{{crate}}`.
type Files = &'static [(&'static str, &'static str)];

macro_rules! template {
    ($lang:literal: $($path:literal),+ $(,)?) => {
        &[$(($path, include_str!(concat!("../../templates/", $lang, "/", $path)))),+]
    };
}

const RUST: Files = template!("rust": "Cargo.toml", "src/lib.rs", "README.md", ".gitignore");
const PYTHON: Files = template!("python":
    "main.py", "test_main.py", "requirements.txt", "README.md", ".gitignore");
const NODE: Files = template!("node":
    "index.js", "package.json", "test/index.test.js", "README.md", ".gitignore");
const JAVA: Files = template!("java":
    "src/app/Main.java", "test/MainTest.java", "README.md", ".gitignore");

/// Flare's Java API, which a Java function compiles against.
const JAVA_API: Files = &[
    (
        "Handler.java",
        include_str!("../../../../environments/java/flare/Handler.java"),
    ),
    (
        "Request.java",
        include_str!("../../../../environments/java/flare/Request.java"),
    ),
    (
        "Response.java",
        include_str!("../../../../environments/java/flare/Response.java"),
    ),
    (
        "Json.java",
        include_str!("../../../../environments/java/flare/Json.java"),
    ),
    (
        "Worker.java",
        include_str!("../../../../environments/java/flare/Worker.java"),
    ),
];

impl Language {
    fn files(self) -> Files {
        match self {
            Language::Rust => RUST,
            Language::Python => PYTHON,
            Language::Node => NODE,
            Language::Java => JAVA,
        }
    }

    /// The environment that runs it (rust: none, it is WebAssembly).
    fn environment(self) -> Option<&'static str> {
        match self {
            Language::Rust => None,
            Language::Python => Some("python"),
            Language::Node => Some("node"),
            Language::Java => Some("java"),
        }
    }

    /// Where `flare build` puts the package.
    fn package(self, name: &str) -> String {
        match self {
            Language::Rust => format!("target/wasm32-wasip2/release/{}.wasm", crate_name(name)),
            Language::Python | Language::Node => format!("build/{name}.zip"),
            Language::Java => format!("build/{name}.jar"),
        }
    }

    /// The language of the project in `dir`, from its files.
    fn of(dir: &Path) -> anyhow::Result<Language> {
        if dir.join("Cargo.toml").is_file() {
            Ok(Language::Rust)
        } else if dir.join("package.json").is_file() {
            Ok(Language::Node)
        } else if dir.join("requirements.txt").is_file() || dir.join("main.py").is_file() {
            Ok(Language::Python)
        } else if dir.join("src").is_dir() && !java_sources(&dir.join("src")).is_empty() {
            Ok(Language::Java)
        } else {
            bail!(
                "cannot tell the language of {}: it has no Cargo.toml, package.json, requirements.txt, main.py or src/**/*.java",
                dir.display()
            )
        }
    }
}

/// A Rust crate's library name: its package name with `-` as `_`.
fn crate_name(name: &str) -> String {
    name.replace('-', "_")
}

/// The spec `flare new` writes: the project, the function, its trigger.
fn spec_text(name: &str, language: Language, trigger: TriggerKind) -> String {
    let mut text = super::spec::project_document(name);
    text.push_str(&format!(
        "---\napiVersion: flare.dev/v1\nkind: Function\nmetadata:\n  name: {name}\nspec:\n"
    ));
    if let Some(environment) = language.environment() {
        text.push_str(&format!("  environment: {environment}\n"));
    }
    text.push_str(&format!(
        "  code: {}   # what `flare build` makes\n  limits:\n    timeout: 10s\n",
        language.package(name)
    ));
    let trigger = match trigger {
        TriggerKind::Http => format!(
            "kind: HttpTrigger\nmetadata:\n  name: {name}\nspec:\n  path: /{name}\n  function: {name}\n"
        ),
        TriggerKind::Cron => format!(
            "kind: TimerTrigger\nmetadata:\n  name: {name}\nspec:\n  cron: \"0 */5 * * * *\"   # sec min hour day month weekday\n  function: {name}\n"
        ),
        TriggerKind::Mq => format!(
            "kind: MessageQueueTrigger\nmetadata:\n  name: {name}\nspec:\n  mqtype: nats\n  broker: nats://127.0.0.1:4222\n  topic: {name}\n  function: {name}\n"
        ),
    };
    text.push_str("---\napiVersion: flare.dev/v1\n");
    text.push_str(&trigger);
    text
}

pub fn new(args: NewArgs) -> anyhow::Result<()> {
    flare_model::validate_name("function name", &args.name)
        .map_err(|e| anyhow::anyhow!(e.message))?;
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        bail!(
            "{} exists and is not empty; nothing was written",
            dir.display()
        );
    }
    let fill = |text: &str| {
        text.replace("{{name}}", &args.name)
            .replace("{{crate}}", &crate_name(&args.name))
    };
    for (path, text) in args.language.files() {
        let file = dir.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&file, fill(text))
            .with_context(|| format!("cannot write {}", file.display()))?;
    }
    std::fs::write(
        dir.join("flare.yaml"),
        spec_text(&args.name, args.language, args.trigger),
    )?;
    println!(
        "created {} ({:?}): cd {} && flare deploy",
        dir.display(),
        args.language,
        dir.display()
    );
    Ok(())
}

/// The package path of the project's function, from its spec.
fn package_of(dir: &Path) -> anyhow::Result<PathBuf> {
    let set = super::spec::load(dir)?;
    function_code(&set).ok_or_else(|| {
        anyhow::anyhow!(
            "the spec of {} has no function with spec.code",
            dir.display()
        )
    })
}

fn function_code(set: &SpecSet) -> Option<PathBuf> {
    set.of(flare_model::Kind::Function)
        .find_map(|d| d.code.clone())
}

pub fn build(args: BuildArgs) -> anyhow::Result<()> {
    build_in(&args).map(drop)
}

fn build_in(args: &BuildArgs) -> anyhow::Result<PathBuf> {
    let dir = &args.dir.dir;
    let out = package_of(dir)?;
    let language = Language::of(dir)?;
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match language {
        Language::Rust => build_rust(dir, &out)?,
        Language::Python => build_python(dir, &out)?,
        Language::Node => build_node(dir, &out)?,
        Language::Java => build_java(dir, &out)?,
    }
    let size = std::fs::metadata(&out)
        .with_context(|| format!("the build made no {}", out.display()))?
        .len();
    println!(
        "built {} ({} bytes, {})",
        out.display(),
        size,
        crate::spec::digest(&out)?
    );
    Ok(out)
}

pub async fn deploy(args: DeployArgs) -> anyhow::Result<()> {
    let client = args.api.client()?;
    build_in(&BuildArgs {
        dir: args.dir.clone(),
    })?;
    super::spec::apply(&args.dir.dir, args.plan, &client).await
}

#[derive(Args, Debug)]
pub struct DevArgs {
    #[command(flatten)]
    api: super::ApiFlag,
    #[command(flatten)]
    dir: DirFlag,
    /// How often to look for changes.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    interval: std::time::Duration,
}

/// What a change to the project is seen by: every file's path, size and
/// modification time, outside what builds write.
fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<std::time::SystemTime>)> {
    let mut seen = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.')
                || matches!(
                    name.as_str(),
                    "build" | "target" | "node_modules" | "__pycache__"
                )
            {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                pending.push(entry.path());
            } else {
                seen.push((entry.path(), meta.len(), meta.modified().ok()));
            }
        }
    }
    seen.sort();
    seen
}

/// Deploys, then deploys again after each change until interrupted. A
/// build or apply that fails is shown and the live version stays.
pub async fn dev(args: DevArgs) -> anyhow::Result<()> {
    let client = args.api.client()?;
    let build = BuildArgs {
        dir: args.dir.clone(),
    };
    let plan = PlanFlags {
        dry_run: false,
        prune: false,
    };
    // What the last deploy was built from, and what the last look saw.
    let mut deployed = fingerprint(&args.dir.dir);
    let mut previous = deployed.clone();
    loop {
        let done = match build_in(&build) {
            Ok(_) => super::spec::apply(&args.dir.dir, plan, &client).await,
            Err(e) => Err(e),
        };
        match done {
            Ok(()) => println!(
                "watching {} for changes (Ctrl-C to stop)",
                args.dir.dir.display()
            ),
            Err(e) => eprintln!(
                "error: {e:#}\nthe live version is unchanged; watching for the next change"
            ),
        }
        // A change is acted on once the files stop changing.
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ok(()),
                _ = tokio::time::sleep(args.interval) => {}
            }
            let now = fingerprint(&args.dir.dir);
            let settled = now == previous;
            previous = now;
            if settled && previous != deployed {
                deployed = previous.clone();
                println!("changed: building and deploying");
                break;
            }
        }
    }
}

/// Runs `command`, failing with what it printed.
fn run(command: &mut Command, what: &str) -> anyhow::Result<()> {
    let spinner = crate::progress::spinner(what);
    let output = command.output();
    spinner.finish_and_clear();
    let output = output.with_context(|| {
        format!(
            "cannot run {what} ({:?}); is it installed?",
            command.get_program()
        )
    })?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

fn build_rust(dir: &Path, out: &Path) -> anyhow::Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    if let Ok(installed) = installed
        && !String::from_utf8_lossy(&installed.stdout).contains("wasm32-wasip2")
    {
        println!("installing the wasm32-wasip2 target (rustup target add wasm32-wasip2)");
        run(
            Command::new("rustup").args(["target", "add", "wasm32-wasip2"]),
            "rustup target add wasm32-wasip2",
        )?;
    }
    run(
        Command::new("cargo")
            .args(["build", "--release", "--target", "wasm32-wasip2"])
            .env("CARGO_TARGET_DIR", dir.join("target"))
            .current_dir(dir),
        "cargo build",
    )?;
    if !out.is_file() {
        bail!(
            "cargo built no {}: does flare.yaml's spec.code name the crate's library?",
            out.display()
        );
    }
    Ok(())
}

/// What a package leaves out of the project: tests, builds, tooling.
fn packaged(name: &str) -> bool {
    !(name.starts_with('.')
        || name.starts_with("test_")
        || matches!(
            name,
            "build"
                | "target"
                | "test"
                | "tests"
                | "node_modules"
                | "__pycache__"
                | "specs"
                | "flare.yaml"
                | "README.md"
                | "requirements.txt"
        ))
}

/// A fresh staging directory `build/package` with the project's files.
fn stage(dir: &Path) -> anyhow::Result<PathBuf> {
    let staging = dir.join("build/package");
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    std::fs::create_dir_all(&staging)?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if packaged(&name) {
            copy(&entry.path(), &staging.join(&name))?;
        }
    }
    Ok(staging)
}

fn copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    let kind = std::fs::symlink_metadata(from)?.file_type();
    if kind.is_dir() {
        std::fs::create_dir_all(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            if entry.file_name() != "__pycache__" {
                copy(&entry.path(), &to.join(entry.file_name()))?;
            }
        }
    } else if kind.is_file() {
        std::fs::copy(from, to)?;
    }
    // Links are left out: a package holds files.
    Ok(())
}

/// Zips `root` into `out`, reproducibly (see [`flare_runtime_process::archive`]).
fn zip_dir(root: &Path, out: &Path, first: &[(&str, &[u8])]) -> anyhow::Result<()> {
    // npm links `file:` dependencies into node_modules: what they point
    // at goes in.
    let select = flare_runtime_process::archive::Select {
        keep: &|_| true,
        links: flare_runtime_process::archive::Links::Follow,
    };
    Ok(flare_runtime_process::archive::zip_tree(
        root, out, first, &select,
    )?)
}

fn build_python(dir: &Path, out: &Path) -> anyhow::Result<()> {
    let staging = stage(dir)?;
    let requirements = dir.join("requirements.txt");
    let wanted = std::fs::read_to_string(&requirements)
        .unwrap_or_default()
        .lines()
        .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    if wanted {
        run(
            Command::new("python3")
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .args(["--no-compile", "--target"])
                .arg(&staging)
                .arg("-r")
                .arg(&requirements)
                // Paths in requirements.txt are the project's.
                .current_dir(dir),
            "pip install -r requirements.txt",
        )?;
    }
    zip_dir(&staging, out, &[])
}

fn build_node(dir: &Path, out: &Path) -> anyhow::Result<()> {
    let staging = stage(dir)?;
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("package.json"))?)
            .context("package.json is not JSON")?;
    let wanted = manifest["dependencies"]
        .as_object()
        .is_some_and(|d| !d.is_empty());
    if wanted {
        run(
            Command::new("npm")
                .args([
                    "install",
                    "--omit=dev",
                    "--no-audit",
                    "--no-fund",
                    "--quiet",
                ])
                .current_dir(&staging),
            "npm install --omit=dev",
        )?;
    }
    zip_dir(&staging, out, &[])
}

/// The .java files under `dir`, sorted.
fn java_sources(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "java") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

fn build_java(dir: &Path, out: &Path) -> anyhow::Result<()> {
    let build = dir.join("build");
    let (api_src, api, classes) = (
        build.join("flare-api-src/flare"),
        build.join("flare-api"),
        build.join("classes"),
    );
    for fresh in [&api_src, &api, &classes] {
        if fresh.exists() {
            std::fs::remove_dir_all(fresh)?;
        }
        std::fs::create_dir_all(fresh)?;
    }
    for (file, text) in JAVA_API {
        std::fs::write(api_src.join(file), text)?;
    }
    run(
        Command::new("javac")
            .args(["--release", "17", "-nowarn", "-d"])
            .arg(&api)
            .args(java_sources(&api_src)),
        "javac (Flare's Java API)",
    )?;
    let sources = java_sources(&dir.join("src"));
    if sources.is_empty() {
        bail!("no .java files under {}", dir.join("src").display());
    }
    run(
        Command::new("javac")
            // String concatenation as plain code: its invokedynamic form
            // costs the first request milliseconds.
            .args([
                "--release",
                "17",
                "-nowarn",
                "-XDstringConcat=inline",
                "-cp",
            ])
            .arg(&api)
            .arg("-d")
            .arg(&classes)
            .args(sources),
        "javac",
    )?;
    let manifest = b"Manifest-Version: 1.0\r\nFlare-Handler: app.Main\r\n\r\n";
    zip_dir(&classes, out, &[("META-INF/MANIFEST.MF", manifest)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_and_trigger_makes_a_valid_spec() {
        for language in [
            Language::Rust,
            Language::Python,
            Language::Node,
            Language::Java,
        ] {
            for trigger in [TriggerKind::Http, TriggerKind::Cron, TriggerKind::Mq] {
                let dir = tempfile::tempdir().unwrap();
                std::fs::write(
                    dir.path().join("flare.yaml"),
                    spec_text("my-fn", language, trigger),
                )
                .unwrap();
                let set = SpecSet::load(dir.path())
                    .unwrap()
                    .unwrap_or_else(|problems| panic!("{language:?} {trigger:?}: {problems:?}"));
                assert_eq!(set.project, "my-fn");
                assert_eq!(set.declared.len(), 2, "{language:?} {trigger:?}");
                assert_eq!(
                    function_code(&set),
                    Some(dir.path().join(language.package("my-fn")))
                );
            }
        }
    }

    #[test]
    fn packages_leave_out_tests_builds_and_tooling() {
        for kept in ["main.py", "lib", "index.js", "package.json"] {
            assert!(packaged(kept), "{kept}");
        }
        for left in [
            "test_main.py",
            "test",
            "build",
            ".git",
            "flare.yaml",
            "node_modules",
        ] {
            assert!(!packaged(left), "{left}");
        }
    }
}
