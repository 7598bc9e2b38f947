//! The tables, as numbered migrations applied at open.
//!
//! They mirror SQLite's (times are BIGINT milliseconds, so records read
//! back the same on both), with the fleet's own beside them: the nodes'
//! leases and the claims. A migration is applied once, in order, and the
//! versions applied are kept in `schema_migrations`. Nodes that start
//! together take turns: the whole upgrade is one transaction under an
//! advisory lock, so a second node waits and then finds the work done.

use super::Fault;

/// The migrations, oldest first; a released one never changes (add another).
const MIGRATIONS: &[(i32, &str)] = &[(1, V1), (2, V2), (3, V3)];

/// The advisory lock the upgrade holds ("wasmatic" in ASCII).
const MIGRATION_LOCK: i64 = 0x7761_736d_6174_6963;

const V1: &str = "
    CREATE TABLE blobs (
        digest TEXT PRIMARY KEY,
        bytes BYTEA NOT NULL
    );
    CREATE TABLE components (
        name TEXT PRIMARY KEY,
        digest TEXT NOT NULL REFERENCES blobs (digest),
        allow TEXT,
        config TEXT NOT NULL DEFAULT '[]',
        reuse BIGINT NOT NULL DEFAULT 1,
        loaded_at BIGINT NOT NULL,
        links TEXT NOT NULL DEFAULT '[]'
    );
    CREATE TABLE modules (
        name TEXT PRIMARY KEY,
        wasm BYTEA NOT NULL,
        host_modules TEXT NOT NULL
    );
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        cron TEXT NOT NULL,
        input BYTEA NOT NULL,
        created_at BIGINT NOT NULL
    );
    CREATE INDEX jobs_by_name ON jobs (name);
    CREATE TABLE triggers (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        chain_id BIGINT NOT NULL,
        spec TEXT NOT NULL,
        confirmations BIGINT NOT NULL,
        input BYTEA,
        created_at BIGINT NOT NULL,
        cursor_block BIGINT NOT NULL,
        cursor_log BIGINT NOT NULL
    );
    CREATE INDEX triggers_by_name ON triggers (name);
    CREATE TABLE workflows (
        name TEXT PRIMARY KEY,
        definition TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE TABLE workflow_runs (
        id BIGSERIAL PRIMARY KEY,
        name TEXT NOT NULL,
        cause TEXT NOT NULL,
        started_at BIGINT NOT NULL,
        duration_ms BIGINT NOT NULL,
        ok BOOLEAN NOT NULL,
        trigger TEXT NOT NULL,
        steps TEXT NOT NULL,
        result TEXT,
        error BYTEA
    );
    CREATE INDEX workflow_runs_by_name ON workflow_runs (name, id);
    CREATE TABLE job_blobs (
        digest TEXT PRIMARY KEY,
        bytes BYTEA NOT NULL
    );
    CREATE TABLE runs (
        id BIGSERIAL PRIMARY KEY,
        name TEXT NOT NULL,
        job_id TEXT,
        scheduled_for BIGINT,
        started_at BIGINT NOT NULL,
        duration_ms BIGINT NOT NULL,
        ok BOOLEAN NOT NULL,
        output BYTEA,
        error BYTEA,
        stdout BYTEA NOT NULL,
        stderr BYTEA NOT NULL,
        audit TEXT NOT NULL DEFAULT '[]',
        function TEXT,
        bytes BIGINT NOT NULL,
        rpc TEXT NOT NULL DEFAULT '[]'
    );
    CREATE INDEX runs_by_name ON runs (name, id);
    CREATE INDEX runs_by_job ON runs (job_id, id);
    -- How many runs are kept and their bytes, in one row: each writer of
    -- runs locks it first, so the bounds hold with several nodes writing
    -- and bounding the history never counts the table.
    CREATE TABLE run_totals (
        one BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
        runs BIGINT NOT NULL,
        bytes BIGINT NOT NULL
    );
    INSERT INTO run_totals (runs, bytes) VALUES (0, 0);
    -- The fleet: each node's lease, renewed by its heartbeat (database time).
    CREATE TABLE nodes (
        id TEXT PRIMARY KEY,
        seen_at TIMESTAMPTZ NOT NULL
    );
    -- Each tick or event one node runs: of the nodes that insert the same
    -- (what, at), one succeeds.
    CREATE TABLE claims (
        what TEXT NOT NULL,
        at TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('schedule', 'trigger', 'workflow')),
        name TEXT NOT NULL,
        node TEXT NOT NULL,
        -- running, then ran (its run ended; its record may still be on its
        -- way), then done; or skipped, or lost.
        state TEXT NOT NULL CHECK (state IN ('running', 'ran', 'done', 'skipped', 'lost')),
        claimed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (what, at)
    );
    -- The sweep reads the running claims; the pruning the old others.
    CREATE INDEX claims_running ON claims (node) WHERE state IN ('running', 'ran');
    CREATE INDEX claims_finished ON claims (claimed_at) WHERE state NOT IN ('running', 'ran');
";

/// Workflow runs count their bytes, as component runs do, for the bounds on
/// runs in all and for pages bounded in bytes.
const V2: &str = "
    ALTER TABLE workflow_runs ADD COLUMN bytes BIGINT NOT NULL DEFAULT 0;
    UPDATE workflow_runs SET bytes = octet_length(name) + octet_length(cause)
        + octet_length(trigger) + octet_length(steps)
        + COALESCE(octet_length(result), 0) + COALESCE(octet_length(error), 0);
";

/// Workflows' secrets, kept apart from their definitions.
const V3: &str = "
    CREATE TABLE secrets (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    );
";

/// Applies the migrations this database lacks. A database that a newer
/// node has upgraded past what this one knows is refused: its tables may
/// mean something else now.
pub(super) async fn migrate(client: &mut deadpool_postgres::Object) -> Result<(), Fault> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version INT PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let applied: i32 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )
        .await?
        .get(0);
    let known = MIGRATIONS.last().map_or(0, |(v, _)| *v);
    if applied > known {
        return Err(Fault::Data(format!(
            "the database is at schema version {applied}, newer than this node knows ({known}): upgrade the node"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > applied) {
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[version],
        )
        .await?;
        tracing::info!(version, "PostgreSQL state: migration applied");
    }
    tx.commit().await?;
    Ok(())
}
