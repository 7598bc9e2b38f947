//! Chain RPC for jobs written for the WASM system's file protocol,
//! unchanged: the job writes a JSON-RPC request to a file of its work
//! directory and polls for the answer in another.
//!
//! Each job of a node with chains gets a fresh directory of its own,
//! preopened as `.`, and three environment variables:
//! `WASM_RPC_WORK_DIR` (`.`), `WASM_RPC_REQUEST_FILE`
//! (`wasm_rpc_request.json`) and `WASM_RPC_RESPONSE_FILE`
//! (`wasm_rpc_response.json`). Once the request file holds a whole JSON
//! object it is removed and answered: the response is written beside it and
//! renamed into place, so the job never reads half an answer. A request is
//! `{"method", "params"?, "id"?, "chainId"?}` (a JSON-RPC 2.0 request, the
//! chain defaulting to the job's); the answer is a JSON-RPC 2.0 response
//! whose `error` codes follow JSON-RPC (`-32601` for a refused method,
//! `-32602` for bad params, `-32600` for a request that is not a plain file
//! or is over 1 MiB, the chain node's own code for its errors).
//! The directory is removed when the job ends; a job that keeps more than
//! 16 MiB or 1000 files in it is stopped.
//!
//! The directory belongs to untrusted code, which may put symbolic links,
//! directories or special files where the node expects its files. So the
//! node never goes through a path: it holds the directory open and reads,
//! writes, renames and removes only entries *of that handle*, never
//! following a link (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`), and reads at most
//! the cap, counting the bytes it reads. It learns of the job's writes from
//! the kernel (inotify) rather than by polling, so a job that sleeps costs
//! nothing (when the user's inotify instances are all taken, it polls every
//! 20 ms instead), and all of this runs in one task that ends with the job.

use std::ffi::CString;
use std::io::{Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::fs::{inotify, AtFlags, FileType, Mode, OFlags};
use serde_json::{json, Value};
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

use super::{RpcError, RunRpc};

pub const WORK_DIR_ENV: &str = "WASM_RPC_WORK_DIR";
pub const REQUEST_FILE_ENV: &str = "WASM_RPC_REQUEST_FILE";
pub const RESPONSE_FILE_ENV: &str = "WASM_RPC_RESPONSE_FILE";
pub const REQUEST_FILE: &str = "wasm_rpc_request.json";
pub const RESPONSE_FILE: &str = "wasm_rpc_response.json";
/// The name the answer is written under before it is renamed into place.
const PARTIAL_FILE: &str = ".wasm_rpc_response.json.partial";

/// How long a request file may stay unparsable (a job still writing it)
/// before it is answered as malformed.
const PARTIAL_GRACE: Duration = Duration::from_millis(200);
/// Largest request read.
const MAX_REQUEST: u64 = 1 << 20;
/// What a job may keep in its work directory: it is on the node's disk.
const MAX_WORK_BYTES: u64 = 16 << 20;
const MAX_WORK_ENTRIES: usize = 1000;
/// The directory's size is checked at most this often, and only after the
/// job changed something in it.
const SIZE_CHECK: Duration = Duration::from_millis(20);

/// A job's work directory, removed (with whatever the job left in it) when
/// dropped, and the task answering its requests, stopped then too.
pub struct WorkDir {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
    overflow: watch::Receiver<Option<String>>,
}

impl WorkDir {
    /// Creates a fresh directory and starts answering the requests written
    /// to it, on `chain` unless a request names another.
    pub fn start(rpc: RunRpc, chain: u64) -> std::io::Result<WorkDir> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "wasmatic-job-{}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        ));
        rustix::fs::mkdir(&path, Mode::RWXU)?;
        let opened = Watched::open(&path).map(|watched| (watched, watch_events(&path)));
        let (dir, events) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&path);
                return Err(e);
            }
        };
        let (overflowed, overflow) = watch::channel(None);
        let task = tokio::spawn(serve(dir, events, rpc, chain, overflowed));
        Ok(WorkDir {
            path,
            task,
            overflow,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Resolves, saying why, once the job keeps more in its directory than
    /// it may; the caller stops the job.
    pub async fn overflowed(&self) -> String {
        let mut overflow = self.overflow.clone();
        let why = match overflow.wait_for(Option::is_some).await {
            Ok(why) => why.clone(),
            // The task ended without an overflow: never resolve.
            Err(_) => None,
        };
        match why {
            Some(why) => why,
            None => std::future::pending().await,
        }
    }

    /// The variables the job gets.
    pub fn env() -> [(&'static str, String); 3] {
        [
            (WORK_DIR_ENV, ".".to_string()),
            (REQUEST_FILE_ENV, REQUEST_FILE.to_string()),
            (RESPONSE_FILE_ENV, RESPONSE_FILE.to_string()),
        ]
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        self.task.abort();
        // `remove_dir_all` removes links, never what they point to.
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            tracing::warn!("cannot remove a job's work directory: {e}");
        }
    }
}

/// How often the directory is looked at when the kernel cannot tell the node
/// of changes (the user's inotify instances are all taken).
const POLL_WITHOUT_EVENTS: Duration = Duration::from_millis(20);

/// The kernel's notices of what a job does in `dir`, or `None` (then the
/// directory is polled) when none can be had.
fn watch_events(dir: &Path) -> Option<AsyncFd<OwnedFd>> {
    let watched = inotify_for(dir).and_then(|events| {
        // SAFETY: the `OwnedFd` is moved into the `AsyncFd`, which keeps it
        // open, and it is never replaced, until the `AsyncFd` drops.
        Ok(unsafe { AsyncFd::register_with_interest(events, tokio::io::Interest::READABLE) }?)
    });
    match watched {
        Ok(events) => Some(events),
        Err(e) => {
            tracing::warn!(
                "a job's work directory is polled every {POLL_WITHOUT_EVENTS:?}: no inotify instance ({e})"
            );
            None
        }
    }
}

/// An inotify descriptor watching `dir` for what a job does there: files
/// written and closed, renamed in, created, changed.
fn inotify_for(dir: &Path) -> std::io::Result<OwnedFd> {
    let fd = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)?;
    inotify::add_watch(
        &fd,
        dir,
        inotify::WatchFlags::CLOSE_WRITE
            | inotify::WatchFlags::MOVED_TO
            | inotify::WatchFlags::CREATE
            | inotify::WatchFlags::MODIFY
            | inotify::WatchFlags::ONLYDIR,
    )?;
    Ok(fd)
}

/// Reads every pending event; what they say does not matter, only that the
/// job did something.
fn drain(fd: &OwnedFd) {
    let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
    while let Ok((filled, _)) = rustix::io::read(fd, &mut buf) {
        if filled.is_empty() {
            break;
        }
    }
}

/// Answers the requests written to the directory and watches its size,
/// until aborted.
async fn serve(
    dir: Watched,
    events: Option<AsyncFd<OwnedFd>>,
    rpc: RunRpc,
    chain: u64,
    overflowed: watch::Sender<Option<String>>,
) {
    let mut unparsable_since: Option<Instant> = None;
    let mut last_size_check: Option<Instant> = None;
    let mut size_check_due = false;
    loop {
        // Wake for the job's next change, or to end a request's grace, or
        // for a size check that was put off.
        let wake = match (unparsable_since, size_check_due, last_size_check) {
            (Some(since), _, _) => Some(since + PARTIAL_GRACE),
            (None, true, Some(last)) => Some(last + SIZE_CHECK),
            _ => None,
        };
        let changed = match &events {
            Some(events) => tokio::select! {
                ready = events.readable() => match ready {
                    Ok(mut guard) => {
                        drain(events.get_ref());
                        guard.clear_ready();
                        true
                    }
                    Err(e) => {
                        tracing::warn!("cannot watch a job's work directory: {e}");
                        return;
                    }
                },
                () = sleep_until(wake) => false,
            },
            None => {
                tokio::time::sleep(POLL_WITHOUT_EVENTS).await;
                true
            }
        };
        if changed {
            size_check_due = true;
        }
        if size_check_due && last_size_check.is_none_or(|last| last.elapsed() >= SIZE_CHECK) {
            last_size_check = Some(Instant::now());
            size_check_due = false;
            if let Some(why) = dir.overfull() {
                let _ = overflowed.send(Some(why));
                return;
            }
        }
        let answer = match dir.read_request() {
            Request::Absent => {
                unparsable_since = None;
                continue;
            }
            Request::Refused(why) => error_response(&Value::Null, -32600, &why),
            Request::Read(text) => match serde_json::from_slice::<Value>(&text) {
                Ok(value) if value.is_object() => answer(&rpc, chain, &value).await,
                _ => {
                    let since = *unparsable_since.get_or_insert_with(Instant::now);
                    if since.elapsed() < PARTIAL_GRACE {
                        continue;
                    }
                    error_response(&Value::Null, -32700, "the request is not a JSON object")
                }
            },
        };
        unparsable_since = None;
        dir.remove(REQUEST_FILE);
        if let Err(e) = dir.respond(&answer) {
            tracing::warn!("cannot answer a job's RPC request: {e}");
        }
    }
}

async fn sleep_until(wake: Option<Instant>) {
    match wake {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// What the request file holds.
enum Request {
    Absent,
    /// There, but not something the node reads: said in the answer.
    Refused(String),
    Read(Vec<u8>),
}

/// The work directory, held open: every access is relative to this handle
/// and never follows a link.
struct Watched {
    fd: OwnedFd,
}

impl Watched {
    fn open(path: &Path) -> std::io::Result<Watched> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Watched { fd })
    }

    /// The request file's bytes, if it is a plain file; at most
    /// [`MAX_REQUEST`], counted as read (a file's size may say anything).
    fn read_request(&self) -> Request {
        let opened = rustix::fs::openat(
            &self.fd,
            REQUEST_FILE,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        );
        let fd = match opened {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Request::Absent,
            Err(rustix::io::Errno::LOOP) => {
                return Request::Refused("the request file is a link; write a plain file".into())
            }
            Err(e) => return Request::Refused(format!("cannot open the request file: {e}")),
        };
        match rustix::fs::fstat(&fd) {
            Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile => {}
            Ok(_) => return Request::Refused("the request is not a plain file".into()),
            Err(e) => return Request::Refused(format!("cannot read the request file: {e}")),
        }
        let mut text = Vec::new();
        match std::fs::File::from(fd)
            .take(MAX_REQUEST + 1)
            .read_to_end(&mut text)
        {
            Ok(_) if text.len() as u64 > MAX_REQUEST => {
                Request::Refused(format!("the request is over {} MiB", MAX_REQUEST >> 20))
            }
            Ok(_) => Request::Read(text),
            Err(e) => Request::Refused(format!("cannot read the request file: {e}")),
        }
    }

    /// Removes an entry of the directory (a link itself, not its target).
    fn remove(&self, name: &str) {
        let _ = rustix::fs::unlinkat(&self.fd, name, AtFlags::empty());
    }

    /// Writes the answer beside the request and renames it into place:
    /// into a file the node creates itself (whatever the job put under the
    /// name is removed first, and creating refuses to go through a link).
    fn respond(&self, answer: &Value) -> std::io::Result<()> {
        self.remove(PARTIAL_FILE);
        let fd = rustix::fs::openat(
            &self.fd,
            PARTIAL_FILE,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::RUSR | Mode::WUSR,
        )?;
        std::fs::File::from(fd).write_all(answer.to_string().as_bytes())?;
        rustix::fs::renameat(&self.fd, PARTIAL_FILE, &self.fd, RESPONSE_FILE)?;
        Ok(())
    }

    /// Why the directory holds more than a job may keep, if it does. Walks
    /// subdirectories through handles opened without following links.
    fn overfull(&self) -> Option<String> {
        let mut bytes = 0u64;
        let mut entries = 0usize;
        let mut pending = vec![rustix::fs::openat(
            &self.fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()?];
        while let Some(next) = pending.pop() {
            let names: Vec<CString> = rustix::fs::Dir::read_from(next.as_fd())
                .ok()?
                .filter_map(Result::ok)
                .map(|entry| entry.file_name().to_owned())
                .filter(|name| name.as_bytes() != b"." && name.as_bytes() != b"..")
                .collect();
            for name in names {
                entries += 1;
                let Ok(stat) = rustix::fs::statat(&next, &*name, AtFlags::SYMLINK_NOFOLLOW) else {
                    continue;
                };
                bytes += u64::try_from(stat.st_size).unwrap_or(0);
                if FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
                    if let Ok(sub) = rustix::fs::openat(
                        &next,
                        &*name,
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    ) {
                        pending.push(sub);
                    }
                }
                if entries > MAX_WORK_ENTRIES || bytes > MAX_WORK_BYTES {
                    return Some(format!(
                        "the job kept more than {} MiB or {MAX_WORK_ENTRIES} files in its work directory",
                        MAX_WORK_BYTES >> 20
                    ));
                }
            }
        }
        None
    }
}

async fn answer(rpc: &RunRpc, default_chain: u64, request: &Value) -> Value {
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let Some(method) = request.get("method").and_then(Value::as_str) else {
        return error_response(&id, -32600, "the request has no \"method\"");
    };
    let chain = match request.get("chainId") {
        None | Some(Value::Null) => default_chain,
        Some(v) => match v.as_u64() {
            Some(chain) => chain,
            None => return error_response(&id, -32602, "\"chainId\" must be a number"),
        },
    };
    let params = request.get("params").cloned().unwrap_or(json!([]));
    match rpc.call(chain, method, &params.to_string()).await {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(RpcError::Node(e)) => {
            let mut response = error_response(&id, e.code, &e.message);
            if let Some(data) = e.data.and_then(|d| serde_json::from_str::<Value>(&d).ok()) {
                response["error"]["data"] = data;
            }
            response
        }
        Err(e) => {
            let code = match e {
                RpcError::MethodNotAllowed(_) => -32601,
                RpcError::InvalidParams(_) | RpcError::UnknownChain(_) => -32602,
                _ => -32000,
            };
            error_response(&id, code, &e.to_string())
        }
    }
}

fn error_response(id: &Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watched() -> (tempfile::TempDir, Watched) {
        let dir = tempfile::tempdir().unwrap();
        let watched = Watched::open(dir.path()).unwrap();
        (dir, watched)
    }

    #[test]
    fn answers_never_go_through_a_link_the_job_made() {
        let (dir, watched) = watched();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        let relative = Path::new("..")
            .join(outside.path().file_name().unwrap())
            .join("victim");
        std::os::unix::fs::symlink(&relative, dir.path().join(PARTIAL_FILE)).unwrap();
        std::os::unix::fs::symlink(&relative, dir.path().join(RESPONSE_FILE)).unwrap();
        watched.respond(&json!({"answer": 1})).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        let answered = std::fs::symlink_metadata(dir.path().join(RESPONSE_FILE)).unwrap();
        assert!(answered.is_file(), "the link was replaced by a file");
        assert_eq!(
            std::fs::read_to_string(dir.path().join(RESPONSE_FILE)).unwrap(),
            r#"{"answer":1}"#
        );
    }

    #[test]
    fn requests_are_read_only_from_plain_files_and_up_to_the_cap() {
        let (dir, watched) = watched();
        assert!(matches!(watched.read_request(), Request::Absent));
        std::os::unix::fs::symlink("/dev/zero", dir.path().join(REQUEST_FILE)).unwrap();
        assert!(matches!(watched.read_request(), Request::Refused(why) if why.contains("link")));
        std::fs::remove_file(dir.path().join(REQUEST_FILE)).unwrap();
        std::fs::create_dir(dir.path().join(REQUEST_FILE)).unwrap();
        assert!(matches!(watched.read_request(), Request::Refused(_)));
        std::fs::remove_dir(dir.path().join(REQUEST_FILE)).unwrap();
        std::fs::write(dir.path().join(REQUEST_FILE), vec![b' '; 2 << 20]).unwrap();
        assert!(matches!(watched.read_request(), Request::Refused(why) if why.contains("1 MiB")));
        std::fs::write(dir.path().join(REQUEST_FILE), b"{}").unwrap();
        assert!(matches!(watched.read_request(), Request::Read(text) if text == b"{}"));
    }

    /// Runs the answering task on `dir`, with or without the kernel's
    /// notices, until the job's request is answered; answers the answer.
    async fn answered(events: bool) -> Value {
        let dir = tempfile::tempdir().unwrap();
        let watched = Watched::open(dir.path()).unwrap();
        let events = if events {
            watch_events(dir.path())
        } else {
            None
        };
        let (overflowed, _overflow) = watch::channel(None);
        let task = tokio::spawn(serve(
            watched,
            events,
            RunRpc::new(Default::default()),
            1,
            overflowed,
        ));
        std::fs::write(
            dir.path().join(REQUEST_FILE),
            r#"{"id": 7, "method": "eth_sendTransaction"}"#,
        )
        .unwrap();
        let response = dir.path().join(RESPONSE_FILE);
        let answer = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Ok(text) = std::fs::read_to_string(&response) {
                    return text;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("an answer");
        task.abort();
        serde_json::from_str(&answer).unwrap()
    }

    #[tokio::test]
    async fn requests_are_answered_with_the_kernels_notices_or_by_polling() {
        for events in [true, false] {
            let answer = answered(events).await;
            assert_eq!(answer["id"], 7, "{answer}");
            assert!(answer["error"]["code"].is_i64(), "{answer}");
        }
    }

    #[test]
    fn the_size_walk_counts_links_and_never_follows_them() {
        let (dir, watched) = watched();
        // A link to a big directory counts as one small entry.
        std::os::unix::fs::symlink("/usr", dir.path().join("usr")).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a"), b"1234").unwrap();
        assert_eq!(watched.overfull(), None);
        for i in 0..=MAX_WORK_ENTRIES {
            std::fs::write(dir.path().join(format!("sub/{i}")), b"").unwrap();
        }
        assert!(watched.overfull().unwrap().contains("1000 files"));
    }
}
