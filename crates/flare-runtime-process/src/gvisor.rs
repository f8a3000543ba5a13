//! The `gvisor` isolation level: the worker runs under gVisor's `runsc`, a
//! user-space kernel that answers its system calls, so the host kernel
//! sees only gVisor's own narrow set (filtered by gVisor's seccomp).
//!
//! What the worker sees is the same as at the `namespace` level, written
//! as an OCI bundle instead of bubblewrap flags: the same read-only root,
//! binds, bounded tmpfs mounts, uid, hostname and environment, no
//! capabilities, a network of its own loopback only, and the same seccomp
//! filters, installed inside by the launcher ([`crate::launcher`]) so a
//! function meets the same system calls at every level. The host's limits
//! stay Flare's cgroups, joined before `runsc` starts, so gVisor's own
//! processes count towards them too ([`OVERHEAD_BYTES`], [`OVERHEAD_PIDS`]).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::sandbox::{SANDBOX_UID, SECRETS_BYTES, SandboxCommand, TMP_BYTES, quote};

/// Memory gVisor's sentry and gofer take beside the worker (about 30 MB
/// measured idle), added to the worker's limit.
pub const OVERHEAD_BYTES: u64 = 64 << 20;
/// Host tasks gVisor takes beside the worker's own limit: about 40 idle,
/// and on the ptrace platform about 7 per process inside (448 measured for
/// a fork bomb stopped at 63 processes). The worker's own limit is
/// enforced inside, by gVisor, as `RLIMIT_NPROC`; this bounds gVisor.
pub const OVERHEAD_PIDS: u32 = 512;

/// Where the launcher and the filters appear inside the sandbox.
const LAUNCHER: &str = "/flare/launcher";
const FILTERS: [&str; 2] = ["/flare/seccomp.bpf", "/flare/seccomp-abi.bpf"];

/// The host's gVisor tools.
#[derive(Debug, Clone)]
pub struct Gvisor {
    /// `runsc`.
    pub runsc: PathBuf,
    /// The `flare` binary, run inside as the launcher.
    pub launcher: PathBuf,
}

impl Gvisor {
    /// Writes the worker's OCI bundle under `dir` and returns the `sh -c`
    /// script that joins the cgroups and runs it.
    pub(crate) fn script(
        &self,
        cmd: &SandboxCommand,
        dir: &Path,
        id: &str,
    ) -> std::result::Result<String, String> {
        let bundle = dir.join("bundle");
        let root = bundle.join("root");
        let config = self.config(cmd, &root);
        // Mount points must exist in the read-only root: a file for a
        // file bind, a directory for the rest.
        let layout = |e: std::io::Error| format!("cannot lay out the sandbox root: {e}");
        for mount in config["mounts"].as_array().into_iter().flatten() {
            let Some(point) = mount["destination"].as_str() else {
                continue;
            };
            let path = root.join(point.trim_start_matches('/'));
            let file = mount["type"] == "bind"
                && mount["source"]
                    .as_str()
                    .is_some_and(|source| Path::new(source).is_file());
            if file {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(layout)?;
                }
                std::fs::write(&path, b"").map_err(layout)?;
            } else {
                std::fs::create_dir_all(&path).map_err(layout)?;
            }
        }
        for (link, target) in [
            ("lib", "usr/lib"),
            ("lib64", "usr/lib64"),
            ("bin", "usr/bin"),
        ] {
            std::os::unix::fs::symlink(target, root.join(link)).map_err(layout)?;
        }
        let text = serde_json::to_vec_pretty(&config).map_err(|e| e.to_string())?;
        std::fs::write(bundle.join("config.json"), text)
            .map_err(|e| format!("cannot write the sandbox's OCI bundle: {e}"))?;

        let mut script = cmd.join_cgroups();
        let args = [
            // runsc dies with the server, as bubblewrap does
            // (--die-with-parent); gVisor's processes, attached, with it.
            "setpriv".into(),
            "--pdeathsig".into(),
            "KILL".into(),
            self.runsc.to_string_lossy().into_owned(),
            "--root".into(),
            dir.join("runsc").to_string_lossy().into_owned(),
            // Its own network stack holding only a loopback.
            "--network=none".into(),
            // The worker may connect to the host sockets it is shown
            // (the protocol's, the egress proxy's), never create any.
            "--host-uds=open".into(),
            // Flare's cgroups, joined above, hold the whole sandbox.
            "--ignore-cgroups".into(),
            "run".into(),
            "--bundle".into(),
            bundle.to_string_lossy().into_owned(),
            id.to_string(),
        ];
        script.push_str("exec");
        for arg in args {
            script.push(' ');
            script.push_str(&quote(&arg));
        }
        Ok(script)
    }

    /// The OCI runtime configuration of the worker.
    fn config(&self, cmd: &SandboxCommand, root: &Path) -> Value {
        let bind = |source: &Path, destination: &str, writable: bool| {
            json!({
                "destination": destination,
                "type": "bind",
                "source": source,
                "options": ["rbind", if writable { "rw" } else { "ro" }, "nosuid", "nodev"],
            })
        };
        let tmpfs = |destination: &str, bytes: u64| {
            json!({
                "destination": destination,
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "nodev", format!("size={bytes}"), "mode=1777"],
            })
        };
        let mut mounts = vec![
            json!({"destination": "/proc", "type": "proc", "source": "proc"}),
            bind(Path::new("/usr"), "/usr", false),
            tmpfs("/tmp", TMP_BYTES),
            tmpfs("/secrets", SECRETS_BYTES),
            bind(cmd.code, "/code", false),
            bind(cmd.run, "/run/flare", true),
            bind(&self.launcher, LAUNCHER, false),
            bind(cmd.seccomp[0], FILTERS[0], false),
            bind(cmd.seccomp[1], FILTERS[1], false),
        ];
        if let Some(env_dir) = cmd.env_dir {
            mounts.push(bind(env_dir, "/env", false));
        }
        for path in cmd.ro_binds {
            mounts.push(bind(path, &path.to_string_lossy(), false));
        }
        for extra in cmd.binds {
            mounts.push(bind(&extra.from, &extra.to, extra.writable));
        }
        let mut args: Vec<String> = vec![LAUNCHER.into(), crate::launcher::ARG.into()];
        args.extend(FILTERS.iter().map(|f| f.to_string()));
        args.push("--".into());
        args.extend(cmd.argv.iter().cloned());
        let env: Vec<String> = cmd.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": {"uid": SANDBOX_UID, "gid": SANDBOX_UID},
                "args": args,
                "env": env,
                "cwd": "/code",
                "capabilities": {
                    "bounding": [], "effective": [], "inheritable": [],
                    "permitted": [], "ambient": [],
                },
                "noNewPrivileges": true,
                // The worker's process limit, enforced by gVisor: a fork
                // bomb inside fails with EAGAIN, as at the namespace level.
                "rlimits": [{
                    "type": "RLIMIT_NPROC",
                    "hard": crate::PIDS_PER_WORKER,
                    "soft": crate::PIDS_PER_WORKER,
                }],
            },
            "root": {"path": root, "readonly": true},
            "hostname": "flare",
            "mounts": mounts,
            "linux": {
                "namespaces": [
                    {"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                    {"type": "uts"}, {"type": "mount"},
                ],
            },
        })
    }
}

/// Whether `program` names an executable: a path, or a name on `PATH`.
pub fn find_program(program: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.components().count() > 1 {
        return executable(program).then(|| program.to_path_buf());
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::Cgroups;

    #[test]
    fn the_bundle_holds_the_namespace_levels_walls() {
        let dir = tempfile::tempdir().unwrap();
        let cgroups = Cgroups::create_in(dir.path(), "w1");
        let work = dir.path().join("w1");
        let cmd = SandboxCommand {
            cgroups: &cgroups,
            seccomp: [Path::new("/x/seccomp.bpf"), Path::new("/x/abi.bpf")],
            code: Path::new("/w/code"),
            run: Path::new("/w/run"),
            ro_binds: &[PathBuf::from("/opt/worker")],
            binds: &[],
            nested: false,
            env_dir: Some(Path::new("/w/env")),
            env: &[("FLARE_SOCKET", "/run/flare/worker.sock".into())],
            argv: &["/usr/bin/python3".into(), "-I".into()],
        };
        let gvisor = Gvisor {
            runsc: PathBuf::from("/usr/bin/runsc"),
            launcher: PathBuf::from("/usr/bin/flare"),
        };
        let script = gvisor.script(&cmd, &work, "w1").unwrap();
        for flag in [
            "'--network=none'",
            "'--host-uds=open'",
            "'--pdeathsig' 'KILL'",
        ] {
            assert!(script.contains(flag), "{flag}: {script}");
        }
        let config: Value =
            serde_json::from_slice(&std::fs::read(work.join("bundle/config.json")).unwrap())
                .unwrap();
        let process = &config["process"];
        assert_eq!(process["user"]["uid"], SANDBOX_UID);
        assert_eq!(process["noNewPrivileges"], true);
        assert_eq!(process["capabilities"]["bounding"], json!([]));
        assert_eq!(process["rlimits"][0]["hard"], crate::PIDS_PER_WORKER);
        // The launcher installs the same filters, then runs the worker.
        assert_eq!(
            process["args"],
            json!([
                LAUNCHER,
                crate::launcher::ARG,
                FILTERS[0],
                FILTERS[1],
                "--",
                "/usr/bin/python3",
                "-I"
            ])
        );
        assert_eq!(config["root"]["readonly"], true);
        assert_eq!(config["hostname"], "flare");
        let namespaces = config["linux"]["namespaces"].to_string();
        assert!(namespaces.contains("network"), "{namespaces}");
        let mounts = config["mounts"].as_array().unwrap();
        let mount = |at: &str| mounts.iter().find(|m| m["destination"] == at).unwrap();
        assert!(
            mount("/tmp")["options"]
                .to_string()
                .contains(&format!("size={TMP_BYTES}"))
        );
        assert!(mount("/code")["options"].to_string().contains("\"ro\""));
        assert!(
            mount("/opt/worker")["options"]
                .to_string()
                .contains("\"ro\"")
        );
        assert!(
            mount("/run/flare")["options"]
                .to_string()
                .contains("\"rw\"")
        );
        // Every mount point exists in the read-only root.
        assert!(work.join("bundle/root/code").is_dir());
        assert!(work.join("bundle/root/opt/worker").is_dir());
    }
}
