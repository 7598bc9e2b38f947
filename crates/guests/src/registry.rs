//! Components the node knows (handlers, and components of any other world):
//! validated, compiled once per content digest and kept ready to
//! instantiate.
//!
//! The node's state (`state::components`) is the source of truth for what
//! is registered; this is the compiled, in-memory view of it, plus the
//! components staged for a commit (read from the operator's `registered`
//! directory, kept here by digest until committed). Compiled code is also
//! serialized into the node's cache directory, keyed by digest and engine
//! compatibility, so a restart loads it instead of compiling again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use wasmatic_api::is_valid_name;

use sha2::{Digest, Sha256};
use wasmtime::component::Linker;
use wasmtime::Engine;

use crate::handler::{self, Compiled, Guest, HandlerIndices, HandlerState, InstancePool};
use crate::links;
use wasmatic_api::show_size;
use wasmatic_api::NodeError;
use wasmatic_net::Rule;
use wasmatic_sandbox::compile::{CompileError, Compiler};
use wasmatic_sandbox::engine::{self, GuestEngines, WasmKind};
use wasmatic_state::{HandlerSettings, Link};

/// Suffix of the component files an older node kept in the registered
/// directory (imported into the state at start).
pub const LEGACY_SUFFIX: &str = ".wasm";

/// Bytes of compiled components kept on disk (`STATE/compiled/`), so that
/// a restart does not compile again; the oldest files go past it.
const COMPILED_CACHE_BYTES: u64 = 2 << 30;

/// Staged components kept at most, and their bytes at most: staging is
/// followed by a commit within the same request, so few are ever waiting.
const MAX_STAGED: usize = 64;
const MAX_STAGED_BYTES: usize = 256 << 20;

/// What the node shows of a registered component.
#[derive(Clone, Debug)]
pub struct HandlerInfo {
    pub name: String,
    pub digest: String,
    pub size: u64,
    pub loaded_at: u64,
    /// The handler's own narrowing of the node's outbound policy.
    pub allow_outbound: Option<Vec<String>>,
    /// Whether it is of the handler world (else: any other world).
    pub is_handler: bool,
    pub exports: Vec<wasmatic_sandbox::values::ExportInfo>,
    pub config_keys: Vec<String>,
    /// Calls one instance may serve.
    pub reuse: u32,
    /// Providers of the imports the node does not define.
    pub links: Vec<Link>,
}

impl HandlerInfo {
    /// What the node shows of the component of `digest` and `size` bytes,
    /// compiled as `compiled` (alone or composed: its exports are its own
    /// either way), registered under `name` with `settings` (an empty
    /// name: not registered yet).
    pub fn new(
        name: &str,
        (digest, size): (&str, usize),
        compiled: &Compiled,
        settings: &HandlerSettings,
        loaded_at: u64,
    ) -> Self {
        HandlerInfo {
            name: name.to_string(),
            digest: digest.to_string(),
            size: size as u64,
            loaded_at,
            allow_outbound: settings.allow.clone(),
            is_handler: compiled.handler.is_some(),
            exports: compiled.exports.clone(),
            config_keys: settings.config.iter().map(|(k, _)| k.clone()).collect(),
            reuse: settings.reuse,
            links: settings.links.clone(),
        }
    }
}

/// A component ready to run: composed with its links, if it has any.
#[derive(Clone)]
pub struct Runnable {
    pub compiled: Compiled,
    /// The bytes `compiled` was compiled from (composed with its links).
    pub code: Arc<[u8]>,
    /// The bytes as registered, before any composing: what a component
    /// linking to this one is composed with, beside this one's own
    /// providers (each once).
    pub original: Arc<[u8]>,
}

/// A registered component ready to run.
pub struct Handler {
    pub info: HandlerInfo,
    pub compiled: Compiled,
    /// The bytes it runs (composed with its links).
    pub code: Arc<[u8]>,
    /// The bytes as registered (see [`Runnable::original`]).
    pub original: Arc<[u8]>,
    pub rules: Option<Arc<Vec<Rule>>>,
    pub guest: Arc<Guest>,
    /// Its idle instances, when it opted in to reuse.
    pub pool: InstancePool,
    /// What it was registered with.
    pub settings: HandlerSettings,
}

/// An engine for guests, with its linker and compile service (bounded, one
/// compile per digest, caches bounded in bytes in memory and on disk).
struct GuestEngine {
    linker: Linker<HandlerState>,
    compiler: Arc<Compiler>,
}

impl GuestEngine {
    fn new(engine: &Engine, compiler: Arc<Compiler>, cache_dir: PathBuf) -> anyhow::Result<Self> {
        compiler.set_disk_cache(cache_dir, COMPILED_CACHE_BYTES);
        Ok(GuestEngine {
            linker: handler::linker(engine)?,
            compiler,
        })
    }
}

pub struct Registry {
    /// Components of the component model as it was before async: their
    /// calls skip the machinery of concurrent tasks, which costs a sync call
    /// about a sixth of its speed.
    sync: GuestEngine,
    /// Components that use the component model's async ABI (async
    /// functions, streams, futures, task built-ins), which need the engine's
    /// concurrency support. A component goes here only if `sync` refuses it.
    concurrent: GuestEngine,
    /// Host directory behind the operator's `registered`.
    dir: PathBuf,
    max_size: u64,
    /// The current version of each component, by name.
    current: RwLock<HashMap<String, Arc<Handler>>>,
    /// Bytes checked by `stage`, by digest, oldest first, for `commit`.
    staged: Mutex<Vec<Staged>>,
}

/// A component checked and compiled, waiting to be committed.
#[derive(Clone)]
pub struct Staged {
    pub digest: String,
    pub bytes: Arc<[u8]>,
    pub compiled: Compiled,
}

/// Whether `file` is a plain file name inside the registered directory
/// (no separators, no `..`, nothing hidden from the check below).
fn is_plain_file_name(file: &str) -> bool {
    !file.is_empty()
        && file.len() <= 255
        && file != "."
        && file != ".."
        && !file.contains(['/', '\\', '\0'])
}

impl Registry {
    /// A registry whose components run on `engines` (without and with
    /// concurrency support, see [`Registry::sync`]).
    pub fn new(
        engines: &GuestEngines,
        dir: PathBuf,
        cache_dir: PathBuf,
        max_size: u64,
    ) -> anyhow::Result<Self> {
        Ok(Registry {
            sync: GuestEngine::new(
                &engines.sync,
                engines.compiler(&engines.sync),
                cache_dir.clone(),
            )?,
            concurrent: GuestEngine::new(
                &engines.concurrent,
                engines.compiler(&engines.concurrent),
                cache_dir.join("concurrent"),
            )?,
            dir,
            max_size,
            current: RwLock::new(HashMap::new()),
            staged: Mutex::new(Vec::new()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads `file` from the registered directory, validates and compiles
    /// it, and keeps its bytes by digest for [`Registry::staged`].
    pub async fn stage(&self, file: &str) -> Result<Staged, NodeError> {
        if !is_plain_file_name(file) {
            return Err(NodeError::Invalid(format!("`{file}` is not a file name")));
        }
        let bytes = read_limited(&self.dir.join(file), file, self.max_size).await?;
        self.stage_bytes(bytes).await
    }

    /// Validates and compiles `bytes` (or finds them compiled), and keeps
    /// them by digest for [`Registry::staged`].
    pub async fn stage_bytes(&self, bytes: Vec<u8>) -> Result<Staged, NodeError> {
        let staged = self.compile_bytes(bytes).await?;
        let mut all = self.lock_staged();
        all.retain(|s| s.digest != staged.digest);
        all.push(staged.clone());
        // Oldest first out, past the count or the bytes.
        while all.len() > MAX_STAGED
            || all.iter().map(|s| s.bytes.len()).sum::<usize>() > MAX_STAGED_BYTES
        {
            all.remove(0);
        }
        Ok(staged)
    }

    /// The staged component of `digest`, if it is still staged.
    pub fn staged(&self, digest: &str) -> Option<Staged> {
        self.lock_staged()
            .iter()
            .find(|s| s.digest == digest)
            .cloned()
    }

    /// Forgets a staged component once it is committed.
    pub fn unstage(&self, digest: &str) {
        self.lock_staged().retain(|s| s.digest != digest);
    }

    /// Takes `bytes` as a component's, not compiled yet: within the size
    /// limit, a component at all; answers their digest and the bytes
    /// (shared with a copy already held, if there is one).
    pub fn accept(&self, bytes: Vec<u8>) -> Result<(String, Arc<[u8]>), NodeError> {
        if bytes.len() as u64 > self.max_size {
            return Err(NodeError::TooLarge(format!(
                "the component has {} bytes; a component may have at most {}",
                bytes.len(),
                show_size(self.max_size)
            )));
        }
        describe_kind(&bytes)?;
        Ok(match self.kept_copy(&bytes) {
            Some(kept) => kept,
            None => (hex::encode(Sha256::digest(&bytes)), bytes.into()),
        })
    }

    /// Validates and compiles `bytes` (or finds them compiled).
    pub async fn compile_bytes(&self, bytes: Vec<u8>) -> Result<Staged, NodeError> {
        let (digest, bytes) = self.accept(bytes)?;
        let compiled = self.compile(&digest, bytes.clone()).await?;
        Ok(Staged {
            digest,
            bytes,
            compiled,
        })
    }

    /// Makes a prepared handler the current version of its name; answers it.
    pub fn install(&self, handler: Handler) -> Arc<Handler> {
        let handler = Arc::new(handler);
        self.write_current()
            .insert(handler.info.name.clone(), handler.clone());
        handler
    }

    /// Forgets handler `name`; returns whether it was loaded.
    pub fn unload(&self, name: &str) -> bool {
        self.write_current().remove(name).is_some()
    }

    pub fn get(&self, name: &str) -> Option<Arc<Handler>> {
        self.read_current().get(name).cloned()
    }

    /// How many components are current.
    pub fn count(&self) -> usize {
        self.read_current().len()
    }

    pub fn list(&self) -> Vec<HandlerInfo> {
        let mut infos: Vec<_> = self
            .read_current()
            .values()
            .map(|h| h.info.clone())
            .collect();
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        infos
    }

    /// Names of the component files an older node kept in the registered
    /// directory, and removes temporary files that an interrupted upload
    /// left behind.
    pub fn scan_legacy(&self) -> std::io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else {
                continue;
            };
            if file_name.starts_with('.') && file_name.ends_with(".tmp") {
                tracing::info!(file = file_name, "removing an interrupted upload");
                if let Err(e) = std::fs::remove_file(entry.path()) {
                    tracing::warn!(file = file_name, "cannot remove: {e}");
                }
                continue;
            }
            if let Some(name) = file_name.strip_suffix(LEGACY_SUFFIX) {
                if is_valid_name(name) {
                    names.push(name.to_string());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    /// The bytes of an older node's component file, bounded.
    pub async fn read_legacy(&self, name: &str) -> Result<Vec<u8>, NodeError> {
        let file = format!("{name}{LEGACY_SUFFIX}");
        read_limited(&self.dir.join(&file), &file, self.max_size).await
    }

    /// The compiled component for `bytes`: one already current or staged,
    /// or from the compile service (its caches, or compiled now).
    async fn compile(&self, digest: &str, bytes: Arc<[u8]>) -> Result<Compiled, NodeError> {
        if let Some(found) = self.compiled_of(digest) {
            return Ok(found);
        }
        describe_kind(&bytes)?;
        let compile = |guest: &GuestEngine, bytes: Arc<[u8]>| {
            let compiler = guest.compiler.clone();
            let digest = digest.to_string();
            async move {
                compiler
                    .component(digest, bytes)
                    .await
                    .map_err(|e| match e {
                        CompileError::Invalid(m) => NodeError::Invalid(m),
                        CompileError::Internal(m) => NodeError::Internal(m),
                    })
            }
        };
        // Validation refuses what the sync engine does not support before
        // anything is compiled; the concurrent engine's answer is then the
        // one that counts.
        let (component, guest) = match compile(&self.sync, bytes.clone()).await {
            Ok(component) => (component, &self.sync),
            Err(NodeError::Invalid(_)) => {
                (compile(&self.concurrent, bytes).await?, &self.concurrent)
            }
            Err(e) => return Err(e),
        };
        // Imports the node does not define are linked at registration (see
        // `links`); until then they trap, which lets the component be
        // inspected (its exports, whether it is a handler) but never run:
        // only a linked `pre` runs a component that has them.
        let engine = component.engine();
        let foreign = component
            .component_type()
            .imports(engine)
            .any(|(name, _)| !links::offered_by_node(name));
        let pre = if !foreign {
            guest.linker.instantiate_pre(&component)
        } else {
            let mut inspect = guest.linker.clone();
            inspect
                .define_unknown_imports_as_traps(&component)
                .and_then(|()| inspect.instantiate_pre(&component))
        }
        .map_err(|e| {
            NodeError::Invalid(format!(
                "the node does not offer what the component imports (it offers WASI 0.2, wasi:http, wasmatic:guest and wasmatic:eth): {:#}",
                anyhow::Error::from(e)
            ))
        })?;
        Ok(Compiled {
            handler: HandlerIndices::new(&pre).ok(),
            exports: wasmatic_sandbox::values::exports(&component),
            pre,
        })
    }

    /// Checks the `links` of the component of `bytes` for registration
    /// as `name` (empty: only staged); answers them with each interface in
    /// full.
    pub fn check_links(
        &self,
        name: &str,
        bytes: &[u8],
        links: &[Link],
    ) -> Result<Vec<Link>, NodeError> {
        links::check(name, bytes, links, self)
    }

    /// Checks the `links` of the component of `bytes` (its `digest`) to be
    /// registered as `name` and answers it ready to run, and the links with
    /// each interface in full. Compiled once: alone when it has no links
    /// (`alone`, if it was compiled already), else composed with its
    /// providers' current code, its types checked without compiling it.
    pub async fn link(
        &self,
        name: &str,
        digest: &str,
        bytes: &Arc<[u8]>,
        alone: Option<Compiled>,
        links: &[Link],
    ) -> Result<(Runnable, Vec<Link>), NodeError> {
        let links = self.check_links(name, bytes, links)?;
        if links.is_empty() {
            let compiled = match alone {
                Some(compiled) => compiled,
                None => self.compile(digest, bytes.clone()).await?,
            };
            let runnable = Runnable {
                compiled,
                code: bytes.clone(),
                original: bytes.clone(),
            };
            return Ok((runnable, links));
        }
        let parts = links::gather(&links, bytes.len(), |name| {
            self.get(name)
                .map(|h| (h.original.clone(), h.settings.links.clone()))
        })?;
        let guest = bytes.clone();
        let guest_links = links.clone();
        let composed =
            tokio::task::spawn_blocking(move || links::compose(&guest, &guest_links, &parts))
                .await
                .map_err(|e| NodeError::Internal(format!("the composition task failed: {e}")))?
                .map_err(|e| {
                    NodeError::Invalid(format!(
                        "cannot compose the component with its links: {e:#}"
                    ))
                })?;
        let digest = hex::encode(Sha256::digest(&composed));
        let code: Arc<[u8]> = composed.into();
        let compiled = self.compile(&digest, code.clone()).await?;
        Ok((
            Runnable {
                compiled,
                code,
                original: bytes.clone(),
            },
            links,
        ))
    }

    /// The components linked to `name`, with the interface each takes
    /// from it.
    pub fn dependents(&self, name: &str) -> Vec<(String, Link)> {
        let mut found: Vec<(String, Link)> = self
            .read_current()
            .values()
            .flat_map(|h| {
                h.settings
                    .links
                    .iter()
                    .filter(|l| l.provider == name)
                    .map(|l| (h.info.name.clone(), l.clone()))
            })
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found
    }

    /// The compiled code of `digest`, if a current or staged component has it.
    fn compiled_of(&self, digest: &str) -> Option<Compiled> {
        if let Some(staged) = self.staged(digest) {
            return Some(staged.compiled);
        }
        // A linked component runs composed code: not that of its digest.
        self.read_current()
            .values()
            .find(|h| h.info.digest == digest && h.settings.links.is_empty())
            .map(|h| h.compiled.clone())
    }

    /// The digest and the kept copy of `bytes`, when the node holds the
    /// very same bytes, staged or registered unlinked: the same upload
    /// again (a deploy re-run) is then found by comparing it with the few
    /// kept copies of its length, a fraction of the cost of hashing it, and
    /// is not copied once more.
    fn kept_copy(&self, bytes: &[u8]) -> Option<(String, Arc<[u8]>)> {
        let same = |kept: &Arc<[u8]>| kept.len() == bytes.len() && **kept == *bytes;
        if let Some(staged) = self.lock_staged().iter().find(|s| same(&s.bytes)) {
            return Some((staged.digest.clone(), staged.bytes.clone()));
        }
        // A linked component's code is its composition, not its upload.
        self.read_current()
            .values()
            .find(|h| h.settings.links.is_empty() && same(&h.code))
            .map(|h| (h.info.digest.clone(), h.code.clone()))
    }

    fn lock_staged(&self) -> std::sync::MutexGuard<'_, Vec<Staged>> {
        self.staged.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read_current(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Handler>>> {
        self.current.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_current(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Handler>>> {
        self.current.write().unwrap_or_else(|p| p.into_inner())
    }
}

impl links::Providers for Registry {
    fn provider(&self, name: &str) -> Option<(Arc<[u8]>, Vec<Link>)> {
        self.get(name)
            .map(|h| (h.original.clone(), h.settings.links.clone()))
    }
}

async fn read_limited(path: &Path, file: &str, max_size: u64) -> Result<Vec<u8>, NodeError> {
    let meta = match tokio::fs::metadata(path).await {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(NodeError::NotFound(format!(
                "no file `{file}` in the registered directory"
            )))
        }
        Err(e) => return Err(NodeError::Internal(format!("cannot read `{file}`: {e}"))),
    };
    if !meta.is_file() {
        return Err(NodeError::Invalid(format!(
            "`{file}` is not a regular file"
        )));
    }
    if meta.len() > max_size {
        return Err(NodeError::TooLarge(format!(
            "`{file}` has {} bytes; a handler may have at most {}",
            meta.len(),
            show_size(max_size)
        )));
    }
    tokio::fs::read(path)
        .await
        .map_err(|e| NodeError::Internal(format!("cannot read `{file}`: {e}")))
}

/// Rejects bytes that are not a component with a message saying what they are.
fn describe_kind(bytes: &[u8]) -> Result<(), NodeError> {
    match engine::wasm_kind(bytes) {
        WasmKind::Component => Ok(()),
        WasmKind::CoreModule => Err(NodeError::Invalid(
            "a core WebAssembly module, not a component: build the handler for wasm32-wasip2 (or with cargo component)".into(),
        )),
        WasmKind::NotBinary => Err(NodeError::Invalid(
            "not a WebAssembly binary (no `\\0asm` header)".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        assert!(is_plain_file_name(".upload-1.tmp"));
        for bad in ["", ".", "..", "a/b", "../x", "a\\b", "a\0"] {
            assert!(!is_plain_file_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn kinds() {
        assert!(
            matches!(describe_kind(b"hello world"), Err(NodeError::Invalid(m)) if m.contains("not a WebAssembly"))
        );
        assert!(
            matches!(describe_kind(b"\0asm\x01\0\0\0"), Err(NodeError::Invalid(m)) if m.contains("core"))
        );
        assert!(describe_kind(b"\0asm\x0d\0\x01\0").is_ok());
    }
}
