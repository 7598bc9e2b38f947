//! PostgreSQL servers for tests: Debian's binaries (`make postgres`), a
//! throwaway cluster in a temp dir on a free loopback port, and a fresh
//! database per test.
//!
//! One file serves both the end-to-end tests (`support::postgres`) and the
//! unit suite (the storage conformance tests include it by path).
//!
//! - [`Cluster::shared`]: one server per test process, started on first
//!   use and stopped when the process exits (an `atexit` hook: a static is
//!   never dropped, and the test harness ends with `exit`).
//! - [`Cluster::private`]: a server of its own, for tests that stop and
//!   start it; stopped when dropped.
//!
//! The server refuses to run as root: as root, its commands run as the
//! `postgres` user (which Debian's package creates) and the directory is
//! handed to it.
#![allow(dead_code)] // each test binary uses its own part of this module

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

/// A PostgreSQL server of the tests.
pub struct Cluster {
    bin: PathBuf,
    /// The data directory (`data`), the server's socket and its log.
    dir: tempfile::TempDir,
    port: u16,
    /// Whether its commands run as the `postgres` user (the tests run as
    /// root).
    as_postgres: bool,
}

static SHARED: OnceLock<Cluster> = OnceLock::new();

/// Stops the shared server as the process exits. It must not panic (it
/// runs inside `exit`), and need not be graceful: the data is thrown away.
extern "C" fn stop_shared() {
    if let Some(cluster) = SHARED.get() {
        let _ = cluster.pg_ctl(&["stop", "-m", "immediate"]).status();
        let _ = std::fs::remove_dir_all(cluster.dir.path());
    }
}

impl Cluster {
    /// The server shared by this process's tests, started on first use.
    pub fn shared() -> &'static Cluster {
        SHARED.get_or_init(|| {
            let cluster = Cluster::new();
            // SAFETY: registers a plain function with no captured state.
            let registered = unsafe { libc::atexit(stop_shared) };
            assert_eq!(registered, 0, "cannot register the server's stop at exit");
            cluster
        })
    }

    /// A server of its own, stopped when dropped.
    pub fn private() -> Cluster {
        Cluster::new()
    }

    /// A fresh, empty database's URL.
    pub fn database(&self) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let output = Command::new(self.bin.join("createdb"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", &name])
            .stdin(Stdio::null())
            .output()
            .expect("run createdb");
        assert!(
            output.status.success(),
            "createdb {name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        self.url(&name)
    }

    /// The URL of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (its clients are disconnected); [`Cluster::start`]
    /// brings it back on the same port with the same data.
    pub fn stop(&self) {
        let status = self
            .pg_ctl(&["stop", "-m", "fast", "-w"])
            .status()
            .expect("run pg_ctl stop");
        assert!(status.success(), "pg_ctl stop failed");
    }

    /// Starts the server again after [`Cluster::stop`].
    pub fn start(&self) {
        assert!(self.try_start(), "{}", self.log());
    }

    fn new() -> Cluster {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("wasmatic-pg")
            .tempdir()
            .expect("temp dir");
        // SAFETY: geteuid has no preconditions.
        let as_postgres = unsafe { libc::geteuid() } == 0;
        if as_postgres {
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("run chown");
            assert!(
                status.success(),
                "cannot hand the test cluster's dir to `postgres`"
            );
        }
        let mut cluster = Cluster {
            bin,
            dir,
            port: 0,
            as_postgres,
        };
        let output = cluster
            .command("initdb")
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "-D",
            ])
            .arg(cluster.data())
            .output()
            .expect("run initdb");
        assert!(
            output.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        // A free port may be taken before the server binds it: a few tries.
        for _ in 0..5 {
            cluster.port = free_port();
            if cluster.try_start() {
                return cluster;
            }
        }
        panic!(
            "the test PostgreSQL server did not start: {}",
            cluster.log()
        );
    }

    fn try_start(&self) -> bool {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=300",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        self.pg_ctl(&["start", "-w", "-t", "60", "-o", &options, "-l"])
            .arg(log)
            .status()
            .expect("run pg_ctl start")
            .success()
    }

    /// The end of the server's log, for a failure's message.
    fn log(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg_ctl(&self, args: &[&str]) -> Command {
        let mut command = self.command("pg_ctl");
        command.arg("-D").arg(self.data()).args(args);
        command
    }

    /// A command of the server's binaries, as the user the server runs as.
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        };
        command.stdin(Stdio::null()).stdout(Stdio::null());
        command
    }
}

impl Drop for Cluster {
    /// Only private servers are dropped (the shared one is a static).
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["stop", "-m", "immediate"]).status();
    }
}

/// The newest `/usr/lib/postgresql/VERSION/bin` that has the server's
/// tools.
fn bin_dir() -> PathBuf {
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            has_tools(&bin).then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version);
    match newest {
        Some((_, bin)) => bin,
        None => panic!("PostgreSQL is not installed: run `make postgres`"),
    }
}

fn has_tools(bin: &Path) -> bool {
    ["initdb", "pg_ctl", "createdb"]
        .iter()
        .all(|tool| bin.join(tool).exists())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The database of the shared server that a node in `dir` keeps its state
/// in: made on first use, the same one for every node started there, so
/// that a restart finds its state again.
pub fn database_of(dir: &Path) -> String {
    static DATABASES: Mutex<Vec<(PathBuf, String)>> = Mutex::new(Vec::new());
    let mut databases = DATABASES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, url)) = databases.iter().find(|(d, _)| d == dir) {
        return url.clone();
    }
    let url = Cluster::shared().database();
    databases.push((dir.to_path_buf(), url.clone()));
    url
}
