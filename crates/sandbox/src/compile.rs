//! The node's one compile service: every module, job and component is
//! compiled here, off the async workers, a bounded number at a time, each
//! digest once however many requests ask for it together, and kept in caches
//! bounded by bytes (in memory, and on disk for components).
//!
//! Compiling is the most expensive thing a client can ask of the node, and
//! cranelift is CPU-bound: run on the async workers, a few large modules
//! stall every request; run without bound, a burst of them starves the node
//! of threads. Hence one permit per core, and compiles inside
//! `spawn_blocking` (or `block_in_place` for synchronous callers).
//!
//! API:
//! `Compiler::new(&engine)` makes the engine's service (once per engine, at
//! start: [`crate::engine::GuestEngines::compiler`]);
//! `compiler.module(digest, bytes)` and `compiler.component(digest, bytes)`
//! compile or find compiled; `compiler.set_disk_cache(dir, max_bytes)` keeps
//! compiled components in `dir`, oldest evicted past `max_bytes`.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use wasmtime::component::Component;
use wasmtime::{Engine, Module};

use crate::cache::ByteCache;

/// Bytes of WebAssembly whose compiled modules, and whose compiled
/// components, are kept in memory. Compiled code is a small multiple of the
/// wasm it comes from.
const CACHED_MODULE_BYTES: usize = 32 << 20;
const CACHED_COMPONENT_BYTES: usize = 128 << 20;

/// Why something did not compile.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The client's bytes: not valid WebAssembly of the kind asked for.
    #[error("{0}")]
    Invalid(String),
    /// The node's fault (a compile task that died).
    #[error("{0}")]
    Internal(String),
}

pub struct Compiler {
    engine: Engine,
    /// Compiles that may run at once.
    permits: Semaphore,
    /// Digests being compiled now; whoever asks for one waits for it.
    in_flight: Mutex<HashSet<String>>,
    finished: Condvar,
    modules: Mutex<ByteCache<Module>>,
    components: Mutex<ByteCache<Component>>,
    disk: Mutex<Option<DiskCache>>,
}

struct DiskCache {
    dir: PathBuf,
    max_bytes: u64,
    /// Names a cached file by the engine's compatibility too: code compiled
    /// by another wasmtime or with other flags is never loaded.
    engine_hash: String,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Compiler {
    /// The compile service of `engine`. A node makes one per engine
    /// ([`crate::engine::GuestEngines::compiler`]), so that its permits bound
    /// the node's compiles and not each caller's.
    pub fn new(engine: &Engine) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Compiler {
            engine: engine.clone(),
            permits: Semaphore::new(cores.max(1)),
            in_flight: Mutex::new(HashSet::new()),
            finished: Condvar::new(),
            modules: Mutex::new(ByteCache::new(CACHED_MODULE_BYTES)),
            components: Mutex::new(ByteCache::new(CACHED_COMPONENT_BYTES)),
            disk: Mutex::new(None),
        }
    }

    /// Keeps compiled components in `dir` too, so that a restart does not
    /// recompile them; the oldest files go past `max_bytes`.
    pub fn set_disk_cache(&self, dir: PathBuf, max_bytes: u64) {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        *lock(&self.disk) = Some(DiskCache {
            dir,
            max_bytes,
            engine_hash: format!("{:016x}", hasher.finish()),
        });
    }

    /// The core module `bytes` (whose sha256 is `digest`), compiled.
    pub async fn module(
        self: &Arc<Self>,
        digest: String,
        bytes: Arc<[u8]>,
    ) -> Result<Module, CompileError> {
        let this = self.clone();
        // Its log lines belong to the request that asked, if one did.
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(|| this.module_blocking(&digest, &bytes)))
            .await
            .map_err(|e| CompileError::Internal(format!("the compile task failed: {e}")))?
    }

    /// The component `bytes` (whose sha256 is `digest`), compiled.
    pub async fn component(
        self: &Arc<Self>,
        digest: String,
        bytes: Arc<[u8]>,
    ) -> Result<Component, CompileError> {
        let this = self.clone();
        // Its log lines belong to the request that asked, if one did.
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            span.in_scope(|| this.component_blocking(&digest, &bytes))
        })
        .await
        .map_err(|e| CompileError::Internal(format!("the compile task failed: {e}")))?
    }

    /// [`Compiler::module`] for a synchronous caller on the runtime: the
    /// worker hands its other tasks over while this one compiles.
    pub fn module_now(&self, digest: &str, bytes: &[u8]) -> Result<Module, CompileError> {
        if let Some(hit) = lock(&self.modules).get(digest) {
            wasmatic_metrics::compile_cache("memory", true);
            return Ok(hit);
        }
        // The caller may be a host function running on a guest's fiber,
        // whose stack is sized for the guest, not for cranelift: compile on
        // a thread of its own.
        off_the_workers(|| {
            std::thread::scope(|scope| {
                std::thread::Builder::new()
                    .name("compile".into())
                    .spawn_scoped(scope, || self.module_blocking(digest, bytes))
                    .map_err(|e| CompileError::Internal(format!("cannot start a compile: {e}")))?
                    .join()
                    .map_err(|_| CompileError::Internal("the compile panicked".into()))?
            })
        })
    }

    fn module_blocking(&self, digest: &str, bytes: &[u8]) -> Result<Module, CompileError> {
        self.single_flight(digest, &self.modules, bytes.len(), || {
            Module::new(&self.engine, bytes).map_err(|e| {
                CompileError::Invalid(format!("not a valid module: {:#}", anyhow::Error::from(e)))
            })
        })
    }

    fn component_blocking(&self, digest: &str, bytes: &[u8]) -> Result<Component, CompileError> {
        self.single_flight(digest, &self.components, bytes.len(), || {
            let path = lock(&self.disk)
                .as_ref()
                .map(|d| d.dir.join(format!("{digest}-{}.cwasm", d.engine_hash)));
            if let Some(path) = path.as_deref() {
                let loaded = self.load(path);
                wasmatic_metrics::compile_cache("disk", loaded.is_some());
                if let Some(component) = loaded {
                    return Ok(component);
                }
            }
            let component = Component::new(&self.engine, bytes).map_err(|e| {
                CompileError::Invalid(format!(
                    "not a valid component: {:#}",
                    anyhow::Error::from(e)
                ))
            })?;
            if let Some(path) = path {
                self.store(&component, &path);
            }
            Ok(component)
        })
    }

    /// Finds `digest` in `cache`, or compiles it with `compile` under a
    /// permit. Whoever asks for a digest being compiled waits for that
    /// compile and takes its result from the cache (or, if it failed,
    /// compiles it again itself: failures are not cached, so that a node
    /// short of memory one moment is not wrong about a module for good).
    fn single_flight<T: Clone>(
        &self,
        digest: &str,
        cache: &Mutex<ByteCache<T>>,
        weight: usize,
        compile: impl FnOnce() -> Result<T, CompileError>,
    ) -> Result<T, CompileError> {
        let mut in_flight = lock(&self.in_flight);
        loop {
            if let Some(hit) = lock(cache).get(digest) {
                wasmatic_metrics::compile_cache("memory", true);
                return Ok(hit);
            }
            if !in_flight.contains(digest) {
                break;
            }
            in_flight = self
                .finished
                .wait(in_flight)
                .unwrap_or_else(|p| p.into_inner());
        }
        in_flight.insert(digest.to_string());
        drop(in_flight);
        wasmatic_metrics::compile_cache("memory", false);
        // Whatever happens below, even a panic, the digest is released.
        let _claim = Claim {
            compiler: self,
            digest,
        };
        let _permit = self.permits.acquire();
        let compiled = compile()?;
        lock(cache).insert(digest.to_string(), compiled.clone(), weight);
        Ok(compiled)
    }

    fn load(&self, path: &Path) -> Option<Component> {
        if !path.exists() {
            return None;
        }
        // SAFETY: the cache directory is the node's own, outside every
        // directory granted to guests, and only `store` writes it: what is
        // there was produced by `Component::serialize` of an engine with the
        // same compatibility hash, which the file name carries.
        match unsafe { Component::deserialize_file(&self.engine, path) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), "ignoring unusable cached code: {e}");
                None
            }
        }
    }

    fn store(&self, component: &Component, path: &Path) {
        let written = component
            .serialize()
            .map_err(anyhow::Error::from)
            .and_then(|bytes| {
                // Whole or not at all: a temporary file, synced, renamed
                // into place, so a crash never leaves a torn file to load.
                use std::io::Write;
                let tmp = path.with_extension("cwasm.tmp");
                let mut file = std::fs::File::create(&tmp)?;
                file.write_all(&bytes)?;
                file.sync_all()?;
                std::fs::rename(&tmp, path)?;
                Ok(())
            });
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), "cannot cache compiled code: {e:#}");
            return;
        }
        if let Some(disk) = lock(&self.disk).as_ref() {
            if let Err(e) = prune(&disk.dir, disk.max_bytes) {
                tracing::warn!(dir = %disk.dir.display(), "cannot prune the compiled cache: {e}");
            }
        }
    }
}

/// Deletes the oldest `.cwasm` files of `dir` until they weigh at most
/// `max_bytes`.
fn prune(dir: &Path, max_bytes: u64) -> std::io::Result<()> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "cwasm") {
            let meta = entry.metadata()?;
            files.push((meta.modified()?, meta.len(), path));
        }
    }
    let mut total: u64 = files.iter().map(|(_, len, _)| len).sum();
    files.sort();
    for (_, len, path) in files {
        if total <= max_bytes {
            break;
        }
        std::fs::remove_file(&path)?;
        total -= len;
    }
    Ok(())
}

/// A digest being compiled, released when dropped.
struct Claim<'a> {
    compiler: &'a Compiler,
    digest: &'a str,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        lock(&self.compiler.in_flight).remove(self.digest);
        self.compiler.finished.notify_all();
    }
}

/// A counting semaphore for threads (compiles block a thread whatever runs
/// them, so the async one would buy nothing here).
struct Semaphore {
    free: Mutex<usize>,
    released: Condvar,
}

impl Semaphore {
    fn new(permits: usize) -> Self {
        Semaphore {
            free: Mutex::new(permits),
            released: Condvar::new(),
        }
    }

    fn acquire(&self) -> Permit<'_> {
        let mut free = lock(&self.free);
        while *free == 0 {
            free = self.released.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        Permit(self)
    }
}

struct Permit<'a>(&'a Semaphore);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *lock(&self.0.free) += 1;
        self.0.released.notify_one();
    }
}

/// Runs `f`, which blocks, without stalling an async worker: on a worker of
/// the multi-threaded runtime the worker's other tasks move elsewhere first.
fn off_the_workers<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            wasmatic_workers::block_in_place(f)
        }
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_compile_per_digest_and_failures_are_not_kept() {
        let engine = Engine::default();
        let compiler = Arc::new(Compiler::new(&engine));
        let wasm = wat::parse_str("(module (func (export \"f\")))").expect("valid WAT");
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (compiler, wasm) = (compiler.clone(), wasm.clone());
                std::thread::spawn(move || compiler.module_now("d", &wasm).expect("compiles"))
            })
            .collect();
        let modules: Vec<Module> = threads
            .into_iter()
            .map(|t| t.join().expect("no panic"))
            .collect();
        // Every caller got the one compiled module.
        for m in &modules[1..] {
            assert!(Module::same(m, &modules[0]));
        }
        assert!(matches!(
            compiler.module_now("bad", b"\0asm\x01\0\0\0junk"),
            Err(CompileError::Invalid(_))
        ));
        assert!(lock(&compiler.in_flight).is_empty());
    }

    #[test]
    fn the_disk_cache_keeps_the_newest_within_its_bytes() {
        let dir = tempfile::tempdir().expect("temp dir");
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            std::fs::write(dir.path().join(format!("{name}.cwasm")), vec![0u8; 100])
                .expect("write");
            let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(i as u64);
            std::fs::File::options()
                .write(true)
                .open(dir.path().join(format!("{name}.cwasm")))
                .and_then(|f| f.set_modified(t))
                .expect("set mtime");
        }
        std::fs::write(dir.path().join("other.txt"), vec![0u8; 1000]).expect("write");
        prune(dir.path(), 250).expect("prune");
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .expect("read")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["b.cwasm", "c.cwasm", "other.txt"]);
    }
}
