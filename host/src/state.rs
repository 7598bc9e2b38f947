//! The node's own state: schedules and run history, in SQLite.
//!
//! It lives in the host's state directory, outside every directory granted
//! to the operator, so the operator can read it only through the host
//! interface and cannot tamper with it. Writes are durable when they return
//! (WAL with `synchronous=FULL`): a schedule acknowledged to a client
//! survives `kill -9`.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

use crate::handler::AuditEntry;

#[derive(Debug, thiserror::Error)]
#[error("state database: {0}")]
pub struct StateError(#[from] rusqlite::Error);

/// A stored schedule.
#[derive(Clone, Debug)]
pub struct JobRecord {
    pub id: String,
    pub name: String,
    pub cron: String,
    pub input: String,
    pub created_at: u64,
}

/// How a registered component runs, as given at registration.
#[derive(Clone, Debug, PartialEq)]
pub struct HandlerSettings {
    /// Its own narrowing of the node's outbound policy.
    pub allow: Option<Vec<String>>,
    /// Its configuration, sorted by key.
    pub config: Vec<(String, String)>,
    /// Calls one instance may serve; 1 gives every call a fresh instance.
    pub reuse: u32,
}

impl Default for HandlerSettings {
    fn default() -> Self {
        HandlerSettings {
            allow: None,
            config: Vec::new(),
            reuse: 1,
        }
    }
}

/// A stored core module.
pub struct ModuleRecord {
    pub name: String,
    pub wasm: Vec<u8>,
    pub host_modules: Vec<String>,
}

/// A stored run of a handler.
#[derive(Clone, Debug, PartialEq)]
pub struct RunRecord {
    pub name: String,
    /// The export called, for a call by export name.
    pub function: Option<String>,
    pub job_id: Option<String>,
    pub scheduled_for: Option<u64>,
    pub started_at: u64,
    pub duration_ms: u64,
    pub ok: bool,
    pub output: Option<String>,
    pub error: Option<String>,
    pub stdout: String,
    pub stderr: String,
    /// What the guest wrote to its audit log.
    pub audit: Vec<AuditEntry>,
}

pub struct StateDb {
    conn: Mutex<Connection>,
}

impl StateDb {
    pub fn open(path: &Path) -> Result<Self, StateError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS jobs (
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
                 function TEXT
             );
             CREATE TABLE IF NOT EXISTS modules (
                 name TEXT PRIMARY KEY,
                 wasm BLOB NOT NULL,
                 host_modules TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS handler_settings (
                 name TEXT PRIMARY KEY,
                 allow TEXT,
                 config TEXT NOT NULL DEFAULT '[]',
                 reuse INTEGER NOT NULL DEFAULT 1
             );
             CREATE INDEX IF NOT EXISTS runs_by_name ON runs (name, id);
             CREATE INDEX IF NOT EXISTS runs_by_job ON runs (job_id, id);",
        )?;
        // Outbound lists kept before the other settings existed.
        let old_outbound = conn
            .prepare(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'handler_outbound'",
            )?
            .exists([])?;
        if old_outbound {
            conn.execute_batch(
                "BEGIN;
                 INSERT OR IGNORE INTO handler_settings (name, allow) SELECT name, rules FROM handler_outbound;
                 DROP TABLE handler_outbound;
                 COMMIT;",
            )?;
        }
        // Columns added since the first release of the table.
        for (column, definition) in [
            ("audit", "TEXT NOT NULL DEFAULT '[]'"),
            ("function", "TEXT"),
        ] {
            let present = conn
                .prepare("SELECT 1 FROM pragma_table_info('runs') WHERE name = ?1")?
                .exists([column])?;
            if !present {
                conn.execute_batch(&format!(
                    "ALTER TABLE runs ADD COLUMN {column} {definition}"
                ))?;
            }
        }
        Ok(StateDb {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite itself consistent.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn insert_job(&self, job: &JobRecord) -> Result<(), StateError> {
        self.conn().execute(
            "INSERT INTO jobs (id, name, cron, input, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![job.id, job.name, job.cron, job.input, job.created_at as i64],
        )?;
        Ok(())
    }

    /// Deletes a job; returns whether it existed.
    pub fn delete_job(&self, id: &str) -> Result<bool, StateError> {
        Ok(self
            .conn()
            .execute("DELETE FROM jobs WHERE id = ?1", [id])?
            > 0)
    }

    /// Deletes every job of a handler; returns their ids.
    pub fn delete_jobs_of(&self, name: &str) -> Result<Vec<String>, StateError> {
        let conn = self.conn();
        let ids = conn
            .prepare("SELECT id FROM jobs WHERE name = ?1")?
            .query_map([name], |row| row.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        conn.execute("DELETE FROM jobs WHERE name = ?1", [name])?;
        Ok(ids)
    }

    pub fn jobs(&self) -> Result<Vec<JobRecord>, StateError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, name, cron, input, created_at FROM jobs ORDER BY created_at, id",
        )?;
        let jobs = stmt
            .query_map([], |row| {
                Ok(JobRecord {
                    id: row.get(0)?,
                    name: row.get(1)?,
                    cron: row.get(2)?,
                    input: row.get(3)?,
                    created_at: row.get::<_, i64>(4)? as u64,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(jobs)
    }

    pub fn job_exists(&self, id: &str) -> Result<bool, StateError> {
        Ok(self
            .conn()
            .query_row("SELECT 1 FROM jobs WHERE id = ?1", [id], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Stores (or replaces) a core module registered by name.
    pub fn put_module(
        &self,
        name: &str,
        wasm: &[u8],
        host_modules: &[String],
    ) -> Result<(), StateError> {
        self.conn().execute(
            "INSERT INTO modules (name, wasm, host_modules) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET wasm = excluded.wasm, host_modules = excluded.host_modules",
            params![name, wasm, host_modules.join("\n")],
        )?;
        Ok(())
    }

    /// Every stored module.
    pub fn modules(&self) -> Result<Vec<ModuleRecord>, StateError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT name, wasm, host_modules FROM modules ORDER BY name")?;
        let rows = stmt
            .query_map([], |row| {
                let links: String = row.get(2)?;
                Ok(ModuleRecord {
                    name: row.get(0)?,
                    wasm: row.get(1)?,
                    host_modules: links.lines().map(str::to_string).collect(),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Sets a component's settings; the defaults remove its row.
    pub fn set_handler_settings(
        &self,
        name: &str,
        settings: &HandlerSettings,
    ) -> Result<(), StateError> {
        let conn = self.conn();
        if *settings == HandlerSettings::default() {
            conn.execute("DELETE FROM handler_settings WHERE name = ?1", [name])?;
        } else {
            conn.execute(
                "INSERT INTO handler_settings (name, allow, config, reuse) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (name) DO UPDATE SET
                     allow = excluded.allow, config = excluded.config, reuse = excluded.reuse",
                params![
                    name,
                    settings.allow.as_ref().map(|rules| rules.join("\n")),
                    to_json(&settings.config),
                    settings.reuse,
                ],
            )?;
        }
        Ok(())
    }

    /// A component's settings (the defaults when none were stored).
    pub fn handler_settings(&self, name: &str) -> Result<HandlerSettings, StateError> {
        let row: Option<(Option<String>, String, u32)> = self
            .conn()
            .query_row(
                "SELECT allow, config, reuse FROM handler_settings WHERE name = ?1",
                [name],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()?;
        let Some((allow, config, reuse)) = row else {
            return Ok(HandlerSettings::default());
        };
        Ok(HandlerSettings {
            allow: allow.map(|r| r.lines().map(str::to_string).collect()),
            config: from_json(&config)?,
            reuse,
        })
    }

    /// Records runs in one transaction, then drops each handler's oldest
    /// runs beyond the newest `keep`.
    pub fn insert_runs(&self, runs: &[RunRecord], keep: u32) -> Result<(), StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO runs (name, job_id, scheduled_for, started_at, duration_ms, ok, output, error, stdout, stderr, audit, function)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?;
            for run in runs {
                insert.execute(params![
                    run.name,
                    run.job_id,
                    run.scheduled_for.map(|t| t as i64),
                    run.started_at as i64,
                    run.duration_ms as i64,
                    run.ok,
                    run.output,
                    run.error,
                    run.stdout,
                    run.stderr,
                    to_json(&run.audit),
                    run.function,
                ])?;
            }
            let mut names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            let mut prune = tx.prepare_cached(
                "DELETE FROM runs WHERE name = ?1 AND id <= (
                     SELECT id FROM runs WHERE name = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
            )?;
            for name in names {
                prune.execute(params![name, keep])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn runs_of_handler(&self, name: &str, limit: u32) -> Result<Vec<RunRecord>, StateError> {
        self.runs("name", name, limit)
    }

    pub fn runs_of_job(&self, id: &str, limit: u32) -> Result<Vec<RunRecord>, StateError> {
        self.runs("job_id", id, limit)
    }

    fn runs(&self, column: &str, value: &str, limit: u32) -> Result<Vec<RunRecord>, StateError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT name, job_id, scheduled_for, started_at, duration_ms, ok, output, error, stdout, stderr, audit, function
             FROM runs WHERE {column} = ?1 ORDER BY id DESC LIMIT ?2"
        ))?;
        let runs = stmt
            .query_map(params![value, limit], |row| {
                Ok(RunRecord {
                    name: row.get(0)?,
                    job_id: row.get(1)?,
                    scheduled_for: row.get::<_, Option<i64>>(2)?.map(|t| t as u64),
                    started_at: row.get::<_, i64>(3)? as u64,
                    duration_ms: row.get::<_, i64>(4)? as u64,
                    ok: row.get(5)?,
                    output: row.get(6)?,
                    error: row.get(7)?,
                    stdout: row.get(8)?,
                    stderr: row.get(9)?,
                    audit: from_json(&row.get::<_, String>(10)?)?,
                    function: row.get(11)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(runs)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn run(name: &str, job: Option<&str>, started_at: u64) -> RunRecord {
        RunRecord {
            name: name.into(),
            function: None,
            job_id: job.map(Into::into),
            scheduled_for: job.map(|_| started_at),
            started_at,
            duration_ms: 1,
            ok: true,
            output: Some(format!("out {started_at}")),
            error: None,
            stdout: String::new(),
            stderr: String::new(),
            audit: vec![AuditEntry {
                level: "info".into(),
                message: format!("ran at {started_at}"),
            }],
        }
    }

    #[test]
    fn jobs_and_runs_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let db = StateDb::open(&path).unwrap();
            let job = JobRecord {
                id: "j1".into(),
                name: "echo".into(),
                cron: "* * * * * *".into(),
                input: "hi".into(),
                created_at: 5,
            };
            db.insert_job(&job).unwrap();
            db.insert_runs(&[run("echo", None, 1), run("echo", Some("j1"), 2)], 10)
                .unwrap();
            db.insert_runs(&[run("other", None, 3)], 10).unwrap();
        }
        let db = StateDb::open(&path).unwrap();
        let jobs = db.jobs().unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].cron, "* * * * * *");
        let runs = db.runs_of_handler("echo", 10).unwrap();
        assert_eq!(runs, vec![run("echo", Some("j1"), 2), run("echo", None, 1)]);
        assert_eq!(db.runs_of_job("j1", 10).unwrap().len(), 1);
        assert_eq!(db.runs_of_handler("echo", 1).unwrap().len(), 1);
        assert_eq!(db.delete_jobs_of("echo").unwrap(), vec!["j1".to_string()]);
        assert!(!db.job_exists("j1").unwrap());
        assert!(!db.delete_job("j1").unwrap());

        let settings = HandlerSettings {
            allow: Some(vec!["*.example.com".into(), "127.0.0.1:80".into()]),
            config: vec![("A".into(), "1".into()), ("B".into(), "x=y".into())],
            reuse: 16,
        };
        db.set_handler_settings("echo", &settings).unwrap();
        drop(db);
        let db = StateDb::open(&path).unwrap();
        assert_eq!(db.handler_settings("echo").unwrap(), settings);
        db.set_handler_settings("echo", &HandlerSettings::default())
            .unwrap();
        assert_eq!(
            db.handler_settings("echo").unwrap(),
            HandlerSettings::default()
        );
    }

    #[test]
    fn outbound_lists_of_older_databases_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE handler_outbound (name TEXT PRIMARY KEY, rules TEXT NOT NULL);
                 INSERT INTO handler_outbound VALUES ('gecko', 'api.example.com\n*.example.org');
                 CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL,
                     job_id TEXT, scheduled_for INTEGER, started_at INTEGER NOT NULL,
                     duration_ms INTEGER NOT NULL, ok INTEGER NOT NULL, output TEXT, error TEXT,
                     stdout TEXT NOT NULL, stderr TEXT NOT NULL);
                 INSERT INTO runs (name, started_at, duration_ms, ok, stdout, stderr)
                     VALUES ('gecko', 1, 0, 1, '', '');",
            )
            .unwrap();
        }
        let db = StateDb::open(&path).unwrap();
        assert_eq!(
            db.handler_settings("gecko").unwrap().allow,
            Some(vec!["api.example.com".into(), "*.example.org".into()])
        );
        let runs = db.runs_of_handler("gecko", 10).unwrap();
        assert_eq!(runs.len(), 1);
        assert!(runs[0].audit.is_empty() && runs[0].function.is_none());
    }

    #[test]
    fn old_runs_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(&dir.path().join("state.db")).unwrap();
        for i in 0..25 {
            db.insert_runs(&[run("echo", None, i), run("other", None, i)], 20)
                .unwrap();
        }
        let runs = db.runs_of_handler("echo", 5000).unwrap();
        assert_eq!(runs.len(), 20);
        assert_eq!(runs[0].started_at, 24);
        assert_eq!(db.runs_of_handler("other", 5000).unwrap().len(), 20);
    }
}
