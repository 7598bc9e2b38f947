//! The one `Engine` of a node, and the thread that drives its epoch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use wasmtime::{Enabled, Engine, Store, UpdateDeadline};
use wasmtime_cli_flags::CommonOptions;

use crate::compile::Compiler;
use crate::flags::RuntimeFlags;
use crate::limits::EPOCH_TICK;
use crate::pool::Pools;

/// Builds the engine from wasmtime's flags, with what a node needs on top:
/// components, async execution and epoch interruption. The pooling allocator
/// is used unless `-O pooling-allocator=n` says otherwise or the platform
/// cannot reserve its memory, in which case the node falls back to on-demand
/// allocation.
pub fn build(options: &mut CommonOptions, concurrency: Concurrency) -> Result<Engine> {
    // The command line's `-O` flags reach `options.opts` when a config is
    // first made from them: make one now, so that the defaults below, and
    // whether pooling was asked for, see what was given.
    options
        .config(None)
        .wasm_context("invalid wasmtime flags")?;
    // Returning a pooled instance's memory to the kernel one instance at a
    // time costs a TLB shootdown on every core per instance; in batches, a
    // fresh instance per call is about 15% faster (see BENCHMARKS.md).
    // `-O pooling-decommit-batch-size=1` restores wasmtime's default.
    options
        .opts
        .pooling_decommit_batch_size
        .get_or_insert(DECOMMIT_BATCH_SIZE);
    keep_memory_resident(options);
    let explicit_pooling = options.opts.pooling_allocator;
    let pooled = configure(options, Some(true), concurrency)
        .and_then(|c| Engine::new(&c).map_err(Into::into));
    match (pooled, explicit_pooling) {
        (Ok(engine), _) => Ok(engine),
        (Err(e), Some(true)) => {
            Err(e.context("cannot create an engine with the pooling allocator"))
        }
        (Err(e), _) => {
            tracing::warn!("pooling allocator unavailable ({e:#}); using on-demand allocation");
            let config = configure(options, Some(false), concurrency)?;
            Engine::new(&config).wasm_context("cannot create the wasm engine")
        }
    }
}

/// Pooled instances whose memory is returned to the kernel together. The
/// memory of up to this many finished instances stays resident until the
/// batch is full (wasmtime flushes it on no timer): 16 keeps nearly all of
/// the speed of 64 (`make bench`, row a) while a burst of guests that grew
/// to their memory limit leaves a quarter as much behind (row r).
const DECOMMIT_BATCH_SIZE: usize = 16;

/// Linear memory a pooled instance's slot keeps resident once the
/// instance is done: up to this much of what it wrote is copied back to the
/// slot's first contents, the rest returned to the kernel. 1 MiB covers the
/// stack and the first heap pages of a typical guest; it read faster than
/// 256 KiB and as fast as 4 MiB (row f of `make bench`).
const MEMORY_KEEP_RESIDENT: usize = 1 << 20;

/// The same for a pooled instance's tables.
const TABLE_KEEP_RESIDENT: usize = 64 << 10;

/// Where the kernel can say which pages an instance wrote (Linux 6.7's
/// `PAGEMAP_SCAN`), a finished instance's slot is reset by copying those
/// pages back rather than by returning them to the kernel: the next
/// instance in the slot then takes no page faults on them, and no TLB
/// shootdown is needed. At 1000 scheduled runs a second with a fresh
/// instance each, this cut the node's CPU per run by about a fifth (row f).
/// Without the scan, wasmtime would reset the whole kept range by hand
/// whether written or not, which is slower than the kernel: then nothing
/// changes. Each default holds only where the flags leave it unset.
fn keep_memory_resident(options: &mut CommonOptions) {
    if !wasmtime::PoolingAllocationConfig::is_pagemap_scan_available() {
        return;
    }
    let opts = &mut options.opts;
    if *opts.pooling_pagemap_scan.get_or_insert(Enabled::Yes) == Enabled::No {
        return;
    }
    opts.pooling_memory_keep_resident
        .get_or_insert(MEMORY_KEEP_RESIDENT);
    opts.pooling_table_keep_resident
        .get_or_insert(TABLE_KEEP_RESIDENT);
}

/// Whether an engine supports the component model's async ABI. Its calls
/// then run as concurrent tasks, which costs a plain synchronous call about
/// a sixth of its speed (measured with `/run/echo`), so the node keeps one
/// engine of each kind for guests and none for the operator.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Concurrency {
    Off,
    On,
}

/// The two engines guests run on: components that use the async ABI on
/// `concurrent`, all others on `sync`; and the per-store limits of the same
/// flags, which every store of either gets.
#[derive(Clone)]
pub struct GuestEngines {
    pub sync: Engine,
    pub concurrent: Engine,
    pub flags: RuntimeFlags,
    /// The pools of idle guest instances, all engines' together.
    pub pools: Pools,
    /// The compile service of each engine: one per engine, whoever asks,
    /// so that its permits bound the node's compiles and not each caller's.
    sync_compiler: Arc<Compiler>,
    concurrent_compiler: Arc<Compiler>,
}

impl GuestEngines {
    /// Both from the same flags (which building parses, as [`build`]), and
    /// those flags checked ([`crate::flags::check`]).
    pub fn build(options: &mut CommonOptions) -> Result<Self> {
        let sync = build(options, Concurrency::Off)?;
        let concurrent = build(&mut options.clone(), Concurrency::On)?;
        let flags = crate::flags::check(options)?;
        Ok(GuestEngines {
            sync_compiler: Arc::new(Compiler::new(&sync)),
            concurrent_compiler: Arc::new(Compiler::new(&concurrent)),
            sync,
            concurrent,
            flags,
            pools: Pools::new(),
        })
    }

    /// The compile service of `engine`, one of these two.
    pub fn compiler(&self, engine: &Engine) -> Arc<Compiler> {
        if Engine::same(engine, &self.concurrent) {
            self.concurrent_compiler.clone()
        } else {
            self.sync_compiler.clone()
        }
    }
}

fn configure(
    options: &mut CommonOptions,
    pooling: Option<bool>,
    concurrency: Concurrency,
) -> Result<wasmtime::Config> {
    let mut config = options
        .config(pooling)
        .wasm_context("invalid wasmtime flags")?;
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    // Flags that ask for an async feature get concurrency everywhere:
    // wasmtime refuses the one without the other.
    let wasm = &options.wasm;
    let asked = [
        wasm.concurrency_support,
        wasm.component_model_async,
        wasm.component_model_more_async_builtins,
        wasm.component_model_async_stackful,
        wasm.component_model_threading,
        wasm.component_model_error_context,
    ]
    .contains(&Some(true));
    config.concurrency_support(asked || concurrency == Concurrency::On);
    Ok(config)
}

/// Advances the epoch of the node's engines (the guests' and the
/// operator's) every [`EPOCH_TICK`] until dropped: one thread, whatever the
/// number of running guests.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    pub fn start(engines: Vec<Engine>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn({
                let stop = stop.clone();
                move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        for engine in &engines {
                            engine.increment_epoch();
                        }
                    }
                }
            })
            .ok();
        if thread.is_none() {
            tracing::error!("cannot start the epoch thread: guests will not be interrupted");
        }
        EpochTicker { stop, thread }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Makes the guest in `store` yield to the executor at every epoch tick (so a
/// spinning guest cannot starve other requests) and trap once `timeout` has
/// passed. With `-W fuel=N` it also gives the store N fuel: every call, and
/// every request of a reused operator instance, starts with the full amount,
/// so that running out is that call's error and never starves the next.
fn set_deadline<T: 'static>(store: &mut Store<T>, timeout: Duration, fuel: Option<u64>) {
    // A deadline past what `Instant` can hold is no deadline at all.
    let deadline = Instant::now().checked_add(timeout);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            Err(wasmtime::Error::new(Timeout(timeout)))
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });
    if let Some(fuel) = fuel {
        // Fails only when the engine does not consume fuel, and `-W fuel`
        // is what makes it.
        if let Err(e) = store.set_fuel(fuel) {
            tracing::error!("cannot give the store its fuel: {e}");
        }
    }
}

/// Puts a guest call under a deadline: the epoch stops a guest that computes
/// (see [`set_deadline`]); [`Deadline::run`]'s timer stops one that waits on
/// the host (a slow server, say), which no epoch tick reaches. Either way the
/// answer is [`Timeout`]. Usage:
/// `with_deadline(&mut store, t, flags.fuel).run(async { /* use store */ }).await`.
pub fn with_deadline<T: 'static>(
    store: &mut Store<T>,
    timeout: Duration,
    fuel: Option<u64>,
) -> Deadline {
    set_deadline(store, timeout, fuel);
    Deadline(timeout)
}

/// A deadline set on a store, waiting for the call to run under it.
#[must_use = "the call must be run under the deadline"]
pub struct Deadline(Duration);

impl Deadline {
    pub async fn run<F: std::future::Future>(self, call: F) -> Result<F::Output, Timeout> {
        tokio::time::timeout(self.0, call)
            .await
            .map_err(|_| Timeout(self.0))
    }
}

/// The trap raised when a guest runs past its deadline.
#[derive(Debug, thiserror::Error)]
#[error("timed out after {}", humanize(.0))]
pub struct Timeout(pub Duration);

fn humanize(d: &Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// `anyhow`-style context for results carrying wasmtime's own error type,
/// which `anyhow::Context` does not cover.
pub trait WasmContext<T> {
    fn wasm_context(self, context: impl std::fmt::Display + Send + Sync + 'static) -> Result<T>;
    fn with_wasm_context<C: std::fmt::Display + Send + Sync + 'static>(
        self,
        context: impl FnOnce() -> C,
    ) -> Result<T>;
}

impl<T> WasmContext<T> for wasmtime::Result<T> {
    fn wasm_context(self, context: impl std::fmt::Display + Send + Sync + 'static) -> Result<T> {
        self.map_err(|e| anyhow::Error::from(e).context(context))
    }

    fn with_wasm_context<C: std::fmt::Display + Send + Sync + 'static>(
        self,
        context: impl FnOnce() -> C,
    ) -> Result<T> {
        self.map_err(|e| anyhow::Error::from(e).context(context()))
    }
}

/// What a binary is, from its 8-byte header.
#[derive(Debug, PartialEq)]
pub enum WasmKind {
    CoreModule,
    Component,
    /// No `\0asm` header: WebAssembly text at best.
    NotBinary,
}

pub fn wasm_kind(bytes: &[u8]) -> WasmKind {
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => WasmKind::CoreModule,
        Some([0, b'a', b's', b'm', ..]) => WasmKind::Component,
        _ => WasmKind::NotBinary,
    }
}

/// Why a guest call failed, in one line: a deadline, or a trap or error
/// named by its cause rather than by a wasm backtrace.
pub enum GuestFailure {
    TimedOut(String),
    Failed(String),
}

pub fn guest_failure(e: wasmtime::Error) -> GuestFailure {
    if let Some(timeout) = e.downcast_ref::<Timeout>() {
        return GuestFailure::TimedOut(timeout.to_string());
    }
    let cause = if let Some(limit) = e.downcast_ref::<crate::limits::MemoryLimit>() {
        limit.to_string()
    } else if let Some(wasmtime::Trap::OutOfFuel) = e.downcast_ref::<wasmtime::Trap>() {
        "out of fuel: the guest ran past its -W fuel budget".to_string()
    } else if let Some(wasmtime::Trap::StackOverflow) = e.downcast_ref::<wasmtime::Trap>() {
        "stack overflow: the guest recursed too deep".to_string()
    } else if let Some(trap) = e.downcast_ref::<wasmtime::Trap>() {
        trap.to_string()
    } else {
        anyhow::Error::from(e)
            .root_cause()
            .to_string()
            .lines()
            .next()
            .unwrap_or("unknown error")
            .to_string()
    };
    GuestFailure::Failed(cause)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::tests::parse;

    #[test]
    fn slots_keep_what_they_wrote_only_where_the_kernel_can_scan_it() {
        let mut defaults = parse(&[]);
        build(&mut defaults, Concurrency::Off).expect("an engine");
        let opts = &defaults.opts;
        if wasmtime::PoolingAllocationConfig::is_pagemap_scan_available() {
            assert_eq!(opts.pooling_pagemap_scan, Some(Enabled::Yes));
            assert_eq!(
                opts.pooling_memory_keep_resident,
                Some(MEMORY_KEEP_RESIDENT)
            );
            assert_eq!(opts.pooling_table_keep_resident, Some(TABLE_KEEP_RESIDENT));
        } else {
            assert_eq!(opts.pooling_memory_keep_resident, None);
            assert_eq!(opts.pooling_table_keep_resident, None);
        }

        // The flags win, and without the scan nothing is kept.
        let mut off = parse(&["-O", "pooling-pagemap-scan=n"]);
        build(&mut off, Concurrency::Off).expect("an engine");
        assert_eq!(off.opts.pooling_memory_keep_resident, None);
        let mut given = parse(&["-O", "pooling-memory-keep-resident=0"]);
        build(&mut given, Concurrency::Off).expect("an engine");
        assert_eq!(given.opts.pooling_memory_keep_resident, Some(0));
    }
}
