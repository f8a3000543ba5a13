//! One sandboxed worker process and its connection.
//!
//! A reader task owns the read half of the socket and hands each answer to
//! the request waiting for it (by invocation id), so several invocations
//! can be in flight on one worker. When the worker dies, every waiter is
//! told, with the reason (memory limit, exit status).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use flare_model::{INVOCATION_LOG_BUDGET, LineSplitter, LogRecord, LogStream, now_us};
use flare_store::logs::LogSender;
use serde_json::{Value, json};
use tokio::net::UnixListener;
use tokio::net::unix::OwnedWriteHalf;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

use crate::protocol::{self, Frame};
use crate::sandbox::{Bind, Cgroups, SandboxCommand, Walls};

/// Where a zygote sees the workers' cgroup parents: `<this>/<n>`, in the
/// order of [`crate::sandbox::cgroup_parents`].
pub(crate) const ZYGOTE_CGROUPS: &str = "/.flare/cgroup";

/// How long a worker may take to connect and say `ready`.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a worker could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkerError {
    #[error("worker failed to start: {0}")]
    Start(String),
    #[error("the function exceeded its memory limit and was killed")]
    OutOfMemory,
    #[error("the worker stopped ({0})")]
    Exited(String),
    #[error("the worker was killed by signal {0}")]
    Signal(String),
    #[error("the worker exited with status {0}")]
    Status(i32),
    #[error("{0}")]
    Function(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The function answered, but not with a valid HTTP response; the
    /// worker itself is fine.
    #[error("{0}")]
    BadResponse(String),
}

/// Who the worker's output belongs to, once it is specialized.
#[derive(Default)]
struct Attribution {
    function: Option<Arc<str>>,
    in_flight: Vec<Arc<str>>,
}

struct Shared {
    id: String,
    pending: Mutex<HashMap<String, oneshot::Sender<Result<Frame, WorkerError>>>>,
    /// The answer to a control message (specialize, health).
    control: Mutex<Option<oneshot::Sender<Result<Frame, WorkerError>>>>,
    dead: AtomicBool,
    /// Why the connection was given up, when the worker broke the protocol
    /// (a frame past its limit): the reason every waiter gets.
    fault: Mutex<Option<String>>,
    attribution: Mutex<Attribution>,
    logs: LogSender,
    cgroups: Mutex<Cgroups>,
    /// Memory and processes the wall takes beside the worker.
    overhead: (u64, u32),
    process: tokio::sync::Mutex<Process>,
}

impl Shared {
    /// Stores `lines` for `invocation` of the function this worker was
    /// specialized for (nothing before that).
    fn log_lines(&self, invocation: &str, lines: Vec<(LogStream, String)>) {
        if lines.is_empty() {
            return;
        }
        let function = self
            .attribution
            .lock()
            .ok()
            .and_then(|a| a.function.clone());
        let Some(function) = function else { return };
        for (stream, line) in lines {
            self.logs.send(LogRecord {
                ts_us: now_us(),
                function: function.to_string(),
                invocation: invocation.to_string(),
                stream,
                line,
            });
        }
    }
}

/// What a worker becomes: the code to load, and what it sets up first.
pub struct Specialization<'a> {
    pub file: Option<&'a str>,
    pub entrypoint: Option<&'a str>,
    /// Environment variables set before the code is loaded.
    pub env: &'a [(String, String)],
    /// Files written (read-only) before the code is loaded, under
    /// `/secrets`.
    pub files: &'a [(String, Vec<u8>)],
}

impl Specialization<'_> {
    /// The `specialize` frame (environments/PROTOCOL.md); file contents go
    /// as base64.
    fn header(&self) -> serde_json::Value {
        use base64::Engine;
        let env: serde_json::Map<String, serde_json::Value> = self
            .env
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        let files: Vec<serde_json::Value> = self
            .files
            .iter()
            .map(|(path, data)| {
                json!({"path": path, "data": base64::engine::general_purpose::STANDARD.encode(data)})
            })
            .collect();
        json!({
            "op": "specialize",
            "code": "/code",
            "file": self.file,
            "entrypoint": self.entrypoint,
            "env": env,
            "files": files,
        })
    }
}

/// A running worker.
pub struct Worker {
    shared: Arc<Shared>,
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pub(crate) in_flight: AtomicU32,
    dir: PathBuf,
    /// The egress proxy's task, ended with the worker.
    _proxy: Option<AbortOnDrop>,
    /// One control exchange at a time (a zygote is asked to fork by
    /// several starts at once).
    control_turn: tokio::sync::Mutex<()>,
}

/// A task that ends when its owner is dropped.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What to start.
pub struct WorkerPlan<'a> {
    pub id: String,
    pub dir: PathBuf,
    pub seccomp: [&'a Path; 2],
    pub ro_binds: Vec<PathBuf>,
    pub argv: Vec<String>,
    /// The way out, for a function that may call out: its egress proxy
    /// listens on a socket in the sandbox (`/run/flare/egress.sock`).
    pub egress: Option<Arc<flare_egress::proxy::Rules>>,
    pub logs: LogSender,
    /// Memory (bytes), processes and CPUs for the generic worker; tightened
    /// when it is specialized.
    pub memory_bytes: u64,
    pub pids: u32,
    pub cpus: f64,
    /// Host directory of the worker program, shown read-only at `/env`.
    pub env_dir: Option<PathBuf>,
    /// Start even where cgroups cannot limit memory and processes.
    pub allow_unlimited: bool,
    /// The wall it is started behind.
    pub walls: Walls,
    /// Host paths shown elsewhere inside (a zygote's view of the workers).
    pub binds: Vec<Bind>,
    /// A zygote: it may create namespaces (for its children, which lock
    /// themselves down); its `seccomp` admits that.
    pub nested: bool,
}

fn io(what: &str) -> impl Fn(std::io::Error) -> WorkerError + '_ {
    move |e| WorkerError::Start(format!("{what}: {e}"))
}

impl Worker {
    /// Starts a worker in its sandbox and waits for `ready`.
    pub async fn start(plan: WorkerPlan<'_>) -> Result<Worker, WorkerError> {
        let setup = Setup::new(&plan)?;
        let command = SandboxCommand {
            cgroups: &setup.cgroups,
            seccomp: plan.seccomp,
            code: &setup.code,
            run: &setup.run,
            ro_binds: &plan.ro_binds,
            binds: &plan.binds,
            nested: plan.nested,
            env_dir: plan.env_dir.as_deref(),
            env: &setup.env,
            argv: &plan.argv,
        };
        let script = plan
            .walls
            .script(&command, &plan.dir, &plan.id)
            .map_err(WorkerError::Start)?;
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(&script)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(io("spawn sandbox"))?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();

        let accepted = tokio::select! {
            accepted = tokio::time::timeout(START_TIMEOUT, setup.listener.accept()) => accepted,
            status = child.wait() => {
                let mut err = String::new();
                if let Some(mut stderr) = stderr {
                    use tokio::io::AsyncReadExt;
                    let _ = stderr.read_to_string(&mut err).await;
                }
                return Err(WorkerError::Start(format!(
                    "worker exited before connecting ({}): {}",
                    status.map(|s| s.to_string()).unwrap_or_default(),
                    err.trim()
                )));
            }
        };
        let (stream, _) = accepted
            .map_err(|_| WorkerError::Start("worker did not connect within 10s".into()))?
            .map_err(io("accept"))?;
        let worker = setup.finish(plan, stream, Process::Spawned(child)).await?;
        if let Some(stdout) = stdout {
            tokio::spawn(pump(stdout, LogStream::Stdout, worker.shared.clone()));
        }
        if let Some(stderr) = stderr {
            tokio::spawn(pump(stderr, LogStream::Stderr, worker.shared.clone()));
        }
        Ok(worker)
    }

    /// Forks a worker from `zygote` instead of starting one: the child walls
    /// itself off (environments/python/zygote.py) and connects; it is moved
    /// into this worker's cgroups before it says `ready`.
    /// `warm`: the worker runs its request path once before it says ready
    /// (worth it for a worker started ahead of need, not for one a request
    /// waits for).
    pub async fn fork(
        plan: WorkerPlan<'_>,
        zygote: Arc<Worker>,
        warm: bool,
    ) -> Result<Worker, WorkerError> {
        use std::os::unix::fs::PermissionsExt;
        let setup = Setup::new(&plan)?;
        // Its stdout and stderr are FIFOs of its own, and the file its
        // reaper writes the exit status to.
        let uid = nix::unistd::Uid::from_raw(crate::sandbox::SANDBOX_UID);
        let mut pipes = Vec::new();
        for name in ["stdout", "stderr"] {
            let path = setup.run.join(name);
            nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .map_err(|e| WorkerError::Start(format!("mkfifo: {e}")))?;
            nix::unistd::chown(&path, Some(uid), None)
                .map_err(|e| WorkerError::Start(format!("chown fifo: {e}")))?;
            pipes.push(
                tokio::net::unix::pipe::OpenOptions::new()
                    .open_receiver(&path)
                    .map_err(io("open fifo"))?,
            );
        }
        let exit = setup.run.join("exit");
        std::fs::write(&exit, b"").map_err(io("create exit file"))?;
        std::os::unix::fs::chown(&exit, Some(uid.as_raw()), None).map_err(io("chown exit file"))?;
        std::fs::set_permissions(&exit, std::fs::Permissions::from_mode(0o600))
            .map_err(io("chmod exit file"))?;

        let env: serde_json::Map<String, Value> = setup
            .env
            .iter()
            .map(|(k, v)| ((*k).to_string(), Value::String(v.clone())))
            .collect();
        // The child joins its cgroups itself, first thing: each as the
        // zygote sees it (crate::pool binds the parents in order).
        setup
            .cgroups
            .delegate(crate::sandbox::SANDBOX_UID)
            .map_err(WorkerError::Start)?;
        let parents = crate::sandbox::cgroup_parents();
        let cgroups: Vec<String> = setup
            .cgroups
            .dirs()
            .iter()
            .filter_map(|dir| {
                let n = parents
                    .iter()
                    .position(|p| dir.parent() == Some(p.as_path()))?;
                Some(format!("{}/{n}/{}/cgroup.procs", ZYGOTE_CGROUPS, plan.id))
            })
            .collect();
        let request = Frame::new(json!({
            "op": "fork",
            "id": plan.id,
            "env": env,
            "cgroups": cgroups,
            "tmp_bytes": crate::sandbox::TMP_BYTES,
            "secrets_bytes": crate::sandbox::SECRETS_BYTES,
            "warm": warm,
        }));
        let answer = zygote.ask(request, &plan.id, START_TIMEOUT).await?;
        if answer.op() != "forked" {
            return Err(WorkerError::Start(
                answer.str("message").unwrap_or("fork failed").to_string(),
            ));
        }
        let (stream, _) = tokio::time::timeout(START_TIMEOUT, setup.listener.accept())
            .await
            .map_err(|_| WorkerError::Start("forked worker did not connect within 10s".into()))?
            .map_err(io("accept"))?;
        // The kernel says who connected; it must be held by its cgroups
        // before it says ready (and so before any function code runs).
        let pid = stream
            .peer_cred()
            .map_err(io("peer credentials"))?
            .pid()
            .ok_or_else(|| WorkerError::Start("no pid for the forked worker".into()))?;
        if !setup.cgroups.holds(pid) {
            return Err(WorkerError::Start(format!(
                "forked worker {pid} is not in its cgroups"
            )));
        }
        let worker = setup
            .finish(
                plan,
                stream,
                Process::Forked {
                    exit,
                    _zygote: zygote,
                },
            )
            .await?;
        let [stdout, stderr] =
            <[_; 2]>::try_from(pipes).map_err(|_| WorkerError::Start("worker pipes".into()))?;
        tokio::spawn(pump(stdout, LogStream::Stdout, worker.shared.clone()));
        tokio::spawn(pump(stderr, LogStream::Stderr, worker.shared.clone()));
        Ok(worker)
    }

    pub fn id(&self) -> &str {
        &self.shared.id
    }

    pub fn is_dead(&self) -> bool {
        self.shared.dead.load(Ordering::Acquire)
    }

    /// The host directory shown read-only at `/code`.
    pub fn code_dir(&self) -> PathBuf {
        self.dir.join("code")
    }

    async fn send(&self, frame: &Frame) -> Result<(), WorkerError> {
        let mut writer = self.writer.lock().await;
        protocol::write(&mut *writer, frame)
            .await
            .map_err(|e| WorkerError::Exited(format!("cannot write to worker: {e}")))
    }

    async fn control(&self, frame: Frame, timeout: Duration) -> Result<Frame, WorkerError> {
        let _turn = self.control_turn.lock().await;
        let (tx, rx) = oneshot::channel();
        if let Ok(mut control) = self.shared.control.lock() {
            *control = Some(tx);
        }
        self.send(&frame).await?;
        self.answer(rx, frame.op(), timeout).await
    }

    /// Sends a request that carries its own `id` and waits for the answer
    /// with that id: unlike [`Worker::control`], such requests overlap (a
    /// zygote's forks).
    async fn ask(&self, frame: Frame, id: &str, timeout: Duration) -> Result<Frame, WorkerError> {
        let (tx, rx) = oneshot::channel();
        let _asking = Asking::register(&self.shared, id, tx);
        self.send(&frame).await?;
        self.answer(rx, frame.op(), timeout).await
    }

    /// The answer to `op`, or why there is none within `timeout`.
    async fn answer(
        &self,
        rx: oneshot::Receiver<Result<Frame, WorkerError>>,
        op: &str,
        timeout: Duration,
    ) -> Result<Frame, WorkerError> {
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(self.death().await),
            Err(_) => Err(WorkerError::Function(format!(
                "worker did not answer {op} within {timeout:?}"
            ))),
        }
    }

    /// Turns this generic worker into `function`'s: its code is already in
    /// [`Worker::code_dir`]. Tightens the limits to the function's.
    pub async fn specialize(
        &self,
        function: Arc<str>,
        what: Specialization<'_>,
        memory_bytes: u64,
        timeout: Duration,
    ) -> Result<(), WorkerError> {
        if let Ok(cgroups) = self.shared.cgroups.lock() {
            let (bytes, pids) = self.shared.overhead;
            cgroups
                .limit(
                    memory_bytes + bytes,
                    crate::PIDS_PER_WORKER + pids,
                    crate::CPUS_PER_WORKER,
                )
                .map_err(WorkerError::Start)?;
        }
        if let Ok(mut attribution) = self.shared.attribution.lock() {
            attribution.function = Some(function);
        }
        let answer = self.control(Frame::new(what.header()), timeout).await?;
        match answer.op() {
            "specialized" => Ok(()),
            _ => Err(WorkerError::Function(
                answer
                    .str("message")
                    .unwrap_or("specialize failed")
                    .to_string(),
            )),
        }
    }

    /// Sends one request and waits for its answer.
    pub async fn invoke(
        &self,
        invocation: &Arc<str>,
        request: &http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, WorkerError> {
        let headers: Vec<Value> = request
            .headers()
            .iter()
            .map(|(k, v)| json!([k.as_str(), String::from_utf8_lossy(v.as_bytes())]))
            .collect();
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
        let mut frame = Frame::new(json!({
            "op": "invoke",
            "id": &**invocation,
            "method": request.method().as_str(),
            "path": path,
            "headers": headers,
        }));
        frame.body = request.body().clone();
        let (tx, rx) = oneshot::channel();
        let _waiting = Waiting::register(&self.shared, invocation, tx);
        let result = match self.send(&frame).await {
            Ok(()) => match rx.await {
                Ok(answer) => answer,
                Err(_) => Err(self.death().await),
            },
            Err(e) => Err(e),
        };
        // Its output was stored by the reader as it arrived.
        let answer = result?;
        match answer.op() {
            "response" => response_of(answer),
            _ => Err(WorkerError::Function(
                answer
                    .str("message")
                    .unwrap_or("the function failed")
                    .to_string(),
            )),
        }
    }

    /// Stores lines a worker reported for an invocation.
    pub fn log_lines(&self, invocation: &str, lines: Vec<(LogStream, String)>) {
        self.shared.log_lines(invocation, lines);
    }

    /// Why the worker stopped answering: waits for it to exit.
    async fn death(&self) -> WorkerError {
        self.shared.dead.store(true, Ordering::Release);
        // A worker that broke the protocol may still be alive (blocked on
        // a write nobody reads): the fault is the reason, no need to wait.
        if let Some(fault) = self.shared.fault.lock().ok().and_then(|f| f.clone()) {
            return WorkerError::Protocol(fault);
        }
        let status = {
            let mut process = self.shared.process.lock().await;
            process.ended(Duration::from_secs(2)).await
        };
        let oom = self
            .shared
            .cgroups
            .lock()
            .map(|c| c.memory_exceeded())
            .unwrap_or(false);
        if oom {
            return WorkerError::OutOfMemory;
        }
        status.unwrap_or_else(|| WorkerError::Exited("it stopped answering".into()))
    }

    /// Kills the worker and everything it started.
    pub async fn kill(&self) {
        self.shared.dead.store(true, Ordering::Release);
        {
            let mut process = self.shared.process.lock().await;
            if let Process::Spawned(child) = &mut *process {
                let _ = child.start_kill();
                let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
            }
        }
        if let Ok(mut cgroups) = self.shared.cgroups.lock() {
            cgroups.destroy_in_background();
        }
    }
}

/// What a worker needs before it runs, however it is started: its
/// directories, its socket, its egress proxy, its cgroups (limited).
struct Setup {
    /// Removes the worker's directory if the start fails.
    cleanup: RemoveOnDrop,
    code: PathBuf,
    run: PathBuf,
    socket: PathBuf,
    listener: UnixListener,
    proxy: Option<AbortOnDrop>,
    cgroups: Cgroups,
    overhead: (u64, u32),
    env: Vec<(&'static str, String)>,
}

impl Setup {
    fn new(plan: &WorkerPlan<'_>) -> Result<Setup, WorkerError> {
        use std::os::unix::fs::PermissionsExt;
        let cleanup = RemoveOnDrop(Some(plan.dir.clone()));
        let code = plan.dir.join("code");
        let run = plan.dir.join("run");
        std::fs::create_dir_all(&code).map_err(io("create code dir"))?;
        std::fs::create_dir_all(&run).map_err(io("create run dir"))?;
        // Searchable, not listable, by the sandbox's user (bubblewrap runs
        // as that user and must reach what it binds); the code itself is
        // the function's own and must be listable for imports.
        for (dir, mode) in [(&plan.dir, 0o711), (&code, 0o755), (&run, 0o711)] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
                .map_err(io("chmod"))?;
        }
        let socket = run.join("worker.sock");
        let listener = UnixListener::bind(&socket).map_err(io("bind socket"))?;
        // Only the sandbox's user may connect.
        let uid = crate::sandbox::SANDBOX_UID;
        std::os::unix::fs::chown(&socket, Some(uid), Some(uid)).map_err(io("chown socket"))?;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
            .map_err(io("chmod socket"))?;
        let proxy = match &plan.egress {
            Some(rules) => {
                let path = run.join("egress.sock");
                let listener = UnixListener::bind(&path).map_err(io("bind egress socket"))?;
                std::os::unix::fs::chown(&path, Some(uid), Some(uid))
                    .map_err(io("chown egress socket"))?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(io("chmod egress socket"))?;
                Some(AbortOnDrop(tokio::spawn(flare_egress::proxy::serve(
                    listener,
                    rules.clone(),
                ))))
            }
            None => None,
        };

        let cgroups = Cgroups::create(&plan.id);
        if !cgroups.missing().is_empty() && !plan.allow_unlimited {
            return Err(WorkerError::Start(format!(
                "cannot limit workers: no {} cgroup controller on this host; start the server with --allow-unlimited-workers to run them without those limits",
                cgroups.missing().join(" or ")
            )));
        }
        let overhead = plan.walls.overhead();
        cgroups
            .limit(
                plan.memory_bytes + overhead.0,
                plan.pids + overhead.1,
                plan.cpus,
            )
            .map_err(WorkerError::Start)?;
        let mut env = vec![
            ("FLARE_SOCKET", "/run/flare/worker.sock".to_string()),
            ("FLARE_WORKER_ID", plan.id.clone()),
            ("PATH", "/usr/bin:/bin".to_string()),
            ("HOME", "/tmp".to_string()),
            ("PYTHONUNBUFFERED", "1".to_string()),
            ("PYTHONDONTWRITEBYTECODE", "1".to_string()),
            ("LANG", "C.UTF-8".to_string()),
        ];
        if proxy.is_some() {
            env.push(("FLARE_EGRESS_SOCKET", "/run/flare/egress.sock".to_string()));
        }
        Ok(Setup {
            cleanup,
            code,
            run,
            socket,
            listener,
            proxy,
            cgroups,
            overhead,
            env,
        })
    }

    /// Waits for the connected worker's `ready` and starts reading it.
    async fn finish(
        mut self,
        plan: WorkerPlan<'_>,
        stream: tokio::net::UnixStream,
        process: Process,
    ) -> Result<Worker, WorkerError> {
        let _ = std::fs::remove_file(&self.socket);
        let (mut reader, writer) = stream.into_split();
        let ready = tokio::time::timeout(START_TIMEOUT, protocol::read(&mut reader))
            .await
            .map_err(|_| WorkerError::Start("worker did not say ready within 10s".into()))?
            .map_err(|e| WorkerError::Start(format!("reading ready: {e}")))?;
        if ready.op() != "ready" {
            return Err(WorkerError::Protocol(format!(
                "expected ready, got {}",
                ready.op()
            )));
        }
        tracing::debug!(
            "worker {} ready: {}",
            plan.id,
            ready.str("runtime").unwrap_or("unknown runtime")
        );
        let shared = Arc::new(Shared {
            id: plan.id,
            pending: Mutex::default(),
            control: Mutex::default(),
            dead: AtomicBool::new(false),
            fault: Mutex::default(),
            attribution: Mutex::default(),
            logs: plan.logs,
            cgroups: Mutex::new(self.cgroups),
            overhead: self.overhead,
            process: tokio::sync::Mutex::new(process),
        });
        tokio::spawn(read_loop(reader, shared.clone()));
        // From here the worker's own drop removes its directory.
        self.cleanup.0 = None;
        Ok(Worker {
            shared,
            writer: tokio::sync::Mutex::new(writer),
            in_flight: AtomicU32::new(0),
            dir: plan.dir,
            _proxy: self.proxy,
            control_turn: tokio::sync::Mutex::new(()),
        })
    }
}

/// A directory removed when dropped, unless taken back first.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// How the worker's process came to be, and so how its end is learned.
enum Process {
    /// Started by us: its exit status is ours to wait for.
    Spawned(Child),
    /// Forked by a zygote: its reaper writes how it ended to `exit`; the
    /// zygote lives while its workers do (their pid namespaces are
    /// inside its sandbox's).
    Forked { exit: PathBuf, _zygote: Arc<Worker> },
}

impl Process {
    /// How the worker ended, waiting at most `limit` for it to end.
    async fn ended(&mut self, limit: Duration) -> Option<WorkerError> {
        match self {
            Process::Spawned(child) => match tokio::time::timeout(limit, child.wait()).await {
                Ok(Ok(status)) => Some(exit_reason(status)),
                _ => None,
            },
            Process::Forked { exit, .. } => {
                let deadline = tokio::time::Instant::now() + limit;
                loop {
                    let written = tokio::fs::read_to_string(&*exit).await.unwrap_or_default();
                    if let Some(reason) = forked_exit_reason(&written) {
                        return Some(reason);
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    }
}

/// The reaper's `signal N` or `status N`.
fn forked_exit_reason(written: &str) -> Option<WorkerError> {
    let (kind, number) = written.trim().split_once(' ')?;
    let number: i32 = number.parse().ok()?;
    match kind {
        "signal" => Some(WorkerError::Signal(signal_name(number))),
        "status" => Some(WorkerError::Status(number)),
        _ => None,
    }
}

/// Why the sandbox ended. bubblewrap exits with 128 + the signal when the
/// worker inside was killed by one, as shells do.
fn exit_reason(status: std::process::ExitStatus) -> WorkerError {
    use std::os::unix::process::ExitStatusExt;
    let signal = status.signal().or_else(|| {
        status
            .code()
            .filter(|c| (129..=192).contains(c))
            .map(|c| c - 128)
    });
    match (signal, status.code()) {
        (Some(signal), _) => WorkerError::Signal(signal_name(signal)),
        (None, Some(code)) => WorkerError::Status(code),
        (None, None) => WorkerError::Exited(status.to_string()),
    }
}

/// `9 (SIGKILL)`: the number and, for the signals a worker meets, its name.
fn signal_name(signal: i32) -> String {
    let name = match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        31 => "SIGSYS",
        _ => return signal.to_string(),
    };
    format!("{signal} ({name})")
}

/// An invocation waiting for its answer: registered for the reader task
/// and for log attribution until it is dropped, however the wait ends.
struct Waiting<'a> {
    shared: &'a Shared,
    invocation: &'a Arc<str>,
}

impl<'a> Waiting<'a> {
    fn register(
        shared: &'a Shared,
        invocation: &'a Arc<str>,
        answer: oneshot::Sender<Result<Frame, WorkerError>>,
    ) -> Self {
        if let Ok(mut pending) = shared.pending.lock() {
            pending.insert(invocation.to_string(), answer);
        }
        if let Ok(mut attribution) = shared.attribution.lock() {
            attribution.in_flight.push(invocation.clone());
        }
        Waiting { shared, invocation }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Ok(mut pending) = self.shared.pending.lock() {
            pending.remove(&**self.invocation);
        }
        if let Ok(mut attribution) = self.shared.attribution.lock() {
            attribution.in_flight.retain(|id| id != self.invocation);
        }
    }
}

/// A request waiting for its answer by id (not an invocation: nothing of
/// the worker's output is filed under it); unregistered when dropped.
struct Asking<'a> {
    shared: &'a Shared,
    id: &'a str,
}

impl<'a> Asking<'a> {
    fn register(
        shared: &'a Shared,
        id: &'a str,
        answer: oneshot::Sender<Result<Frame, WorkerError>>,
    ) -> Self {
        if let Ok(mut pending) = shared.pending.lock() {
            pending.insert(id.to_string(), answer);
        }
        Asking { shared, id }
    }
}

impl Drop for Asking<'_> {
    fn drop(&mut self) {
        if let Ok(mut pending) = self.shared.pending.lock() {
            pending.remove(self.id);
        }
    }
}

/// The HTTP response in a `response` frame. A status or header that HTTP
/// cannot carry is the function's mistake, not the worker's: the caller
/// gets a 502 and the worker lives on.
fn response_of(answer: Frame) -> Result<http::Response<Bytes>, WorkerError> {
    let bad = |why: String| Err(WorkerError::BadResponse(why));
    let status = match answer.header.get("status") {
        None | Some(Value::Null) => 200,
        Some(value) => match value.as_u64().and_then(|s| u16::try_from(s).ok()) {
            Some(status) => status,
            None => return bad(format!("status {value} is not an HTTP status")),
        },
    };
    let Ok(status) = http::StatusCode::from_u16(status) else {
        return bad(format!("status {status} is not an HTTP status"));
    };
    let mut response = http::Response::new(answer.body);
    *response.status_mut() = status;
    if let Some(list) = answer.header.get("headers").and_then(Value::as_array) {
        let headers = response.headers_mut();
        for pair in list {
            let (Some(name), Some(value)) = (
                pair.get(0).and_then(Value::as_str),
                pair.get(1).and_then(Value::as_str),
            ) else {
                return bad("a header is not a [name, value] pair of strings".into());
            };
            let Ok(name) = http::HeaderName::from_bytes(name.as_bytes()) else {
                return bad(format!("header name {:?} is not valid", truncated(name)));
            };
            let Ok(value) = http::HeaderValue::from_str(value) else {
                return bad(format!("the value of header {name} is not valid"));
            };
            headers.append(name, value);
            if headers.len() > MAX_HEADERS {
                return bad(format!(
                    "more than {MAX_HEADERS} headers, past the limit of {}",
                    flare_model::MAX_RESPONSE_HEADERS
                ));
            }
        }
    }
    Ok(response)
}

/// Headers a response frame may carry; the executor applies the real
/// limits, this only bounds the work on a hostile frame.
const MAX_HEADERS: usize = 10_000;

fn truncated(text: &str) -> &str {
    match text.char_indices().nth(64) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.shared.dead.store(true, Ordering::Release);
        if let Ok(mut process) = self.shared.process.try_lock()
            && let Process::Spawned(child) = &mut *process
        {
            let _ = child.start_kill();
        }
        if let Ok(mut cgroups) = self.shared.cgroups.lock() {
            cgroups.destroy_in_background();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A call's output as the worker reports it (`log` frames while it runs,
/// or a `logs` list in its answer), stored as it arrives: split into lines
/// of at most [`flare_model::MAX_LOG_LINE`], at most
/// [`INVOCATION_LOG_BUDGET`] bytes a call, the rest counted and named in
/// one line when the call ends.
#[derive(Default)]
struct CallLogs {
    calls: HashMap<String, CallLog>,
}

#[derive(Default)]
struct CallLog {
    stdout: LineSplitter,
    stderr: LineSplitter,
    kept: usize,
    dropped: u64,
}

/// Calls whose output is followed at once; past it, output for calls no
/// longer waited for is given up.
const MAX_CALLS: usize = 256;

impl CallLogs {
    /// Output of call `id` on `stream`: whole lines are stored now. `None`
    /// is output the worker wrote outside any call in flight (a thread left
    /// running after its call): stored as the worker's own, under
    /// `worker-<id>`, never under another invocation; 1 MiB of it over the
    /// worker's life.
    fn write(
        &mut self,
        shared: &Shared,
        id: Option<&str>,
        stream: LogStream,
        bytes: &[u8],
        dropped: u64,
    ) {
        let own;
        let id = match id {
            Some(id) => id,
            None => {
                own = format!("worker-{}", shared.id);
                self.calls.entry(own.clone()).or_default();
                &own
            }
        };
        if !self.calls.contains_key(id) {
            let waited_for = shared
                .pending
                .lock()
                .map(|p| p.contains_key(id))
                .unwrap_or(false);
            if !waited_for {
                return;
            }
            if self.calls.len() >= MAX_CALLS {
                let pending = shared
                    .pending
                    .lock()
                    .map(|p| p.keys().cloned().collect::<Vec<_>>());
                let pending = pending.unwrap_or_default();
                self.calls.retain(|call, _| pending.contains(call));
            }
        }
        let call = self.calls.entry(id.to_string()).or_default();
        call.dropped = call.dropped.saturating_add(dropped);
        let splitter = match stream {
            LogStream::Stderr => &mut call.stderr,
            _ => &mut call.stdout,
        };
        let kept = splitter
            .push(bytes)
            .into_iter()
            .filter(|line| call_budget(&mut call.kept, &mut call.dropped, line))
            .map(|line| (stream, line))
            .collect();
        shared.log_lines(id, kept);
    }

    /// The call has ended: its unfinished lines and the count of what was
    /// dropped are stored.
    fn end(&mut self, shared: &Shared, id: &str) {
        let Some(mut call) = self.calls.remove(id) else {
            return;
        };
        let mut lines = Vec::new();
        for (stream, rest) in [
            (LogStream::Stdout, call.stdout.finish()),
            (LogStream::Stderr, call.stderr.finish()),
        ] {
            if let Some(line) = rest
                && call_budget(&mut call.kept, &mut call.dropped, &line)
            {
                lines.push((stream, line));
            }
        }
        if call.dropped > 0 {
            lines.push((
                LogStream::System,
                format!(
                    "output over {INVOCATION_LOG_BUDGET} bytes in one invocation: {} more bytes dropped",
                    call.dropped
                ),
            ));
        }
        shared.log_lines(id, lines);
    }

    /// The `logs` list of an answer: `[stream, line]` pairs.
    fn answer(&mut self, shared: &Shared, id: &str, header: &Value) {
        let lines = header.get("logs").and_then(Value::as_array);
        for pair in lines.into_iter().flatten() {
            let (Some(stream), Some(line)) = (
                pair.get(0).and_then(Value::as_str),
                pair.get(1).and_then(Value::as_str),
            ) else {
                continue;
            };
            let mut text = line.as_bytes().to_vec();
            text.push(b'\n');
            self.write(shared, Some(id), stream_of(stream), &text, 0);
        }
        self.end(shared, id);
    }

    fn end_all(&mut self, shared: &Shared) {
        let ids: Vec<String> = self.calls.keys().cloned().collect();
        for id in ids {
            self.end(shared, &id);
        }
    }
}

/// Whether `line` fits the call's budget (and counts it either way).
fn call_budget(kept: &mut usize, dropped: &mut u64, line: &str) -> bool {
    if kept.saturating_add(line.len()) <= INVOCATION_LOG_BUDGET {
        *kept += line.len();
        true
    } else {
        *dropped = dropped.saturating_add(line.len() as u64);
        false
    }
}

fn stream_of(name: &str) -> LogStream {
    match name {
        "stderr" => LogStream::Stderr,
        _ => LogStream::Stdout,
    }
}

async fn read_loop(mut reader: tokio::net::unix::OwnedReadHalf, shared: Arc<Shared>) {
    let mut logs = CallLogs::default();
    loop {
        let frame = match protocol::read(&mut reader).await {
            Ok(frame) => frame,
            Err(e) => {
                if e.kind() == std::io::ErrorKind::InvalidData
                    && let Ok(mut fault) = shared.fault.lock()
                {
                    *fault = Some(e.to_string());
                }
                break;
            }
        };
        let id = frame.str("id").map(str::to_string);
        if frame.op() == "log" {
            let stream = stream_of(frame.str("stream").unwrap_or("stdout"));
            let dropped = frame.header.get("dropped").and_then(Value::as_u64);
            logs.write(
                &shared,
                id.as_deref(),
                stream,
                &frame.body,
                dropped.unwrap_or(0),
            );
            continue;
        }
        if let Some(id) = &id {
            logs.answer(&shared, id, &frame.header);
        }
        let waiter = match id {
            Some(id) => shared.pending.lock().ok().and_then(|mut p| p.remove(&id)),
            None => shared.control.lock().ok().and_then(|mut c| c.take()),
        };
        match waiter {
            Some(waiter) => {
                let _ = waiter.send(Ok(frame));
            }
            None => tracing::debug!("worker {}: unexpected {} frame", shared.id, frame.op()),
        }
    }
    // The worker is gone: what its calls wrote so far is kept (a kill
    // loses at most an unfinished line, which is kept too); then everyone
    // still waiting is woken, and asks why.
    logs.end_all(&shared);
    shared.dead.store(true, Ordering::Release);
    if let Ok(mut pending) = shared.pending.lock() {
        pending.clear();
    }
    if let Ok(mut control) = shared.control.lock() {
        control.take();
    }
}

/// Logs what the worker writes to its real stdout/stderr: for the one
/// invocation in flight if there is exactly one, else for the worker. Lines
/// are capped at [`flare_model::MAX_LOG_LINE`] and each owner at
/// [`INVOCATION_LOG_BUDGET`] bytes, so a worker printing without end (or
/// without a newline) costs a bounded buffer and a bounded log.
async fn pump(mut pipe: impl tokio::io::AsyncRead + Unpin, stream: LogStream, shared: Arc<Shared>) {
    use tokio::io::AsyncReadExt;
    let mut splitter = LineSplitter::default();
    let mut chunk = vec![0; 16 << 10];
    let mut budget = Budget::default();
    loop {
        let (lines, ended) = match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => (splitter.finish().into_iter().collect(), true),
            Ok(n) => (splitter.push(&chunk[..n]), false),
        };
        let (function, invocation) = match shared.attribution.lock() {
            Ok(a) => (
                a.function.clone(),
                match a.in_flight.as_slice() {
                    [one] => one.to_string(),
                    _ => format!("worker-{}", shared.id),
                },
            ),
            Err(_) => (None, String::new()),
        };
        for line in lines {
            let Some(function) = &function else {
                tracing::info!("worker {}: {line}", shared.id);
                continue;
            };
            let Some(line) = budget.admit(&invocation, line) else {
                continue;
            };
            shared.logs.send(LogRecord {
                ts_us: now_us(),
                function: function.to_string(),
                invocation: invocation.clone(),
                stream,
                line,
            });
        }
        if ended {
            return;
        }
    }
}

/// Bytes of output stored per owner (an invocation, or the worker), with
/// one note when an owner's budget runs out. The last [`OWNERS`] owners are
/// remembered, so output that alternates between them cannot reset a
/// budget.
#[derive(Default)]
struct Budget {
    owners: std::collections::VecDeque<(String, usize)>,
}

const OWNERS: usize = 16;

impl Budget {
    /// The line to store for `owner`: `line`, the note that the rest is
    /// dropped, or nothing.
    fn admit(&mut self, owner: &str, line: String) -> Option<String> {
        let index = match self.owners.iter().position(|(o, _)| o == owner) {
            Some(index) => index,
            None => {
                if self.owners.len() == OWNERS {
                    self.owners.pop_front();
                }
                self.owners.push_back((owner.to_string(), 0));
                self.owners.len() - 1
            }
        };
        let written = &mut self.owners[index].1;
        let before = *written;
        *written = written.saturating_add(line.len());
        if *written <= INVOCATION_LOG_BUDGET {
            Some(line)
        } else if before <= INVOCATION_LOG_BUDGET {
            Some(format!(
                "output over {INVOCATION_LOG_BUDGET} bytes in one invocation; the rest is dropped"
            ))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod budget_tests {
    use super::{Budget, INVOCATION_LOG_BUDGET};

    #[test]
    fn alternating_owners_cannot_reset_a_budget() {
        let mut budget = Budget::default();
        let line = "x".repeat(1 << 10);
        let mut kept = 0;
        for i in 0..4 * (INVOCATION_LOG_BUDGET >> 10) {
            let owner = if i % 2 == 0 { "a" } else { "worker" };
            if let Some(l) = budget.admit(owner, line.clone())
                && owner == "a"
                && l == line
            {
                kept += l.len();
            }
        }
        assert_eq!(kept, INVOCATION_LOG_BUDGET);
    }
}

#[cfg(test)]
mod exit_tests {
    use super::{WorkerError, forked_exit_reason};

    #[test]
    fn a_reapers_report_reads_as_a_spawned_workers_status() {
        assert_eq!(
            forked_exit_reason("signal 9"),
            Some(WorkerError::Signal("9 (SIGKILL)".into()))
        );
        assert_eq!(
            forked_exit_reason("status 3\n"),
            Some(WorkerError::Status(3))
        );
        // Not written yet, or not the reaper's.
        for unknown in ["", "status", "status x", "exited 1"] {
            assert_eq!(forked_exit_reason(unknown), None, "{unknown:?}");
        }
    }
}
