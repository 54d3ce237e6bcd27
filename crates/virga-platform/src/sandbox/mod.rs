//! Instance processes and their resource limits.
//!
//! Every instance is one OS process in its own process group, placed in its own
//! cgroup before it executes a single instruction of the function: the child
//! writes "0" (itself) into the cgroup's `cgroup.procs` between fork and exec.
//! The cgroup file system is behind the [`Cgroups`] trait so the limit logic is
//! tested on a plain directory, as Firecracker's jailer does.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::{Child, Command};

pub mod jail;
pub mod netns;
pub mod plan;

/// Most processes and threads one instance may have (cgroup `pids.max`),
/// Lambda's limit: a fork bomb stops at it.
pub const MAX_PIDS: u32 = 1024;

/// CPU and memory an instance may use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub memory_mb: u32,
    pub vcpu: f64,
}

/// The CFS period used for CPU quotas (the kernel default).
const CFS_PERIOD_US: u64 = 100_000;

impl Limits {
    fn memory_bytes(&self) -> u64 {
        u64::from(self.memory_mb) * 1024 * 1024
    }

    fn cpu_quota_us(&self) -> u64 {
        // The kernel refuses quotas under 1 ms.
        ((self.vcpu * CFS_PERIOD_US as f64).round() as u64).max(1_000)
    }
}

/// Why an instance could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// the program {0} was not found or is not executable: check `command` in the manifest
    #[error("cannot run {program:?}: {source}; check `command` in the manifest")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    /// the cgroup for {0} could not be created
    #[error("cannot create the cgroup of instance {0}: {1}")]
    Cgroup(String, #[source] io::Error),
    /// the instance's Runtime API listener (or its network namespace) could not be set up
    #[error("cannot open the instance's Runtime API listener: {0}")]
    Listener(#[source] io::Error),
    /// a snap-start template could not fork the instance
    #[error("cannot fork the instance from its template: {0}")]
    Fork(String),
}

/// A cgroup hierarchy the platform may create instance groups in.
pub trait Cgroups: Send + Sync {
    /// `v1` or `v2`.
    fn kind(&self) -> &'static str;
    /// Creates the group `name` with `limits` applied.
    fn create(&self, name: &str, limits: &Limits) -> io::Result<Box<dyn Cgroup>>;
}

/// One instance's group.
pub trait Cgroup: Send + Sync {
    /// The `cgroup.procs` files the instance process must join.
    fn procs_files(&self) -> Vec<PathBuf>;
    /// Peak memory use of the group so far.
    fn peak_memory_bytes(&self) -> Option<u64>;
    /// Whether the kernel's OOM killer has killed a process of the group.
    fn oom_killed(&self) -> bool;
    /// Removes the group; its processes must have exited.
    fn remove(&self);

    /// The processes still in the group.
    fn pids(&self) -> Vec<i32> {
        let Some(first) = self.procs_files().into_iter().next() else {
            return Vec::new();
        };
        fs::read_to_string(first)
            .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Kills every process left in the group (a jailed instance's init and
    /// whatever it had not reaped yet) and waits, at most `limit`, until
    /// none is left; true when the group is empty.
    fn empty(&self, limit: std::time::Duration) -> bool {
        let end = std::time::Instant::now() + limit;
        loop {
            let pids = self.pids();
            if pids.is_empty() {
                return true;
            }
            if std::time::Instant::now() >= end {
                return false;
            }
            for pid in pids {
                kill_member(pid);
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

/// SIGKILLs one process read from an instance's own cgroup.
fn kill_member(pid: i32) {
    if pid > 1 {
        // SAFETY: kill(2) has no memory-safety preconditions; the pid was
        // listed by the instance's own cgroup a moment ago.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// Finds a writable cgroup hierarchy with memory and CPU control, if any.
pub fn detect_cgroups(base: &Path) -> Option<Box<dyn Cgroups>> {
    let v2 = base.join("cgroup.controllers");
    if let Ok(controllers) = fs::read_to_string(&v2) {
        if controllers.contains("memory") && controllers.contains("cpu") {
            let root = base.join("virga");
            if fs::create_dir_all(&root).is_ok() {
                // Children of `virga` may only use controllers enabled here.
                for dir in [&root, base, &root] {
                    let _ = fs::write(dir.join("cgroup.subtree_control"), "+memory +cpu +pids");
                }
                sweep_stale(&root);
                return Some(Box::new(CgroupV2 { root }));
            }
        }
        return None;
    }
    let mem = base.join("memory");
    let cpu = base.join("cpu");
    if mem.join("memory.limit_in_bytes").exists() && cpu.join("cpu.cfs_quota_us").exists() {
        let pids = base.join("pids");
        let v1 = CgroupV1 {
            memory_root: mem.join("virga"),
            cpu_root: cpu.join("virga"),
            // Optional: limits still hold without it, the process count does not.
            pids_root: (pids.join("pids.max").exists() || pids.join("cgroup.procs").exists())
                .then(|| pids.join("virga"))
                .filter(|p| fs::create_dir_all(p).is_ok()),
        };
        if fs::create_dir_all(&v1.memory_root).is_ok() && fs::create_dir_all(&v1.cpu_root).is_ok() {
            sweep_stale(&v1.memory_root);
            sweep_stale(&v1.cpu_root);
            if let Some(p) = &v1.pids_root {
                sweep_stale(p);
            }
            return Some(Box::new(v1));
        }
    }
    None
}

/// Removes instance groups left by platform processes that no longer run
/// (their names end in `-<platform pid>`). Groups of live platforms stay.
fn sweep_stale(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let owner = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.rsplit_once('-'))
            .and_then(|(_, pid)| pid.parse::<u32>().ok());
        if let Some(pid) = owner {
            if path.is_dir() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = fs::remove_dir(&path);
            }
        }
    }
}

/// cgroup v1: separate `memory` and `cpu` hierarchies.
#[derive(Debug)]
pub struct CgroupV1 {
    pub memory_root: PathBuf,
    pub cpu_root: PathBuf,
    /// The `pids` hierarchy's group, when the host has one.
    pub pids_root: Option<PathBuf>,
}

impl Cgroups for CgroupV1 {
    fn kind(&self) -> &'static str {
        "v1"
    }

    fn create(&self, name: &str, limits: &Limits) -> io::Result<Box<dyn Cgroup>> {
        let memory = self.memory_root.join(name);
        let cpu = self.cpu_root.join(name);
        fs::create_dir_all(&memory)?;
        fs::create_dir_all(&cpu)?;
        let pids = match &self.pids_root {
            Some(root) => {
                let dir = root.join(name);
                fs::create_dir_all(&dir)?;
                fs::write(dir.join("pids.max"), MAX_PIDS.to_string())?;
                Some(dir)
            }
            None => None,
        };
        let group = GroupV1 {
            peak: File::open(memory.join("memory.max_usage_in_bytes")).ok(),
            memory,
            cpu,
            pids,
        };
        let bytes = limits.memory_bytes().to_string();
        fs::write(group.memory.join("memory.limit_in_bytes"), &bytes)?;
        // Without swap accounting this file is absent; with it, swap must not
        // extend the limit (Lambda has no swap).
        let memsw = group.memory.join("memory.memsw.limit_in_bytes");
        if memsw.exists() {
            let _ = fs::write(memsw, &bytes);
        }
        fs::write(
            group.cpu.join("cpu.cfs_period_us"),
            CFS_PERIOD_US.to_string(),
        )?;
        fs::write(
            group.cpu.join("cpu.cfs_quota_us"),
            limits.cpu_quota_us().to_string(),
        )?;
        Ok(Box::new(group))
    }
}

#[derive(Debug)]
struct GroupV1 {
    memory: PathBuf,
    cpu: PathBuf,
    pids: Option<PathBuf>,
    /// Kept open: the peak is read after every invocation.
    peak: Option<File>,
}

impl Cgroup for GroupV1 {
    fn procs_files(&self) -> Vec<PathBuf> {
        let mut files = vec![
            self.memory.join("cgroup.procs"),
            self.cpu.join("cgroup.procs"),
        ];
        files.extend(self.pids.as_ref().map(|p| p.join("cgroup.procs")));
        files
    }

    fn peak_memory_bytes(&self) -> Option<u64> {
        match &self.peak {
            Some(f) => pread_u64(f),
            None => read_u64(&self.memory.join("memory.max_usage_in_bytes")),
        }
    }

    fn oom_killed(&self) -> bool {
        let kills = fs::read_to_string(self.memory.join("memory.oom_control"))
            .ok()
            .and_then(|s| keyed_u64(&s, "oom_kill"));
        match kills {
            Some(n) => n > 0,
            // Older kernels lack the counter: hitting the limit is the best evidence.
            None => read_u64(&self.memory.join("memory.failcnt")).is_some_and(|n| n > 0),
        }
    }

    fn remove(&self) {
        remove_dir_retrying(&self.memory);
        remove_dir_retrying(&self.cpu);
        if let Some(p) = &self.pids {
            remove_dir_retrying(p);
        }
    }
}

/// cgroup v2: one unified hierarchy.
#[derive(Debug)]
pub struct CgroupV2 {
    pub root: PathBuf,
}

impl Cgroups for CgroupV2 {
    fn kind(&self) -> &'static str {
        "v2"
    }

    fn create(&self, name: &str, limits: &Limits) -> io::Result<Box<dyn Cgroup>> {
        let dir = self.root.join(name);
        fs::create_dir_all(&dir)?;
        fs::write(dir.join("memory.max"), limits.memory_bytes().to_string())?;
        let _ = fs::write(dir.join("memory.swap.max"), "0");
        fs::write(
            dir.join("cpu.max"),
            format!("{} {CFS_PERIOD_US}", limits.cpu_quota_us()),
        )?;
        // Present when the pids controller is enabled for the group.
        if dir.join("pids.max").exists() {
            fs::write(dir.join("pids.max"), MAX_PIDS.to_string())?;
        }
        Ok(Box::new(GroupV2 {
            peak: File::open(dir.join("memory.peak")).ok(),
            dir,
        }))
    }
}

#[derive(Debug)]
struct GroupV2 {
    dir: PathBuf,
    peak: Option<File>,
}

impl Cgroup for GroupV2 {
    fn procs_files(&self) -> Vec<PathBuf> {
        vec![self.dir.join("cgroup.procs")]
    }

    fn peak_memory_bytes(&self) -> Option<u64> {
        match &self.peak {
            Some(f) => pread_u64(f),
            None => read_u64(&self.dir.join("memory.peak")),
        }
    }

    fn oom_killed(&self) -> bool {
        fs::read_to_string(self.dir.join("memory.events"))
            .ok()
            .and_then(|s| keyed_u64(&s, "oom_kill"))
            .is_some_and(|n| n > 0)
    }

    fn remove(&self) {
        remove_dir_retrying(&self.dir);
    }
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Reads a number from the start of an open cgroup file (one syscall).
fn pread_u64(f: &File) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 32];
    let n = f.read_at(&mut buf, 0).ok()?;
    std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
}

/// Reads `key N` from a flat keyed file such as `memory.events`.
fn keyed_u64(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// A group's directory can stay busy for a moment after its last process is reaped.
fn remove_dir_retrying(dir: &Path) {
    for _ in 0..20 {
        match fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
        }
    }
    tracing::warn!(dir = %dir.display(), "could not remove instance cgroup");
}

/// What to start.
#[derive(Debug, Clone)]
pub struct SpawnSpec {
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
    pub limits: Limits,
    /// Run confined by the jailer; `None` runs the program directly.
    pub jail: Option<Jail>,
}

/// How an instance is confined: the helper program that confines it
/// (`virga jail`) and what it is told.
#[derive(Debug, Clone)]
pub struct Jail {
    pub helper: PathBuf,
    pub helper_args: Vec<String>,
    pub spec: jail::JailSpec,
}

/// A started instance process.
pub struct Spawned {
    pub child: Child,
    pub cgroup: Option<Box<dyn Cgroup>>,
}

/// Starts `spec` in a new process group and, when `cgroups` is given, in a
/// new cgroup; with `net`, inside that network namespace (a jailed instance).
pub fn spawn(
    spec: &SpawnSpec,
    cgroups: Option<&dyn Cgroups>,
    net: Option<&std::os::fd::OwnedFd>,
) -> Result<Spawned, SandboxError> {
    let cgroup = match cgroups {
        Some(c) => Some(
            c.create(&spec.name, &spec.limits)
                .map_err(|e| SandboxError::Cgroup(spec.name.clone(), e))?,
        ),
        None => None,
    };
    let procs: Vec<File> = match &cgroup {
        Some(g) => {
            let files: io::Result<Vec<File>> = g
                .procs_files()
                .iter()
                .map(|p| OpenOptions::new().write(true).open(p))
                .collect();
            match files {
                Ok(f) => f,
                Err(e) => {
                    g.remove();
                    return Err(SandboxError::Cgroup(spec.name.clone(), e));
                }
            }
        }
        None => Vec::new(),
    };

    let mut cmd = match &spec.jail {
        Some(j) => {
            let mut cmd = Command::new(&j.helper);
            let text = serde_json::to_string(&j.spec).map_err(|e| SandboxError::Spawn {
                program: j.helper.display().to_string(),
                source: io::Error::other(e),
            })?;
            cmd.args(&j.helper_args)
                .current_dir("/")
                .env_clear()
                .envs(spec.env.iter().map(|(k, v)| (k, v)))
                .env(jail::JAIL_SPEC_ENV, text);
            cmd
        }
        None => {
            let mut cmd = Command::new(&spec.program);
            cmd.args(&spec.args)
                .current_dir(&spec.cwd)
                .env_clear()
                .envs(spec.env.iter().map(|(k, v)| (k, v)));
            cmd
        }
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    // A jailed spawn with nothing to join execs the jailer, which gives the
    // function's program the host's huge pages itself: no pre_exec (which
    // would make every spawn fork instead of posix_spawn).
    let program = spec.jail.is_none();
    if !procs.is_empty() || net.is_some() || program {
        use std::os::fd::AsRawFd;
        let fds: Vec<i32> = procs.iter().map(|f| f.as_raw_fd()).collect();
        let net = net.map(|n| n.as_raw_fd());
        // SAFETY: the closure runs in the forked child before exec, where only
        // async-signal-safe calls are allowed: write(2), setns(2) on
        // descriptors opened by the parent (kept open until after spawn) and
        // prctl(2); it allocates nothing.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(move || {
                // The function's program runs with the host's policy (a
                // jailed one gets it from the jailer, just before its exec).
                if program {
                    set_huge_pages(true);
                }
                for &fd in &fds {
                    // Writing "0" moves the writing process itself into the group.
                    if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                        return Err(io::Error::last_os_error());
                    }
                }
                if let Some(ns) = net {
                    if libc::setns(ns, libc::CLONE_NEWNET) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }
    match cmd.spawn() {
        Ok(child) => {
            drop(procs);
            Ok(Spawned { child, cgroup })
        }
        Err(source) => {
            if let Some(g) = &cgroup {
                g.remove();
            }
            Err(SandboxError::Spawn {
                program: match &spec.jail {
                    Some(j) => j.helper.display().to_string(),
                    None => spec.program.display().to_string(),
                },
                source,
            })
        }
    }
}

/// Transparent huge pages for this process and what it starts from now on
/// (the setting is inherited across fork and exec). virga's own processes
/// (the platform, the jailer, the built-in runtime) turn them off first
/// thing: their allocator commits memory as it reserves it, and under the
/// kernel's `always` policy every 2 MB region it touches becomes resident
/// whole (an idle platform held 10 MB more, a no-op instance 4 MB more).
/// A function's own program gets them back before its exec, so it runs
/// with the host's policy. Kernels without the setting are left alone.
pub fn set_huge_pages(on: bool) {
    // SAFETY: prctl(PR_SET_THP_DISABLE) takes integers only and is
    // async-signal-safe (it also runs between fork and exec).
    #[allow(unsafe_code)]
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, libc::c_ulong::from(!on), 0, 0, 0);
    }
}

/// Kills an instance's whole process group. Refuses a pid that cannot lead
/// an instance's group: 0 and negative numbers would make kill(2) signal the
/// platform's own group or every process, and 1 is init's.
pub fn kill_group(pid: u32) -> bool {
    let Some(group) = instance_group(pid) else {
        tracing::error!(pid, "refusing to signal a process group no instance leads");
        return false;
    };
    // SAFETY: kill(2) has no memory-safety preconditions; a negative pid names
    // the process group the instance leads (it was spawned with process_group(0)).
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(-group, libc::SIGKILL) == 0
    }
}

/// A process the platform did not spawn (a child a template forked),
/// watched through a pidfd: it becomes readable when the process exits.
pub struct ProcessFd(tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>);

impl ProcessFd {
    pub fn open(pid: i32) -> io::Result<ProcessFd> {
        use std::os::fd::FromRawFd;
        // SAFETY: pidfd_open(2) takes a pid and flags and returns a new
        // descriptor, which is owned from here on.
        #[allow(unsafe_code)]
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        #[allow(unsafe_code)]
        // SAFETY: a fresh descriptor nothing else owns.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
        // SAFETY: an OwnedFd keeps its descriptor open, and the same one,
        // until it is dropped with the AsyncFd.
        #[allow(unsafe_code)]
        let watched = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
        }?;
        Ok(ProcessFd(watched))
    }

    /// Resolves once the process has exited.
    pub async fn exited(&self) {
        // Readable once, for good: the process is gone.
        let _ = self.0.readable().await;
    }
}

/// The process group an instance with this pid leads, when it can lead one.
fn instance_group(pid: u32) -> Option<i32> {
    i32::try_from(pid).ok().filter(|&p| p > 1)
}

/// Peak resident memory of a process (`VmHWM`), for hosts without cgroups.
pub fn vm_hwm_bytes(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kb * 1024)
}

/// Resolves a manifest's program: a path with a slash is relative to the
/// manifest's directory; a bare name is looked up in `search` (like PATH).
pub fn resolve_program(program: &str, base_dir: &Path, search: &[PathBuf]) -> Option<PathBuf> {
    if program.contains('/') {
        let p = base_dir.join(program);
        return p.is_file().then_some(p);
    }
    search
        .iter()
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_v1() -> (tempfile::TempDir, CgroupV1) {
        let dir = tempfile::tempdir().unwrap();
        let v1 = CgroupV1 {
            memory_root: dir.path().join("memory/virga"),
            cpu_root: dir.path().join("cpu/virga"),
            pids_root: Some(dir.path().join("pids/virga")),
        };
        (dir, v1)
    }

    #[test]
    fn v1_writes_lambda_memory_and_cpu_limits() {
        let (_dir, v1) = fake_v1();
        let limits = Limits {
            memory_mb: 512,
            vcpu: 512.0 / 1769.0,
        };
        let g = v1.create("i-1", &limits).unwrap();
        let read = |p: PathBuf| fs::read_to_string(p).unwrap();
        assert_eq!(
            read(v1.memory_root.join("i-1/memory.limit_in_bytes")),
            (512u64 << 20).to_string()
        );
        assert_eq!(read(v1.cpu_root.join("i-1/cpu.cfs_period_us")), "100000");
        assert_eq!(read(v1.cpu_root.join("i-1/cpu.cfs_quota_us")), "28943");
        assert_eq!(g.procs_files().len(), 3);
        assert_eq!(
            read(v1.pids_root.clone().unwrap().join("i-1/pids.max")),
            "1024"
        );
        fs::write(
            v1.memory_root.join("i-1/memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        )
        .unwrap();
        assert!(g.oom_killed());
        fs::write(
            v1.memory_root.join("i-1/memory.max_usage_in_bytes"),
            "4096\n",
        )
        .unwrap();
        assert_eq!(g.peak_memory_bytes(), Some(4096));
    }

    #[test]
    fn v2_writes_memory_max_and_cpu_max() {
        let dir = tempfile::tempdir().unwrap();
        let v2 = CgroupV2 {
            root: dir.path().to_path_buf(),
        };
        let g = v2
            .create(
                "i-2",
                &Limits {
                    memory_mb: 1024,
                    vcpu: 2.0,
                },
            )
            .unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("i-2/cpu.max")).unwrap(),
            "200000 100000"
        );
        assert!(!g.oom_killed());
        fs::write(dir.path().join("i-2/memory.events"), "oom 1\noom_kill 2\n").unwrap();
        assert!(g.oom_killed());
    }

    #[test]
    fn tiny_cpu_shares_respect_the_kernel_minimum() {
        let l = Limits {
            memory_mb: 128,
            vcpu: 0.001,
        };
        assert_eq!(l.cpu_quota_us(), 1_000);
    }

    #[test]
    fn detection_falls_back_when_nothing_is_mounted() {
        let dir = tempfile::tempdir().unwrap();
        assert!(detect_cgroups(dir.path()).is_none());
    }

    #[test]
    fn only_pids_that_can_lead_an_instance_group_are_signalled() {
        // 0 would signal the platform's own group, and u32::MAX wraps to
        // -1 (every process) once negated.
        for pid in [0, 1, u32::MAX, i32::MAX as u32 + 1] {
            assert_eq!(instance_group(pid), None, "{pid}");
            assert!(!kill_group(pid), "{pid}");
        }
        assert_eq!(instance_group(2), Some(2));
        assert_eq!(instance_group(i32::MAX as u32), Some(i32::MAX));
    }

    #[test]
    fn programs_resolve_against_manifest_dir_and_search_path() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("bootstrap"), "").unwrap();
        assert_eq!(
            resolve_program("./bootstrap", dir.path(), &[]),
            Some(dir.path().join("./bootstrap"))
        );
        assert_eq!(
            resolve_program("bootstrap", Path::new("/nonexistent"), &[dir.path().into()]),
            Some(dir.path().join("bootstrap"))
        );
        assert_eq!(
            resolve_program("nope", dir.path(), &[dir.path().into()]),
            None
        );
    }
}
