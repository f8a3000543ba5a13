//! Server-side builds: a function's source (a zip of its directory) made
//! into its package, as `flare build` does on a user's machine, but behind
//! the same walls as a worker.
//!
//! - Python: `pip install --target . -r requirements.txt`; Node.js:
//!   `npm install --omit=dev`. A source without dependencies is its own
//!   package.
//! - The sandbox has no network of its own (bubblewrap's empty network
//!   namespace). Its one way out is the egress proxy on a Unix socket,
//!   which lets through only the operator's registries
//!   ([`BuildSettings::allowed_hosts`]) and only addresses the server's
//!   egress policy admits. Inside, `flare build-proxy` ([`PROXY_ARG`])
//!   forwards a loopback port to that socket and points the tools at it.
//! - Memory, processes and time are limited; the log keeps the output's
//!   last [`MAX_BUILD_LOG`] bytes, where a failure shows.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use flare_model::{EnvironmentRuntime, Error, MAX_BUILD_LOG, Result};
use tokio::io::AsyncReadExt;
use tokio::net::UnixListener;

use crate::sandbox::{Bind, Cgroups, SANDBOX_UID, SandboxCommand};
use crate::unpack::{UnpackLimits, Unpacked, unpack};
use crate::{ProcessRuntime, internal};

/// The hidden first argument of the `flare` binary that runs [`proxy`]
/// inside a build's sandbox.
pub const PROXY_ARG: &str = "build-proxy";

/// Memory and processes a build may use (pip and npm are hungrier than a
/// function).
const BUILD_MEMORY: u64 = 1 << 30;
const BUILD_PIDS: u32 = 256;

/// What the operator lets builds do.
#[derive(Debug, Clone)]
pub struct BuildSettings {
    /// Hosts (`name`, `name:port`, `*.domain`) a build may reach: the
    /// package registries.
    pub allowed_hosts: Vec<String>,
    /// pip's `--index-url`, when not PyPI's.
    pub pip_index_url: Option<String>,
    /// npm's `--registry`, when not npm's own.
    pub npm_registry: Option<String>,
    /// How long a build may run.
    pub timeout: Duration,
}

impl Default for BuildSettings {
    fn default() -> Self {
        BuildSettings {
            allowed_hosts: vec![
                "pypi.org".into(),
                "files.pythonhosted.org".into(),
                "registry.npmjs.org".into(),
            ],
            pip_index_url: None,
            npm_registry: None,
            timeout: Duration::from_secs(600),
        }
    }
}

/// How a build ended, when it could be run at all.
#[derive(Debug, Clone)]
pub struct Built {
    pub ok: bool,
    /// Why it failed, in one line.
    pub message: String,
    /// The tool's output (its end, when long).
    pub log: String,
}

/// The build's output, kept to its last [`MAX_BUILD_LOG`] bytes.
#[derive(Default)]
struct Log(Vec<u8>);

impl Log {
    fn push(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
        if self.0.len() > MAX_BUILD_LOG {
            let cut = self.0.len() - MAX_BUILD_LOG;
            self.0.drain(..cut);
        }
    }

    fn line(&mut self, text: &str) {
        self.push(format!("{text}\n").as_bytes());
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

/// Removes a build's directory and cgroups however the build ends.
struct Cleanup {
    dir: PathBuf,
    cgroups: Option<Cgroups>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(cgroups) = &mut self.cgroups {
            cgroups.destroy();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The command that makes a package of the source in `/build/app`, and
/// how the log names it; `None` when the source is its own package.
fn tool(
    runtime: EnvironmentRuntime,
    app: &Path,
    settings: &BuildSettings,
    python: &Path,
) -> Result<Option<(String, Vec<String>)>> {
    let quote = crate::sandbox::quote;
    match runtime {
        EnvironmentRuntime::Python => {
            let requirements =
                std::fs::read_to_string(app.join("requirements.txt")).unwrap_or_default();
            let wanted = requirements
                .lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
            if !wanted {
                return Ok(None);
            }
            let mut command = format!(
                "{} -m pip install --disable-pip-version-check --no-input --no-compile --progress-bar off --target /build/app -r requirements.txt",
                quote(&python.to_string_lossy())
            );
            if let Some(index) = &settings.pip_index_url {
                command.push_str(&format!(" --index-url {}", quote(index)));
            }
            Ok(Some((
                "pip install -r requirements.txt".into(),
                vec![command],
            )))
        }
        EnvironmentRuntime::Node => {
            let manifest = match std::fs::read(app.join("package.json")) {
                Ok(bytes) => bytes,
                Err(_) => return Ok(None),
            };
            let manifest: serde_json::Value = serde_json::from_slice(&manifest)
                .map_err(|e| Error::invalid(format!("package.json is not JSON: {e}")))?;
            let wanted = manifest["dependencies"]
                .as_object()
                .is_some_and(|d| !d.is_empty());
            if !wanted {
                return Ok(None);
            }
            // npm links a `file:` dependency; the package holds what the
            // link points at, when that is inside the source.
            let mut command = "npm install --omit=dev --no-audit --no-fund --no-update-notifier --cache /build/tmp/npm".to_string();
            if let Some(registry) = &settings.npm_registry {
                command.push_str(&format!(" --registry {}", quote(registry)));
            }
            Ok(Some(("npm install --omit=dev".into(), vec![command])))
        }
        other => Err(Error::invalid(format!(
            "Flare builds python and node sources; a {} environment takes a built package",
            format!("{other:?}").to_lowercase()
        ))),
    }
}

fn own(path: &Path) -> std::io::Result<()> {
    std::os::unix::fs::chown(path, Some(SANDBOX_UID), Some(SANDBOX_UID))?;
    if path.is_dir() {
        for entry in std::fs::read_dir(path)? {
            own(&entry?.path())?;
        }
    }
    Ok(())
}

impl ProcessRuntime {
    /// Builds the source archive `source` for an environment of `runtime`
    /// into the package `out` (a zip). `Ok` with `ok: false` is a build
    /// that failed (the source's fault: its log says why); `Err` is one
    /// that could not be run.
    pub async fn build(
        &self,
        runtime: EnvironmentRuntime,
        source: &Path,
        out: &Path,
        settings: &BuildSettings,
    ) -> Result<Built> {
        use std::os::unix::fs::PermissionsExt;
        let config = &self.inner.config;
        let Some(launcher) = config.launcher.clone() else {
            return Err(Error::internal(
                "builds need the flare binary to run inside their sandbox",
            ));
        };
        let id = format!(
            "{}-b{}",
            std::process::id(),
            self.inner.next_worker.fetch_add(1, Ordering::Relaxed)
        );
        let dir = config.work_dir.join("workers").join(&id);
        let mut cleanup = Cleanup {
            dir: dir.clone(),
            cgroups: None,
        };
        let (app, tmp, run) = (dir.join("app"), dir.join("tmp"), dir.join("run"));
        let bytes = tokio::fs::read(source)
            .await
            .map_err(internal("read the source"))?;
        let mut log = Log::default();
        let unpacked = {
            let app = app.clone();
            tokio::task::spawn_blocking(move || {
                unpack(&bytes, &app, "source", UnpackLimits::default())
            })
            .await
            .map_err(|e| Error::internal(e.to_string()))?
        };
        match unpacked {
            Ok(Unpacked::Archive) => {}
            Ok(Unpacked::File(_)) => {
                return Ok(Built {
                    ok: false,
                    message: "the source is not a zip or tar.gz archive of a directory".into(),
                    log: String::new(),
                });
            }
            Err(e) => {
                return Ok(Built {
                    ok: false,
                    message: format!("the source cannot be unpacked: {}", e.message),
                    log: String::new(),
                });
            }
        }
        let command = match tool(runtime, &app, settings, &config.python) {
            Ok(command) => command,
            Err(e) => {
                return Ok(Built {
                    ok: false,
                    message: e.message,
                    log: String::new(),
                });
            }
        };
        let Some((what, script)) = command else {
            log.line("no dependencies to install: the source is the package");
            crate::archive::zip_dir(&app, out, &[]).map_err(internal("zip the package"))?;
            return Ok(Built {
                ok: true,
                message: String::new(),
                log: log.text(),
            });
        };

        for (path, mode) in [(&dir, 0o711), (&run, 0o711), (&tmp, 0o700)] {
            std::fs::create_dir_all(path).map_err(internal("create build dir"))?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .map_err(internal("chmod build dir"))?;
        }
        own(&app).map_err(internal("chown the source"))?;
        own(&tmp).map_err(internal("chown the build's tmp"))?;
        let socket = run.join("egress.sock");
        let listener = UnixListener::bind(&socket).map_err(internal("bind egress socket"))?;
        own(&socket).map_err(internal("chown egress socket"))?;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
            .map_err(internal("chmod egress socket"))?;
        let rules = Arc::new(flare_egress::proxy::Rules {
            policy: config.egress.clone(),
            allowed_hosts: settings.allowed_hosts.clone().into(),
        });
        let proxy = tokio::spawn(flare_egress::proxy::serve(listener, rules));
        let _proxy = crate::worker::AbortOnDrop(proxy);

        let cgroups = Cgroups::create(&id);
        if !cgroups.missing().is_empty() && !config.allow_unlimited {
            return Err(Error::new(
                flare_model::ErrorCode::Unavailable,
                format!(
                    "cannot limit builds: no {} cgroup controller on this host",
                    cgroups.missing().join(" or ")
                ),
            ));
        }
        cgroups
            .limit(BUILD_MEMORY, BUILD_PIDS, crate::CPUS_PER_WORKER)
            .map_err(Error::internal)?;
        let cgroups = cleanup.cgroups.insert(cgroups);

        let mut ro_binds = vec![launcher.clone()];
        for interpreter in [&config.python, &config.node] {
            if !interpreter.starts_with("/usr") {
                ro_binds.push(interpreter.clone());
            }
        }
        if Path::new(crate::pool::TRUSTED_ROOTS).is_dir() {
            ro_binds.push(PathBuf::from(crate::pool::TRUSTED_ROOTS));
        }
        let binds = [
            Bind {
                from: app.clone(),
                to: "/build/app".into(),
                writable: true,
            },
            Bind {
                from: tmp.clone(),
                to: "/build/tmp".into(),
                writable: true,
            },
        ];
        let env = [
            ("PATH", "/usr/bin:/bin".to_string()),
            ("HOME", "/build/tmp".to_string()),
            ("TMPDIR", "/build/tmp".to_string()),
            ("LANG", "C.UTF-8".to_string()),
            ("PYTHONDONTWRITEBYTECODE", "1".to_string()),
            ("PIP_NO_CACHE_DIR", "1".to_string()),
        ];
        let argv: Vec<String> = [
            launcher.to_string_lossy().into_owned(),
            PROXY_ARG.into(),
            "--".into(),
            "/bin/sh".into(),
            "-c".into(),
            format!("cd /build/app && exec {}", script.join(" ")),
        ]
        .into();
        let command = SandboxCommand {
            cgroups,
            seccomp: [&self.inner.seccomp[0], &self.inner.seccomp[1]],
            code: &app,
            run: &run,
            ro_binds: &ro_binds,
            binds: &binds,
            nested: false,
            env_dir: None,
            env: &env,
            argv: &argv,
        };
        log.line(&format!("$ {what}"));
        let mut child = tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(command.script())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(internal("start the build's sandbox"))?;
        let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take())
        else {
            return Err(Error::internal("the build's output is not piped"));
        };
        // Both streams into one log, in the order they come.
        let ran = tokio::time::timeout(settings.timeout, async {
            let (mut a, mut b) = ([0u8; 8192], [0u8; 8192]);
            let (mut out_open, mut err_open) = (true, true);
            while out_open || err_open {
                tokio::select! {
                    n = stdout.read(&mut a), if out_open => match n {
                        Ok(0) | Err(_) => out_open = false,
                        Ok(n) => log.push(&a[..n]),
                    },
                    n = stderr.read(&mut b), if err_open => match n {
                        Ok(0) | Err(_) => err_open = false,
                        Ok(n) => log.push(&b[..n]),
                    },
                }
            }
            child.wait().await
        })
        .await;
        let status = match ran {
            Ok(status) => status.map_err(internal("wait for the build"))?,
            Err(_) => {
                let _ = child.kill().await;
                let message = format!(
                    "{what} took longer than {}",
                    humantime::format_duration(settings.timeout)
                );
                log.line(&message);
                return Ok(Built {
                    ok: false,
                    message,
                    log: log.text(),
                });
            }
        };
        if !status.success() {
            let message = if cgroups.memory_exceeded() {
                format!("{what} ran out of memory ({} MiB)", BUILD_MEMORY >> 20)
            } else {
                format!("{what} failed ({status})")
            };
            log.line(&message);
            return Ok(Built {
                ok: false,
                message,
                log: log.text(),
            });
        }
        let select = crate::archive::Select {
            keep: &|_| true,
            links: crate::archive::Links::Inside,
        };
        crate::archive::zip_tree(&app, out, &[], &select).map_err(internal("zip the package"))?;
        log.line("built");
        Ok(Built {
            ok: true,
            message: String::new(),
            log: log.text(),
        })
    }
}

/// Runs [`proxy`] when the process was started as `flare build-proxy --
/// PROGRAM ARGS...`: the exit status of the program, or of a failure.
pub fn proxy_if_asked() -> Option<std::process::ExitCode> {
    let mut args = std::env::args_os().skip(1);
    if args.next().is_none_or(|first| first != PROXY_ARG) {
        return None;
    }
    let mut program: Vec<std::ffi::OsString> = args.collect();
    if program.first().is_some_and(|a| a == "--") {
        program.remove(0);
    }
    match proxy(&program) {
        Ok(code) => Some(std::process::ExitCode::from(code)),
        Err(e) => {
            eprintln!("flare {PROXY_ARG}: {e}");
            Some(std::process::ExitCode::from(125))
        }
    }
}

/// Inside a build's sandbox: forwards connections to a loopback port to
/// the egress proxy's socket, runs `program` with the proxy variables pip
/// and npm read pointing at that port, and returns its exit status.
fn proxy(program: &[std::ffi::OsString]) -> std::io::Result<u8> {
    use std::os::unix::net::UnixStream;
    let Some((file, args)) = program.split_first() else {
        return Err(std::io::Error::other("no program to run"));
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}", listener.local_addr()?);
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let Ok(upstream) = UnixStream::connect("/run/flare/egress.sock") else {
                    return;
                };
                let (Ok(mut client_in), Ok(mut upstream_in)) =
                    (client.try_clone(), upstream.try_clone())
                else {
                    return;
                };
                let mut upstream_out = upstream;
                let back = std::thread::spawn(move || {
                    let mut client_out = client;
                    let _ = std::io::copy(&mut upstream_in, &mut client_out);
                    let _ = client_out.shutdown(std::net::Shutdown::Write);
                });
                let _ = std::io::copy(&mut client_in, &mut upstream_out);
                let _ = upstream_out.shutdown(std::net::Shutdown::Write);
                let _ = back.join();
            });
        }
    });
    let mut command = std::process::Command::new(file);
    command.args(args);
    for name in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
        "npm_config_proxy",
        "npm_config_https_proxy",
    ] {
        command.env(name, &url);
    }
    let status = command.status()?;
    Ok(status.code().map_or(1, |c| u8::try_from(c).unwrap_or(1)))
}
