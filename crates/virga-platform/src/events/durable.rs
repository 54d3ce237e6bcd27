//! The durable side of events: queued asynchronous invocations, queue
//! messages and bucket objects' metadata, in `events.db` (SQLite, WAL,
//! `synchronous=FULL`).
//!
//! One writer thread commits in groups: every write that arrives while a
//! commit is under way joins the next one, so many concurrent accepts share
//! one fsync. An accept is acknowledged only after its commit.
//!
//! Asynchronous events are reached through [`EventQueue`], so a broker can
//! replace this store for them; queue messages and objects' metadata are
//! still this store's own methods.

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};

use rusqlite::{params, Connection};
use tokio::sync::oneshot;

use super::queue::{EventQueue, QueueFuture};

/// A storage failure of the event store.
#[derive(Debug, thiserror::Error)]
pub enum DurableError {
    /// the event store {0} failed: {1}
    #[error("the event store {0} failed: {1}")]
    Sqlite(PathBuf, #[source] Arc<rusqlite::Error>),
    /// the event store's writer thread could not start
    #[error("cannot start the event store's writer for {0}: {1}")]
    Writer(PathBuf, #[source] std::io::Error),
    /// the event store's writer has stopped
    #[error("the event store is shutting down")]
    Closed,
    /// the cluster's broker failed or is away
    #[error("the broker ({servers}) is unreachable or refused: {why}")]
    Broker { servers: String, why: String },
}

/// A queued asynchronous invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub request_id: String,
    pub function: String,
    pub payload: Vec<u8>,
    pub trigger: String,
    pub attempts: u32,
    pub enqueued_at_ms: i64,
    pub available_at_ms: i64,
    pub last_error: Option<String>,
}

/// A message in a queue.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageRow {
    pub id: String,
    pub queue: String,
    pub body: String,
    pub sent_at_ms: i64,
    pub receive_count: u32,
}

// An object's metadata as the API shows it (its bytes are a file beside the
// database).
pub use virga_spec::api::ObjectMeta;

/// One commit's outcome, shared by every request of its group.
type Outcome<T> = Result<T, Arc<rusqlite::Error>>;
type Ack = oneshot::Sender<Outcome<()>>;

enum Op {
    InsertEvents(Vec<EventRow>, Ack),
    DeleteEvent(String),
    RetryEvent {
        id: String,
        attempts: u32,
        available_at_ms: i64,
        error: String,
    },
    KillEvent {
        id: String,
        attempts: u32,
        error: String,
    },
    Redrive(String, oneshot::Sender<Outcome<Vec<EventRow>>>),
    InsertMessages(Vec<MessageRow>, Ack),
    DeleteMessages(Vec<String>),
    BumpMessage {
        id: String,
        receive_count: u32,
    },
    PutObject(ObjectMeta, Ack),
    DeleteObject {
        bucket: String,
        key: String,
        ack: Ack,
    },
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    request_id TEXT PRIMARY KEY,
    function TEXT NOT NULL,
    payload BLOB NOT NULL,
    trigger TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    state TEXT NOT NULL,
    enqueued_at_ms INTEGER NOT NULL,
    available_at_ms INTEGER NOT NULL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS events_state ON events(state, function);
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    body TEXT NOT NULL,
    sent_at_ms INTEGER NOT NULL,
    receive_count INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_queue ON messages(queue, sent_at_ms);
CREATE TABLE IF NOT EXISTS objects (
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    last_modified TEXT NOT NULL,
    PRIMARY KEY (bucket, key)
);
";

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a commit is on disk (fsync'd) before it returns.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

pub struct Durable {
    path: PathBuf,
    read: Mutex<Connection>,
    tx: Mutex<Option<mpsc::Sender<Op>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Durable {
    pub fn open(data_dir: &Path) -> Result<Durable, DurableError> {
        let path = data_dir.join("events.db");
        let err = |e: rusqlite::Error| DurableError::Sqlite(path.clone(), Arc::new(e));
        let conn = open(&path).map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        let writer_conn = open(&path).map_err(err)?;
        let (tx, rx) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("virga-events".into())
            .spawn(move || write_loop(writer_conn, rx))
            .map_err(|e| DurableError::Writer(path.clone(), e))?;
        Ok(Durable {
            path,
            read: Mutex::new(conn),
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
        })
    }

    fn send(&self, op: Op) -> Result<(), DurableError> {
        self.tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .ok_or(DurableError::Closed)?
            .send(op)
            .map_err(|_| DurableError::Closed)
    }

    async fn acked(&self, make: impl FnOnce(Ack) -> Op) -> Result<(), DurableError> {
        self.replied(make).await
    }

    pub async fn insert_messages(&self, rows: Vec<MessageRow>) -> Result<(), DurableError> {
        self.acked(|ack| Op::InsertMessages(rows, ack)).await
    }

    pub fn delete_messages(&self, ids: Vec<String>) {
        let _ = self.send(Op::DeleteMessages(ids));
    }

    pub fn bump_message(&self, id: &str, receive_count: u32) {
        let _ = self.send(Op::BumpMessage {
            id: id.to_string(),
            receive_count,
        });
    }

    pub async fn put_object(&self, meta: ObjectMeta) -> Result<(), DurableError> {
        self.acked(|ack| Op::PutObject(meta, ack)).await
    }

    pub async fn delete_object(&self, bucket: &str, key: &str) -> Result<(), DurableError> {
        let (bucket, key) = (bucket.to_string(), key.to_string());
        self.acked(|ack| Op::DeleteObject { bucket, key, ack })
            .await
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, DurableError> {
        let conn = self.read.lock().unwrap_or_else(|e| e.into_inner());
        f(&conn).map_err(|e| DurableError::Sqlite(self.path.clone(), Arc::new(e)))
    }

    fn events_in(
        &self,
        state: &str,
        function: Option<&str>,
    ) -> Result<Vec<EventRow>, DurableError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT request_id, function, payload, trigger, attempts, enqueued_at_ms, available_at_ms, last_error
                 FROM events WHERE state = ?1 AND (?2 IS NULL OR function = ?2) ORDER BY enqueued_at_ms",
            )?;
            let rows = stmt.query_map(params![state, function], event_row)?;
            rows.collect()
        })
    }

    pub fn messages(&self) -> Result<Vec<MessageRow>, DurableError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, queue, body, sent_at_ms, receive_count FROM messages ORDER BY sent_at_ms",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(MessageRow {
                    id: r.get(0)?,
                    queue: r.get(1)?,
                    body: r.get(2)?,
                    sent_at_ms: r.get(3)?,
                    receive_count: r.get(4)?,
                })
            })?;
            rows.collect()
        })
    }

    pub fn object(&self, bucket: &str, key: &str) -> Result<Option<ObjectMeta>, DurableError> {
        use rusqlite::OptionalExtension;
        self.read(|c| {
            c.query_row(
                "SELECT bucket, key, size, etag, last_modified FROM objects WHERE bucket = ?1 AND key = ?2",
                params![bucket, key],
                object_meta,
            )
            .optional()
        })
    }

    pub fn objects(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectMeta>, DurableError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT bucket, key, size, etag, last_modified FROM objects
                 WHERE bucket = ?1 AND substr(key, 1, length(?2)) = ?2 ORDER BY key",
            )?;
            let rows = stmt.query_map(params![bucket, prefix], object_meta)?;
            rows.collect()
        })
    }

    /// Stops the writer after it has written everything queued.
    pub fn close(&self) {
        drop(self.tx.lock().unwrap_or_else(|e| e.into_inner()).take());
        if let Some(w) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = w.join();
        }
    }

    fn replied<T: Send + 'static>(
        &self,
        make: impl FnOnce(oneshot::Sender<Outcome<T>>) -> Op,
    ) -> QueueFuture<'_, T> {
        let (reply, done) = oneshot::channel();
        let sent = self.send(make(reply));
        Box::pin(async move {
            sent?;
            done.await
                .map_err(|_| DurableError::Closed)?
                .map_err(|e| DurableError::Sqlite(self.path.clone(), e))
        })
    }
}

impl EventQueue for Durable {
    /// Resolves after the group commit holding the rows is fsync'd.
    fn enqueue(&self, rows: Vec<EventRow>) -> QueueFuture<'_, ()> {
        self.replied(|ack| Op::InsertEvents(rows, ack))
    }

    fn pending(&self) -> Result<Vec<EventRow>, DurableError> {
        self.events_in("pending", None)
    }

    fn complete(&self, id: &str) {
        let _ = self.send(Op::DeleteEvent(id.to_string()));
    }

    fn retry(&self, id: &str, attempts: u32, available_at_ms: i64, error: &str) {
        let _ = self.send(Op::RetryEvent {
            id: id.to_string(),
            attempts,
            available_at_ms,
            error: error.to_string(),
        });
    }

    fn dead_letter(&self, id: &str, attempts: u32, error: &str) {
        let _ = self.send(Op::KillEvent {
            id: id.to_string(),
            attempts,
            error: error.to_string(),
        });
    }

    fn bury(&self, row: EventRow, error: &str) -> QueueFuture<'_, ()> {
        let (id, attempts, error) = (row.request_id.clone(), row.attempts, error.to_string());
        Box::pin(async move {
            self.enqueue(vec![row]).await?;
            // The writer applies operations in order: never delivered.
            self.dead_letter(&id, attempts, &error);
            Ok(())
        })
    }

    fn dead_letters<'a>(&'a self, function: &'a str) -> QueueFuture<'a, Vec<EventRow>> {
        // A short indexed read: not worth a thread hop.
        let rows = self.events_in("dead", Some(function));
        Box::pin(async move { rows })
    }

    fn dead_counts(&self) -> QueueFuture<'_, Vec<(String, u64)>> {
        let counts = self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT function, COUNT(*) FROM events WHERE state = 'dead' GROUP BY function ORDER BY function",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
            rows.collect()
        });
        Box::pin(async move { counts })
    }

    fn redrive<'a>(&'a self, function: &'a str) -> QueueFuture<'a, Vec<EventRow>> {
        self.replied(|reply| Op::Redrive(function.to_string(), reply))
    }

    fn close(&self) {
        Durable::close(self)
    }
}

impl Drop for Durable {
    fn drop(&mut self) {
        self.close();
    }
}

fn event_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EventRow> {
    Ok(EventRow {
        request_id: r.get(0)?,
        function: r.get(1)?,
        payload: r.get(2)?,
        trigger: r.get(3)?,
        attempts: r.get(4)?,
        enqueued_at_ms: r.get(5)?,
        available_at_ms: r.get(6)?,
        last_error: r.get(7)?,
    })
}

fn object_meta(r: &rusqlite::Row<'_>) -> rusqlite::Result<ObjectMeta> {
    Ok(ObjectMeta {
        bucket: r.get(0)?,
        key: r.get(1)?,
        size: r.get::<_, i64>(2)? as u64,
        etag: r.get(3)?,
        last_modified: r.get(4)?,
    })
}

fn write_loop(mut conn: Connection, rx: mpsc::Receiver<Op>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < 4096 {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let mut redriven: Vec<(usize, Vec<EventRow>)> = Vec::new();
        let result = (|| -> rusqlite::Result<()> {
            let tx = conn.transaction()?;
            for (i, op) in batch.iter().enumerate() {
                match op {
                    Op::InsertEvents(rows, _) => {
                        let mut stmt = tx.prepare_cached(
                            "INSERT OR REPLACE INTO events (request_id, function, payload, trigger, attempts, state, enqueued_at_ms, available_at_ms, last_error)
                             VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?7, ?8)",
                        )?;
                        for e in rows {
                            stmt.execute(params![
                                e.request_id,
                                e.function,
                                e.payload,
                                e.trigger,
                                e.attempts,
                                e.enqueued_at_ms,
                                e.available_at_ms,
                                e.last_error
                            ])?;
                        }
                    }
                    Op::DeleteEvent(id) => {
                        tx.prepare_cached("DELETE FROM events WHERE request_id = ?1")?
                            .execute(params![id])?;
                    }
                    Op::RetryEvent {
                        id,
                        attempts,
                        available_at_ms,
                        error,
                    } => {
                        tx.prepare_cached("UPDATE events SET attempts = ?2, available_at_ms = ?3, last_error = ?4 WHERE request_id = ?1")?
                            .execute(params![id, attempts, available_at_ms, error])?;
                    }
                    Op::KillEvent {
                        id,
                        attempts,
                        error,
                    } => {
                        tx.prepare_cached("UPDATE events SET state = 'dead', attempts = ?2, last_error = ?3 WHERE request_id = ?1")?
                            .execute(params![id, attempts, error])?;
                    }
                    Op::Redrive(function, _) => {
                        let rows: Vec<EventRow> = {
                            let mut stmt = tx.prepare_cached(
                                "SELECT request_id, function, payload, trigger, attempts, enqueued_at_ms, available_at_ms, last_error
                                 FROM events WHERE state = 'dead' AND function = ?1 ORDER BY enqueued_at_ms",
                            )?;
                            let rows = stmt.query_map(params![function], event_row)?;
                            rows.collect::<rusqlite::Result<_>>()?
                        };
                        let now = chrono::Utc::now().timestamp_millis();
                        tx.prepare_cached(
                            "UPDATE events SET state = 'pending', attempts = 0, enqueued_at_ms = ?2, available_at_ms = ?2 WHERE state = 'dead' AND function = ?1",
                        )?
                        .execute(params![function, now])?;
                        let rows = rows
                            .into_iter()
                            .map(|mut r| {
                                r.attempts = 0;
                                r.enqueued_at_ms = now;
                                r.available_at_ms = now;
                                r
                            })
                            .collect();
                        redriven.push((i, rows));
                    }
                    Op::InsertMessages(rows, _) => {
                        let mut stmt = tx.prepare_cached(
                            "INSERT OR REPLACE INTO messages (id, queue, body, sent_at_ms, receive_count) VALUES (?1, ?2, ?3, ?4, ?5)",
                        )?;
                        for m in rows {
                            stmt.execute(params![
                                m.id,
                                m.queue,
                                m.body,
                                m.sent_at_ms,
                                m.receive_count
                            ])?;
                        }
                    }
                    Op::DeleteMessages(ids) => {
                        let mut stmt = tx.prepare_cached("DELETE FROM messages WHERE id = ?1")?;
                        for id in ids {
                            stmt.execute(params![id])?;
                        }
                    }
                    Op::BumpMessage { id, receive_count } => {
                        tx.prepare_cached("UPDATE messages SET receive_count = ?2 WHERE id = ?1")?
                            .execute(params![id, receive_count])?;
                    }
                    Op::PutObject(m, _) => {
                        tx.prepare_cached(
                            "INSERT OR REPLACE INTO objects (bucket, key, size, etag, last_modified) VALUES (?1, ?2, ?3, ?4, ?5)",
                        )?
                        .execute(params![m.bucket, m.key, m.size as i64, m.etag, m.last_modified])?;
                    }
                    Op::DeleteObject { bucket, key, .. } => {
                        tx.prepare_cached("DELETE FROM objects WHERE bucket = ?1 AND key = ?2")?
                            .execute(params![bucket, key])?;
                    }
                }
            }
            tx.commit()
        })();
        if let Err(e) = &result {
            tracing::error!(error = %e, "event store write failed");
        }
        let outcome = result.map_err(Arc::new);
        for (i, op) in batch.into_iter().enumerate() {
            match op {
                Op::InsertEvents(_, ack)
                | Op::InsertMessages(_, ack)
                | Op::PutObject(_, ack)
                | Op::DeleteObject { ack, .. } => {
                    let _ = ack.send(outcome.clone());
                }
                Op::Redrive(_, reply) => {
                    let rows = redriven
                        .iter_mut()
                        .find(|(j, _)| *j == i)
                        .map(|(_, r)| std::mem::take(r))
                        .unwrap_or_default();
                    let _ = reply.send(outcome.clone().map(|_| rows));
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str, f: &str) -> EventRow {
        EventRow {
            request_id: id.into(),
            function: f.into(),
            payload: b"{}".to_vec(),
            trigger: "http".into(),
            attempts: 0,
            enqueued_at_ms: 1,
            available_at_ms: 1,
            last_error: None,
        }
    }

    #[tokio::test]
    async fn events_survive_reopening_and_dead_letters_redrive() {
        let dir = tempfile::tempdir().unwrap();
        {
            let d = Durable::open(dir.path()).unwrap();
            d.enqueue(vec![ev("a", "f"), ev("b", "f"), ev("c", "g")])
                .await
                .unwrap();
            d.complete("a");
            d.dead_letter("b", 3, "Unhandled");
        }
        let d = Durable::open(dir.path()).unwrap();
        let pending = d.pending().unwrap();
        assert_eq!(
            pending
                .iter()
                .map(|e| e.request_id.as_str())
                .collect::<Vec<_>>(),
            vec!["c"]
        );
        let dead = d.dead_letters("f").await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].attempts, 3);
        assert_eq!(dead[0].last_error.as_deref(), Some("Unhandled"));
        assert_eq!(d.dead_counts().await.unwrap(), vec![("f".to_string(), 1)]);
        let back = d.redrive("f").await.unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].attempts, 0);
        assert!(d.dead_letters("f").await.unwrap().is_empty());
        assert_eq!(d.pending().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn messages_and_objects_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let d = Durable::open(dir.path()).unwrap();
        d.insert_messages(vec![MessageRow {
            id: "m1".into(),
            queue: "q".into(),
            body: "x".into(),
            sent_at_ms: 1,
            receive_count: 0,
        }])
        .await
        .unwrap();
        d.bump_message("m1", 2);
        d.put_object(ObjectMeta {
            bucket: "b".into(),
            key: "k/1".into(),
            size: 3,
            etag: "e".into(),
            last_modified: "t".into(),
        })
        .await
        .unwrap();
        assert_eq!(d.messages().unwrap()[0].receive_count, 2);
        assert_eq!(d.objects("b", "k/").unwrap().len(), 1);
        assert!(d.objects("b", "z").unwrap().is_empty());
        d.delete_object("b", "k/1").await.unwrap();
        assert_eq!(d.object("b", "k/1").unwrap(), None);
        d.delete_messages(vec!["m1".into()]);
        d.enqueue(vec![]).await.unwrap();
        assert!(d.messages().unwrap().is_empty());
    }
}
