//! Several nodes on one NATS JetStream (`virga serve --cluster`).
//!
//! What the broker holds, and so what every node sees:
//! - deployments, in the KV bucket [`FUNCTIONS_BUCKET`] (one key per
//!   function: its manifest and where its code is), revisioned;
//! - code bundles and model files, in the object store [`CODE_BUCKET`], so
//!   a node that never saw the deploying host's files runs the function;
//! - invocation records, in the stream [`RECORDS_STREAM`]: each node
//!   publishes its own and indexes the others' in its own SQLite store;
//! - asynchronous events (invokes, topic messages, bucket notifications)
//!   and their dead letters, in streams of their own: see
//!   [`crate::events::broker`].
//!
//! A deploy or delete through any node is applied locally first, then
//! published; every other node's watcher applies it in turn. What a node
//! applied (its own or another's) is remembered by KV revision, so nothing
//! is applied twice. A node keeps serving what it runs when the broker is
//! away; what needs the broker (deploys, deletes) answers 503 meanwhile.

pub mod route;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, kv, object_store};
use futures_util::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use virga_spec::{InvocationRecord, Manifest};

use crate::scheduler::{CodeSource, Scheduler};

/// Deployments: function name -> its manifest and where its code is.
pub const FUNCTIONS_BUCKET: &str = "virga_functions";
/// Code bundles (zip) and model files.
pub const CODE_BUCKET: &str = "virga_code";
/// Live nodes: each refreshes its key; a key not refreshed expires.
pub const NODES_BUCKET: &str = "virga_nodes";
/// Keys (`virga keys` on any node's data dir), by id.
pub const KEYS_BUCKET: &str = "virga_keys";
/// How often a node looks for keys made or revoked on its data dir.
const KEYS_EVERY: Duration = Duration::from_secs(1);
/// How long a node that stopped refreshing stays a member.
const NODE_TTL: Duration = Duration::from_secs(10);
const HEARTBEAT: Duration = Duration::from_secs(2);
/// Invocation records, on `virga.records.<node>`.
pub const RECORDS_STREAM: &str = "VIRGA_RECORDS";
const RECORDS_SUBJECT: &str = "virga.records";
/// How long the stream keeps records for nodes that were away.
const RECORDS_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Records waiting to be published; past this a record is indexed only
/// on its own node (counted in `virga_cluster_records_dropped_total`).
const RECORDS_QUEUE: usize = 10_000;
/// Most records sent before their acknowledgements are awaited.
const PUBLISH_BATCH: usize = 256;

/// How to join a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `nats://host:port` of one or more servers of the broker.
    pub servers: Vec<String>,
    /// This node's name: letters, digits, `-` and `_`, unique in the
    /// cluster.
    pub node: String,
    /// A file holding `user:password`, or an NKey seed (`SU...`).
    pub credentials: Option<PathBuf>,
    /// Copies of each stream and bucket (1, or 3 on a 3-server broker).
    pub replicas: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("--node {0:?}: use letters, digits, '-' and '_' only")]
    NodeName(String),
    #[error("cluster credentials {path}: {why}")]
    Credentials { path: PathBuf, why: String },
    #[error("the broker ({servers}) is unreachable: {why}")]
    Unreachable { servers: String, why: String },
    #[error("the broker ({servers}) refused {what}: {why}")]
    Broker {
        servers: String,
        what: &'static str,
        why: String,
    },
    #[error("cannot package {what} for the cluster: {why}")]
    Package { what: String, why: String },
}

/// A deployment as the cluster holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Deployment {
    /// The manifest as deployed.
    manifest: String,
    /// Object holding the code bundle (a zip).
    code: String,
    /// The model's files: path relative to the model file's directory ->
    /// object. The model file itself comes first.
    #[serde(default)]
    model: Vec<(String, String)>,
    /// The node it was deployed through.
    node: String,
    deployed_at: String,
}

/// This node's membership of a cluster.
pub struct Cluster {
    node: String,
    servers: String,
    client: async_nats::Client,
    js: jetstream::Context,
    functions: kv::Store,
    nodes: kv::Store,
    keys: kv::Store,
    /// The live nodes as last seen, sorted by name.
    members: Mutex<Vec<String>>,
    /// Per node, the functions it had an idle instance of at its last
    /// heartbeat.
    warm: Mutex<HashMap<String, HashSet<String>>>,
    /// Round-robin among the nodes a call may be routed to.
    turn: AtomicUsize,
    code: object_store::ObjectStore,
    records: mpsc::Sender<InvocationRecord>,
    /// The KV revision of each function's deployment this node runs.
    applied: Mutex<HashMap<String, u64>>,
    /// Where deployments of other nodes are unpacked (the one directory
    /// of the data dir a function's jail may see, its own model's part).
    dir: PathBuf,
    replicas: usize,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.node)
            .field("servers", &self.servers)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cluster {
    /// Connects to the broker and makes (or finds) the buckets and the
    /// records stream. Records published from then on go out through the
    /// returned receiver's task, started by [`Cluster::start`].
    pub async fn join(
        config: &ClusterConfig,
        data_dir: &Path,
    ) -> Result<(Arc<Cluster>, mpsc::Receiver<InvocationRecord>), ClusterError> {
        if config.node.is_empty()
            || !config
                .node
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ClusterError::NodeName(config.node.clone()));
        }
        let servers = config.servers.join(",");
        let options = match &config.credentials {
            Some(path) => credentials(path)?,
            None => async_nats::ConnectOptions::new(),
        }
        .name(format!("virga-{}", config.node))
        .connection_timeout(Duration::from_secs(5))
        // Reconnects forever: a broker that comes back is found again.
        .max_reconnects(None);
        let unreachable = |why: String| ClusterError::Unreachable {
            servers: servers.clone(),
            why,
        };
        let client = options
            .connect(config.servers.as_slice())
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let js = jetstream::new(client.clone());
        let refused = |what: &'static str, e: &dyn std::fmt::Display| ClusterError::Broker {
            servers: servers.clone(),
            what,
            why: e.to_string(),
        };
        let functions = js
            .create_key_value(kv::Config {
                bucket: FUNCTIONS_BUCKET.into(),
                description: "virga deployments".into(),
                history: 5,
                num_replicas: config.replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| refused("the deployments bucket", &e))?;
        let nodes = js
            .create_key_value(kv::Config {
                bucket: NODES_BUCKET.into(),
                description: "live virga nodes".into(),
                history: 1,
                max_age: NODE_TTL,
                num_replicas: config.replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| refused("the nodes bucket", &e))?;
        let keys = js
            .create_key_value(kv::Config {
                bucket: KEYS_BUCKET.into(),
                description: "virga keys".into(),
                history: 1,
                num_replicas: config.replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| refused("the keys bucket", &e))?;
        let code = js
            .create_object_store(object_store::Config {
                bucket: CODE_BUCKET.into(),
                description: Some("virga code bundles and models".into()),
                num_replicas: config.replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| refused("the code bucket", &e))?;
        js.get_or_create_stream(jetstream::stream::Config {
            name: RECORDS_STREAM.into(),
            subjects: vec![format!("{RECORDS_SUBJECT}.*")],
            max_age: RECORDS_MAX_AGE,
            num_replicas: config.replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| refused("the records stream", &e))?;
        let (records, rx) = mpsc::channel(RECORDS_QUEUE);
        let dir = data_dir.join(crate::sandbox::plan::UNPACKED_MODELS);
        std::fs::create_dir_all(&dir).map_err(|e| ClusterError::Package {
            what: dir.display().to_string(),
            why: e.to_string(),
        })?;
        Ok((
            Arc::new(Cluster {
                node: config.node.clone(),
                servers,
                client,
                js,
                functions,
                nodes,
                keys,
                members: Mutex::new(vec![config.node.clone()]),
                warm: Mutex::new(HashMap::new()),
                turn: AtomicUsize::new(0),
                code,
                records,
                applied: Mutex::new(HashMap::new()),
                dir,
                replicas: config.replicas,
            }),
            rx,
        ))
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Whether the connection to the broker is up now.
    pub fn reachable(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// The error for what needs the broker while it is away.
    pub fn unreachable(&self) -> ClusterError {
        ClusterError::Unreachable {
            servers: self.servers.clone(),
            why: "not connected (reconnecting)".into(),
        }
    }

    /// The cluster's queue of asynchronous events (its streams made or
    /// found on the broker).
    pub async fn event_queue(
        &self,
    ) -> Result<Arc<crate::events::broker::BrokerQueue>, ClusterError> {
        crate::events::broker::BrokerQueue::open(
            self.client.clone(),
            self.servers.clone(),
            self.replicas,
        )
        .await
        .map_err(|e| ClusterError::Broker {
            servers: self.servers.clone(),
            what: "the events streams",
            why: e.to_string(),
        })
    }

    /// A sender for this node's records (never blocks: a full queue drops).
    pub fn records(&self) -> mpsc::Sender<InvocationRecord> {
        self.records.clone()
    }

    /// Starts the node's background work: publishing its records,
    /// indexing the others', applying the cluster's deployments.
    pub fn start(
        self: &Arc<Self>,
        scheduler: Arc<Scheduler>,
        rx: mpsc::Receiver<InvocationRecord>,
        access: Arc<crate::access::Access>,
    ) {
        tokio::spawn(self.clone().publish_keys(access.clone()));
        tokio::spawn(self.clone().merge_keys(access));
        tokio::spawn(self.clone().publish_records(rx));
        tokio::spawn(self.clone().index_records(scheduler.clone()));
        tokio::spawn(self.clone().heartbeat(scheduler.clone()));
        tokio::spawn(self.clone().serve_invokes(scheduler.clone()));
        tokio::spawn(self.clone().watch_deployments(scheduler));
    }

    /// The live nodes as last seen (this one among them), sorted by name.
    pub fn members(&self) -> Vec<String> {
        lock(&self.members).clone()
    }

    /// Leaves the cluster now (a graceful stop), rather than when this
    /// node's key expires: the others take its shares at once.
    pub async fn leave(&self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.nodes.purge(&self.node)).await;
    }

    /// Publishes the keys made or revoked on this node's data dir (by
    /// `virga keys`, which works on the file) as they appear. A key the
    /// bucket holds revoked is never published live again.
    async fn publish_keys(self: Arc<Self>, access: Arc<crate::access::Access>) {
        let mut published: HashMap<String, Vec<u8>> = HashMap::new();
        let mut tick = tokio::time::interval(KEYS_EVERY);
        loop {
            tick.tick().await;
            let a = access.clone();
            let exported = match tokio::task::spawn_blocking(move || a.keys.export()).await {
                Ok(Ok(k)) => k,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot read the keys to share them");
                    continue;
                }
                Err(_) => return,
            };
            for (id, bytes) in exported {
                if published.get(&id) == Some(&bytes) {
                    continue;
                }
                let theirs = self.keys.get(&id).await;
                let known_revoked = matches!(&theirs, Ok(Some(v)) if crate::access::keys::KeyStore::exported_revoked(v) == Some(true));
                let sent = if theirs
                    .as_ref()
                    .is_ok_and(|v| v.as_deref() == Some(&bytes[..]))
                {
                    true
                } else if known_revoked {
                    // Revoked elsewhere: the merge applies it here.
                    false
                } else {
                    self.keys.put(&id, bytes.clone().into()).await.is_ok()
                };
                if sent {
                    published.insert(id, bytes);
                }
            }
        }
    }

    /// Merges every node's keys into this node's key file.
    async fn merge_keys(self: Arc<Self>, access: Arc<crate::access::Access>) {
        watch_forever(&self.keys, "keys", |entry| {
            let access = access.clone();
            async move {
                if entry.operation != kv::Operation::Put {
                    return;
                }
                let value = entry.value.clone();
                match tokio::task::spawn_blocking(move || access.keys.merge(&value)).await {
                    Ok(Ok(true)) => tracing::info!(key = %entry.key, "a key from the cluster"),
                    Ok(Ok(false)) | Err(_) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(key = %entry.key, error = %e, "cannot take a key from the cluster")
                    }
                }
            }
        })
        .await
    }

    /// Refreshes this node's key and reads the live nodes, so each node
    /// knows its share of every `max_concurrency`. While the broker is
    /// away the last membership seen holds.
    async fn heartbeat(self: Arc<Self>, scheduler: Arc<Scheduler>) {
        let started = chrono::Utc::now().to_rfc3339();
        let mut tick = tokio::time::interval(HEARTBEAT);
        loop {
            tick.tick().await;
            let state = route::NodeState {
                started: started.clone(),
                warm: scheduler.warm_functions(),
            };
            let live = async {
                let value = serde_json::to_vec(&state).map_err(|e| e.to_string())?;
                self.nodes
                    .put(&self.node, value.into())
                    .await
                    .map_err(|e| e.to_string())?;
                let keys = self.nodes.keys().await.map_err(|e| e.to_string())?;
                let names = keys
                    .try_collect::<Vec<String>>()
                    .await
                    .map_err(|e| e.to_string())?;
                let mut warm = HashMap::new();
                for n in names.iter().filter(|n| **n != self.node) {
                    if let Ok(Some(v)) = self.nodes.get(n).await {
                        if let Ok(s) = serde_json::from_slice::<route::NodeState>(&v) {
                            warm.insert(n.clone(), s.warm.into_iter().collect());
                        }
                    }
                }
                *lock(&self.warm) = warm;
                Ok::<_, String>(names)
            };
            match live.await {
                Ok(mut names) => {
                    if !names.contains(&self.node) {
                        names.push(self.node.clone());
                    }
                    names.sort();
                    names.dedup();
                    let index = names.iter().position(|n| *n == self.node).unwrap_or(0);
                    scheduler.set_cluster_members(index, names.len());
                    let mut members = lock(&self.members);
                    if *members != names {
                        tracing::info!(nodes = ?names, "cluster members");
                        *members = names;
                    }
                }
                Err(e) => tracing::debug!(error = %e, "cannot refresh this node's membership"),
            }
        }
    }

    /// Publishes what this node just deployed as `name` (its stored
    /// manifest, code bundle and model files).
    pub async fn publish_deploy(
        &self,
        scheduler: &Arc<Scheduler>,
        name: &str,
    ) -> Result<(), ClusterError> {
        if !self.reachable() {
            return Err(self.unreachable());
        }
        let package = |why: String| ClusterError::Package {
            what: name.to_string(),
            why,
        };
        let (stored, code_dir, digest) = scheduler
            .deployed_code(name)
            .ok_or_else(|| package("it is not deployed here".into()))?;
        let manifest =
            Manifest::parse(&stored.manifest, name).map_err(|e| package(e.to_string()))?;
        let base_dir = PathBuf::from(&stored.base_dir);
        let (zip, files) = tokio::task::spawn_blocking(move || {
            let zip = zip_dir(&code_dir)?;
            let files = match &manifest.model {
                Some(m) => model_files(&base_dir.join(&m.path))?,
                None => Vec::new(),
            };
            Ok::<_, String>((zip, files))
        })
        .await
        .map_err(|e| package(e.to_string()))?
        .map_err(package)?;
        let code_object = format!("code/{name}/{digest}.zip");
        self.put_object(&code_object, &zip).await?;
        let mut model = Vec::new();
        for (rel, path) in files {
            let bytes = tokio::fs::read(&path)
                .await
                .map_err(|e| package(format!("{}: {e}", path.display())))?;
            let object = format!("model/{}", crate::code::sha256_hex(&bytes));
            // The same model file deployed again is not sent again.
            if self.code.info(&object).await.is_err() {
                self.put_object(&object, &bytes).await?;
            }
            model.push((rel, object));
        }
        // An unchanged deploy (same manifest, code and model) is not news:
        // the other nodes keep their revision and their warm instances.
        if let Ok(Some(current)) = self.functions.entry(name).await {
            if current.operation == kv::Operation::Put {
                if let Ok(d) = serde_json::from_slice::<Deployment>(&current.value) {
                    if d.manifest == stored.manifest && d.code == code_object && d.model == model {
                        lock(&self.applied).insert(name.to_string(), current.revision);
                        return Ok(());
                    }
                }
            }
        }
        let deployment = Deployment {
            manifest: stored.manifest.clone(),
            code: code_object,
            model,
            node: self.node.clone(),
            deployed_at: stored.deployed_at.clone(),
        };
        let value = serde_json::to_vec(&deployment).map_err(|e| package(e.to_string()))?;
        let revision = self
            .functions
            .put(name, value.into())
            .await
            .map_err(|e| self.broker("the deployment", &e))?;
        lock(&self.applied).insert(name.to_string(), revision);
        Ok(())
    }

    /// Publishes the delete of `name`.
    pub async fn publish_delete(&self, name: &str) -> Result<(), ClusterError> {
        if !self.reachable() {
            return Err(self.unreachable());
        }
        self.functions
            .delete(name)
            .await
            .map_err(|e| self.broker("the delete", &e))?;
        lock(&self.applied).remove(name);
        Ok(())
    }

    fn broker(&self, what: &'static str, e: &dyn std::fmt::Display) -> ClusterError {
        ClusterError::Broker {
            servers: self.servers.clone(),
            what,
            why: e.to_string(),
        }
    }

    async fn put_object(&self, name: &str, bytes: &[u8]) -> Result<(), ClusterError> {
        let mut reader = bytes;
        self.code
            .put(name, &mut reader)
            .await
            .map(|_| ())
            .map_err(|e| self.broker("an object", &e))
    }

    async fn get_object(&self, name: &str) -> Result<Vec<u8>, String> {
        let mut object = self.code.get(name).await.map_err(|e| e.to_string())?;
        let mut bytes = Vec::new();
        object
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| e.to_string())?;
        Ok(bytes)
    }

    /// Applies every deployment and delete of the cluster, those before
    /// this node started first; runs as long as the node.
    async fn watch_deployments(self: Arc<Self>, scheduler: Arc<Scheduler>) {
        watch_forever(&self.functions, "deployments", |entry| {
            let (me, scheduler) = (self.clone(), scheduler.clone());
            async move { me.apply(&scheduler, entry).await }
        })
        .await
    }

    async fn apply(&self, scheduler: &Arc<Scheduler>, entry: kv::Entry) {
        let name = entry.key.clone();
        if lock(&self.applied).get(&name) == Some(&entry.revision) {
            return;
        }
        match entry.operation {
            kv::Operation::Delete | kv::Operation::Purge => {
                lock(&self.applied).remove(&name);
                let s = scheduler.clone();
                let n = name.clone();
                match tokio::task::spawn_blocking(move || s.delete(&n)).await {
                    Ok(Ok(true)) => {
                        tracing::info!(function = %name, "deleted through another node")
                    }
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(function = %name, error = %e, "cannot apply a delete")
                    }
                    Err(_) => {}
                }
            }
            kv::Operation::Put => match self
                .deploy_remote(scheduler, &name, entry.revision, &entry.value)
                .await
            {
                Ok(()) => {
                    lock(&self.applied).insert(name.clone(), entry.revision);
                    tracing::info!(function = %name, revision = entry.revision, "deployed from the cluster");
                }
                Err(why) => {
                    tracing::warn!(function = %name, revision = entry.revision, %why, "cannot apply the cluster's deployment")
                }
            },
        }
    }

    /// Unpacks a deployment made through another node (or through this
    /// one before a restart) and deploys it here.
    async fn deploy_remote(
        &self,
        scheduler: &Arc<Scheduler>,
        name: &str,
        revision: u64,
        value: &[u8],
    ) -> Result<(), String> {
        let d: Deployment = serde_json::from_slice(value).map_err(|e| e.to_string())?;
        // This node's own deploy (seen before its publish returned, or
        // again after a restart) is already what it runs.
        if d.node == self.node {
            if let Some((stored, _, digest)) = scheduler.deployed_code(name) {
                if stored.manifest == d.manifest && d.code.ends_with(&format!("/{digest}.zip")) {
                    return Ok(());
                }
            }
        }
        let zip = self.get_object(&d.code).await?;
        let base = self.dir.join(name).join(revision.to_string());
        let mut manifest_text = d.manifest.clone();
        if let Some((first, _)) = d.model.first() {
            let model_dir = base.join("model");
            std::fs::create_dir_all(&model_dir).map_err(|e| e.to_string())?;
            for (rel, object) in &d.model {
                let path = model_dir.join(safe_relative(rel)?);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
                }
                let bytes = self.get_object(object).await?;
                tokio::fs::write(&path, bytes)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            manifest_text = with_model_path(&d.manifest, &model_dir.join(safe_relative(first)?))?;
        }
        std::fs::create_dir_all(&base).map_err(|e| e.to_string())?;
        let s = scheduler.clone();
        let source = format!(
            "{name}.toml (cluster revision {revision}, from node {})",
            d.node
        );
        tokio::task::spawn_blocking(move || {
            s.deploy_with(&manifest_text, &source, &base, CodeSource::Zip(&zip))
        })
        .await
        .map_err(|e| e.to_string())?
        .map(|_| ())
        .map_err(|e| e.to_string())
    }

    /// Publishes this node's records: what has gathered is sent at once and
    /// its acknowledgements awaited together (one round trip per batch, not
    /// per record); whatever the broker did not take is sent again, so an
    /// outage shorter than the queue loses nothing.
    async fn publish_records(self: Arc<Self>, mut rx: mpsc::Receiver<InvocationRecord>) {
        let subject = format!("{RECORDS_SUBJECT}.{}", self.node);
        while let Some(first) = rx.recv().await {
            let mut batch: Vec<bytes::Bytes> = Vec::new();
            let mut next = Some(first);
            while let Some(r) = next {
                if let Ok(body) = serde_json::to_vec(&r) {
                    batch.push(body.into());
                }
                next = if batch.len() < PUBLISH_BATCH {
                    rx.try_recv().ok()
                } else {
                    None
                };
            }
            while !batch.is_empty() {
                let mut acks = Vec::with_capacity(batch.len());
                for body in &batch {
                    acks.push(self.js.publish(subject.clone(), body.clone()).await);
                }
                let mut left = Vec::new();
                for (body, ack) in batch.into_iter().zip(acks) {
                    let taken = match ack {
                        Ok(ack) => ack.await.is_ok(),
                        Err(_) => false,
                    };
                    if !taken {
                        left.push(body);
                    }
                }
                if !left.is_empty() {
                    tracing::debug!(left = left.len(), "records not acknowledged; again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                batch = left;
            }
        }
    }

    /// Indexes the records of the other nodes in this node's store.
    async fn index_records(self: Arc<Self>, scheduler: Arc<Scheduler>) {
        let durable = format!("records-{}", self.node);
        let own = format!("{RECORDS_SUBJECT}.{}", self.node);
        loop {
            let subscribe = async {
                let stream = self
                    .js
                    .get_stream(RECORDS_STREAM)
                    .await
                    .map_err(|e| e.to_string())?;
                let consumer: jetstream::consumer::PullConsumer = stream
                    .get_or_create_consumer(
                        &durable,
                        jetstream::consumer::pull::Config {
                            durable_name: Some(durable.clone()),
                            ack_policy: jetstream::consumer::AckPolicy::Explicit,
                            ..Default::default()
                        },
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                consumer.messages().await.map_err(|e| e.to_string())
            };
            let mut messages = match subscribe.await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the cluster's records; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            while let Some(m) = messages.next().await {
                let Ok(m) = m else { break };
                if m.subject.as_str() != own {
                    match serde_json::from_slice::<InvocationRecord>(&m.payload) {
                        Ok(r) => scheduler.meter().store().insert(r),
                        Err(e) => {
                            tracing::warn!(error = %e, subject = %m.subject, "an unreadable record")
                        }
                    }
                }
                let _ = m.ack().await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Hands every entry of `store` to `each`, those already there first, and
/// watches again whenever the watch fails (the broker away); runs forever.
async fn watch_forever<F, Fut>(store: &kv::Store, what: &str, mut each: F)
where
    F: FnMut(kv::Entry) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        let mut watch = match store.watch_with_history(">").await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the cluster's {what}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Some(entry) = watch.next().await {
            match entry {
                Ok(entry) => each(entry).await,
                Err(e) => {
                    tracing::warn!(error = %e, "the {what} watch failed; watching again");
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Reads `user:password` or an NKey seed from `path`.
fn credentials(path: &Path) -> Result<async_nats::ConnectOptions, ClusterError> {
    let bad = |why: String| ClusterError::Credentials {
        path: path.to_path_buf(),
        why,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let text = text.trim();
    if text.starts_with("SU") && !text.contains(':') {
        return Ok(async_nats::ConnectOptions::with_nkey(text.to_string()));
    }
    match text.split_once(':') {
        Some((user, pass)) if !user.is_empty() && !pass.is_empty() => Ok(
            async_nats::ConnectOptions::with_user_and_password(user.into(), pass.into()),
        ),
        _ => Err(bad(
            "write `user:password` on one line, or an NKey seed (SU...)".into(),
        )),
    }
}

/// A relative path with no `..`, no root: where a file may be unpacked.
fn safe_relative(rel: &str) -> Result<&Path, String> {
    let p = Path::new(rel);
    if rel.is_empty()
        || p.components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(format!("refusing the model file path {rel:?}"));
    }
    Ok(p)
}

/// A manifest whose `[model] path` is `path`.
fn with_model_path(manifest: &str, path: &Path) -> Result<String, String> {
    let mut doc: toml::Table = manifest
        .parse()
        .map_err(|e: toml::de::Error| e.to_string())?;
    let model = doc
        .get_mut("model")
        .and_then(|m| m.as_table_mut())
        .ok_or("the manifest has no [model] table")?;
    model.insert(
        "path".into(),
        toml::Value::String(path.display().to_string()),
    );
    toml::to_string(&doc).map_err(|e| e.to_string())
}

/// The files a model needs, relative to its directory: the model, its
/// sidecar (`<stem>.json`) and the files the sidecar names (tokenizer,
/// class list).
fn model_files(model: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    let dir = model.parent().unwrap_or(Path::new("."));
    let file_name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    let mut files = vec![(
        file_name(model).ok_or_else(|| format!("{}: not a file", model.display()))?,
        model.to_path_buf(),
    )];
    let sidecar = model.with_extension("json");
    if sidecar.is_file() {
        files.push((file_name(&sidecar).unwrap_or_default(), sidecar.clone()));
        let text = std::fs::read_to_string(&sidecar).map_err(|e| e.to_string())?;
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
            for key in ["tokenizer", "classes_file"] {
                if let Some(rel) = v.get(key).and_then(|r| r.as_str()) {
                    safe_relative(rel)?;
                    files.push((rel.to_string(), dir.join(rel)));
                }
            }
        }
    }
    Ok(files)
}

/// The files under `dir` as a zip archive (stored, not compressed: models
/// and bundles are mostly compressed already, and this runs per deploy).
fn zip_dir(dir: &Path) -> Result<Vec<u8>, String> {
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .unix_permissions(0o755);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&d)
            .map_err(|e| format!("{}: {e}", d.display()))?
            .flatten()
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let rel = path
                .strip_prefix(dir)
                .map_err(|e| e.to_string())?
                .to_string_lossy()
                .into_owned();
            let kind = e.file_type().map_err(|e| e.to_string())?;
            if kind.is_dir() {
                out.add_directory(format!("{rel}/"), options)
                    .map_err(|e| e.to_string())?;
                stack.push(path);
            } else if kind.is_file() {
                out.start_file(rel, options).map_err(|e| e.to_string())?;
                let mut f = std::fs::File::open(&path).map_err(|e| e.to_string())?;
                std::io::copy(&mut f, &mut out).map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(out.finish().map_err(|e| e.to_string())?.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_path_is_rewritten_and_the_rest_kept() {
        let m = "name = \"iris\"\nruntime = \"model\"\nmemory_mb = 512\n[model]\ntask = \"tabular-classification\"\npath = \"../models/iris.model\"\n";
        let out = with_model_path(m, Path::new("/data/cluster/iris/7/model/iris.model")).unwrap();
        let parsed = Manifest::parse(&out, "iris.toml").unwrap();
        assert_eq!(
            parsed.model.unwrap().path,
            "/data/cluster/iris/7/model/iris.model"
        );
        assert_eq!(parsed.memory_mb, 512);
        assert!(with_model_path("name = \"x\"\n", Path::new("/m")).is_err());
    }

    #[test]
    fn unpacked_paths_stay_inside() {
        assert!(safe_relative("m.onnx").is_ok());
        assert!(safe_relative("tok/tokenizer.json").is_ok());
        for bad in ["", "../m.onnx", "/etc/passwd", "a/../../b"] {
            assert!(safe_relative(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_model_travels_with_its_sidecar_and_tokenizer() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("enc.onnx");
        std::fs::write(&model, b"graph").unwrap();
        std::fs::write(
            dir.path().join("enc.json"),
            r#"{"task": "text-embedding", "tokenizer": "enc.tokenizer.json"}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("enc.tokenizer.json"), b"{}").unwrap();
        let files = model_files(&model).unwrap();
        let names: Vec<&str> = files.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(names, ["enc.onnx", "enc.json", "enc.tokenizer.json"]);
        std::fs::write(
            dir.path().join("enc.json"),
            r#"{"tokenizer": "../../etc/passwd"}"#,
        )
        .unwrap();
        assert!(model_files(&model).is_err());
    }

    #[test]
    fn a_bundle_zips_and_unzips_the_same_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("lib")).unwrap();
        std::fs::write(dir.path().join("handler.py"), b"print(1)").unwrap();
        std::fs::write(dir.path().join("lib/util.py"), b"x = 2").unwrap();
        let zip = zip_dir(dir.path()).unwrap();
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();
        let mut names: Vec<String> = archive
            .file_names()
            .map(|n| n.unwrap().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["handler.py", "lib/", "lib/util.py"]);
        let mut f = archive.by_name("lib/util.py").unwrap();
        let mut s = String::new();
        std::io::Read::read_to_string(&mut f, &mut s).unwrap();
        assert_eq!(s, "x = 2");
    }

    #[test]
    fn credentials_are_user_password_or_a_seed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("creds");
        std::fs::write(&f, "virga:secret\n").unwrap();
        assert!(credentials(&f).is_ok());
        std::fs::write(&f, "virga\n").unwrap();
        let e = credentials(&f).unwrap_err().to_string();
        assert!(e.contains("user:password"), "{e}");
        assert!(credentials(&dir.path().join("missing")).is_err());
    }
}
