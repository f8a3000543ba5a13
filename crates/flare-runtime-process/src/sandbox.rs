//! The walls around a worker, built from tools that do this well rather
//! than hand-written syscalls: bubblewrap for the namespaces, the read-only
//! root and the capability drop; setpriv for the unprivileged uid; cgroup
//! (v1 controllers, as this machine has them) for memory, CPU and process
//! limits; a seccomp filter compiled by `seccompiler`, which bubblewrap
//! installs just before it executes the worker.
//!
//! A worker is started as `sh -c '<join cgroups>; exec setpriv ... bwrap ...'`
//! so that it is inside its cgroups before it runs any code of its own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use flare_model::{Error, Result};

/// The unprivileged user and group workers run as (`nobody`).
pub const SANDBOX_UID: u32 = 65534;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

/// Where a worker's limits live; removed when dropped.
#[derive(Debug)]
pub struct Cgroups {
    dirs: Vec<PathBuf>,
}

impl Cgroups {
    /// Creates `flare/<id>` under each controller found. Missing controllers
    /// are skipped (with a warning once per process) rather than failing:
    /// the namespaces and seccomp still hold.
    pub fn create(id: &str) -> Self {
        let dirs = CONTROLLERS
            .iter()
            .map(|c| Path::new(CGROUP_ROOT).join(c).join("flare").join(id))
            .filter(|dir| match std::fs::create_dir_all(dir) {
                Ok(()) => true,
                Err(e) => {
                    tracing::debug!("no cgroup {}: {e}", dir.display());
                    false
                }
            })
            .collect();
        Cgroups { dirs }
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    fn write(&self, controller: &str, file: &str, value: &str) {
        for dir in &self.dirs {
            if dir.components().any(|c| c.as_os_str() == controller)
                && let Err(e) = std::fs::write(dir.join(file), value)
            {
                tracing::warn!("cannot set {}/{file}: {e}", dir.display());
            }
        }
    }

    /// Applies a memory limit (bytes, swap included where supported), a
    /// process limit and a CPU quota in cores.
    pub fn limit(&self, memory_bytes: u64, pids: u32, cpus: f64) {
        self.write("memory", "memory.limit_in_bytes", &memory_bytes.to_string());
        self.write(
            "memory",
            "memory.memsw.limit_in_bytes",
            &memory_bytes.to_string(),
        );
        self.write("pids", "pids.max", &pids.to_string());
        let period = 100_000u64;
        self.write("cpu", "cpu.cfs_period_us", &period.to_string());
        self.write(
            "cpu",
            "cpu.cfs_quota_us",
            &((cpus * period as f64) as u64).to_string(),
        );
    }

    /// Whether the memory limit was hit (the kernel's OOM killer fired).
    pub fn memory_exceeded(&self) -> bool {
        self.dirs
            .iter()
            .filter(|d| d.components().any(|c| c.as_os_str() == "memory"))
            .any(|d| {
                std::fs::read_to_string(d.join("memory.oom_control"))
                    .ok()
                    .and_then(|text| {
                        text.lines()
                            .find_map(|l| l.strip_prefix("oom_kill "))
                            .and_then(|n| n.trim().parse::<u64>().ok())
                    })
                    .is_some_and(|n| n > 0)
                    || std::fs::read_to_string(d.join("memory.failcnt"))
                        .ok()
                        .and_then(|n| n.trim().parse::<u64>().ok())
                        .is_some_and(|n| n > 0)
            })
    }

    /// Kills every process left in the cgroup (a forked child outliving
    /// the worker) and removes the directories.
    pub fn destroy(&mut self) {
        for dir in self.dirs.drain(..) {
            if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                for pid in procs.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                    let _ = std::process::Command::new("kill")
                        .args(["-9", &pid.to_string()])
                        .stderr(std::process::Stdio::null())
                        .status();
                }
            }
            // The kernel refuses while processes are still exiting; retry.
            for _ in 0..50 {
                if std::fs::remove_dir(&dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        self.destroy();
    }
}

/// Removes the cgroups of workers whose server is gone (killed without a
/// chance to clean up): their names start with the server's pid.
pub fn remove_stale_cgroups() {
    for controller in CONTROLLERS {
        let root = Path::new(CGROUP_ROOT).join(controller).join("flare");
        let Ok(entries) = std::fs::read_dir(&root) else {
            continue;
        };
        for entry in entries.flatten() {
            if !entry.path().is_dir() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.split('-').next().filter(|p| p.parse::<u32>().is_ok()) else {
                continue;
            };
            if !Path::new("/proc").join(pid).exists() {
                let mut stale = Cgroups {
                    dirs: vec![entry.path()],
                };
                stale.destroy();
            }
        }
    }
}

/// The syscalls no function needs and a sandbox escape would: they fail
/// with EPERM. Everything else is allowed (a deny list, as the runtimes'
/// needs vary: Python and Node use hundreds of syscalls).
fn denied_syscalls() -> Vec<i64> {
    vec![
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_reboot,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_acct,
        libc::SYS_settimeofday,
        libc::SYS_clock_settime,
        libc::SYS_adjtimex,
        libc::SYS_syslog,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_userfaultfd,
        libc::SYS_quotactl,
        libc::SYS_lookup_dcookie,
        libc::SYS_fanotify_init,
    ]
}

/// Compiles the seccomp filter to the raw BPF bubblewrap reads.
pub fn seccomp_program() -> Result<Vec<u8>> {
    use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};
    let arch = match std::env::consts::ARCH {
        "x86_64" => TargetArch::x86_64,
        "aarch64" => TargetArch::aarch64,
        other => return Err(Error::internal(format!("no seccomp filter for {other}"))),
    };
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> = denied_syscalls()
        .into_iter()
        .map(|nr| (nr, Vec::new()))
        .collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(|e| Error::internal(format!("seccomp filter: {e}")))?;
    let program: BpfProgram = BpfProgram::try_from(filter)
        .map_err(|e| Error::internal(format!("seccomp filter: {e}")))?;
    let mut bytes = Vec::with_capacity(program.len() * 8);
    for insn in program {
        bytes.extend_from_slice(&insn.code.to_ne_bytes());
        bytes.push(insn.jt);
        bytes.push(insn.jf);
        bytes.extend_from_slice(&insn.k.to_ne_bytes());
    }
    Ok(bytes)
}

/// Everything needed to start one sandboxed worker.
pub struct SandboxCommand<'a> {
    pub cgroups: &'a Cgroups,
    pub seccomp: &'a Path,
    /// Host directory shown read-only at `/code`.
    pub code: &'a Path,
    /// Host directory holding the socket, shown at `/run/flare`.
    pub run: &'a Path,
    /// Host paths shown read-only at the same place (worker program,
    /// interpreter outside /usr).
    pub ro_binds: &'a [PathBuf],
    /// Host directory shown read-only at `/env` (the worker program).
    pub env_dir: Option<&'a Path>,
    pub network: bool,
    pub env: &'a [(&'a str, String)],
    pub argv: &'a [String],
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl SandboxCommand<'_> {
    /// The `sh -c` script that joins the cgroups, drops to the sandbox
    /// user and runs bubblewrap.
    pub fn script(&self) -> String {
        let mut script = String::new();
        for dir in self.cgroups.dirs() {
            script.push_str(&format!(
                "echo $$ > {} && ",
                quote(&dir.join("cgroup.procs").to_string_lossy())
            ));
        }
        script.push_str(&format!(
            "exec setpriv --reuid={SANDBOX_UID} --regid={SANDBOX_UID} --clear-groups --inh-caps=-all --bounding-set=-all bwrap"
        ));
        let mut args: Vec<String> = vec![
            "--unshare-user".into(),
            "--unshare-pid".into(),
            "--unshare-ipc".into(),
            "--unshare-uts".into(),
            "--unshare-cgroup-try".into(),
            "--die-with-parent".into(),
            "--new-session".into(),
            "--hostname".into(),
            "flare".into(),
            "--ro-bind".into(),
            "/usr".into(),
            "/usr".into(),
            "--symlink".into(),
            "usr/lib".into(),
            "/lib".into(),
            "--symlink".into(),
            "usr/lib64".into(),
            "/lib64".into(),
            "--symlink".into(),
            "usr/bin".into(),
            "/bin".into(),
            "--proc".into(),
            "/proc".into(),
            "--dev".into(),
            "/dev".into(),
            "--tmpfs".into(),
            "/tmp".into(),
            "--ro-bind".into(),
            self.code.to_string_lossy().into_owned(),
            "/code".into(),
            "--bind".into(),
            self.run.to_string_lossy().into_owned(),
            "/run/flare".into(),
            "--chdir".into(),
            "/code".into(),
            "--cap-drop".into(),
            "ALL".into(),
            "--clearenv".into(),
        ];
        if self.network {
            for file in [
                "/etc/resolv.conf",
                "/etc/hosts",
                "/etc/ssl",
                "/etc/nsswitch.conf",
            ] {
                args.extend(["--ro-bind-try".into(), file.into(), file.into()]);
            }
        } else {
            args.push("--unshare-net".into());
        }
        if let Some(env_dir) = self.env_dir {
            args.extend([
                "--ro-bind".into(),
                env_dir.to_string_lossy().into_owned(),
                "/env".into(),
            ]);
        }
        for path in self.ro_binds {
            let p = path.to_string_lossy().into_owned();
            args.extend(["--ro-bind".into(), p.clone(), p]);
        }
        for (key, value) in self.env {
            args.extend(["--setenv".into(), (*key).to_string(), value.clone()]);
        }
        args.extend(["--seccomp".into(), "3".into(), "--".into()]);
        args.extend(self.argv.iter().cloned());
        for arg in args {
            script.push(' ');
            script.push_str(&quote(&arg));
        }
        // fd 3: POSIX sh (dash) only redirects single-digit descriptors.
        script.push_str(&format!(" 3< {}", quote(&self.seccomp.to_string_lossy())));
        script
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seccomp_program_compiles() {
        let bytes = seccomp_program().unwrap();
        assert!(!bytes.is_empty());
        assert_eq!(bytes.len() % 8, 0);
    }

    #[test]
    fn script_quotes_and_walls() {
        let cgroups = Cgroups {
            dirs: vec![PathBuf::from("/sys/fs/cgroup/pids/flare/w1")],
        };
        let cmd = SandboxCommand {
            cgroups: &cgroups,
            seccomp: Path::new("/x/seccomp.bpf"),
            code: Path::new("/w/code"),
            run: Path::new("/w/run"),
            ro_binds: &[PathBuf::from("/opt/it's")],
            env_dir: None,
            network: false,
            env: &[("FLARE_SOCKET", "/run/flare/worker.sock".into())],
            argv: &["/usr/bin/python3".into(), "-I".into()],
        };
        let script = cmd.script();
        assert!(script.starts_with(
            "echo $$ > '/sys/fs/cgroup/pids/flare/w1/cgroup.procs' && exec setpriv --reuid=65534"
        ));
        assert!(script.contains("'--unshare-net'"));
        assert!(script.contains(r"'/opt/it'\''s'"));
        assert!(script.ends_with(" 3< '/x/seccomp.bpf'"));
        std::mem::forget(cgroups);
    }
}
