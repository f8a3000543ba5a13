//! The runtime against real guests (built by `scripts/build-guests.sh`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use flare_model::{Limits, PackageRef};
use flare_runtime_wasm::{Call, InvokeError, PrepareError, Prepared, RuntimeConfig, WasmRuntime};
use flare_store::logs::LogSender;
use http_body_util::BodyExt;

fn guest(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/guests/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: run scripts/build-guests.sh",
        path.display()
    );
    path
}

fn package(tag: &str) -> PackageRef {
    // Any well-formed digest: the runtime keys its caches by it.
    let hex: String = format!("{tag:0>64}")
        .chars()
        .map(|c| {
            if c.is_ascii_hexdigit() {
                c.to_ascii_lowercase()
            } else {
                'e'
            }
        })
        .collect();
    PackageRef {
        digest: format!("sha256:{hex}"),
        size: 1,
    }
}

struct Fixture {
    runtime: WasmRuntime,
    logs: LogSender,
    log_reader: Arc<flare_store::logs::Logs>,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    fixture_with(|_| {})
}

fn fixture_with(configure: impl FnOnce(&mut RuntimeConfig)) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut config = RuntimeConfig::new(dir.path().join("cache"));
    configure(&mut config);
    let store = flare_store::SqliteStore::open(dir.path()).unwrap();
    let (logs, log_reader) = flare_store::logs::start(store.path()).unwrap();
    let runtime = WasmRuntime::new(config, logs.clone()).unwrap();
    Fixture {
        runtime,
        logs,
        log_reader,
        _dir: dir,
    }
}

impl Fixture {
    fn prepare(&self, name: &str) -> Arc<Prepared> {
        self.runtime.prepare(&package(name), &guest(name)).unwrap()
    }

    async fn call(
        &self,
        prepared: &Prepared,
        path: &str,
        limits: Limits,
    ) -> Result<(u16, String), InvokeError> {
        let request = http::Request::builder()
            .uri(format!("http://localhost{path}"))
            .header("host", "localhost")
            .body(Bytes::new())
            .unwrap();
        let call = Call {
            function: "f".into(),
            invocation: path.into(),
            request,
            limits,
            env: Arc::from(vec![("GREETING".to_string(), "hi".to_string())]),
            config: Arc::default(),
            allowed_hosts: Arc::from(Vec::<String>::new()),
            guard: None,
        };
        let response = self.runtime.invoke(prepared, call).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    /// The lines logged for `invocation` once `done` holds for them, or
    /// whatever is there at the deadline.
    async fn log_lines(&self, invocation: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        let query = flare_store::logs::LogQuery {
            invocation: Some(invocation.into()),
            limit: 100,
            ..Default::default()
        };
        // Lines are written in the background: wait for them, with a
        // deadline generous enough for a busy machine.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::time::Instant::now() < deadline {
            let lines: Vec<String> = self
                .log_reader
                .query(&query)
                .unwrap()
                .into_iter()
                .map(|e| e.record.line)
                .collect();
            if done(&lines) {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.log_reader
            .query(&query)
            .unwrap()
            .into_iter()
            .map(|e| e.record.line)
            .collect()
    }
}

/// Pool slots are reused, and reset in place where the guest dirtied them
/// (see `pooling_config`): no request sees another's globals or memory,
/// neither below nor beyond the part reset in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_starts_from_clean_memory() {
    let f = fixture_with(|config| config.pool_instances = 2);
    let guest = f.prepare("misbehave");
    for _ in 0..20 {
        let (status, body) = f.call(&guest, "/state", Limits::default()).await.unwrap();
        assert_eq!((status, body.as_str()), (200, "calls=1 dirty=0"));
    }
}

/// A pool too large to reserve (more address space than the machine has)
/// is not fatal: the runtime allocates instances on demand instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_that_cannot_be_reserved_falls_back_to_on_demand() {
    let f = fixture_with(|config| config.pool_instances = 50_000_000);
    assert!(!f.runtime.pooling(), "the pool cannot have been reserved");
    let hello = f.prepare("hello_rust");
    let (status, body) = f.call(&hello, "/", Limits::default()).await.unwrap();
    assert_eq!((status, body.as_str()), (200, "Hello from Flare!\n"));
    // Asked for explicitly, the same pool is an error, not a silent fallback.
    let dir = tempfile::tempdir().unwrap();
    let mut config = RuntimeConfig::new(dir.path().join("cache"));
    config.pool_instances = 50_000_000;
    config.pooling = Some(true);
    let error = WasmRuntime::new(config, f.logs.clone())
        .err()
        .expect("refused");
    assert!(error.to_string().contains("pooling allocator"), "{error}");
}

/// With every pool slot busy, another request waits for one at most its
/// queue timeout and is then told the pool is full (the executor answers 503
/// with Retry-After), never an instantiation error; a request that arrives
/// while a slot frees within its wait gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pool_makes_callers_wait_then_refuses_clearly() {
    let f = fixture_with(|config| config.pool_instances = 1);
    assert!(f.runtime.pooling());
    let guest = f.prepare("misbehave");
    let short = Limits {
        queue_timeout: Duration::from_millis(100),
        ..Limits::default()
    };
    let patient = Limits {
        queue_timeout: Duration::from_secs(30),
        ..Limits::default()
    };
    // join! polls in order: the slow call takes the only slot first; the
    // others start once they see it taken.
    let (slow, busy, waited) = tokio::join!(
        f.call(&guest, "/sleep?ms=1500", Limits::default()),
        async {
            wait_for_no_free_slot(&f.runtime).await;
            f.call(&guest, "/env", short).await
        },
        async {
            wait_for_no_free_slot(&f.runtime).await;
            f.call(&guest, "/env", patient).await
        },
    );
    assert_eq!(slow.unwrap().0, 200);
    match busy {
        Err(InvokeError::Busy(message)) => {
            assert!(message.contains("no free instance slot"), "{message}")
        }
        other => panic!("expected a full pool, got {other:?}"),
    }
    assert_eq!(waited.unwrap().0, 200, "a patient caller gets the slot");
    assert_eq!(f.runtime.free_slots(), Some(1), "every slot given back");
}

async fn wait_for_no_free_slot(runtime: &WasmRuntime) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while runtime.free_slots() != Some(0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slow call never took its slot"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A slot is free again by the time a caller has its whole answer: clients
/// that send their next request at once never find a pool of 2 full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_to_back_clients_never_find_the_pool_full() {
    let f = Arc::new(fixture_with(|config| config.pool_instances = 2));
    let guest = f.prepare("hello_rust");
    let clients = (0..4).map(|_| {
        let (f, guest) = (f.clone(), guest.clone());
        tokio::spawn(async move {
            let mut answered = 0;
            for _ in 0..200 {
                let (status, _) = f.call(&guest, "/", Limits::default()).await.unwrap();
                answered += usize::from(status == 200);
            }
            answered
        })
    });
    let mut total = 0;
    for client in clients.collect::<Vec<_>>() {
        total += client.await.unwrap();
    }
    assert_eq!(total, 800);
    assert_eq!(f.runtime.free_slots(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_hello_and_caches_the_compiled_artifact() {
    let f = fixture();
    let hello = f.prepare("hello_rust");
    let (status, body) = f.call(&hello, "/", Limits::default()).await.unwrap();
    assert_eq!((status, body.as_str()), (200, "Hello from Flare!\n"));

    // A second runtime on the same cache dir loads the artifact instead of
    // compiling: the source is not read at all.
    let cache = f._dir.path().join("cache");
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1);
    let again = WasmRuntime::new(RuntimeConfig::new(cache), f.logs.clone()).unwrap();
    let prepared = again
        .prepare(&package("hello_rust"), std::path::Path::new("/nonexistent"))
        .unwrap();
    assert_eq!(prepared.digest(), package("hello_rust").digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captures_output_lines_per_invocation() {
    let f = fixture();
    let guest = f.prepare("misbehave");
    let (status, _) = f.call(&guest, "/log?n=3", Limits::default()).await.unwrap();
    assert_eq!(status, 200);
    let lines = f.log_lines("/log?n=3", |l| l.len() >= 4).await;
    assert_eq!(lines, ["line 0", "line 1", "line 2", "to stderr"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trap_is_reported_and_logged() {
    let f = fixture();
    let guest = f.prepare("misbehave");
    let err = f
        .call(&guest, "/trap", Limits::default())
        .await
        .unwrap_err();
    assert!(matches!(err, InvokeError::Trap(_)), "{err:?}");
    // The guest's panic message and the host's trap line are written by
    // different writers: wait for both.
    let lines = f
        .log_lines("/trap", |l| {
            l.iter().any(|l| l.contains("function trapped"))
                && l.iter().any(|l| l.contains("deliberate panic"))
        })
        .await;
    assert!(
        lines.iter().any(|l| l.contains("deliberate panic")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("function trapped")),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_times_out_without_starving_others() {
    let f = Arc::new(fixture());
    let guest = f.prepare("misbehave");
    let limits = Limits {
        timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    let all = f.runtime.free_slots().unwrap();
    let spinner = {
        let (f, guest) = (f.clone(), guest.clone());
        tokio::spawn(async move { f.call(&guest, "/loop", limits).await })
    };
    let spinner2 = {
        let (f, guest) = (f.clone(), guest.clone());
        tokio::spawn(async move { f.call(&guest, "/loop?2", limits).await })
    };
    // Both spinners hold their slots, so both are running.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while f.runtime.free_slots() != Some(all - 2) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "spinners never started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Both worker threads have a spinning guest; a cheap request still runs.
    let (status, body) = f.call(&guest, "/", Limits::default()).await.unwrap();
    assert_eq!((status, body.as_str()), (200, "ok"));
    assert!(
        !spinner.is_finished(),
        "the spinner must still be running when the cheap request is answered"
    );
    let err = spinner.await.unwrap().unwrap_err();
    assert!(matches!(err, InvokeError::Timeout(_)), "{err:?}");
    assert!(matches!(
        spinner2.await.unwrap().unwrap_err(),
        InvokeError::Timeout(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_host_call_times_out() {
    let f = fixture();
    let guest = f.prepare("misbehave");
    let limits = Limits {
        timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let err = f.call(&guest, "/sleep?ms=10000", limits).await.unwrap_err();
    assert!(matches!(err, InvokeError::Timeout(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_hog_hits_its_limit() {
    let f = fixture();
    let guest = f.prepare("misbehave");
    let limits = Limits {
        memory_mb: 32,
        ..Limits::default()
    };
    let err = f.call(&guest, "/oom", limits).await.unwrap_err();
    assert_eq!(err, InvokeError::OutOfMemory(32));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denies_host_env_files_and_unlisted_hosts() {
    let f = fixture();
    let guest = f.prepare("misbehave");
    let (_, env) = f.call(&guest, "/env", Limits::default()).await.unwrap();
    assert_eq!(env, "GREETING=hi", "only the function's own env");
    let (_, fs) = f.call(&guest, "/fs", Limits::default()).await.unwrap();
    assert!(
        !fs.contains("listed /") && !fs.contains("read /etc/passwd"),
        "{fs}"
    );
    assert!(fs.contains("Err"), "{fs}");
    let (status, fetch) = f
        .call(&guest, "/fetch?url=http://127.0.0.1:9/", Limits::default())
        .await
        .unwrap();
    assert_eq!(status, 502);
    assert!(fetch.contains("HttpRequestDenied"), "{fetch}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_packages_that_are_not_http_components() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let core = write("core.wasm", b"\0asm\x01\0\0\0");
    let full = std::fs::read(guest("hello_rust")).unwrap();
    let truncated = write("truncated.wasm", &full[..full.len() / 2]);
    let text = write("hello.py", b"def main(): return 'hi'\n");

    for (tag, path, expect) in [
        ("c1", &core, "core WebAssembly module"),
        ("c2", &truncated, "not a valid component"),
        ("c3", &text, "not WebAssembly"),
    ] {
        match f.runtime.prepare(&package(tag), path) {
            Err(PrepareError::Invalid(message)) => {
                assert!(message.contains(expect), "{tag}: {message}")
            }
            Err(other) => panic!("{tag}: {other:?}"),
            Ok(_) => panic!("{tag}: accepted"),
        }
    }
    let _ = Bytes::new();
}
