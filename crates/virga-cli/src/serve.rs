//! `virga serve`: the platform in this process, until SIGTERM or Ctrl-C.

use std::process::ExitCode;

use super::*;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub addr: SocketAddr,
    /// Where records and deployed functions are kept.
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
    /// Deploy every manifest (*.toml) in this directory at start.
    #[arg(long)]
    pub functions: Option<PathBuf>,
    /// Never use cgroups, even where they are writable.
    #[arg(long)]
    pub no_cgroups: bool,
    /// Sandbox every instance (own uid, namespaces, read-only root,
    /// seccomp, pids limit) where the host allows it; `off` runs instances
    /// as plain processes of the platform's user, for development only.
    #[arg(long, value_enum, default_value_t = Isolation::On)]
    pub isolation: Isolation,
    /// Most memory (the sum of `memory_mb`) running instances may hold;
    /// a start past it stops idle instances or is throttled (429).
    /// Default: the host's memory less a reserve (a tenth, at least 1 GiB).
    #[arg(long)]
    pub max_memory_mb: Option<u64>,
    /// On SIGTERM or Ctrl-C, how long accepted invocations may finish
    /// before their instances are stopped.
    #[arg(long, default_value_t = virga_platform::DEFAULT_SHUTDOWN_GRACE_MS)]
    pub shutdown_grace_ms: u64,
    /// Keep invocation records this long (7d, 12h, 30m) or only the
    /// newest N; checked at start and every minute. Default: keep all.
    #[arg(long)]
    pub retain_records: Option<virga_platform::store::Retention>,
    /// Who may call: `sigv4` (requests signed with AWS Signature V4, or
    /// bearer tokens, of keys from `virga keys create`) or `none`, allowed
    /// on a loopback --addr only.
    #[arg(long, default_value = "none", value_name = "sigv4|none")]
    pub auth: virga_platform::access::AuthMode,
    /// On a loopback --addr, also answer requests whose Host is NAME
    /// (others than localhost, 127.0.0.1 and the IPv6 loopback get 403). Repeatable.
    #[arg(long = "allow-host", value_name = "NAME")]
    pub allow_hosts: Vec<String>,
    /// Under `--auth sigv4`, a host directory (besides --functions) whose
    /// subdirectories deploys through the API may capture code from
    /// (`virga deploy` sends the manifest's directory). Repeatable.
    #[arg(long = "code-dir", value_name = "DIR")]
    pub code_dirs: Vec<PathBuf>,
    /// Join a cluster on a NATS JetStream broker: its servers,
    /// comma-separated (nats://HOST:PORT,...). Deployments, code and
    /// records are shared through it; see the guide's cluster section.
    #[arg(long, value_name = "URLS", value_delimiter = ',')]
    pub cluster: Vec<String>,
    /// This node's name in the cluster (letters, digits, '-', '_').
    /// Default: the host's name.
    #[arg(long, requires = "cluster")]
    pub node: Option<String>,
    /// A file with the broker credentials: `user:password` on one line,
    /// or an NKey seed.
    #[arg(long, value_name = "FILE", requires = "cluster")]
    pub cluster_credentials: Option<PathBuf>,
    /// Copies the broker keeps of each bucket and stream: 1, or 3 on a
    /// three-server broker.
    #[arg(long, default_value_t = 1, requires = "cluster")]
    pub cluster_replicas: usize,
    /// Threads that serve the platform's HTTP doors and schedule
    /// invocations. Default: half the host's cores, at least two (one on a
    /// one-core host): the instances need the cores more, fewer threads
    /// hand invocations across threads less often, and two keep serving
    /// when one is held up (see the guide's notes on the platform's threads).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
}

/// `--threads`' default on a host of `cores` cores.
pub fn default_threads(cores: usize) -> usize {
    (cores / 2).max(2).min(cores.max(1))
}

impl ServeArgs {
    /// The async runtime's worker threads for `--threads`.
    pub fn worker_threads(&self) -> usize {
        self.threads.map(usize::from).unwrap_or_else(|| {
            default_threads(std::thread::available_parallelism().map_or(1, |n| n.get()))
        })
    }
}

/// `--isolation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Isolation {
    On,
    Off,
}

pub async fn serve(args: ServeArgs) -> Result<ExitCode> {
    let ServeArgs {
        addr,
        data_dir,
        functions,
        no_cgroups,
        isolation,
        max_memory_mb,
        shutdown_grace_ms,
        retain_records,
        auth,
        allow_hosts,
        code_dirs,
        cluster,
        node,
        cluster_credentials,
        cluster_replicas,
        threads: _,
    } = args;
    init_tracing("info");
    let mut config = virga_platform::PlatformConfig::new(addr, data_dir);
    config.functions_dir = functions;
    config.cgroups = !no_cgroups;
    config.isolation = isolation == Isolation::On;
    config.max_memory_mb = max_memory_mb;
    config.shutdown_grace = std::time::Duration::from_millis(shutdown_grace_ms);
    config.retain_records = retain_records;
    config.auth = auth;
    config.allowed_hosts = allow_hosts;
    config.code_dirs = code_dirs;
    if !cluster.is_empty() {
        config.cluster = Some(virga_platform::cluster::ClusterConfig {
            servers: cluster,
            node: node.unwrap_or_else(host_name),
            credentials: cluster_credentials,
            replicas: cluster_replicas,
        });
    }
    run_platform(config).await?;
    Ok(ExitCode::SUCCESS)
}

/// The host's name, as a cluster node's default name.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| {
            h.trim()
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        })
        .unwrap_or_else(|_| "node".into())
}

/// The built-in runtime an embedded platform starts: this very executable
/// (through `/proc/self/exe`, so a binary replaced on disk while serving
/// still starts the same code) with its `worker` subcommand.
pub fn builtin_runtime() -> virga_platform::BuiltinRuntime {
    virga_platform::BuiltinRuntime {
        program: PathBuf::from("/proc/self/exe"),
        args: vec!["worker".into()],
        engines: virga_engine::engines()
            .iter()
            .map(|e| e.to_string())
            .collect(),
    }
}

/// The jailer an embedded platform confines instances with: this very
/// executable's `jail` helper mode.
pub fn jailer() -> virga_platform::BuiltinRuntime {
    virga_platform::BuiltinRuntime {
        program: PathBuf::from("/proc/self/exe"),
        args: vec!["jail".into()],
        engines: Vec::new(),
    }
}

async fn run_platform(mut config: virga_platform::PlatformConfig) -> Result<()> {
    config.builtin_runtime = Some(builtin_runtime());
    config.jailer = Some(jailer());
    let platform = virga_platform::Platform::start(config).await?;
    if !platform.limits_enforced() {
        eprintln!("warning: instances run without memory/CPU limits (cgroups not writable or disabled); records say limits_enforced=false");
    }
    println!("virga listening on http://{}", platform.addr());
    use std::io::Write;
    let _ = std::io::stdout().flush();
    shutdown_signal().await;
    eprintln!("shutting down");
    platform.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::default_threads;

    #[test]
    fn the_platform_takes_half_the_cores_but_at_least_two() {
        assert_eq!(default_threads(1), 1);
        assert_eq!(default_threads(2), 2);
        assert_eq!(default_threads(4), 2);
        assert_eq!(default_threads(6), 3);
        assert_eq!(default_threads(64), 32);
    }
}
