//! `flare fn ...`

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use flare_api::FunctionView;
use flare_api::client::LogFilter;
use flare_model::{API_VERSION, Document, KeepAlive, Kind, LogEntry, Metadata};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::ApiFlag;
use crate::output::{OutputFlag, print, print_resources};

#[derive(Args, Debug)]
pub struct FunctionArgs {
    #[command(flatten)]
    api: ApiFlag,
    #[command(subcommand)]
    command: FunctionCommand,
}

/// Settings shared by `create` and `update`.
#[derive(Args, Debug, Default)]
struct SpecFlags {
    /// Memory limit in MiB. [default: 128]
    #[arg(long, value_name = "MIB")]
    memory: Option<u32>,
    /// Time limit of one invocation, e.g. 500ms, 5s, 2m (a bare number is
    /// seconds). [default: 5s]
    #[arg(long, value_parser = parse_timeout)]
    timeout: Option<Duration>,
    /// Largest request body accepted, in bytes. [default: 1048576]
    #[arg(long, value_name = "BYTES")]
    max_body: Option<u64>,
    /// wasm: requests in flight at once [default: 100]; process: requests
    /// in flight per instance [default: 1]. Beyond capacity requests get 503.
    #[arg(long)]
    concurrency: Option<u32>,
    /// process: instances kept started and warm at all times (no cold
    /// start for the first N concurrent requests). [default: 0]
    #[arg(long)]
    minscale: Option<u32>,
    /// process: instances of the function at most. [default: 10]
    #[arg(long)]
    maxscale: Option<u32>,
    /// process: idle time before an instance is removed (30s, 5m), or
    /// "adaptive" to learn it from the function's idle times. [default: 5m]
    #[arg(long, value_parser = parse_keep_alive)]
    keepalive: Option<KeepAlive>,
    /// Requests that may wait when the function is at capacity; beyond it
    /// they get 503 with Retry-After. [default: 0, no waiting]
    #[arg(long)]
    queue: Option<u32>,
    /// How long a queued request may wait. [default: 10s]
    #[arg(long, value_parser = parse_timeout)]
    queue_timeout: Option<Duration>,
    /// process: what to call: main (default) or module.function in an archive.
    #[arg(long)]
    entrypoint: Option<String>,
    /// process: give the sandbox a way out, Flare's egress proxy (HTTP_PROXY
    /// and HTTPS_PROXY inside), to the --allow-host hosts only; implied by
    /// --allow-host. (default: no way out)
    #[arg(long)]
    network: bool,
    /// KEY=VALUE: an environment variable for the function (repeatable; on
    /// update the given set replaces the old one). A bare NAME instead runs
    /// the function in that language environment (flare env create), as in
    /// Fission: --env python.
    #[arg(long = "env", value_name = "KEY=VALUE|NAME")]
    env: Vec<String>,
    /// A host the function may call over HTTP(S): name, name:port, *.domain
    /// or * for any (repeatable). Loopback, private and link-local addresses
    /// stay refused unless the server runs with --egress-allow-private. On
    /// update, the given set replaces the old one.
    #[arg(long = "allow-host", value_name = "HOST")]
    allow_hosts: Vec<String>,
    /// Who may call it over HTTP (/fn/..., HTTP triggers, /async/fn/...):
    /// none = anyone; token = only a bearer of an invoker, developer or
    /// admin token (`Authorization: Bearer`). [default: none]
    #[arg(long, value_enum)]
    auth: Option<Auth>,
    /// A secret of the namespace the function gets: each key as an
    /// environment variable (when it is a valid name) and, for process
    /// functions, as /secrets/<secret>/<key> (repeatable; on update the
    /// given set replaces the old one).
    #[arg(long = "secret", value_name = "NAME")]
    secrets: Vec<String>,
    /// A config of the namespace the function gets as environment variables
    /// (repeatable; on update the given set replaces the old one).
    #[arg(long = "config", value_name = "NAME")]
    configs: Vec<String>,
}

/// A source for Flare to build.
#[derive(clap::Args, Debug)]
struct BuildFlags {
    /// A source directory Flare builds on the server, in a sandbox that
    /// reaches only the operator's registries: python runs `pip install
    /// -r requirements.txt`, node `npm install --omit=dev`. The function
    /// is created or updated when the build succeeds; a failed build
    /// changes nothing (see `flare pkg get/logs`).
    #[arg(long, value_name = "DIR")]
    src: Option<PathBuf>,
    /// With --src: return once the build is accepted, not when it ends.
    #[arg(long, requires = "src")]
    no_wait: bool,
}

impl BuildFlags {
    /// Sends `doc` with the source to build, and (unless --no-wait)
    /// waits for the build: the function it made, or `None` when not
    /// waited for.
    async fn submit(
        &self,
        client: &flare_api::Client,
        doc: &Document,
        update: bool,
    ) -> anyhow::Result<Option<flare_api::FunctionView>> {
        let Some(dir) = &self.src else {
            bail!("no source directory");
        };
        let archive = super::package::zip_source(dir)?;
        let package = client.build_function(doc, &archive.0, update).await?;
        if self.no_wait {
            let name = &package.metadata.name;
            println!("build {name} accepted; follow it with `flare pkg get --name {name}`");
            return Ok(None);
        }
        super::package::wait(client, package).await?;
        Ok(Some(client.get_function(&doc.metadata.name).await?))
    }
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
enum Auth {
    None,
    Token,
}

#[derive(Subcommand, Debug)]
enum FunctionCommand {
    /// Create a function: a WebAssembly component (wasi:http, wasm32-wasip2),
    /// or with --env, a source file or zip / tar.gz archive; or with --env
    /// and --src, a directory Flare builds (requirements.txt, package.json).
    Create {
        #[arg(long)]
        name: String,
        /// The package: a .wasm component exporting wasi:http/incoming-handler,
        /// or for --env a .py / .js file or an archive.
        #[arg(long, required_unless_present = "src", conflicts_with = "src")]
        code: Option<PathBuf>,
        #[command(flatten)]
        build: BuildFlags,
        #[command(flatten)]
        spec: SpecFlags,
        #[command(flatten)]
        output: OutputFlag,
    },
    /// Show a function, its limits and its deployment status.
    Get {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        output: OutputFlag,
    },
    /// List functions.
    List {
        #[command(flatten)]
        output: OutputFlag,
    },
    /// Change a function's code or settings; what is not given is kept.
    Update {
        #[arg(long)]
        name: String,
        /// New code.
        #[arg(long, conflicts_with = "src")]
        code: Option<PathBuf>,
        #[command(flatten)]
        build: BuildFlags,
        #[command(flatten)]
        spec: SpecFlags,
        #[command(flatten)]
        output: OutputFlag,
    },
    /// List a function's versions: one per change of its code or
    /// settings, never rewritten; the one it serves is marked.
    Versions {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        output: OutputFlag,
    },
    /// Serve an earlier version again, at once (its code and settings as
    /// they were; checked as any update is).
    Rollback {
        #[arg(long)]
        name: String,
        /// The version to serve (see `flare fn versions`).
        #[arg(long)]
        to: u64,
        #[command(flatten)]
        output: OutputFlag,
    },
    /// Delete a function (refused while HTTP triggers point at it).
    Delete {
        #[arg(long)]
        name: String,
    },
    /// Call a function once and print its response body.
    Test {
        #[arg(long)]
        name: String,
        /// HTTP method.
        #[arg(long, default_value = "GET")]
        method: String,
        /// Path (and query) the function sees.
        #[arg(long, default_value = "/")]
        path: String,
        /// Request body.
        #[arg(long)]
        body: Option<String>,
        /// A request header, "Name: value" (repeatable).
        #[arg(long = "header", short = 'H', value_parser = parse_header)]
        headers: Vec<(String, String)>,
        /// Queue the request and return its invocation id at once; see
        /// `flare invocations get --id ID` for the outcome.
        #[arg(long = "async")]
        asynchronous: bool,
        /// With --async: where to POST the outcome.
        #[arg(long, requires = "asynchronous")]
        callback_url: Option<String>,
        /// With --async: retries after a failure (0-10). [default: 3]
        #[arg(long, requires = "asynchronous")]
        max_retries: Option<u32>,
    },
    /// Show what a function did on the API's node, 10 s at a time: requests,
    /// errors, duration percentiles, cold starts, instances.
    Metrics {
        #[arg(long)]
        name: String,
        /// How far back (at most 1h).
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        last: std::time::Duration,
        #[command(flatten)]
        output: OutputFlag,
    },
    /// Show a function's log lines.
    Logs {
        #[arg(long)]
        name: String,
        /// Keep printing new lines as they are written.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Only lines newer than this: a duration (10m, 2h) or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Only lines older than this: a duration (10m: until ten minutes
        /// ago) or an RFC 3339 time.
        #[arg(long)]
        until: Option<String>,
        /// Only lines of this invocation.
        #[arg(long)]
        invocation: Option<String>,
        /// Only lines containing this text (case-sensitive; indexed, so a
        /// search of a big log is fast).
        #[arg(long)]
        contains: Option<String>,
        /// Only lines of this stream.
        #[arg(long, value_parser = ["stdout", "stderr", "system"])]
        stream: Option<String>,
        /// At most this many (the newest). [default: 1000]
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        output: OutputFlag,
    },
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| format!("{e} (try 500ms, 5s or 2m)"))
}

fn parse_keep_alive(s: &str) -> Result<KeepAlive, String> {
    s.parse()
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("\"{s}\" is not \"Name: value\"")),
    }
}

impl SpecFlags {
    /// The language environment named by a bare `--env NAME`, if any.
    fn environment(&self) -> anyhow::Result<Option<String>> {
        let names: Vec<&String> = self.env.iter().filter(|e| !e.contains('=')).collect();
        match names.as_slice() {
            [] => Ok(None),
            [name] => Ok(Some((*name).clone())),
            _ => bail!("--env names more than one environment: {names:?}"),
        }
    }

    /// Writes the given settings into a spec JSON object.
    fn apply(&self, spec: &mut serde_json::Map<String, Value>) {
        let process = spec.get("runtime").and_then(Value::as_str) == Some("process");
        let limits = spec.entry("limits").or_insert_with(|| json!({}));
        if let Some(limits) = limits.as_object_mut() {
            if let Some(memory) = self.memory {
                limits.insert("memoryMb".into(), json!(memory));
            }
            if let Some(timeout) = self.timeout {
                limits.insert(
                    "timeout".into(),
                    json!(humantime::format_duration(timeout).to_string()),
                );
            }
            if let Some(max_body) = self.max_body {
                limits.insert("maxBodyBytes".into(), json!(max_body));
            }
            if let Some(concurrency) = self.concurrency {
                let field = if process {
                    "instanceConcurrency"
                } else {
                    "maxConcurrency"
                };
                limits.insert(field.into(), json!(concurrency));
            }
            if let Some(min_scale) = self.minscale {
                limits.insert("minScale".into(), json!(min_scale));
            }
            if let Some(max_scale) = self.maxscale {
                limits.insert("maxScale".into(), json!(max_scale));
            }
            if let Some(keep_alive) = self.keepalive {
                limits.insert("keepAlive".into(), json!(keep_alive.to_string()));
            }
            if let Some(queue) = self.queue {
                limits.insert("queue".into(), json!(queue));
            }
            if let Some(timeout) = self.queue_timeout {
                limits.insert(
                    "queueTimeout".into(),
                    json!(humantime::format_duration(timeout).to_string()),
                );
            }
        }
        if let Some(entrypoint) = &self.entrypoint {
            spec.insert("entrypoint".into(), json!(entrypoint));
        }
        if self.network {
            spec.insert("network".into(), json!(true));
        }
        let vars: BTreeMap<&str, &str> =
            self.env.iter().filter_map(|e| e.split_once('=')).collect();
        if !vars.is_empty() {
            spec.insert("env".into(), json!(vars));
        }
        if !self.allow_hosts.is_empty() {
            spec.insert("allowedHosts".into(), json!(self.allow_hosts));
        }
        if !self.secrets.is_empty() {
            spec.insert("secrets".into(), json!(self.secrets));
        }
        if !self.configs.is_empty() {
            spec.insert("configs".into(), json!(self.configs));
        }
        match self.auth {
            Some(Auth::Token) => {
                spec.insert("auth".into(), json!("token"));
            }
            Some(Auth::None) => {
                spec.remove("auth");
            }
            None => {}
        }
    }
}

fn show(output: OutputFlag, views: &[FunctionView], single: bool) -> anyhow::Result<()> {
    let rows = || {
        views
            .iter()
            .map(|v| {
                let f = &v.function;
                let status = match &v.status {
                    Some(s) if s.ready => match &s.instances {
                        Some(i) => format!(
                            "ready ({} in flight, {} queued; instances: {} warm, {} busy, {} specializing)",
                            s.in_flight, s.queued, i.warm, i.busy, i.specializing
                        ),
                        None => format!("ready ({} in flight, {} queued)", s.in_flight, s.queued),
                    },
                    Some(s) => format!("failed: {}", s.error.as_deref().unwrap_or("?")),
                    None => "not deployed".into(),
                };
                vec![
                    f.qualified_name(),
                    f.spec.environment.clone().unwrap_or_else(|| "wasm".into()),
                    f.spec.package.digest.chars().take(19).collect(),
                    format!("{}MiB", f.spec.limits.memory_mb),
                    humantime::format_duration(f.spec.limits.timeout).to_string(),
                    match f.spec.runtime {
                        flare_model::RuntimeKind::Wasm => f.spec.limits.max_concurrency.to_string(),
                        flare_model::RuntimeKind::Process => format!(
                            "{}/instance, scale {}-{}, keepalive {}, queue {}",
                            f.spec.limits.instance_concurrency,
                            f.spec.limits.min_scale,
                            f.spec.limits.max_scale,
                            keep_alive_text(f, v.status.as_ref()),
                            f.spec.limits.queue
                        ),
                    },
                    f.metadata.generation.to_string(),
                    status,
                ]
            })
            .collect()
    };
    let headers = [
        "NAME", "RUNTIME", "PACKAGE", "MEMORY", "TIMEOUT", "POLICY", "GEN", "STATUS",
    ];
    print_resources(output.format, views, single, &headers, rows)
}

/// The function's keep-alive, with what an adaptive one has learned.
fn keep_alive_text(
    f: &flare_model::Resource<flare_model::FunctionSpec>,
    status: Option<&flare_executor::DeploymentStatus>,
) -> String {
    let Some(k) = status.and_then(|s| s.keep_alive) else {
        return f.spec.limits.keep_alive.to_string();
    };
    let from = match k.from_other_nodes {
        0 => format!("{} idle times", k.samples),
        n => format!("{} idle times, {n} from other nodes", k.samples),
    };
    let secs = |s| humantime::format_duration(Duration::from_secs(s));
    if k.learned {
        format!(
            "adaptive (learned from {from}: prewarm {}, keep {})",
            secs(k.prewarm_seconds),
            secs(k.keep_alive_seconds)
        )
    } else {
        format!(
            "adaptive (learning, {from}; keep {})",
            secs(k.keep_alive_seconds)
        )
    }
}

fn format_entry(entry: &LogEntry) -> String {
    let r = &entry.record;
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(r.ts_us) * 1000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| r.ts_us.to_string());
    format!(
        "{at} {} [{}] {}",
        r.stream.as_str(),
        flare_model::printable(&r.invocation),
        flare_model::printable(&r.line)
    )
}

pub async fn run(args: FunctionArgs) -> anyhow::Result<()> {
    let client = args.api.client()?;
    match args.command {
        FunctionCommand::Create {
            name,
            code,
            build,
            spec,
            output,
        } => {
            let mut body = serde_json::Map::new();
            match spec.environment()? {
                Some(environment) => {
                    body.insert("runtime".into(), json!("process"));
                    body.insert("environment".into(), json!(environment));
                }
                None => {
                    body.insert("runtime".into(), json!("wasm"));
                }
            }
            spec.apply(&mut body);
            let doc = Document {
                api_version: API_VERSION.into(),
                kind: Kind::Function,
                metadata: Metadata::named(name),
                spec: Value::Object(body),
            };
            if build.src.is_some() {
                return match build.submit(&client, &doc, false).await? {
                    Some(view) => show(output, &[view], true),
                    None => Ok(()),
                };
            }
            let view = client.create_function(&doc, code.as_deref()).await?;
            show(output, &[view], true)
        }
        FunctionCommand::Versions { name, output } => {
            let versions = client.list_versions(&name).await?;
            let rows = || {
                versions
                    .iter()
                    .map(|v| {
                        vec![
                            v.version.to_string(),
                            v.created_at.clone().unwrap_or_default(),
                            v.spec.package.digest.chars().take(19).collect(),
                            v.spec.environment.clone().unwrap_or_else(|| "wasm".into()),
                            if v.serving {
                                "serving".into()
                            } else {
                                String::new()
                            },
                        ]
                    })
                    .collect()
            };
            let headers = ["VERSION", "CREATED", "PACKAGE", "RUNTIME", ""];
            crate::output::print_resources(output.format, &versions, false, &headers, rows)
        }
        FunctionCommand::Rollback { name, to, output } => {
            let view = client.rollback(&name, to).await?;
            show(output, &[view], true)
        }
        FunctionCommand::Get { name, output } => {
            let view = client.get_function(&name).await?;
            show(output, &[view], true)
        }
        FunctionCommand::List { output } => {
            let views = client.list_functions().await?;
            show(output, &views, false)
        }
        FunctionCommand::Update {
            name,
            code,
            build,
            spec,
            output,
        } => {
            let current = client.get_function(&name).await?.function;
            let mut doc = current
                .to_document()
                .context("cannot encode the current function")?;
            let Some(body) = doc.spec.as_object_mut() else {
                bail!("the stored function has no spec object");
            };
            if let Some(environment) = spec.environment()? {
                body.insert("runtime".into(), json!("process"));
                body.insert("environment".into(), json!(environment));
            }
            spec.apply(body);
            if code.is_some() || build.src.is_some() {
                body.remove("package");
            }
            if build.src.is_some() {
                return match build.submit(&client, &doc, true).await? {
                    Some(view) => show(output, &[view], true),
                    None => Ok(()),
                };
            }
            let view = client.update_function(&doc, code.as_deref()).await?;
            show(output, &[view], true)
        }
        FunctionCommand::Metrics { name, last, output } => {
            let view = client.function_metrics(&name).await?;
            let newest = view.points.last().map_or(0, |p| p.at);
            let since = newest.saturating_sub(last.as_secs());
            let points: Vec<_> = view.points.into_iter().filter(|p| p.at > since).collect();
            let ms = |v: Option<f64>| v.map(|v| format!("{v}")).unwrap_or_else(|| "-".into());
            let rows = || {
                points
                    .iter()
                    .map(|p| {
                        let at = time::OffsetDateTime::from_unix_timestamp(p.at as i64)
                            .map(|t| format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second()))
                            .unwrap_or_default();
                        vec![
                            at,
                            p.requests.to_string(),
                            p.errors.to_string(),
                            ms(p.p50_ms),
                            ms(p.p99_ms),
                            p.cold_starts.to_string(),
                            p.instances.to_string(),
                            p.busy.to_string(),
                        ]
                    })
                    .collect()
            };
            let headers = [
                "UNTIL (UTC)",
                "REQUESTS",
                "ERRORS",
                "P50 MS",
                "P99 MS",
                "COLD",
                "INSTANCES",
                "BUSY",
            ];
            crate::output::print_resources(output.format, &points, false, &headers, rows)
        }
        FunctionCommand::Delete { name } => {
            client.delete_function(&name).await?;
            println!("function \"{name}\" deleted");
            Ok(())
        }
        FunctionCommand::Test {
            name,
            method,
            path,
            body,
            mut headers,
            asynchronous,
            callback_url,
            max_retries,
        } => {
            if asynchronous {
                headers.push((flare_executor::ASYNC_HEADER.into(), "true".into()));
            }
            if let Some(url) = callback_url {
                headers.push((flare_executor::CALLBACK_HEADER.into(), url));
            }
            if let Some(n) = max_retries {
                headers.push((flare_executor::RETRIES_HEADER.into(), n.to_string()));
            }
            let response = client
                .invoke(
                    &name,
                    &method,
                    &path,
                    &headers,
                    body.unwrap_or_default().into_bytes(),
                )
                .await?;
            std::io::stdout().write_all(&response.body)?;
            std::io::stdout().flush()?;
            if let Some(id) = &response.invocation {
                eprintln!("(status {}, invocation {id})", response.status);
            }
            if response.status >= 400 {
                let error = flare_model::Error::from_response(response.status, &response.body);
                bail!("function answered {}: {}", response.status, error.message);
            }
            Ok(())
        }
        FunctionCommand::Logs {
            name,
            follow,
            since,
            until,
            invocation,
            contains,
            stream,
            limit,
            output,
        } => {
            let filter = LogFilter {
                since,
                until,
                invocation,
                contains,
                stream,
                limit,
            };
            let json = output.format != crate::output::Format::Table;
            if follow {
                client
                    .follow_logs(&name, &filter, |entry| {
                        if json {
                            println!("{}", serde_json::to_string(&entry).unwrap_or_default());
                        } else {
                            println!("{}", format_entry(&entry));
                        }
                    })
                    .await?;
                return Ok(());
            }
            let entries = client.logs(&name, &filter).await?;
            match output.format {
                crate::output::Format::Table => {
                    for entry in &entries {
                        println!("{}", format_entry(entry));
                    }
                    Ok(())
                }
                format => print(format, &entries, &[], Vec::new),
            }
        }
    }
}
