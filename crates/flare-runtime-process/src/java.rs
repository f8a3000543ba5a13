//! The Java worker (`environments/java`): a JVM started ahead of demand in
//! the pool, which loads a function's jar with a class loader of its own
//! when it is specialized. Its classes are compiled from the sources the
//! binary carries, with the host's `javac`, the first time a Java
//! environment needs them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use crate::gvisor::find_program;

/// The worker's sources, by file name.
const SOURCES: [(&str, &str); 5] = [
    (
        "Worker.java",
        include_str!("../../../environments/java/flare/Worker.java"),
    ),
    (
        "Json.java",
        include_str!("../../../environments/java/flare/Json.java"),
    ),
    (
        "Handler.java",
        include_str!("../../../environments/java/flare/Handler.java"),
    ),
    (
        "Request.java",
        include_str!("../../../environments/java/flare/Request.java"),
    ),
    (
        "Response.java",
        include_str!("../../../environments/java/flare/Response.java"),
    ),
];

/// Heap the JVM may grow to: a share of the generic worker's memory, so
/// the garbage collector runs before the cgroup's limit is met.
const JVM_FLAGS: [&str; 5] = [
    // One collector thread, no shared-memory statistics file in /tmp.
    "-XX:+UseSerialGC",
    "-XX:-UsePerfData",
    "-Xshare:auto",
    "-XX:MaxRAM=256m",
    "-XX:MaxRAMPercentage=60",
];

/// The host's JDK and the worker compiled for it, once.
pub(crate) struct Java {
    java: PathBuf,
    javac: PathBuf,
    /// `<work>/environments/java`: sources in `src`, classes in `classes`.
    dir: PathBuf,
    classes: OnceLock<Result<PathBuf, String>>,
}

impl Java {
    pub(crate) fn new(java: PathBuf, javac: PathBuf, dir: PathBuf) -> Arc<Self> {
        Arc::new(Java {
            java,
            javac,
            dir,
            classes: OnceLock::new(),
        })
    }

    /// Whether this host has a JDK, or what is missing.
    pub(crate) fn check(&self) -> Result<(), String> {
        for (tool, path) in [("java", &self.java), ("javac", &self.javac)] {
            if find_program(path).is_none() {
                return Err(format!(
                    "the java runtime needs a JDK 17 or later: {tool} is not at \"{}\" on this host (Debian: apt-get install openjdk-17-jdk-headless)",
                    path.display()
                ));
            }
        }
        Ok(())
    }

    /// The compiled worker's class directory (shown at `/env`), compiling
    /// it on first use. Blocking: run it off the async threads.
    pub(crate) fn classes(&self) -> Result<PathBuf, String> {
        self.classes.get_or_init(|| self.compile()).clone()
    }

    /// The compiled classes, if they are ready.
    pub(crate) fn compiled(&self) -> Option<Result<PathBuf, String>> {
        self.classes.get().cloned()
    }

    fn compile(&self) -> Result<PathBuf, String> {
        use std::os::unix::fs::PermissionsExt;
        self.check()?;
        let failed =
            |what: &str, e: std::io::Error| format!("cannot build the Java worker: {what}: {e}");
        let src = self.dir.join("src/flare");
        let classes = self.dir.join("classes");
        std::fs::create_dir_all(&src).map_err(|e| failed("create dir", e))?;
        std::fs::create_dir_all(&classes).map_err(|e| failed("create dir", e))?;
        let mut files = Vec::new();
        for (name, text) in SOURCES {
            let path = src.join(name);
            std::fs::write(&path, text).map_err(|e| failed("write source", e))?;
            files.push(path);
        }
        let out = std::process::Command::new(&self.javac)
            // String concatenation as plain code, not invokedynamic: its
            // first use would cost a request milliseconds of bootstrapping.
            .args(["--release", "17", "-nowarn", "-XDstringConcat=inline", "-d"])
            .arg(&classes)
            .args(&files)
            .output()
            .map_err(|e| failed("run javac", e))?;
        if !out.status.success() {
            return Err(format!(
                "cannot build the Java worker: javac: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        // Readable by the sandbox's user; nothing else of the work dir is.
        for dir in [&self.dir, &classes, &classes.join("flare")] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| failed("chmod", e))?;
        }
        Ok(classes)
    }

    /// The JVM's command line: the real binary (the sandbox has no
    /// /etc/alternatives), the flags, the worker.
    pub(crate) fn argv(&self) -> Vec<String> {
        let java = std::fs::canonicalize(&self.java).unwrap_or_else(|_| self.java.clone());
        let mut argv = vec![java.to_string_lossy().into_owned()];
        argv.extend(JVM_FLAGS.iter().map(|f| f.to_string()));
        argv.extend(["-cp".into(), "/env".into(), "flare.Worker".into()]);
        argv
    }

    /// Host paths the JVM reads outside /usr: Debian keeps its
    /// configuration in /etc/java-N-openjdk, linked from the JDK.
    pub(crate) fn binds(&self) -> Vec<PathBuf> {
        let java = std::fs::canonicalize(&self.java).unwrap_or_else(|_| self.java.clone());
        let Some(home) = java.parent().and_then(Path::parent) else {
            return Vec::new();
        };
        let mut binds: Vec<PathBuf> = ["lib/jvm.cfg", "conf/net.properties"]
            .iter()
            .filter_map(|link| std::fs::canonicalize(home.join(link)).ok())
            .filter_map(|target| target.parent().map(Path::to_path_buf))
            .filter(|dir| !dir.starts_with("/usr"))
            .collect();
        if !java.starts_with("/usr") {
            binds.push(home.to_path_buf());
        }
        binds.sort();
        binds.dedup();
        binds
    }
}
