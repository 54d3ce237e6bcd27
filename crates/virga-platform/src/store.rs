//! Durable state in one SQLite database in the data dir: deployed functions and
//! invocation records.
//!
//! Records are written by one thread in batched transactions, off the invoke
//! path; [`Store::flush`] waits for them, so readers see their own writes.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Mutex;
use std::thread::JoinHandle;

use rusqlite::{params, Connection, OptionalExtension};
use virga_spec::{InvocationRecord, Start, Status, Trigger};

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// the database {0} failed: {1}
    #[error("the database {0} failed: {1}")]
    Sqlite(PathBuf, #[source] rusqlite::Error),
    /// the record writer has stopped
    #[error("the record writer has stopped")]
    WriterGone,
    /// the database was made by a newer virga
    #[error("the database {path} has schema version {found}, newer than this virga knows ({known}); run the virga that made it, or use another --data-dir")]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
}

/// A text column read as one of its known values; anything else is a
/// corrupt row, reported rather than read as some default.
fn parsed<T>(
    row: &rusqlite::Row<'_>,
    idx: usize,
    what: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> rusqlite::Result<T> {
    let text: String = row.get(idx)?;
    parse(&text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            rusqlite::types::Type::Text,
            format!("a record has an unknown {what} {text:?}").into(),
        )
    })
}

/// Which invocation records are kept (`virga serve --retain-records`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Retention {
    /// Records that finished within this long.
    Age(std::time::Duration),
    /// The newest this many records.
    Count(u64),
}

impl std::str::FromStr for Retention {
    type Err = String;

    /// `7d`, `12h`, `30m`, `90s` (an age) or a plain number (a count).
    fn from_str(s: &str) -> Result<Retention, String> {
        let bad = || {
            format!("{s:?} is not a retention: give an age (7d, 12h, 30m, 90s) or a count of records (100000)")
        };
        let s = s.trim();
        if let Ok(n) = s.parse::<u64>() {
            return Ok(Retention::Count(n));
        }
        let (num, unit) = s.split_at(s.len().saturating_sub(1));
        let n: u64 = num.parse().map_err(|_| bad())?;
        let secs = match unit {
            "d" => 86_400,
            "h" => 3_600,
            "m" => 60,
            "s" => 1,
            _ => return Err(bad()),
        };
        let secs = n.checked_mul(secs).filter(|&t| t > 0).ok_or_else(bad)?;
        Ok(Retention::Age(std::time::Duration::from_secs(secs)))
    }
}

/// A deployed function as persisted.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredFunction {
    pub name: String,
    pub manifest: String,
    pub base_dir: String,
    pub version: u64,
    pub deployed_at: String,
}

/// Which records to read.
#[derive(Debug, Clone, Default)]
pub struct RecordFilter {
    pub function: Option<String>,
    pub status: Option<Status>,
    /// The newest `limit` records (oldest first); all when `None`.
    pub limit: Option<usize>,
}

enum Msg {
    Record(Box<InvocationRecord>),
    Flush(mpsc::Sender<()>),
}

pub struct Store {
    path: PathBuf,
    conn: Mutex<Connection>,
    tx: Mutex<Option<mpsc::Sender<Msg>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// Schema version 1: the tables as first released with versioning (a
/// database from before then is upgraded by its migration too).
const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS functions (
    name TEXT PRIMARY KEY,
    manifest TEXT NOT NULL,
    base_dir TEXT NOT NULL,
    version INTEGER NOT NULL,
    deployed_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS invocations (
    id INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL,
    function TEXT NOT NULL,
    version TEXT NOT NULL,
    instance_id TEXT,
    trigger TEXT NOT NULL,
    cold INTEGER NOT NULL,
    status TEXT NOT NULL,
    error_type TEXT,
    queue_ms REAL NOT NULL,
    init_ms REAL,
    duration_ms REAL NOT NULL,
    billed_ms INTEGER NOT NULL,
    memory_mb INTEGER NOT NULL,
    max_memory_mb INTEGER,
    limits_enforced INTEGER NOT NULL,
    payload_bytes INTEGER NOT NULL,
    response_bytes INTEGER NOT NULL,
    received_at TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    preprocess_ms REAL,
    inference_ms REAL,
    postprocess_ms REAL,
    mode TEXT,
    batch_size INTEGER,
    vcpu REAL,
    task_started_at TEXT
);
CREATE INDEX IF NOT EXISTS invocations_function ON invocations(function, id);
";

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

impl Store {
    /// Opens (or creates) `virga.db` in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        let path = data_dir.join("virga.db");
        let err = |e| StoreError::Sqlite(path.clone(), e);
        let mut conn = open(&path).map_err(err)?;
        let found = migrate(&mut conn).map_err(err)?;
        if found > MIGRATIONS.len() as i64 {
            return Err(StoreError::TooNew {
                path,
                found,
                known: MIGRATIONS.len() as i64,
            });
        }
        let writer_conn = open(&path).map_err(err)?;
        let (tx, rx) = mpsc::channel();
        let writer_path = path.clone();
        let writer = std::thread::Builder::new()
            .name("virga-records".into())
            .spawn(move || write_loop(writer_conn, rx, &writer_path))
            .map_err(|e| {
                StoreError::Sqlite(
                    path.clone(),
                    rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
                )
            })?;
        Ok(Store {
            path,
            conn: Mutex::new(conn),
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn err(&self, e: rusqlite::Error) -> StoreError {
        StoreError::Sqlite(self.path.clone(), e)
    }

    /// Queues a record for writing.
    pub fn insert(&self, record: InvocationRecord) {
        if let Some(tx) = self.tx.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            let _ = tx.send(Msg::Record(Box::new(record)));
        }
    }

    /// Waits until every record queued so far is written.
    pub fn flush(&self) -> Result<(), StoreError> {
        let (done_tx, done_rx) = mpsc::channel();
        {
            let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
            tx.as_ref()
                .ok_or(StoreError::WriterGone)?
                .send(Msg::Flush(done_tx))
                .map_err(|_| StoreError::WriterGone)?;
        }
        done_rx.recv().map_err(|_| StoreError::WriterGone)
    }

    /// Writes what is queued and stops the writer thread.
    pub fn close(&self) {
        drop(self.tx.lock().unwrap_or_else(|e| e.into_inner()).take());
        if let Some(w) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = w.join();
        }
    }

    /// Deletes the records `keep` does not cover; returns how many went.
    pub fn prune(&self, keep: Retention) -> Result<usize, StoreError> {
        self.flush()?;
        let conn = self.conn();
        let gone = match keep {
            Retention::Age(age) => {
                let cutoff = chrono::Utc::now()
                    - chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
                conn.execute(
                    "DELETE FROM invocations WHERE julianday(finished_at) < julianday(?1)",
                    [cutoff.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)],
                )
            }
            Retention::Count(n) => conn.execute(
                "DELETE FROM invocations WHERE id <= (SELECT id FROM invocations ORDER BY id DESC LIMIT 1 OFFSET ?1)",
                [i64::try_from(n).unwrap_or(i64::MAX)],
            ),
        };
        gone.map_err(|e| self.err(e))
    }

    pub fn records(&self, filter: &RecordFilter) -> Result<Vec<InvocationRecord>, StoreError> {
        self.flush()?;
        let conn = self.conn();
        let mut sql = String::from(
            "SELECT request_id, function, version, instance_id, trigger, cold, status, error_type,
                    queue_ms, init_ms, duration_ms, billed_ms, memory_mb, max_memory_mb,
                    limits_enforced, payload_bytes, response_bytes, received_at, finished_at,
                    preprocess_ms, inference_ms, postprocess_ms, mode, batch_size, vcpu,
                    task_started_at, caller_gone, isolation, start, restore_ms
             FROM invocations WHERE (?1 IS NULL OR function = ?1) AND (?2 IS NULL OR status = ?2)
             ORDER BY id DESC",
        );
        if let Some(n) = filter.limit {
            sql.push_str(&format!(" LIMIT {n}"));
        }
        let mut stmt = conn.prepare_cached(&sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(
                params![filter.function, filter.status.map(Status::as_str)],
                |row| {
                    Ok(InvocationRecord {
                        request_id: row.get(0)?,
                        function: row.get(1)?,
                        version: row.get(2)?,
                        instance_id: row.get(3)?,
                        trigger: parsed(row, 4, "trigger", Trigger::parse)?,
                        cold: row.get(5)?,
                        start: match row.get::<_, Option<String>>(28)? {
                            Some(_) => Some(parsed(row, 28, "start", Start::parse)?),
                            None => None,
                        },
                        status: parsed(row, 6, "status", Status::parse)?,
                        error_type: row.get(7)?,
                        queue_ms: row.get(8)?,
                        init_ms: row.get(9)?,
                        restore_ms: row.get(29)?,
                        duration_ms: row.get(10)?,
                        billed_ms: row.get::<_, i64>(11)? as u64,
                        memory_mb: row.get(12)?,
                        max_memory_mb: row.get(13)?,
                        limits_enforced: row.get(14)?,
                        isolation: parsed(row, 27, "isolation", virga_spec::Isolation::parse)?,
                        payload_bytes: row.get::<_, i64>(15)? as u64,
                        response_bytes: row.get::<_, i64>(16)? as u64,
                        received_at: row.get(17)?,
                        finished_at: row.get(18)?,
                        split: virga_spec::WorkerSplit {
                            preprocess_ms: row.get(19)?,
                            inference_ms: row.get(20)?,
                            postprocess_ms: row.get(21)?,
                        },
                        // Rows from before modes existed have none.
                        mode: match row.get::<_, Option<String>>(22)? {
                            Some(_) => parsed(row, 22, "mode", virga_spec::Mode::parse)?,
                            None => Default::default(),
                        },
                        batch_size: row.get::<_, Option<u32>>(23)?.unwrap_or(1),
                        vcpu: row.get(24)?,
                        task_started_at: row.get(25)?,
                        caller_gone: row.get(26)?,
                    })
                },
            )
            .map_err(|e| self.err(e))?;
        let mut out: Vec<InvocationRecord> =
            rows.collect::<Result<_, _>>().map_err(|e| self.err(e))?;
        out.reverse();
        Ok(out)
    }

    pub fn save_function(&self, f: &StoredFunction) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO functions (name, manifest, base_dir, version, deployed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(name) DO UPDATE SET manifest = ?2, base_dir = ?3, version = ?4, deployed_at = ?5",
                params![f.name, f.manifest, f.base_dir, f.version as i64, f.deployed_at],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn delete_function(&self, name: &str) -> Result<(), StoreError> {
        self.conn()
            .execute("DELETE FROM functions WHERE name = ?1", params![name])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn function(&self, name: &str) -> Result<Option<StoredFunction>, StoreError> {
        self.conn()
            .query_row(
                "SELECT name, manifest, base_dir, version, deployed_at FROM functions WHERE name = ?1",
                params![name],
                stored_function,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    pub fn functions(&self) -> Result<Vec<StoredFunction>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT name, manifest, base_dir, version, deployed_at FROM functions ORDER BY name")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], stored_function)
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

/// The schema's history: migration `i` takes a database from version `i`
/// (SQLite's `user_version`) to `i + 1`. Append only; never edit one that
/// has shipped.
const MIGRATIONS: &[fn(&rusqlite::Transaction<'_>) -> rusqlite::Result<()>] =
    &[v1_base, v2_caller_gone, v3_isolation, v4_start, v5_restore];

/// Brings the database to the newest version, one transaction per
/// migration. Returns the version found (newer than known: left untouched).
fn migrate(conn: &mut Connection) -> rusqlite::Result<i64> {
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, step) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
        let tx = conn.transaction()?;
        step(&tx)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
    }
    Ok(found)
}

/// 0 -> 1: the tables, and the columns added before versioning for
/// databases made before them.
fn v1_base(conn: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    conn.execute_batch(SCHEMA_V1)?;
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('invocations')")?;
    let columns: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for (col, ty) in [
        ("preprocess_ms", "REAL"),
        ("inference_ms", "REAL"),
        ("postprocess_ms", "REAL"),
        ("mode", "TEXT"),
        ("batch_size", "INTEGER"),
        ("vcpu", "REAL"),
        ("task_started_at", "TEXT"),
    ] {
        if !columns.iter().any(|c| c == col) {
            conn.execute_batch(&format!("ALTER TABLE invocations ADD COLUMN {col} {ty}"))?;
        }
    }
    Ok(())
}

/// 1 -> 2: whether a synchronous caller had gone before the answer.
fn v2_caller_gone(conn: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    conn.execute_batch("ALTER TABLE invocations ADD COLUMN caller_gone INTEGER NOT NULL DEFAULT 0")
}

/// 2 -> 3: how the instance was confined.
fn v3_isolation(conn: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    conn.execute_batch("ALTER TABLE invocations ADD COLUMN isolation TEXT NOT NULL DEFAULT 'none'")
}

/// 3 -> 4: how the instance serving an invocation started. Older rows
/// knew only cold or not: cold, or warm when an instance served them.
fn v4_start(conn: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    conn.execute_batch(
        "ALTER TABLE invocations ADD COLUMN start TEXT;
         UPDATE invocations SET start = CASE
             WHEN cold THEN 'cold'
             WHEN instance_id IS NOT NULL THEN 'warm'
         END;",
    )
}

/// 4 -> 5: the restore time of an instance forked from a template.
fn v5_restore(conn: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    conn.execute_batch("ALTER TABLE invocations ADD COLUMN restore_ms REAL")
}

fn stored_function(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredFunction> {
    Ok(StoredFunction {
        name: row.get(0)?,
        manifest: row.get(1)?,
        base_dir: row.get(2)?,
        version: row.get::<_, i64>(3)? as u64,
        deployed_at: row.get(4)?,
    })
}

/// After the first record of a batch, how long the writer lets more gather
/// before it writes them all in one transaction. Under load this is one
/// wake-up of the writer (and none of the senders: a sender only wakes a
/// writer blocked on the channel) per batch instead of per invocation,
/// and one commit for a few hundred records at 10k invocations a second.
/// Readers never see the delay: `records` flushes first.
const GATHER: std::time::Duration = std::time::Duration::from_millis(20);

fn write_loop(mut conn: Connection, rx: mpsc::Receiver<Msg>, path: &Path) {
    while let Ok(first) = rx.recv() {
        // A flush asked for on a quiet store is answered at once.
        if matches!(first, Msg::Record(_)) {
            std::thread::sleep(GATHER);
        }
        let mut batch = vec![first];
        while batch.len() < 4096 {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        if let Err(e) = write_batch(&mut conn, &batch) {
            tracing::error!(db = %path.display(), error = %e, "could not write invocation records");
        }
        for m in batch {
            if let Msg::Flush(done) = m {
                let _ = done.send(());
            }
        }
    }
}

fn write_batch(conn: &mut Connection, batch: &[Msg]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO invocations (request_id, function, version, instance_id, trigger, cold,
                status, error_type, queue_ms, init_ms, duration_ms, billed_ms, memory_mb,
                max_memory_mb, limits_enforced, payload_bytes, response_bytes, received_at, finished_at,
                preprocess_ms, inference_ms, postprocess_ms, mode, batch_size, vcpu, task_started_at,
                caller_gone, isolation, start, restore_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30)",
        )?;
        for m in batch {
            let Msg::Record(r) = m else { continue };
            stmt.execute(params![
                r.request_id,
                r.function,
                r.version,
                r.instance_id,
                r.trigger.as_str(),
                r.cold,
                r.status.as_str(),
                r.error_type,
                r.queue_ms,
                r.init_ms,
                r.duration_ms,
                r.billed_ms as i64,
                r.memory_mb,
                r.max_memory_mb,
                r.limits_enforced,
                r.payload_bytes as i64,
                r.response_bytes as i64,
                r.received_at,
                r.finished_at,
                r.split.preprocess_ms,
                r.split.inference_ms,
                r.split.postprocess_ms,
                r.mode.as_str(),
                r.batch_size,
                r.vcpu,
                r.task_started_at,
                r.caller_gone,
                r.isolation.as_str(),
                r.start.map(Start::as_str),
                r.restore_ms,
            ])?;
        }
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corrupt_row_is_an_error_not_a_default() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.insert(record("f", Status::Success));
        store.flush().unwrap();
        store
            .conn()
            .execute("UPDATE invocations SET status = 'exploded'", [])
            .unwrap();
        let e = store.records(&RecordFilter::default()).unwrap_err();
        assert!(e.to_string().contains("unknown status \"exploded\""), "{e}");
    }

    #[test]
    fn retention_parses_ages_and_counts() {
        let day = std::time::Duration::from_secs(86_400);
        assert_eq!("7d".parse(), Ok(Retention::Age(7 * day)));
        assert_eq!("12h".parse(), Ok(Retention::Age(day / 2)));
        assert_eq!("30m".parse(), Ok(Retention::Age(day / 48)));
        assert_eq!(
            "90s".parse(),
            Ok(Retention::Age(std::time::Duration::from_secs(90)))
        );
        assert_eq!("100000".parse(), Ok(Retention::Count(100_000)));
        for bad in ["", "d", "7w", "-1d", "0d", "1.5h", "99999999999999999999d"] {
            assert!(bad.parse::<Retention>().is_err(), "{bad}");
        }
    }

    #[test]
    fn pruning_keeps_the_newest_or_the_recent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let now = chrono::Utc::now();
        for age_h in [72, 48, 30, 2, 1] {
            let mut r = record("f", Status::Success);
            r.finished_at = (now - chrono::Duration::hours(age_h))
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            store.insert(r);
        }
        let ages = |s: &Store| -> Vec<String> {
            s.records(&RecordFilter::default())
                .unwrap()
                .into_iter()
                .map(|r| r.finished_at)
                .collect()
        };
        assert_eq!(store.prune("1d".parse().unwrap()).unwrap(), 3);
        assert_eq!(ages(&store).len(), 2);
        assert_eq!(store.prune(Retention::Count(1)).unwrap(), 1);
        let left = ages(&store);
        assert_eq!(left.len(), 1);
        // The newest stays.
        assert!(
            chrono::DateTime::parse_from_rfc3339(&left[0]).unwrap()
                > now - chrono::Duration::minutes(61)
        );
        assert_eq!(store.prune(Retention::Count(5)).unwrap(), 0);
    }

    fn record(function: &str, status: Status) -> InvocationRecord {
        InvocationRecord {
            request_id: uuid::Uuid::new_v4().to_string(),
            function: function.into(),
            version: "1".into(),
            instance_id: Some("i".into()),
            trigger: Trigger::Http,
            cold: false,
            start: None,
            status,
            error_type: None,
            queue_ms: 0.5,
            init_ms: None,
            restore_ms: None,
            duration_ms: 1.25,
            billed_ms: 2,
            memory_mb: 128,
            max_memory_mb: Some(12),
            limits_enforced: true,
            isolation: virga_spec::Isolation::Sandbox,
            payload_bytes: 3,
            response_bytes: 4,
            received_at: "2026-01-01T00:00:00Z".into(),
            finished_at: "2026-01-01T00:00:01Z".into(),
            split: Default::default(),
            mode: Default::default(),
            batch_size: 1,
            vcpu: None,
            task_started_at: None,
            caller_gone: false,
        }
    }

    #[test]
    fn records_round_trip_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let a = record("a", Status::Success);
        {
            let store = Store::open(dir.path()).unwrap();
            store.insert(a.clone());
            store.insert(record("b", Status::Error));
            store.insert(record("a", Status::Timeout));
            assert_eq!(store.records(&RecordFilter::default()).unwrap().len(), 3);
        }
        let store = Store::open(dir.path()).unwrap();
        let only_a = store
            .records(&RecordFilter {
                function: Some("a".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(only_a.len(), 2);
        assert_eq!(only_a[0], a);
        let newest = store
            .records(&RecordFilter {
                limit: Some(1),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(newest[0].status, Status::Timeout);
        let errors = store
            .records(&RecordFilter {
                status: Some(Status::Error),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(errors.len(), 1);
    }

    #[test]
    fn functions_upsert_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut f = StoredFunction {
            name: "echo".into(),
            manifest: "name = \"echo\"".into(),
            base_dir: "/x".into(),
            version: 1,
            deployed_at: "t".into(),
        };
        store.save_function(&f).unwrap();
        f.version = 2;
        store.save_function(&f).unwrap();
        assert_eq!(store.function("echo").unwrap(), Some(f.clone()));
        assert_eq!(store.functions().unwrap().len(), 1);
        store.delete_function("echo").unwrap();
        assert_eq!(store.function("echo").unwrap(), None);
    }

    /// A data dir made before schema versioning: the tables of `SCHEMA_V1`
    /// (some without the later columns), `user_version` 0, one record.
    fn legacy_db(dir: &Path, without_late_columns: bool) {
        let conn = Connection::open(dir.join("virga.db")).unwrap();
        let mut schema = SCHEMA_V1.to_string();
        if without_late_columns {
            for col in [
                ",\n    mode TEXT",
                ",\n    batch_size INTEGER",
                ",\n    vcpu REAL",
                ",\n    task_started_at TEXT",
            ] {
                schema = schema.replace(col, "");
            }
            assert!(!schema.contains("task_started_at"));
        }
        conn.execute_batch(&schema).unwrap();
        conn.execute(
            "INSERT INTO invocations (request_id, function, version, trigger, cold, status,
                queue_ms, duration_ms, billed_ms, memory_mb, limits_enforced, payload_bytes,
                response_bytes, received_at, finished_at)
             VALUES ('r1', 'echo', '1', 'http', 0, 'success', 0.5, 1.5, 2, 128, 1, 3, 4, 't0', 't1')",
            [],
        )
        .unwrap();
    }

    fn user_version(dir: &Path) -> i64 {
        Connection::open(dir.join("virga.db"))
            .unwrap()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn data_dirs_from_before_versioning_are_upgraded_at_open() {
        for without_late_columns in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            legacy_db(dir.path(), without_late_columns);
            assert_eq!(user_version(dir.path()), 0);
            let store = Store::open(dir.path()).unwrap();
            let mut fresh = record("echo", Status::Success);
            fresh.caller_gone = true;
            fresh.restore_ms = Some(3.5);
            store.insert(fresh);
            let all = store.records(&RecordFilter::default()).unwrap();
            assert_eq!(all.len(), 2);
            assert_eq!(all[0].request_id, "r1");
            assert!(!all[0].caller_gone, "old rows read as caller present");
            assert_eq!(all[0].batch_size, 1);
            assert_eq!(all[0].start, None, "served by no instance");
            assert!(all[1].caller_gone);
            assert_eq!((all[0].restore_ms, all[1].restore_ms), (None, Some(3.5)));
            drop(store);
            assert_eq!(user_version(dir.path()), MIGRATIONS.len() as i64);
            // Opening again runs nothing twice.
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(store.records(&RecordFilter::default()).unwrap().len(), 2);
        }
    }

    #[test]
    fn a_database_from_a_newer_virga_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let conn = Connection::open(dir.path().join("virga.db")).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        match Store::open(dir.path()) {
            Err(StoreError::TooNew { found: 99, .. }) => {}
            other => panic!("expected TooNew, got {:?}", other.err()),
        }
        assert_eq!(user_version(dir.path()), 99);
    }
}
