//! The node's state in PostgreSQL: one database shared by a fleet of nodes.
//!
//! Every node of the fleet reads and writes the same tables; each change is
//! one transaction that also announces itself (`pg_notify`), so the other
//! nodes catch up without polling ([`listen`]), and the ticks and events the
//! nodes would all run are claimed in the database so that one node runs
//! each ([`fleet`]).
//!
//! The node calls its state from plain threads, from `spawn_blocking`
//! threads and from its run log's own thread, and the traits are
//! synchronous. So this backend owns a small tokio runtime of its own on
//! which the pool's connections live, and each call blocks on it
//! ([`Postgres::wait`]). Keeping the connections off the node's runtime
//! means a node whose workers are all busy still reaches its database.
//!
//! No TLS: the database is meant to be reached over loopback or a private
//! network, like the nodes reach each other.

mod components;
mod fleet;
mod listen;
mod runs;
mod schedules;
mod schema;
mod triggers;
mod workflows;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod};
use tokio::runtime::{Handle, Runtime, RuntimeFlavor};
use tokio_postgres::NoTls;

use super::{to_sql, ChangeFeed, StateError};

/// Connections one node holds at most: the run log, a few requests and the
/// fleet's heartbeat and claims at once.
const POOL_SIZE: usize = 16;
/// How long a call waits for a connection, or for a new one to open, before
/// it fails: a database that is down makes calls fail fast (the node answers
/// 503) rather than pile up.
const POOL_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Postgres {
    /// The runtime the pool and the listener live on; taken on drop.
    runtime: Option<Runtime>,
    handle: Handle,
    pool: Pool,
    node_id: String,
    changes: Arc<ChangeFeed>,
}

/// What went wrong inside a call, before it is told as a [`StateError`].
#[derive(Debug)]
pub(super) enum Fault {
    Pool(PoolError),
    Db(tokio_postgres::Error),
    /// A stored value that does not read back (a malformed JSON column).
    Data(String),
}

impl From<PoolError> for Fault {
    fn from(e: PoolError) -> Self {
        Fault::Pool(e)
    }
}

impl From<tokio_postgres::Error> for Fault {
    fn from(e: tokio_postgres::Error) -> Self {
        Fault::Db(e)
    }
}

impl Fault {
    /// The error the node sees: [`StateError::Unavailable`] when the database
    /// cannot be reached (it answers 503 and recovers when the database
    /// returns), [`StateError::Postgres`] for anything else, both saying what
    /// was being done.
    fn into_state(self, doing: &str) -> StateError {
        match self {
            Fault::Pool(PoolError::Timeout(_)) => StateError::Unavailable(format!(
                "{doing}: no connection within {}s",
                POOL_TIMEOUT.as_secs()
            )),
            Fault::Pool(PoolError::Closed) => {
                StateError::Unavailable(format!("{doing}: the connection pool is closed"))
            }
            Fault::Pool(PoolError::Backend(e)) | Fault::Db(e) => {
                if is_connection_failure(&e) {
                    StateError::Unavailable(format!("{doing}: {}", describe(&e)))
                } else {
                    StateError::Postgres(format!("{doing}: {}", describe(&e)))
                }
            }
            Fault::Pool(e) => StateError::Postgres(format!("{doing}: {e}")),
            Fault::Data(e) => StateError::Postgres(format!("{doing}: {e}")),
        }
    }
}

/// Whether `e` says the database could not be reached (or went away), as
/// opposed to refusing a statement.
fn is_connection_failure(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(db) = e.as_db_error() {
        // Class 08: connection exception; 57P01-03: the server shuts down or
        // is starting; 53300: too many connections.
        let code = db.code().code();
        return code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300");
    }
    let io = std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>());
    // Connect, I/O and timeout errors have no public kind; these are their
    // texts.
    io || matches!(
        e.to_string().as_str(),
        "error connecting to server"
            | "error communicating with the server"
            | "timeout waiting for server"
    )
}

/// `e` with what the server said, or its cause.
fn describe(e: &tokio_postgres::Error) -> String {
    match (e.as_db_error(), std::error::Error::source(e)) {
        (Some(db), _) => {
            let mut text = format!("{} ({})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                text.push_str(": ");
                text.push_str(detail);
            }
            text
        }
        (None, Some(cause)) => format!("{e}: {cause}"),
        (None, None) => e.to_string(),
    }
}

impl Postgres {
    /// Connects to the database at `url` (`postgres://USER[:PASSWORD]@HOST[:PORT]/DB`),
    /// brings its tables up to this version and starts listening for the
    /// changes of other nodes. An unreachable database is an error naming
    /// host, port and database (never the password).
    pub fn open(url: &str) -> Result<Postgres, StateError> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StateError::Postgres(format!("invalid PostgreSQL URL: {e}")))?;
        config
            .connect_timeout(POOL_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .application_name("wasmatic");
        let place = place(&config);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("wasmatic-postgres")
            .enable_all()
            .build()
            .map_err(|e| StateError::Postgres(format!("cannot start its runtime: {e}")))?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                // A connection the server closed is found closed; one that
                // broke silently fails its next statement, and that call
                // answers Unavailable.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(POOL_TIMEOUT))
            .create_timeout(Some(POOL_TIMEOUT))
            .recycle_timeout(Some(POOL_TIMEOUT))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StateError::Postgres(format!("cannot build its pool: {e}")))?;
        let db = Postgres {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            pool,
            node_id: new_node_id(),
            changes: Arc::new(ChangeFeed::default()),
        };
        let doing = format!("opening PostgreSQL at {place}");
        db.wait(&doing, async {
            let mut client = db.pool.get().await?;
            schema::migrate(&mut client).await?;
            fleet::heartbeat_on(&client, &db.node_id).await?;
            listen::start(config, db.node_id.clone(), db.changes.clone()).await?;
            Ok(())
        })?;
        Ok(db)
    }

    /// Runs `work` on this backend's runtime and waits for it, from whatever
    /// thread calls: a plain thread or a `spawn_blocking` one blocks on it
    /// directly; a worker of a multi-thread runtime first hands its other
    /// tasks to the runtime's other workers (`block_in_place`); a
    /// current-thread runtime cannot do that, so its caller waits on a
    /// short-lived thread instead.
    pub(super) fn wait<T: Send>(
        &self,
        doing: &str,
        work: impl Future<Output = Result<T, Fault>> + Send,
    ) -> Result<T, StateError> {
        let result = match Handle::try_current() {
            Err(_) => self.handle.block_on(work),
            Ok(current) if current.runtime_flavor() == RuntimeFlavor::CurrentThread => {
                std::thread::scope(|scope| {
                    scope
                        .spawn(|| self.handle.block_on(work))
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
            }
            Ok(_) => wasmatic_workers::block_in_place(|| self.handle.block_on(work)),
        };
        result.map_err(|fault| fault.into_state(doing))
    }

    /// A connection from the pool.
    pub(super) async fn client(&self) -> Result<deadpool_postgres::Object, Fault> {
        Ok(self.pool.get().await?)
    }
}

impl Drop for Postgres {
    /// The runtime may be dropped from inside another runtime (a node's
    /// async task holding the last reference), where a blocking shutdown
    /// would panic: its tasks are dropped without waiting.
    fn drop(&mut self) {
        self.pool.close();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// `host:port/database` of `config`, for messages: never the password.
fn place(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{host}:{port}/{db}")
}

/// A fresh id for this process in the fleet: its host, its pid and random
/// bits, so that a restarted node is a new node (its old claims are swept
/// as its lease runs out).
fn new_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().replace(char::is_whitespace, "-"))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_string());
    // The std hasher's keys are random per process.
    let mut random = std::collections::hash_map::RandomState::new().build_hasher();
    random.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        random.finish() as u32
    )
}

/// Where a page of `table` (runs or workflow runs) whose `column` is
/// `value` ends before run `before` ([`crate::page_end`]): only the ids and
/// sizes are read, one more than `limit` to tell whether a next page exists.
/// Answers the ids of the page's newest and oldest runs (none for an empty
/// page), for the caller to read just those, and the next page's `before`.
async fn page_span(
    client: &tokio_postgres::Client,
    table: &str,
    column: &str,
    value: &str,
    limit: u32,
    before: Option<u64>,
) -> Result<(Option<(i64, i64)>, Option<u64>), Fault> {
    let sizes: Vec<(u64, u64)> = client
        .query(
            &format!(
                "SELECT id, bytes FROM {table} WHERE {column} = $1 AND id < $2
                 ORDER BY id DESC LIMIT $3"
            ),
            &[
                &value,
                &before.map_or(i64::MAX, to_sql),
                &(i64::from(limit) + 1),
            ],
        )
        .await?
        .iter()
        .map(|row| (from_sql(row.get(0)), from_sql(row.get(1))))
        .collect();
    let (span, next) = crate::page_end(&sizes, limit);
    Ok((
        span.map(|(newest, oldest)| (to_sql(newest), to_sql(oldest))),
        next,
    ))
}

fn from_sql(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "[]".into())
}

/// Reads a JSON column; a malformed one is an error naming the column.
fn from_json<T: serde::de::DeserializeOwned>(column: &str, text: &str) -> Result<T, Fault> {
    serde_json::from_str(text).map_err(|e| Fault::Data(format!("column {column}: {e}")))
}

/// Text that guests or clients wrote (outputs, logs, inputs, errors) is
/// kept as BYTEA: PostgreSQL's TEXT refuses the NUL character, which a
/// guest may well print, and a run must not be lost for it.
fn text_of(column: &str, bytes: Vec<u8>) -> Result<String, Fault> {
    String::from_utf8(bytes).map_err(|e| Fault::Data(format!("column {column}: {e}")))
}

fn opt_text_of(column: &str, bytes: Option<Vec<u8>>) -> Result<Option<String>, Fault> {
    bytes.map(|b| text_of(column, b)).transpose()
}
