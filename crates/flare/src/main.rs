//! `flare`: the server and the CLI in one binary. Each subcommand lives in
//! its own file under `commands/`; the logic lives in the library crates.

mod commands;
mod output;
mod progress;
mod spec;
mod telemetry;

use clap::{Parser, Subcommand};

/// Flare: functions as a service, in one binary.
///
/// Start a server with `flare server` (its first start writes an admin
/// token and prints where), log in with `flare login --token ...`, then
/// deploy a WebAssembly function with `flare fn create --name hello --code
/// hello.wasm` and call it at http://127.0.0.1:8080/fn/hello.
#[derive(Parser)]
#[command(name = "flare", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Global flags may stand anywhere (`flare --api URL fn list`): clap
    /// hands their values down to the subcommand that reads them.
    #[command(flatten)]
    _api: commands::ApiFlag,
    #[command(flatten)]
    _output: output::OutputFlag,
}

#[derive(Subcommand)]
enum Command {
    /// Run Flare: router, API, executor and store in one process.
    Server(commands::server::ServerArgs),
    /// Create, inspect, test and delete functions.
    #[command(name = "fn", visible_alias = "function")]
    Function(commands::function::FunctionArgs),
    /// Language environments (Python, Node.js, custom) for process functions.
    #[command(name = "env", visible_alias = "environment")]
    Environment(commands::environment::EnvironmentArgs),
    /// Asynchronous invocations (POST /async/fn/{name}) and dead letters.
    Invocations(commands::invocations::InvocationArgs),
    /// Run functions for every message on a queue (NATS, Kafka, Redis, MQTT, AMQP).
    #[command(name = "mqtrigger", visible_alias = "mqt")]
    MqTrigger(commands::mqtrigger::MqTriggerArgs),
    /// Run functions on cron schedules.
    #[command(name = "timetrigger", visible_alias = "tt")]
    TimeTrigger(commands::timetrigger::TimeTriggerArgs),
    /// Names for versions of a function, which HTTP triggers serve.
    Alias(commands::alias::AliasArgs),
    /// Shift a function's traffic to a new version step by step, back on
    /// failures.
    Canary(commands::canary::CanaryArgs),
    /// Builds of functions' sources (`flare fn create --src`): state, logs.
    #[command(name = "pkg", visible_alias = "package")]
    Package(commands::package::PackageArgs),
    /// Route HTTP requests to functions.
    #[command(name = "httptrigger", visible_alias = "ht")]
    HttpTrigger(commands::httptrigger::HttpTriggerArgs),
    /// Check a token against a server and save both as the current context.
    Login(commands::context::LoginArgs),
    /// The servers and tokens `flare login` saved (like kubectl contexts).
    Context(commands::context::ContextArgs),
    /// Namespaces and their quotas (changes: admin only).
    #[command(name = "ns", visible_alias = "namespace")]
    Namespace(commands::namespace::NamespaceArgs),
    /// The nodes serving: this one alone, or every live node of a cluster
    /// (`flare server --cluster`).
    Node(commands::node::NodeArgs),
    /// Secrets: values functions get as environment variables and files,
    /// sealed at rest, never shown again.
    Secret(commands::secret::SecretArgs),
    /// Configs: plain settings functions get as environment variables.
    Config(commands::secret::ConfigArgs),
    /// API tokens: who may do what (admin only).
    Token(commands::token::TokenArgs),
    /// Show the token in use: its name, role and namespace.
    Whoami(commands::token::WhoamiArgs),
    /// Who changed what, when (admin only).
    Audit(commands::token::AuditArgs),
    /// Start a function project from a template: source, a test, a
    /// README and flare.yaml (`flare new -l python hello`).
    New(commands::project::NewArgs),
    /// Build the project here into its package (rust: a wasm component;
    /// python, node: a zip with dependencies; java: a jar).
    Build(commands::project::BuildArgs),
    /// Build, then apply the spec: what `flare new` makes, served.
    Deploy(commands::project::DeployArgs),
    /// Print a shell completion script: `flare completion bash >
    /// /etc/bash_completion.d/flare`, or `source <(flare completion zsh)`.
    Completion { shell: clap_complete::Shell },
    /// Deploy, then rebuild and deploy again whenever the project's files
    /// change (until Ctrl-C).
    Dev(commands::project::DevArgs),
    /// Spec files: declare resources in flare.yaml and specs/*.yaml,
    /// validate, apply (idempotent, --dry-run, --prune), destroy.
    Spec(commands::spec::SpecArgs),
}

fn main() -> std::process::ExitCode {
    // Inside a gVisor sandbox, before the worker: not a user's command.
    if let Some(failed) = flare_runtime_process::launcher::run_if_asked() {
        return failed;
    }
    // Inside a build's sandbox, before pip or npm.
    if let Some(status) = flare_runtime_process::build::proxy_if_asked() {
        return status;
    }
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Server(args) => commands::server::run(args).await,
            Command::Function(args) => commands::function::run(args).await,
            Command::Environment(args) => commands::environment::run(args).await,
            Command::HttpTrigger(args) => commands::httptrigger::run(args).await,
            Command::Alias(args) => commands::alias::run(args).await,
            Command::Canary(args) => commands::canary::run(args).await,
            Command::Package(args) => commands::package::run(args).await,
            Command::TimeTrigger(args) => commands::timetrigger::run(args).await,
            Command::Invocations(args) => commands::invocations::run(args).await,
            Command::MqTrigger(args) => commands::mqtrigger::run(args).await,
            Command::Login(args) => commands::context::login(args).await,
            Command::Context(args) => commands::context::run(args).await,
            Command::Token(args) => commands::token::run(args).await,
            Command::Namespace(args) => commands::namespace::run(args).await,
            Command::Node(args) => commands::node::run(args).await,
            Command::Secret(args) => commands::secret::run(args).await,
            Command::Config(args) => commands::secret::run_config(args).await,
            Command::Whoami(args) => commands::token::whoami(args).await,
            Command::Audit(args) => commands::token::audit(args).await,
            Command::Completion { shell } => {
                use clap::CommandFactory;
                use std::io::Write;
                // Written from a buffer: a closed pipe (`| head`) is an
                // error, not a panic inside the generator.
                let mut script = Vec::new();
                clap_complete::generate(shell, &mut Cli::command(), "flare", &mut script);
                match std::io::stdout().write_all(&script) {
                    Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                    _ => Ok(()),
                }
            }
            Command::New(args) => commands::project::new(args),
            Command::Build(args) => commands::project::build(args),
            Command::Deploy(args) => commands::project::deploy(args).await,
            Command::Dev(args) => commands::project::dev(args).await,
            Command::Spec(args) => commands::spec::run(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
