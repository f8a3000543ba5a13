//! `flare token ...`, `flare whoami` and `flare audit`.

use clap::{Args, Subcommand, ValueEnum};
use flare_api::access::{NewToken, TokenView};

use super::ApiFlag;
use crate::output::{OutputFlag, print_resources};

#[derive(Args, Debug)]
pub struct TokenArgs {
    #[command(flatten)]
    api: ApiFlag,
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
enum Role {
    /// Everything, in every namespace, tokens included.
    Admin,
    /// Create, change, delete, read and invoke in its namespace.
    Developer,
    /// Read resources, logs and invocations in its namespace.
    Viewer,
    /// Invoke functions of its namespace, nothing else.
    Invoker,
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Make a token bound to --namespace (-n; '*' for every namespace);
    /// its secret is printed once and never again.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, value_enum)]
        role: Role,
        // The namespace it is bound to is the global --namespace (-n):
        // '*' for all; default: default, and admin tokens are always '*'.
        /// How long it works (30d, 12h); forever when left out.
        #[arg(long)]
        expires: Option<String>,
        #[command(flatten)]
        output: OutputFlag,
    },
    /// List tokens (names, roles, namespaces; never secrets).
    List {
        #[command(flatten)]
        output: OutputFlag,
    },
    /// Revoke a token: it stops working when this returns.
    Revoke {
        #[arg(long)]
        name: String,
    },
}

fn show(output: OutputFlag, tokens: &[TokenView], single: bool) -> anyhow::Result<()> {
    let rows = || {
        tokens
            .iter()
            .map(|t| {
                let expires = match (&t.expires_at, t.expired) {
                    (Some(at), true) => format!("{at} (expired)"),
                    (Some(at), false) => at.clone(),
                    (None, _) => "never".into(),
                };
                vec![
                    t.name.clone(),
                    t.role.to_string(),
                    t.namespace.clone(),
                    expires,
                ]
            })
            .collect()
    };
    let headers = ["NAME", "ROLE", "NAMESPACE", "EXPIRES"];
    print_resources(output.format, tokens, single, &headers, rows)
}

pub async fn run(args: TokenArgs) -> anyhow::Result<()> {
    let client = args.api.client()?;
    match args.command {
        TokenCommand::Create {
            name,
            role,
            expires,
            output,
        } => {
            let namespace = args.api.namespace.clone();
            let role = format!("{role:?}").to_lowercase();
            let new = NewToken {
                name,
                role,
                namespace,
                expires,
            };
            let created = client.create_token(&new).await?;
            match output.format {
                crate::output::Format::Table => {
                    show(output, std::slice::from_ref(&created.view), true)?;
                    println!("\ntoken (shown only now): {}", created.token);
                    Ok(())
                }
                format => crate::output::print(format, &created, &[], Vec::new),
            }
        }
        TokenCommand::List { output } => show(output, &client.list_tokens().await?, false),
        TokenCommand::Revoke { name } => {
            client.revoke_token(&name).await?;
            println!("token \"{name}\" revoked");
            Ok(())
        }
    }
}

/// Shows the token the CLI is using.
#[derive(Args, Debug)]
pub struct WhoamiArgs {
    #[command(flatten)]
    api: ApiFlag,
    #[command(flatten)]
    output: OutputFlag,
}

pub async fn whoami(args: WhoamiArgs) -> anyhow::Result<()> {
    let me = args.api.client()?.whoami().await?;
    show(args.output, &[me], true)
}

/// Who changed what, when: every API request that would change something,
/// allowed or refused (admin only).
#[derive(Args, Debug)]
pub struct AuditArgs {
    #[command(flatten)]
    api: ApiFlag,
    /// Only entries newer than this: a duration (1h, 7d) or an RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    /// At most this many (the newest). [default: 1000]
    #[arg(long)]
    limit: Option<usize>,
    #[command(flatten)]
    output: OutputFlag,
}

pub async fn audit(args: AuditArgs) -> anyhow::Result<()> {
    let entries = args
        .api
        .client()?
        .audit(args.since.as_deref(), args.limit)
        .await?;
    crate::output::print(
        args.output.format,
        &entries,
        &["TIME", "TOKEN", "NAMESPACE", "METHOD", "PATH", "STATUS"],
        || {
            entries
                .iter()
                .map(|e| {
                    let at =
                        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(e.ts_us) * 1000)
                            .ok()
                            .and_then(|t| {
                                t.format(&time::format_description::well_known::Rfc3339)
                                    .ok()
                            })
                            .unwrap_or_else(|| e.ts_us.to_string());
                    let token = if e.token.is_empty() { "-" } else { &e.token };
                    let namespace = if e.namespace.is_empty() {
                        "-"
                    } else {
                        &e.namespace
                    };
                    vec![
                        at,
                        token.to_string(),
                        namespace.to_string(),
                        e.method.clone(),
                        e.path.clone(),
                        e.status.to_string(),
                    ]
                })
                .collect()
        },
    )
}
