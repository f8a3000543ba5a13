//! `flare pkg ...`: the builds of functions' sources (`flare fn create
//! --src`), their state and their logs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};
use flare_api::builds::Package;
use flare_model::BuildState;

use super::ApiFlag;
use crate::output::{OutputFlag, print_resources};

#[derive(Args, Debug)]
pub struct PackageArgs {
    #[command(flatten)]
    api: ApiFlag,
    #[command(subcommand)]
    command: PackageCommand,
}

#[derive(Subcommand, Debug)]
enum PackageCommand {
    /// List builds: each function source Flare was sent, and what became
    /// of it.
    List {
        #[command(flatten)]
        output: OutputFlag,
    },
    /// Show a build: its state, the package it made, the version it became.
    Get {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        output: OutputFlag,
    },
    /// Print a build's log (pip's or npm's output).
    Logs {
        #[arg(long)]
        name: String,
    },
}

fn show(output: OutputFlag, packages: &[Package], single: bool) -> anyhow::Result<()> {
    let rows = || {
        packages
            .iter()
            .map(|p| {
                let status = &p.spec.status;
                vec![
                    p.metadata.name.clone(),
                    p.spec.function.clone(),
                    p.spec.environment.clone(),
                    format!("{:?}", status.state).to_lowercase(),
                    status.version.map(|v| v.to_string()).unwrap_or_default(),
                    status.message.clone().unwrap_or_default(),
                ]
            })
            .collect()
    };
    let headers = ["NAME", "FUNCTION", "ENV", "STATE", "VERSION", "MESSAGE"];
    print_resources(output.format, packages, single, &headers, rows)
}

pub async fn run(args: PackageArgs) -> anyhow::Result<()> {
    let client = args.api.client()?;
    match args.command {
        PackageCommand::List { output } => show(output, &client.list_packages().await?, false),
        PackageCommand::Get { name, output } => {
            show(output, &[client.get_package(&name).await?], true)
        }
        PackageCommand::Logs { name } => {
            print!("{}", client.package_log(&name).await?);
            Ok(())
        }
    }
}

/// Names a source archive leaves out: what builds make or tools keep.
fn in_source(name: &str) -> bool {
    !(name.starts_with('.') || matches!(name, "node_modules" | "__pycache__" | "target" | "build"))
}

/// The source directory `dir` as a zip in a temporary file, removed when
/// the returned guard is dropped.
pub fn zip_source(dir: &Path) -> anyhow::Result<RemoveOnDrop> {
    if !dir.is_dir() {
        bail!("--src {} is not a directory", dir.display());
    }
    let out = std::env::temp_dir().join(format!(
        "flare-source-{}-{}.zip",
        std::process::id(),
        rand::random::<u32>()
    ));
    let guard = RemoveOnDrop(out.clone());
    let select = flare_runtime_process::archive::Select {
        keep: &in_source,
        links: flare_runtime_process::archive::Links::Follow,
    };
    flare_runtime_process::archive::zip_tree(dir, &out, &[], &select)?;
    Ok(guard)
}

/// A temporary file, removed when dropped.
pub struct RemoveOnDrop(pub PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Waits for build `package` to end: the package when it succeeded; its
/// log on stderr and an error when it failed.
pub async fn wait(client: &flare_api::Client, package: Package) -> anyhow::Result<Package> {
    let name = package.metadata.name.clone();
    eprintln!("building {name} ({} source)", package.spec.environment);
    let mut package = package;
    let spinner = crate::progress::spinner(format!("building {name}: pending"));
    while !package.spec.status.state.finished() {
        tokio::time::sleep(Duration::from_millis(300)).await;
        package = client.get_package(&name).await?;
        spinner.set_message(format!(
            "building {name}: {}",
            format!("{:?}", package.spec.status.state).to_lowercase()
        ));
    }
    spinner.finish_and_clear();
    if package.spec.status.state == BuildState::Failed {
        let log = client.package_log(&name).await.unwrap_or_default();
        eprint!("{log}");
        bail!(
            "build {name} failed: {}; the function is unchanged (flare pkg logs --name {name})",
            package
                .spec
                .status
                .message
                .as_deref()
                .unwrap_or("see its log")
        );
    }
    Ok(package)
}
