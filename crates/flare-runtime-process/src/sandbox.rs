//! The walls around a worker, built from tools that do this well rather
//! than hand-written syscalls: bubblewrap for the namespaces, the read-only
//! root and the capability drop; setpriv for the unprivileged uid; cgroup
//! (v1 controllers, as this machine has them) for memory, CPU and process
//! limits; the seccomp filters of [`crate::seccomp`], which bubblewrap
//! installs just before it executes the worker.
//!
//! A worker is started as `sh -c '<join cgroups>; exec setpriv ... bwrap ...'`
//! so that it is inside its cgroups before it runs any code of its own.

use std::path::{Path, PathBuf};

use flare_model::Result;

/// Size of a worker's private /tmp.
pub const TMP_BYTES: u64 = 64 << 20;

/// Size of a worker's `/secrets`: a function's secrets at their largest
/// (16 of 1 MiB), with room for a page per small file (256 keys each).
pub const SECRETS_BYTES: u64 = 48 << 20;

/// The unprivileged user and group workers run as (`nobody`).
pub const SANDBOX_UID: u32 = 65534;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Where the cgroup hierarchy is mounted: `/sys/fs/cgroup`, or
/// `FLARE_CGROUP_ROOT` (an unusual mount; the tests point it at an empty
/// directory to see a host that cannot limit workers).
fn cgroup_root() -> PathBuf {
    std::env::var_os("FLARE_CGROUP_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(CGROUP_ROOT))
}
const CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];
/// The controllers without which a worker is not limited at all.
const REQUIRED: [&str; 2] = ["memory", "pids"];

/// Which cgroup hierarchy the host runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hierarchy {
    /// One directory per controller (`<root>/memory/...`).
    V1,
    /// The unified hierarchy (`<root>/cgroup.controllers` exists).
    V2,
}

/// Where a worker's limits live; removed when dropped.
#[derive(Debug)]
pub struct Cgroups {
    hierarchy: Hierarchy,
    /// v1: one directory per controller found; v2: the worker's one
    /// directory.
    dirs: Vec<PathBuf>,
    /// Required controllers this host does not give us.
    missing: Vec<&'static str>,
}

impl Cgroups {
    /// Creates `flare/<id>` for the worker on this host's hierarchy.
    pub fn create(id: &str) -> Self {
        Cgroups::create_in(&cgroup_root(), id)
    }

    /// [`Cgroups::create`] under `root`, laid out like cgroupfs (tests use
    /// a plain directory).
    pub fn create_in(root: &Path, id: &str) -> Self {
        let mut missing = Vec::new();
        if root.join("cgroup.controllers").is_file() {
            let available =
                std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
            let available: Vec<&str> = available.split_whitespace().collect();
            let wanted: Vec<&str> = CONTROLLERS
                .iter()
                .copied()
                .filter(|c| available.contains(c))
                .collect();
            missing.extend(REQUIRED.iter().filter(|c| !available.contains(c)));
            // Controllers reach a child only when its parent delegates them.
            let enable: String = wanted.iter().map(|c| format!("+{c} ")).collect();
            let parent = root.join("flare");
            let dir = parent.join(id);
            let _ = std::fs::write(root.join("cgroup.subtree_control"), enable.trim());
            let dirs = match std::fs::create_dir_all(&dir) {
                Ok(()) => {
                    let _ = std::fs::write(parent.join("cgroup.subtree_control"), enable.trim());
                    vec![dir]
                }
                Err(e) => {
                    tracing::debug!("no cgroup {}: {e}", dir.display());
                    missing = REQUIRED.to_vec();
                    Vec::new()
                }
            };
            return Cgroups {
                hierarchy: Hierarchy::V2,
                dirs,
                missing,
            };
        }
        let mut dirs = Vec::new();
        for controller in CONTROLLERS {
            let dir = root.join(controller).join("flare").join(id);
            let made = if root.join(controller).is_dir() {
                std::fs::create_dir_all(&dir)
            } else {
                Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "controller not mounted",
                ))
            };
            match made {
                Ok(()) => dirs.push(dir),
                Err(e) => {
                    tracing::debug!("no cgroup {}: {e}", dir.display());
                    if REQUIRED.contains(&controller) {
                        missing.push(controller);
                    }
                }
            }
        }
        Cgroups {
            hierarchy: Hierarchy::V1,
            dirs,
            missing,
        }
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Lets `uid` move processes into these cgroups (a zygote's child
    /// joins its worker's itself): their `cgroup.procs`, and on v2 the
    /// parent's too (moves need write access at the common ancestor).
    pub fn delegate(&self, uid: u32) -> Result<(), String> {
        let mut files: Vec<PathBuf> = self.dirs.iter().map(|d| d.join("cgroup.procs")).collect();
        if self.hierarchy == Hierarchy::V2 {
            files.extend(
                self.dirs
                    .iter()
                    .filter_map(|d| Some(d.parent()?.join("cgroup.procs"))),
            );
        }
        for file in files {
            std::os::unix::fs::chown(&file, Some(uid), None)
                .map_err(|e| format!("cannot delegate {}: {e}", file.display()))?;
        }
        Ok(())
    }

    /// Whether process `pid` is in every one of these cgroups.
    pub fn holds(&self, pid: i32) -> bool {
        let Some(id) = self.dirs.first().and_then(|d| d.file_name()) else {
            return true; // nothing to be in (--allow-unlimited-workers)
        };
        let suffix = format!(":/flare/{}", id.to_string_lossy());
        let joined = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .map(|text| text.lines().filter(|l| l.ends_with(&suffix)).count())
            .unwrap_or(0);
        joined >= self.dirs.len()
    }

    /// Required controllers (memory, pids) this host does not provide:
    /// a worker started anyway runs without those limits.
    pub fn missing(&self) -> &[&'static str] {
        &self.missing
    }

    /// The directory holding `controller`'s files.
    fn dir(&self, controller: &str) -> Option<&Path> {
        match self.hierarchy {
            Hierarchy::V2 => self.dirs.first().map(PathBuf::as_path),
            Hierarchy::V1 => self
                .dirs
                .iter()
                .find(|d| d.components().any(|c| c.as_os_str() == controller))
                .map(PathBuf::as_path),
        }
    }

    fn write(&self, controller: &str, file: &str, value: &str) -> std::io::Result<()> {
        match self.dir(controller) {
            Some(dir) => std::fs::write(dir.join(file), value),
            // A missing controller is reported by `missing`, once.
            None => Ok(()),
        }
    }

    /// Applies a memory limit (bytes, no swap beyond it), a process limit
    /// and a CPU quota in cores. A memory or process limit that cannot be
    /// set is an error, never a silent fallback to the old one.
    pub fn limit(&self, memory_bytes: u64, pids: u32, cpus: f64) -> Result<(), String> {
        let memory = memory_bytes.to_string();
        let failed = |what: &str, e: std::io::Error| format!("cannot set the {what} limit: {e}");
        match self.hierarchy {
            Hierarchy::V1 => {
                // memory.limit_in_bytes may not exceed memsw.limit_in_bytes,
                // so raising needs memsw first and lowering needs it last:
                // try the limit, set memsw (absent without swap accounting),
                // then the limit again if the first try was refused.
                let first = self.write("memory", "memory.limit_in_bytes", &memory);
                let swap = self.write("memory", "memory.memsw.limit_in_bytes", &memory);
                if first.is_err() {
                    self.write("memory", "memory.limit_in_bytes", &memory)
                        .map_err(|e| failed("memory", e))?;
                }
                if let Err(e) = swap
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    self.write("memory", "memory.memsw.limit_in_bytes", &memory)
                        .map_err(|e| failed("memory+swap", e))?;
                }
                self.write("pids", "pids.max", &pids.to_string())
                    .map_err(|e| failed("process", e))?;
                let period = 100_000u64;
                let quota = (cpus * period as f64) as u64;
                let cpu = self
                    .write("cpu", "cpu.cfs_period_us", &period.to_string())
                    .and_then(|()| self.write("cpu", "cpu.cfs_quota_us", &quota.to_string()));
                if let Err(e) = cpu {
                    tracing::warn!("cannot set the CPU quota: {e}");
                }
            }
            Hierarchy::V2 => {
                self.write("memory", "memory.max", &memory)
                    .map_err(|e| failed("memory", e))?;
                // No swap: the limit is the limit.
                let _ = self.write("memory", "memory.swap.max", "0");
                self.write("pids", "pids.max", &pids.to_string())
                    .map_err(|e| failed("process", e))?;
                let period = 100_000u64;
                let quota = (cpus * period as f64) as u64;
                if let Err(e) = self.write("cpu", "cpu.max", &format!("{quota} {period}")) {
                    tracing::warn!("cannot set the CPU quota: {e}");
                }
            }
        }
        Ok(())
    }

    /// Whether the memory limit was hit (the kernel's OOM killer fired).
    pub fn memory_exceeded(&self) -> bool {
        let Some(dir) = self.dir("memory") else {
            return false;
        };
        let count = |file: &str, key: &str| {
            std::fs::read_to_string(dir.join(file))
                .ok()
                .and_then(|text| {
                    text.lines()
                        .find_map(|l| l.strip_prefix(key))
                        .and_then(|n| n.trim().parse::<u64>().ok())
                })
        };
        match self.hierarchy {
            Hierarchy::V2 => count("memory.events", "oom_kill ").is_some_and(|n| n > 0),
            Hierarchy::V1 => {
                count("memory.oom_control", "oom_kill ").is_some_and(|n| n > 0)
                    || std::fs::read_to_string(dir.join("memory.failcnt"))
                        .ok()
                        .and_then(|n| n.trim().parse::<u64>().ok())
                        .is_some_and(|n| n > 0)
            }
        }
    }

    /// Kills every process left in the cgroup (a forked child outliving
    /// the worker) and removes the directories. Blocking: it waits for the
    /// kernel to let go of the directories.
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

    /// [`Cgroups::destroy`] on a blocking thread when called from async
    /// code, so its waiting never holds an async worker thread.
    pub fn destroy_in_background(&mut self) {
        let mut taken = Cgroups {
            hierarchy: self.hierarchy,
            dirs: std::mem::take(&mut self.dirs),
            missing: Vec::new(),
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn_blocking(move || taken.destroy());
            }
            Err(_) => taken.destroy(),
        }
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        self.destroy();
    }
}

/// Whether this host's cgroups can limit a worker's memory and processes:
/// a probe cgroup is made and removed.
pub fn can_limit_workers() -> bool {
    let probe = Cgroups::create(&format!("{}-probe", std::process::id()));
    probe.missing().is_empty()
}

/// The directories that hold workers' cgroups (`flare/` under each
/// controller on v1, under the root on v2), for the controllers this host
/// mounts: a zygote sees them so its children can join their own.
pub fn cgroup_parents() -> Vec<PathBuf> {
    let root = cgroup_root();
    if root.join("cgroup.controllers").is_file() {
        return vec![root.join("flare")];
    }
    CONTROLLERS
        .iter()
        .filter(|c| root.join(c).is_dir())
        .map(|c| root.join(c).join("flare"))
        .collect()
}

/// Removes the cgroups of workers whose server is gone (killed without a
/// chance to clean up): their names start with the server's pid.
pub fn remove_stale_cgroups() {
    let root = cgroup_root();
    let roots = if root.join("cgroup.controllers").is_file() {
        vec![root.join("flare")]
    } else {
        CONTROLLERS
            .iter()
            .map(|c| root.join(c).join("flare"))
            .collect()
    };
    for root in roots {
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
                    hierarchy: Hierarchy::V1,
                    dirs: vec![entry.path()],
                    missing: Vec::new(),
                };
                stale.destroy();
            }
        }
    }
}

/// A host path shown inside at another place.
#[derive(Debug, Clone)]
pub struct Bind {
    pub from: PathBuf,
    pub to: String,
    pub writable: bool,
}

/// Everything needed to start one sandboxed worker.
pub struct SandboxCommand<'a> {
    pub cgroups: &'a Cgroups,
    /// The filters bubblewrap installs: [`crate::seccomp::seccomp_program`],
    /// then [`crate::seccomp::abi_program`].
    pub seccomp: [&'a Path; 2],
    /// Host directory shown read-only at `/code`.
    pub code: &'a Path,
    /// Host directory holding the socket, shown at `/run/flare`.
    pub run: &'a Path,
    /// Host paths shown read-only at the same place (worker program,
    /// interpreter outside /usr).
    pub ro_binds: &'a [PathBuf],
    /// Host paths shown elsewhere.
    pub binds: &'a [Bind],
    /// May create namespaces (a zygote, whose children lock themselves
    /// down before they run anything of a function's).
    pub nested: bool,
    /// Host directory shown read-only at `/env` (the worker program).
    pub env_dir: Option<&'a Path>,
    pub env: &'a [(&'a str, String)],
    pub argv: &'a [String],
}

/// The wall a worker is started behind: one backend per isolation level,
/// each turning the same [`SandboxCommand`] into a way to start it.
#[derive(Debug, Clone)]
pub enum Walls {
    /// bubblewrap on the host kernel ([`SandboxCommand::script`]).
    Namespace,
    /// The same inside gVisor ([`crate::gvisor`]).
    Gvisor(std::sync::Arc<crate::gvisor::Gvisor>),
}

impl Walls {
    /// Memory and processes the wall itself takes within the worker's
    /// cgroups, added to the worker's own limits.
    pub fn overhead(&self) -> (u64, u32) {
        match self {
            Walls::Namespace => (0, 0),
            Walls::Gvisor(_) => (crate::gvisor::OVERHEAD_BYTES, crate::gvisor::OVERHEAD_PIDS),
        }
    }

    /// The `sh -c` script that starts the worker described by `cmd`,
    /// writing what it needs under the worker's directory `dir`.
    pub fn script(
        &self,
        cmd: &SandboxCommand,
        dir: &Path,
        id: &str,
    ) -> std::result::Result<String, String> {
        match self {
            Walls::Namespace => Ok(cmd.script()),
            Walls::Gvisor(gvisor) => gvisor.script(cmd, dir, id),
        }
    }
}

pub(crate) fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl SandboxCommand<'_> {
    /// The start of every script: the shell moves itself into the
    /// worker's cgroups, so all it executes is held by them.
    pub(crate) fn join_cgroups(&self) -> String {
        self.cgroups
            .dirs()
            .iter()
            .map(|dir| {
                format!(
                    "echo $$ > {} && ",
                    quote(&dir.join("cgroup.procs").to_string_lossy())
                )
            })
            .collect()
    }

    /// The `sh -c` script that joins the cgroups, drops to the sandbox
    /// user and runs bubblewrap.
    pub fn script(&self) -> String {
        let mut script = self.join_cgroups();
        script.push_str(&format!(
            "exec setpriv --reuid={SANDBOX_UID} --regid={SANDBOX_UID} --clear-groups --inh-caps=-all --bounding-set=-all bwrap"
        ));
        let mut args: Vec<String> = vec![
            "--unshare-user".into(),
            "--unshare-pid".into(),
            "--unshare-ipc".into(),
            "--unshare-uts".into(),
            "--unshare-cgroup-try".into(),
            // Its own network namespace, holding only its loopback: the
            // one way out is the egress proxy's socket, when it has one.
            "--unshare-net".into(),
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
            // A private /tmp, bounded: its pages count toward the memory
            // limit too, but a full /tmp should fail a write, not kill.
            "--size".into(),
            TMP_BYTES.to_string(),
            "--tmpfs".into(),
            "/tmp".into(),
            // Where a specialized worker writes the function's secrets
            // (read-only files), apart from /tmp.
            "--size".into(),
            SECRETS_BYTES.to_string(),
            "--tmpfs".into(),
            "/secrets".into(),
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
        if !self.nested {
            // No user namespace inside the sandbox's: the seccomp filter
            // refuses the flags too, this makes the kernel refuse them.
            args.push("--disable-userns".into());
        }
        for bind in self.binds {
            args.extend([
                if bind.writable { "--bind" } else { "--ro-bind" }.into(),
                bind.from.to_string_lossy().into_owned(),
                bind.to.clone(),
            ]);
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
        args.extend([
            "--add-seccomp-fd".into(),
            "3".into(),
            "--add-seccomp-fd".into(),
            "4".into(),
            "--".into(),
        ]);
        args.extend(self.argv.iter().cloned());
        for arg in args {
            script.push(' ');
            script.push_str(&quote(&arg));
        }
        // fd 3: POSIX sh (dash) only redirects single-digit descriptors.
        script.push_str(&format!(
            " 3< {} 4< {}",
            quote(&self.seccomp[0].to_string_lossy()),
            quote(&self.seccomp[1].to_string_lossy())
        ));
        script
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn v2_limits_land_in_the_unified_files() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(
            root.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids",
        )
        .unwrap();
        std::fs::write(root.path().join("cgroup.subtree_control"), "").unwrap();
        let mut cgroups = Cgroups::create_in(root.path(), "w1");
        assert!(cgroups.missing().is_empty());
        cgroups.limit(64 << 20, 64, 0.5).unwrap();
        let dir = root.path().join("flare/w1");
        assert_eq!(read(&dir.join("memory.max")), "67108864");
        assert_eq!(read(&dir.join("memory.swap.max")), "0");
        assert_eq!(read(&dir.join("pids.max")), "64");
        assert_eq!(read(&dir.join("cpu.max")), "50000 100000");
        assert_eq!(
            read(&root.path().join("flare/cgroup.subtree_control")),
            "+memory +pids +cpu"
        );
        assert!(!cgroups.memory_exceeded());
        std::fs::write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        )
        .unwrap();
        assert!(cgroups.memory_exceeded());
        // A plain directory cannot be removed while it holds files; the
        // real cgroupfs has none. Drop the record of it instead.
        cgroups.dirs.clear();
    }

    #[test]
    fn v2_without_the_memory_controller_reports_it_missing() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), "cpu pids").unwrap();
        let mut cgroups = Cgroups::create_in(root.path(), "w1");
        assert_eq!(cgroups.missing(), ["memory"]);
        cgroups.dirs.clear();
    }

    #[test]
    fn v1_limits_land_in_each_controller() {
        let root = tempfile::tempdir().unwrap();
        for c in CONTROLLERS {
            std::fs::create_dir(root.path().join(c)).unwrap();
        }
        let mut cgroups = Cgroups::create_in(root.path(), "w1");
        assert!(cgroups.missing().is_empty());
        cgroups.limit(1 << 30, 64, 1.0).unwrap();
        let memory = root.path().join("memory/flare/w1");
        assert_eq!(read(&memory.join("memory.limit_in_bytes")), "1073741824");
        assert_eq!(
            read(&memory.join("memory.memsw.limit_in_bytes")),
            "1073741824"
        );
        assert_eq!(read(&root.path().join("pids/flare/w1/pids.max")), "64");
        assert_eq!(
            read(&root.path().join("cpu/flare/w1/cpu.cfs_quota_us")),
            "100000"
        );
        cgroups.dirs.clear();

        let bare = tempfile::tempdir().unwrap();
        std::fs::create_dir(bare.path().join("cpu")).unwrap();
        let mut cgroups = Cgroups::create_in(bare.path(), "w1");
        assert_eq!(cgroups.missing(), ["memory", "pids"]);
        cgroups.dirs.clear();
    }

    #[test]
    fn script_quotes_and_walls() {
        let cgroups = Cgroups {
            hierarchy: Hierarchy::V1,
            dirs: vec![PathBuf::from("/sys/fs/cgroup/pids/flare/w1")],
            missing: Vec::new(),
        };
        let cmd = SandboxCommand {
            cgroups: &cgroups,
            seccomp: [Path::new("/x/seccomp.bpf"), Path::new("/x/abi.bpf")],
            code: Path::new("/w/code"),
            run: Path::new("/w/run"),
            ro_binds: &[PathBuf::from("/opt/it's")],
            binds: &[],
            nested: false,
            env_dir: None,
            env: &[("FLARE_SOCKET", "/run/flare/worker.sock".into())],
            argv: &["/usr/bin/python3".into(), "-I".into()],
        };
        let script = cmd.script();
        assert!(script.starts_with(
            "echo $$ > '/sys/fs/cgroup/pids/flare/w1/cgroup.procs' && exec setpriv --reuid=65534"
        ));
        assert!(script.contains("'--unshare-net'"));
        assert!(script.contains(r"'/opt/it'\''s'"));
        assert!(script.contains("'--disable-userns'"));
        assert!(script.contains("'--size' '67108864' '--tmpfs' '/tmp'"));
        assert!(script.ends_with(" 3< '/x/seccomp.bpf' 4< '/x/abi.bpf'"));
        std::mem::forget(cgroups);
    }
}
