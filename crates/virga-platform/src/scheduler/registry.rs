//! The registry: deploy, redeploy, delete and restore functions; what
//! the API lists about them and their instances.

use super::*;
use virga_spec::api::InstanceState;
use virga_spec::contract;

impl Scheduler {
    /// The deployed manifest of a function, with its version.
    pub fn manifest(&self, name: &str) -> Option<(Arc<Manifest>, u64)> {
        self.get(name).map(|f| (f.manifest.clone(), f.version))
    }

    /// Every deployed manifest, with its version.
    pub fn manifests(&self) -> Vec<(Arc<Manifest>, u64)> {
        self.functions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|f| (f.manifest.clone(), f.version))
            .collect()
    }

    pub(super) fn get(&self, name: &str) -> Option<Arc<Function>> {
        self.functions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// Deploys (or redeploys) a function from manifest text. `source` names the
    /// manifest in errors; `base_dir` is its directory, whose code (or
    /// `code = "dir"`) is captured as the version's bundle. Deploying an
    /// unchanged manifest with unchanged code keeps the running revision and
    /// its warm instances.
    pub fn deploy(
        self: &Arc<Self>,
        manifest_text: &str,
        source: &str,
        base_dir: &Path,
    ) -> Result<FunctionInfo, DeployError> {
        self.deploy_with(manifest_text, source, base_dir, CodeSource::Dir)
    }

    /// Replaces a deployed function's code with a zip archive (Lambda's
    /// `UpdateFunctionCode`): a new version with the same manifest.
    pub fn update_code(
        self: &Arc<Self>,
        name: &str,
        zip: &[u8],
    ) -> Result<FunctionInfo, DeployError> {
        let stored = self
            .meter
            .store()
            .function(name)?
            .ok_or_else(|| DeployError::NotFound(name.to_string()))?;
        self.deploy_with(
            &stored.manifest,
            &format!("{name}.toml"),
            Path::new(&stored.base_dir),
            CodeSource::Zip(zip),
        )
    }

    /// As [`Scheduler::deploy`], with the code from `code`.
    pub fn deploy_with(
        self: &Arc<Self>,
        manifest_text: &str,
        source: &str,
        base_dir: &Path,
        code: CodeSource<'_>,
    ) -> Result<FunctionInfo, DeployError> {
        let manifest = Manifest::parse(manifest_text, source)?;
        if let (Some(m), Some(b)) = (&manifest.model, &self.config.builtin) {
            let engine = m.engine.as_str();
            if !b.engines.is_empty() && !b.engines.iter().any(|e| e == engine) {
                return Err(DeployError::EngineUnavailable {
                    file: source.to_string(),
                    engine,
                    have: b.engines.join(", "),
                    hint: if engine == "ort" {
                        ": a build with `--features ort` has it, or use engine = \"tract\""
                    } else {
                        ""
                    },
                });
            }
        }
        if let Some(m) = &manifest.model {
            let path = base_dir.join(&m.path);
            if !path.is_file() {
                return Err(DeployError::ModelMissing {
                    file: source.to_string(),
                    path: path.display().to_string(),
                });
            }
        }
        let name = manifest.name.clone();
        let store = self.meter.store();
        let base = base_dir.display().to_string();
        let _deploying = lock(&self.deploying);
        let previous = store.function(&name)?;
        let same_config = previous
            .as_ref()
            .is_some_and(|p| p.manifest == manifest_text && p.base_dir == base);
        let staged = match code {
            CodeSource::Dir => Some(self.stage_dir(&manifest, base_dir)?),
            CodeSource::Zip(zip) => Some(self.config.code.stage_zip(&name, zip)?),
            CodeSource::Empty => Some(self.config.code.stage_empty(&name)?),
            CodeSource::Stored => None,
        };
        // The code of the stored version is unchanged when its digest is
        // equal, or when a restart restores it as it is.
        let same_code = previous.as_ref().is_some_and(|p| match &staged {
            Some(s) => self.config.code.digest(&name, p.version).as_deref() == Some(&s.digest),
            None => self.config.code.dir(&name, p.version).is_dir(),
        });
        if let (Some(prev), Some(live)) = (&previous, self.get(&name)) {
            if same_config && same_code && live.version == prev.version {
                if let Some(s) = staged {
                    self.config.code.discard(s);
                }
                return Ok(self.info(&live));
            }
        }
        let version = match &previous {
            // A restart reloading the same manifest and code keeps its version.
            Some(p) if same_config && same_code => p.version,
            Some(p) => p.version + 1,
            None => 1,
        };
        let code_dir = match staged {
            Some(s) if same_config && same_code => {
                self.config.code.discard(s);
                self.config.code.dir(&name, version)
            }
            Some(s) => self.config.code.commit(&name, version, s)?,
            None if same_code => self.config.code.dir(&name, version),
            None => {
                // Restoring a data dir made before bundles: capture now.
                let s = self.stage_dir(&manifest, base_dir)?;
                self.config.code.commit(&name, version, s)?
            }
        };
        let (program, args) = self.program_of(&manifest, source, &code_dir)?;
        let deployed_at = now_rfc3339();
        store.save_function(&StoredFunction {
            name: manifest.name.clone(),
            manifest: manifest_text.to_string(),
            base_dir: base,
            version,
            deployed_at: deployed_at.clone(),
        })?;

        let logs = lock(&self.logs)
            .entry(manifest.name.clone())
            .or_insert_with(|| {
                Arc::new(match &self.config.log_files {
                    Some(files) => {
                        LogRing::persistent(LOG_LINES, LOG_BYTES, files.clone(), &manifest.name)
                    }
                    None => LogRing::new(LOG_LINES, LOG_BYTES),
                })
            })
            .clone();
        let limits = Limits {
            memory_mb: manifest.memory_mb,
            vcpu: manifest.vcpu(self.config.host_cores),
        };
        let mut env = self.instance_env(&manifest, version, base_dir, &code_dir);
        let jail = self.jail_of(&manifest, &program, &args, base_dir, &code_dir, &mut env);
        let spawn = SpawnSpec {
            name: String::new(),
            program,
            args,
            cwd: code_dir.clone(),
            env,
            limits,
            jail,
        };
        let pools = match manifest.mode {
            Mode::Service => Pools::Service(Mutex::new(ServicePool::new(
                manifest.concurrency_per_instance(),
                manifest.min_instances as usize,
                manifest.max_instances() as usize,
                manifest.max_queue as usize,
            ))),
            Mode::Function | Mode::Job => {
                let limits = PoolLimits {
                    max_instances: match manifest.max_concurrency {
                        0 => usize::MAX,
                        n => n as usize,
                    },
                    max_queue: manifest.max_queue as usize,
                    keep_alive: Duration::from_millis(manifest.keep_alive_ms),
                    min_instances: manifest.min_instances as usize,
                };
                // Greedy-dual's cost is the last cold start, unknown until one.
                let keep = Tracker::new(keep_alive_of(&manifest)).greedy_dual(
                    self.greedy_dual.clone(),
                    0.0,
                    f64::from(manifest.memory_mb),
                );
                Pools::Function(Box::new(Mutex::new(Pool::with_keep_alive(limits, keep))))
            }
        };
        let batching = manifest.batching.clone();
        let (batch_tx, batch_rx) = match &batching {
            Some(b) => {
                let (tx, rx) =
                    mpsc::channel((manifest.max_queue as usize + b.max_batch_size as usize).max(1));
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let function = Arc::new(Function {
            arn: format!(
                "arn:aws:lambda:{REGION}:{ACCOUNT}:function:{}",
                manifest.name
            ),
            manifest: Arc::new(manifest),
            base_dir: base_dir.to_path_buf(),
            version,
            deployed_at,
            spawn,
            pools,
            batcher: Mutex::new(batch_tx),
            instances: Mutex::new(HashMap::new()),
            template: Mutex::new(None),
            making_template: tokio::sync::Mutex::new(()),
            spare: Mutex::new(None),
            making_spare: AtomicBool::new(false),
            wake: Notify::new(),
            retired: AtomicBool::new(false),
            logs,
            _alive: Track::new(&self.revisions),
        });
        let old = self
            .functions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(function.manifest.name.clone(), function.clone());
        if let Some(old) = old {
            old.retire();
        }
        tracing::info!(function = %function.manifest.name, version, "deployed");
        match function.mode() {
            Mode::Service => {
                tokio::spawn(self.clone().autoscale(function.clone()));
            }
            Mode::Function | Mode::Job => {
                tokio::spawn(self.clone().keep_alive(function.clone()));
            }
        }
        if let (Some(b), Some(rx)) = (batching, batch_rx) {
            let policy = BatchPolicy::new(
                b.max_batch_size as usize,
                Duration::from_millis(b.max_delay_ms),
            );
            tokio::spawn(self.clone().dispatch_batches(function.clone(), rx, policy));
        }
        self.changed();
        Ok(self.info(&function))
    }

    /// A deployed function as stored, with its code bundle's directory and
    /// digest: what a cluster sends the other nodes.
    pub fn deployed_code(&self, name: &str) -> Option<(StoredFunction, PathBuf, String)> {
        let stored = self.meter.store().function(name).ok()??;
        let dir = self.config.code.dir(name, stored.version);
        let digest = self.config.code.digest(name, stored.version)?;
        Some((stored, dir, digest))
    }

    /// Removes a function; its busy instances finish their requests first.
    pub fn delete(&self, name: &str) -> Result<bool, StoreError> {
        let _deploying = lock(&self.deploying);
        let removed = self
            .functions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        self.meter.store().delete_function(name)?;
        match removed {
            Some(f) => {
                f.retire();
                self.config.code.remove(name);
                if let Some(files) = &self.config.log_files {
                    files.close(name);
                }
                self.changed();
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Redeploys every persisted function (after a restart).
    pub fn restore(self: &Arc<Self>) -> Result<usize, StoreError> {
        let stored = self.meter.store().functions()?;
        let mut n = 0;
        for f in stored {
            match self.deploy_with(
                &f.manifest,
                &f.name,
                Path::new(&f.base_dir),
                CodeSource::Stored,
            ) {
                Ok(_) => n += 1,
                Err(e) => {
                    tracing::warn!(function = %f.name, error = %e, "could not restore function")
                }
            }
        }
        Ok(n)
    }

    /// Stops the idle instances of a function now (scale to zero); returns how many.
    pub fn stop_idle(&self, name: &str) -> Option<usize> {
        let f = self.get(name)?;
        let idle = match &f.pools {
            Pools::Service(s) => lock(s).stop_idle_above_minimum(),
            Pools::Function(p) => {
                let mut pool = lock(p);
                let keep = pool.limits().min_instances;
                let mut stopped = Vec::new();
                while pool.idle_count() > 0 && pool.idle_count() + pool.active_count() > keep {
                    let Some(first) = pool.idle().next().map(|(i, _)| i.id.clone()) else {
                        break;
                    };
                    if let Some(i) = pool.remove_idle(|i| i.id == first) {
                        stopped.push(i);
                    }
                }
                stopped
            }
        };
        for i in &idle {
            i.kill();
        }
        Some(idle.len())
    }

    /// The current revision of every function.
    pub(super) fn live_functions(&self) -> Vec<Arc<Function>> {
        self.functions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn functions(&self) -> Vec<FunctionInfo> {
        let fs = self.live_functions();
        let mut out: Vec<FunctionInfo> = fs.iter().map(|f| self.info(f)).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    pub fn function(&self, name: &str) -> Option<FunctionInfo> {
        self.get(name).map(|f| self.info(&f))
    }

    pub fn exists(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Idle instances of `name` here now (0 when it is not deployed).
    pub fn idle(&self, name: &str) -> usize {
        self.get(name).map_or(0, |f| f.load().idle)
    }

    /// Functions with at least one idle instance here.
    pub fn warm_functions(&self) -> Vec<String> {
        self.live_functions()
            .iter()
            .filter(|f| f.load().idle > 0)
            .map(|f| f.manifest.name.clone())
            .collect()
    }

    pub(super) fn info(&self, f: &Function) -> FunctionInfo {
        let Load { idle, busy, queued } = f.load();
        let m = &f.manifest;
        FunctionInfo {
            name: m.name.clone(),
            version: f.version.to_string(),
            deployed_at: f.deployed_at.clone(),
            runtime: m.runtime,
            mode: m.mode,
            memory_mb: m.memory_mb,
            vcpu: f.spawn.limits.vcpu,
            instance_concurrency: m.concurrency_per_instance(),
            timeout_ms: m.timeout_ms,
            max_concurrency: m.max_concurrency,
            keep_alive_ms: m.keep_alive_ms,
            min_instances: m.min_instances,
            max_queue: m.max_queue,
            instances: idle + busy,
            busy,
            queued,
            limits_enforced: self.limits_enforced(),
            manifest: Manifest::clone(m),
            base_dir: f.base_dir.display().to_string(),
        }
    }

    pub fn instances(&self, name: &str) -> Option<Vec<InstanceInfo>> {
        let f = self.get(name)?;
        let idle = f.idle_ids();
        let info = |i: &Instance, phase: Phase, state: InstanceState| InstanceInfo {
            id: i.id.clone(),
            function: name.to_string(),
            version: f.version.to_string(),
            pid: i.pid,
            state,
            init_ms: match phase {
                Phase::Ready { init_ms } => Some(init_ms),
                _ => None,
            },
            invocations: i.invocations.load(Ordering::Relaxed),
            started_at: i
                .started
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            limits_enforced: i.limits_enforced,
            isolation: i.isolation,
            max_memory_mb: i.peak_memory_mb(),
            role: i.role,
        };
        let mut out: Vec<InstanceInfo> = lock(&f.instances)
            .values()
            .map(|i| {
                let phase = i.phase();
                let state = match phase {
                    Phase::Starting => InstanceState::Starting,
                    _ if idle.contains(&i.id) => InstanceState::Idle,
                    _ => InstanceState::Busy,
                };
                info(i, phase, state)
            })
            .collect();
        if let Some(t) = lock(&f.template).as_ref().filter(|t| !t.is_dead()) {
            let phase = t.phase();
            // It serves no invocation: ready is idle.
            let state = match phase {
                Phase::Starting => InstanceState::Starting,
                _ => InstanceState::Idle,
            };
            out.push(info(t, phase, state));
            if let Some(s) = lock(&f.spare).as_ref().filter(|s| s.usable_with(t)) {
                out.push(InstanceInfo {
                    id: s.id().to_string(),
                    function: name.to_string(),
                    version: f.version.to_string(),
                    pid: s.pid(),
                    state: InstanceState::Idle,
                    init_ms: None,
                    invocations: 0,
                    started_at: s
                        .prepared
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    limits_enforced: s.limits_enforced(),
                    isolation: s.isolation(),
                    max_memory_mb: None,
                    role: InstanceRole::Spare,
                });
            }
        }
        out.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)));
        Some(out)
    }

    pub fn logs(&self, name: &str, lines: usize) -> Option<Vec<String>> {
        lock(&self.logs).get(name).map(|r| r.tail(lines))
    }

    /// What an instance of `manifest` runs: a model function and a
    /// `command` naming [`BUILTIN_RUNTIME`] run the built-in runtime; any
    /// other program is found relative to the manifest or on PATH.
    pub(super) fn program_of(
        &self,
        manifest: &Manifest,
        source: &str,
        base_dir: &Path,
    ) -> Result<(PathBuf, Vec<String>), DeployError> {
        let (name, rest) = match manifest.runtime {
            Runtime::Model => (BUILTIN_RUNTIME, &[][..]),
            Runtime::Command => (manifest.command[0].as_str(), &manifest.command[1..]),
        };
        if name == BUILTIN_RUNTIME {
            let builtin =
                self.config
                    .builtin
                    .as_ref()
                    .ok_or_else(|| DeployError::NoBuiltinRuntime {
                        file: source.to_string(),
                        name: BUILTIN_RUNTIME,
                    })?;
            let args = builtin.args.iter().chain(rest).cloned().collect();
            return Ok((builtin.program.clone(), args));
        }
        let program =
            resolve_program(name, base_dir, &self.config.search_path).ok_or_else(|| {
                DeployError::Program {
                    file: source.to_string(),
                    program: name.to_string(),
                    looked: if name.contains('/') {
                        "the function's code".into()
                    } else {
                        "PATH".into()
                    },
                }
            })?;
        Ok((program, rest.to_vec()))
    }

    /// Captures the code a manifest names (its `code` directory, else the
    /// manifest's own directory without the manifests in it).
    fn stage_dir(&self, m: &Manifest, base_dir: &Path) -> Result<crate::code::Staged, DeployError> {
        let source = match &m.code {
            Some(dir) => base_dir.join(dir),
            None => base_dir.to_path_buf(),
        };
        let exclude = crate::code::Exclude {
            top_level_manifests: m.code.is_none(),
            paths: self.config.code.private_paths(),
        };
        Ok(self.config.code.stage_dir(&m.name, &source, &exclude)?)
    }

    /// The sandbox of a function's instances, when the platform sandboxes;
    /// rewrites `env`'s paths to what the instance sees inside.
    fn jail_of(
        &self,
        m: &Manifest,
        program: &Path,
        args: &[String],
        base_dir: &Path,
        code_dir: &Path,
        env: &mut Vec<(String, String)>,
    ) -> Option<Jail> {
        let iso = self.config.isolation.as_ref()?;
        let model = m.model.as_ref().map(|model| base_dir.join(&model.path));
        let plan = sandbox::plan::plan(&sandbox::plan::PlanInput {
            program,
            args,
            code: code_dir,
            model: model.as_deref(),
            data_dir: &iso.data_dir,
            root: &iso.root,
            uid: self.uid_of(&m.name),
            tmp_mb: m.ephemeral_storage_mb,
        });
        for (k, v) in plan.env {
            match env.iter_mut().find(|(key, _)| *key == k) {
                Some(slot) => slot.1 = v,
                None => env.push((k, v)),
            }
        }
        Some(Jail {
            helper: iso.helper.clone(),
            helper_args: iso.helper_args.clone(),
            spec: plan.spec,
        })
    }

    /// The function's own uid (and gid): never 0, never another function's.
    fn uid_of(&self, name: &str) -> u32 {
        let mut uids = lock(&self.uids);
        let next = JAIL_UID_BASE + uids.len() as u32;
        *uids.entry(name.to_string()).or_insert(next)
    }

    /// The standard Lambda environment of an instance, plus the manifest's `env`.
    pub(super) fn instance_env(
        &self,
        m: &Manifest,
        version: u64,
        base_dir: &Path,
        code_dir: &Path,
    ) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = ["HOME", "LANG", "TZ"]
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
            .collect();
        let path = std::env::join_paths(&self.config.search_path)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let date = chrono::Utc::now().format("%Y/%m/%d");
        env.extend(
            [
                ("PATH", path),
                ("AWS_LAMBDA_FUNCTION_NAME", m.name.clone()),
                ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", m.memory_mb.to_string()),
                ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_string()),
                (
                    "AWS_LAMBDA_LOG_GROUP_NAME",
                    format!("/aws/lambda/{}", m.name),
                ),
                ("AWS_LAMBDA_LOG_STREAM_NAME", format!("{date}/[{version}]")),
                ("AWS_REGION", REGION.to_string()),
                ("AWS_DEFAULT_REGION", REGION.to_string()),
                ("LAMBDA_TASK_ROOT", code_dir.display().to_string()),
                ("LAMBDA_RUNTIME_DIR", code_dir.display().to_string()),
                (
                    "_HANDLER",
                    match m.runtime {
                        Runtime::Model => "model".to_string(),
                        Runtime::Command => m.handler.clone().unwrap_or_default(),
                    },
                ),
                ("TZ", ":UTC".to_string()),
            ]
            .map(|(k, v)| (k.to_string(), v)),
        );
        if m.mode == Mode::Service {
            // As Lambda Managed Instances tell a runtime how many requests
            // it may take at once.
            env.push((
                "AWS_LAMBDA_MAX_CONCURRENCY".into(),
                m.concurrency_per_instance().to_string(),
            ));
        }
        if let Some(model) = &m.model {
            let vcpu = m.vcpu(self.config.host_cores);
            env.extend(
                [
                    (
                        contract::MODEL_PATH,
                        base_dir.join(&model.path).display().to_string(),
                    ),
                    (contract::MODEL_ENGINE, model.engine.as_str().to_string()),
                    (contract::MODEL_TASK, model.task.as_str().to_string()),
                    (contract::MODEL_MAX_BATCH, model.max_batch.to_string()),
                    (contract::MODEL_INPUT, model.input.as_str().to_string()),
                    (
                        contract::MODEL_THREADS,
                        model
                            .threads
                            .unwrap_or(vcpu.ceil().max(1.0) as u32)
                            .to_string(),
                    ),
                ]
                .map(|(k, v)| (k.to_string(), v)),
            );
        }
        env.extend(m.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env
    }
}
