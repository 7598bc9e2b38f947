//! The node's state in SQLite: the embedded default, for one node.
//!
//! It lives in the host's state directory, outside every directory granted
//! to the operator, so the operator reaches it only through the host's
//! interfaces. Writes are durable when they return (WAL with
//! `synchronous=FULL`): what a client was told is registered or scheduled
//! survives `kill -9`, and each change is one transaction, so a crash leaves
//! the old state or the new one, never a mix.
//!
//! Two connections: one for writes (behind a mutex; SQLite has one writer
//! anyway) and one for reads, so that reading a page of run history never
//! waits behind the run log's batch writes (WAL lets readers run beside the
//! writer).

mod components;
mod runs;
mod schedules;
mod triggers;
mod workflows;

use std::path::Path;
use std::sync::Mutex;

use rusqlite::Connection;

use super::StateError;

pub struct Sqlite {
    write: Mutex<Connection>,
    read: Mutex<Connection>,
    /// How many runs are stored and their bytes, kept as runs come and go
    /// (changed only while `write` is held), so that bounding the history
    /// never scans it.
    run_totals: Mutex<runs::Totals>,
}

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS blobs (
        digest TEXT PRIMARY KEY,
        bytes BLOB NOT NULL
    );
    CREATE TABLE IF NOT EXISTS components (
        name TEXT PRIMARY KEY,
        digest TEXT NOT NULL REFERENCES blobs (digest),
        allow TEXT,
        config TEXT NOT NULL DEFAULT '[]',
        reuse INTEGER NOT NULL DEFAULT 1,
        loaded_at INTEGER NOT NULL,
        links TEXT NOT NULL DEFAULT '[]'
    );
    CREATE TABLE IF NOT EXISTS jobs (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        cron TEXT NOT NULL,
        input TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE IF NOT EXISTS runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        job_id TEXT,
        scheduled_for INTEGER,
        started_at INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        ok INTEGER NOT NULL,
        output TEXT,
        error TEXT,
        stdout TEXT NOT NULL,
        stderr TEXT NOT NULL,
        audit TEXT NOT NULL DEFAULT '[]',
        function TEXT,
        bytes INTEGER NOT NULL DEFAULT 0,
        rpc TEXT NOT NULL DEFAULT '[]'
    );
    CREATE TABLE IF NOT EXISTS modules (
        name TEXT PRIMARY KEY,
        wasm BLOB NOT NULL,
        host_modules TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS triggers (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        chain_id INTEGER NOT NULL,
        spec TEXT NOT NULL,
        confirmations INTEGER NOT NULL,
        input TEXT,
        created_at INTEGER NOT NULL,
        cursor_block INTEGER NOT NULL,
        cursor_log INTEGER NOT NULL
    );
    CREATE TABLE IF NOT EXISTS workflows (
        name TEXT PRIMARY KEY,
        definition TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE TABLE IF NOT EXISTS workflow_runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        cause TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        ok INTEGER NOT NULL,
        trigger TEXT NOT NULL,
        steps TEXT NOT NULL,
        result TEXT,
        error TEXT,
        bytes INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE IF NOT EXISTS secrets (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE TABLE IF NOT EXISTS job_blobs (
        digest TEXT PRIMARY KEY,
        bytes BLOB NOT NULL
    );
    CREATE INDEX IF NOT EXISTS workflow_runs_by_name ON workflow_runs (name, id);
    CREATE INDEX IF NOT EXISTS runs_by_name ON runs (name, id);
    CREATE INDEX IF NOT EXISTS runs_by_job ON runs (job_id, id);
    CREATE INDEX IF NOT EXISTS jobs_by_name ON jobs (name);
";

impl Sqlite {
    pub fn open(path: &Path) -> Result<Self, StateError> {
        let write = Connection::open(path)?;
        write.pragma_update(None, "journal_mode", "WAL")?;
        write.pragma_update(None, "synchronous", "FULL")?;
        write.busy_timeout(std::time::Duration::from_secs(5))?;
        write.execute_batch(SCHEMA)?;
        migrate(&write)?;
        let read = Connection::open(path)?;
        read.busy_timeout(std::time::Duration::from_secs(5))?;
        read.pragma_update(None, "query_only", true)?;
        let totals = runs::Totals::count(&write)?;
        Ok(Sqlite {
            write: Mutex::new(write),
            read: Mutex::new(read),
            run_totals: Mutex::new(totals),
        })
    }

    /// The writing connection. A panic while holding the lock leaves SQLite
    /// itself consistent, so a poisoned lock is taken over.
    fn write(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.write.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run_totals(&self) -> std::sync::MutexGuard<'_, runs::Totals> {
        self.run_totals.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.read.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Brings a database of an older node up to this schema.
fn migrate(conn: &Connection) -> Result<(), StateError> {
    let has_table = |name: &str| -> Result<bool, rusqlite::Error> {
        conn.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1")?
            .exists([name])
    };
    // Columns added since the tables' first release.
    for (table, column, definition) in [
        ("runs", "audit", "TEXT NOT NULL DEFAULT '[]'"),
        ("runs", "function", "TEXT"),
        ("runs", "bytes", "INTEGER NOT NULL DEFAULT 0"),
        ("runs", "rpc", "TEXT NOT NULL DEFAULT '[]'"),
        ("components", "links", "TEXT NOT NULL DEFAULT '[]'"),
        ("workflow_runs", "bytes", "INTEGER NOT NULL DEFAULT 0"),
    ] {
        let present = conn
            .prepare("SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2")?
            .exists([table, column])?;
        if !present {
            conn.execute_batch(&format!(
                "ALTER TABLE {table} ADD COLUMN {column} {definition}"
            ))?;
            if (table, column) == ("workflow_runs", "bytes") {
                // Kept runs count as what they hold, as new ones do.
                conn.execute_batch(
                    "UPDATE workflow_runs SET bytes = length(name) + length(cause)
                         + length(trigger) + length(steps)
                         + COALESCE(length(result), 0) + COALESCE(length(error), 0)",
                )?;
            }
        }
    }
    // Outbound lists kept before the other settings existed: they become
    // settings, which `legacy_settings` hands to the import of old files.
    if has_table("handler_outbound")? {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS handler_settings (
                 name TEXT PRIMARY KEY, allow TEXT,
                 config TEXT NOT NULL DEFAULT '[]', reuse INTEGER NOT NULL DEFAULT 1);
             BEGIN;
             INSERT OR IGNORE INTO handler_settings (name, allow) SELECT name, rules FROM handler_outbound;
             DROP TABLE handler_outbound;
             COMMIT;",
        )?;
    }
    Ok(())
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "[]".into())
}

/// Reads a JSON column; a malformed one is an error naming the column's text.
fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, rusqlite::Error> {
    serde_json::from_str(text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}
