//! Flare's WebAssembly runtime: WASI 0.2 components that export
//! `wasi:http/incoming-handler`, run in-process on wasmtime.
//!
//! - [`WasmRuntime`] owns the [`wasmtime::Engine`] (pooling allocator when the
//!   machine's address space allows it, on-demand allocation otherwise), the
//!   linker, and the one epoch ticker thread that enforces timeouts.
//! - [`WasmRuntime::prepare`] validates and compiles a package once, caches
//!   the compiled artifact on disk by digest (a restart deserializes instead
//!   of recompiling) and returns a [`Prepared`] function: an `InstancePre`
//!   ready to instantiate, kept in memory while a function holds it.
//! - [`WasmRuntime::invoke`] runs one request in a fresh instance with the
//!   function's limits (memory, timeout), environment and outbound-host
//!   allow list, capturing stdout and stderr line by line into the log.
//!
//! [`WasmRuntime`] is a [`flare_runtime::Runtime`]; the executor sees it
//! only through that trait.
//!
//! Deny by default: no preopened directories, no host environment, no
//! sockets, outbound HTTP only to the hosts a function lists.

mod capture;
mod function;
mod host;
mod invoke;
mod prepare;

pub use flare_runtime::{ResponseBody, full_body};
pub use invoke::{Call, InvokeError};
pub use prepare::{PrepareError, Prepared};

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flare_store::logs::LogSender;
use wasmtime::component::Linker;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::host::Host;

/// How often the epoch advances; the granularity of timeouts and of the
/// yields that keep a spinning guest from starving other requests.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Settings of the runtime, decoded once at start-up.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled artifacts are cached, by package digest.
    pub cache_dir: PathBuf,
    /// The largest memory any function may ask for; the size of a pool slot.
    pub max_memory_bytes: usize,
    /// Instances that may exist at once in the pool.
    pub pool_instances: u32,
    /// `None`: use the pooling allocator if the address space allows it.
    pub pooling: Option<bool>,
    /// Where functions' outbound HTTP may connect, beyond their own
    /// `allowHosts` list.
    pub egress: std::sync::Arc<flare_egress::EgressPolicy>,
}

impl RuntimeConfig {
    pub fn new(cache_dir: PathBuf) -> Self {
        RuntimeConfig {
            cache_dir,
            max_memory_bytes: (flare_model::Limits::MAX_MEMORY_MB as usize) << 20,
            pool_instances: 1000,
            pooling: None,
            egress: std::sync::Arc::default(),
        }
    }
}

/// The wasm runtime. One per process.
pub struct WasmRuntime {
    engine: Engine,
    linker: Linker<Host>,
    cache_dir: PathBuf,
    pooling: bool,
    /// What was prepared, by digest, while any function still holds it.
    prepared: Mutex<std::collections::HashMap<String, std::sync::Weak<Prepared>>>,
    ticker: EpochTicker,
    logs: LogSender,
    egress: std::sync::Arc<flare_egress::EgressPolicy>,
    /// One permit per pool slot, taken before instantiation and given back
    /// when the instance's `Store` is dropped, so the pooling allocator is
    /// never asked for more instances than it has. `None` when instances
    /// are allocated on demand.
    slots: Option<Arc<tokio::sync::Semaphore>>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot start the wasm runtime: {0}")]
pub struct StartError(String);

fn base_config() -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config
}

/// Bytes of a freed linear memory / table reset in place rather than
/// decommitted (see `pooling_config`).
const KEEP_RESIDENT_MEMORY: usize = 4 << 20;
const KEEP_RESIDENT_TABLE: usize = 64 << 10;

fn pooling_config(settings: &RuntimeConfig) -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(settings.pool_instances)
        .total_core_instances(settings.pool_instances * 4)
        .total_memories(settings.pool_instances * 2)
        .total_tables(settings.pool_instances * 4)
        .max_memory_size(settings.max_memory_bytes)
        .max_memories_per_component(4)
        .max_tables_per_component(8)
        .max_core_instances_per_component(32)
        // Resetting a slot with madvise makes the kernel flush the TLB of
        // every core (an IPI each): a quarter of the CPU at 10k requests/s.
        // Instead, reset the pages the guest dirtied in place: PAGEMAP_SCAN
        // (Linux >= 6.7) finds them, up to these many bytes per memory and
        // table; anything beyond is still given back with madvise.
        .pagemap_scan(Enabled::Auto)
        .linear_memory_keep_resident(KEEP_RESIDENT_MEMORY)
        .table_keep_resident(KEEP_RESIDENT_TABLE);
    pool
}

impl WasmRuntime {
    /// Starts the runtime; functions' output goes to `logs`.
    pub fn new(settings: RuntimeConfig, logs: LogSender) -> Result<Self, StartError> {
        std::fs::create_dir_all(&settings.cache_dir).map_err(|e| {
            StartError(format!(
                "cannot create {}: {e}",
                settings.cache_dir.display()
            ))
        })?;
        let want_pooling = settings.pooling.unwrap_or(true);
        let (engine, pooling) = match want_pooling {
            true => {
                let mut config = base_config();
                config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling_config(
                    &settings,
                )));
                match Engine::new(&config) {
                    Ok(engine) => (engine, true),
                    Err(e) if settings.pooling.is_none() => {
                        tracing::warn!("pooling allocator unavailable ({e}); allocating on demand");
                        (Self::on_demand_engine()?, false)
                    }
                    Err(e) => return Err(StartError(format!("pooling allocator: {e}"))),
                }
            }
            false => (Self::on_demand_engine()?, false),
        };
        let mut linker = Linker::new(&engine);
        // Components built by Rust's std import wasi:cli and friends besides
        // the proxy world, so link all of WASI 0.2 (as `wasmtime serve -Scli`);
        // the context below grants none of the ambient authority.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| StartError(format!("linking WASI: {e}")))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|e| StartError(format!("linking wasi:http: {e}")))?;
        wasmtime_wasi_config::add_to_linker(&mut linker, |host: &mut host::Host| {
            wasmtime_wasi_config::WasiConfig::from(&*host.config)
        })
        .map_err(|e| StartError(format!("linking wasi:config: {e}")))?;
        let ticker = EpochTicker::start(engine.clone())?;
        Ok(WasmRuntime {
            engine,
            linker,
            cache_dir: settings.cache_dir,
            pooling,
            prepared: Mutex::default(),
            ticker,
            logs,
            egress: settings.egress,
            slots: pooling.then(|| {
                Arc::new(tokio::sync::Semaphore::new(
                    settings.pool_instances as usize,
                ))
            }),
        })
    }

    fn on_demand_engine() -> Result<Engine, StartError> {
        Engine::new(&base_config()).map_err(|e| StartError(e.to_string()))
    }

    /// Whether instances come from the pooling allocator.
    pub fn pooling(&self) -> bool {
        self.pooling
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Pool slots free right now (`None` without a pool).
    pub fn free_slots(&self) -> Option<usize> {
        self.slots.as_ref().map(|slots| slots.available_permits())
    }
}

impl Drop for WasmRuntime {
    fn drop(&mut self) {
        self.ticker.stop();
    }
}

/// The one thread that advances the engine's epoch.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Result<Self, StartError> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("flare-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .map_err(|e| StartError(format!("cannot start the epoch thread: {e}")))?;
        Ok(EpochTicker {
            stop,
            thread: Some(thread),
        })
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
