//! `flare spec`: a directory's resources, checked and applied.

use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::{Args, Subcommand};
use flare_model::{ErrorCode, Kind};
use serde_json::Value;

use crate::spec::{self, Declared, PROJECT_LABEL, SpecSet, Step};

#[derive(Args, Debug)]
pub struct SpecArgs {
    #[command(flatten)]
    api: super::ApiFlag,
    #[command(subcommand)]
    command: SpecCommand,
}

/// The spec directory: `flare.yaml` and `specs/*.yaml`.
#[derive(Args, Debug, Clone)]
pub struct DirFlag {
    /// The spec directory.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
}

#[derive(Subcommand, Debug)]
enum SpecCommand {
    /// Start a spec in a directory: a flare.yaml naming its project.
    Init {
        #[command(flatten)]
        dir: DirFlag,
        /// The project's name. [default: the directory's]
        #[arg(long)]
        name: Option<String>,
    },
    /// Check the spec files: syntax, unknown fields (with their line),
    /// invalid values, duplicates, and references to resources that are
    /// neither declared nor on the server. Exits non-zero on any problem.
    Validate {
        #[command(flatten)]
        dir: DirFlag,
    },
    /// Make the server hold what the spec declares: create what is
    /// missing, update what differs (code is uploaded only when its digest
    /// changed), leave the rest alone.
    Apply {
        #[command(flatten)]
        dir: DirFlag,
        #[command(flatten)]
        plan: PlanFlags,
    },
    /// Delete everything this directory's project owns on the server.
    Destroy {
        #[command(flatten)]
        dir: DirFlag,
        /// Print what would be deleted and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Args, Debug, Clone, Copy)]
pub struct PlanFlags {
    /// Print what would be created, updated and deleted; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also delete what the project owns on the server and the spec no
    /// longer declares.
    #[arg(long)]
    pub prune: bool,
}

pub async fn run(args: SpecArgs) -> anyhow::Result<()> {
    let api = &args.api;
    match args.command {
        SpecCommand::Init { dir, name } => init(&dir.dir, name),
        SpecCommand::Validate { dir } => {
            let set = load(&dir.dir)?;
            match api.client() {
                Ok(client) => match check_references(&set, &client).await {
                    Ok(()) => {}
                    Err(e) if e.code == ErrorCode::Unavailable => {
                        eprintln!("references to what is not declared here were not checked: {e}");
                    }
                    Err(e) => bail!("{}", e.message),
                },
                Err(e) => eprintln!("references were not checked: {e}"),
            }
            println!(
                "{}: project {}, {} resources, no problems",
                dir.dir.display(),
                set.project,
                set.declared.len()
            );
            Ok(())
        }
        SpecCommand::Apply { dir, plan } => apply(&dir.dir, plan, &api.client()?).await,
        SpecCommand::Destroy { dir, dry_run } => {
            let set = load(&dir.dir)?;
            let client = api.client()?;
            let owned = owned(&set.project, &client).await?;
            for (kind, name) in owned.iter().rev() {
                println!("delete {} {name}", kind.noun());
                if !dry_run {
                    client.delete_document(*kind, name).await?;
                }
            }
            if dry_run {
                println!("(dry run: nothing changed)");
            }
            Ok(())
        }
    }
}

/// Reads the spec set, or fails listing every problem.
pub fn load(dir: &Path) -> anyhow::Result<SpecSet> {
    match SpecSet::load(dir)? {
        Ok(set) => Ok(set),
        Err(problems) => {
            for problem in &problems {
                eprintln!(
                    "{}:{}: {}",
                    dir.join(&problem.file).display(),
                    problem.line,
                    problem.message
                );
            }
            bail!(
                "{} problem{} in the spec of {}",
                problems.len(),
                if problems.len() == 1 { "" } else { "s" },
                dir.display()
            )
        }
    }
}

fn init(dir: &Path, name: Option<String>) -> anyhow::Result<()> {
    let file = dir.join("flare.yaml");
    if file.exists() {
        bail!("{} exists already", file.display());
    }
    let name = match name {
        Some(name) => name,
        // `.` and `..` have no name until resolved.
        None => match dir.file_name() {
            Some(name) => name.to_string_lossy().to_lowercase(),
            None => std::fs::canonicalize(dir)?
                .file_name()
                .map(|n| n.to_string_lossy().to_lowercase())
                .unwrap_or_default(),
        },
    };
    flare_model::validate_name("project name", &name)
        .map_err(|e| anyhow::anyhow!("{} (name it with --name)", e.message))?;
    std::fs::create_dir_all(dir)?;
    std::fs::write(&file, project_document(&name))?;
    println!("wrote {}", file.display());
    Ok(())
}

/// The document that names a project, with what a newcomer needs to know.
pub fn project_document(name: &str) -> String {
    format!(
        "# The resources this directory declares. `flare spec apply` (or `flare deploy`)\n\
         # makes the server hold them; everything applied is labelled with the project,\n\
         # so `flare spec apply --prune` and `flare spec destroy` touch nothing else.\n\
         # More documents may follow here or in specs/*.yaml: Environment, Function\n\
         # (spec.code: the package's path), Alias, Canary, HttpTrigger, TimerTrigger,\n\
         # MessageQueueTrigger. `flare spec validate` checks them.\n\
         apiVersion: flare.dev/v1\n\
         kind: Project\n\
         metadata:\n  name: {name}\n"
    )
}

/// Fails when a resource the spec refers to is neither declared nor on
/// the server.
async fn check_references(set: &SpecSet, client: &flare_api::Client) -> flare_model::Result<()> {
    let mut missing = Vec::new();
    for d in &set.declared {
        for (kind, name) in spec::references(d) {
            let declared = set.of(kind).any(|o| o.name() == name);
            if !declared && client.get_document(kind, &name).await?.is_none() {
                missing.push(format!(
                    "{}:{}: {} \"{}\" refers to {} \"{name}\", which is neither declared here nor on the server",
                    d.file.display(),
                    d.line,
                    d.kind().noun(),
                    d.name(),
                    kind.noun()
                ));
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(flare_model::Error::invalid(missing.join("\n")))
}

/// What the project owns on the server, in creation order.
async fn owned(project: &str, client: &flare_api::Client) -> anyhow::Result<Vec<(Kind, String)>> {
    let mut owned = Vec::new();
    for kind in spec::ORDER {
        let docs = match client.list_documents(kind).await {
            Ok(docs) => docs,
            // Environments are an admin's to list; a project that holds
            // none need not see them.
            Err(e) if kind == Kind::Environment && e.code == ErrorCode::Forbidden => continue,
            Err(e) => return Err(e.into()),
        };
        for doc in docs {
            if spec::labels(&doc).get(PROJECT_LABEL).map(String::as_str) == Some(project)
                && let Some(name) = doc.pointer("/metadata/name").and_then(Value::as_str)
            {
                owned.push((kind, name.to_string()));
            }
        }
    }
    Ok(owned)
}

/// One step of a plan.
struct Planned<'a> {
    step: Step,
    kind: Kind,
    name: String,
    declared: Option<&'a Declared>,
    /// A function whose code is sent (new, or its digest changed).
    upload: bool,
}

/// What applying `d` changes, given what the server holds.
fn compare(d: &Declared, stored: &Value, local_digest: Option<&str>) -> (Step, bool) {
    let mut scratch = Vec::new();
    let mut desired = serde_json::to_value(&d.doc).unwrap_or(Value::Null);
    let stored_package = stored.pointer("/spec/package").cloned();
    let same_code = match (local_digest, &stored_package) {
        (Some(local), Some(package)) => package["digest"] == local,
        (None, _) => true,
        (Some(_), None) => false,
    };
    if d.kind() == Kind::Function
        && let (Some(package), Some(spec)) = (&stored_package, desired["spec"].as_object_mut())
        && !spec.contains_key("package")
    {
        spec.insert("package".into(), package.clone());
    }
    let now = spec::normalize(d.kind(), stored, &mut scratch);
    let wanted = spec::normalize(d.kind(), &desired, &mut scratch);
    let labels_same = spec::labels(stored) == d.doc.metadata.labels;
    match (now, wanted) {
        (Ok(now), Ok(wanted)) if now == wanted && labels_same && same_code => {
            (Step::Unchanged, false)
        }
        _ => (Step::Update, !same_code),
    }
}

pub async fn apply(dir: &Path, flags: PlanFlags, client: &flare_api::Client) -> anyhow::Result<()> {
    let set = load(dir)?;
    check_references(&set, client).await?;
    let mut plan: Vec<Planned> = Vec::new();
    let mut refused = Vec::new();
    for kind in spec::ORDER {
        for d in set.of(kind) {
            let digest = match &d.code {
                Some(code) => Some(spec::digest(code)?),
                None => None,
            };
            let (step, upload) = match client.get_document(kind, d.name()).await? {
                None => (Step::Create, d.code.is_some()),
                Some(stored) => {
                    let owner = spec::labels(&stored).get(PROJECT_LABEL).cloned();
                    if owner.as_deref() != Some(set.project.as_str()) {
                        refused.push(format!(
                            "{} \"{}\" exists and is not project {}'s ({}); delete it or rename yours ({}:{})",
                            kind.noun(),
                            d.name(),
                            set.project,
                            match owner {
                                Some(other) => format!("it belongs to project {other}"),
                                None => "it was made outside any spec".into(),
                            },
                            d.file.display(),
                            d.line
                        ));
                        continue;
                    }
                    match compare(d, &stored, digest.as_deref()) {
                        (Step::Update, upload) if kind == Kind::Canary => (Step::Replace, upload),
                        step => step,
                    }
                }
            };
            plan.push(Planned {
                step,
                kind,
                name: d.name().to_string(),
                declared: Some(d),
                upload,
            });
        }
    }
    if !refused.is_empty() {
        bail!("{}\nnothing was changed", refused.join("\n"));
    }
    if flags.prune {
        for (kind, name) in owned(&set.project, client).await?.into_iter().rev() {
            if !set.of(kind).any(|d| d.name() == name) {
                plan.push(Planned {
                    step: Step::Delete,
                    kind,
                    name,
                    declared: None,
                    upload: false,
                });
            }
        }
    }
    for p in &plan {
        let upload = if p.upload { " (code)" } else { "" };
        println!("{} {} {}{upload}", p.step, p.kind.noun(), p.name);
    }
    if flags.dry_run {
        println!("(dry run: nothing changed)");
        return Ok(());
    }
    let mut changed = 0;
    let bar = crate::progress::steps(plan.len());
    for p in &plan {
        bar.set_message(format!("{} {} {}", p.step, p.kind.noun(), p.name));
        match (p.step, p.declared) {
            (Step::Create | Step::Update | Step::Replace, Some(d)) => {
                let code = if p.upload { d.code.as_deref() } else { None };
                let replace = p.step == Step::Replace;
                if replace {
                    client.delete_document(p.kind, &p.name).await?;
                }
                client
                    .put_document(&d.doc, p.step == Step::Update, code)
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "{} {} \"{}\": {}{} ({}:{})",
                            p.step,
                            p.kind.noun(),
                            p.name,
                            if replace {
                                "deleted, not made again: "
                            } else {
                                ""
                            },
                            e.message,
                            d.file.display(),
                            d.line
                        )
                    })?;
                changed += 1;
            }
            (Step::Delete, _) => {
                client.delete_document(p.kind, &p.name).await?;
                changed += 1;
            }
            _ => {}
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    println!(
        "project {}: {changed} changed, {} unchanged",
        set.project,
        plan.len() - changed
    );
    Ok(())
}
