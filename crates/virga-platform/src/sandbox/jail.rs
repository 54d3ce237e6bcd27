//! The jailer: the helper mode of the one binary (`virga jail`) that confines
//! an instance and then execs its runtime, in the manner of Firecracker's
//! jailer.
//!
//! The platform spawns the helper already inside the instance's cgroups and
//! network namespace (both set between fork and exec, see `sandbox::spawn`)
//! with a [`JailSpec`] in `VIRGA_JAIL`. The helper runs single-threaded, so
//! every step may allocate, and does, in order:
//!
//! 1. new mount, pid, ipc, uts and cgroup namespaces;
//! 2. fork: the child is pid 1 of the new pid namespace and dies with the
//!    helper (`PR_SET_PDEATHSIG`); when pid 1 exits the kernel kills every
//!    process left in the namespace, so no double-forked process outlives
//!    its instance;
//! 3. pid 1 builds a root from read-only binds (system directories, the code,
//!    the model, the interpreter), a fresh `/proc`, a minimal `/dev`, and a
//!    size-limited `/tmp`, then `pivot_root`s into it;
//! 4. pid 1 forks the runtime, which sets rlimits, drops to the function's
//!    uid and gid (no capabilities left), sets `no_new_privs`, installs the
//!    seccomp filter and execs;
//! 5. pid 1 reaps orphans and exits with the runtime's status; the helper
//!    passes that status on (a death by signal is re-raised).
//!
//! A step that fails prints why on stderr (the function's log) and exits
//! with [`JAIL_FAILED`]: the instance dies in init with that message.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, DirBuilderExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The environment variable that carries the [`JailSpec`] to the helper.
pub const JAIL_SPEC_ENV: &str = "VIRGA_JAIL";

/// The helper's exit status when it could not confine the runtime.
pub const JAIL_FAILED: i32 = 125;

/// Everything the helper needs to confine one instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JailSpec {
    /// An empty directory of the platform's, used as the mount point of the
    /// new root inside the instance's own mount namespace.
    pub root: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub hostname: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    /// The working directory inside the jail.
    pub cwd: PathBuf,
    /// Host paths made visible inside the jail, read-only.
    pub binds: Vec<Bind>,
    /// Paths inside the jail covered by an empty directory (where a bind
    /// would show the platform's data dir).
    #[serde(default)]
    pub hide: Vec<PathBuf>,
    /// Size of `/tmp` (and `/dev/shm`), in MiB.
    pub tmp_mb: u32,
    /// `RLIMIT_NOFILE`.
    pub max_open_files: u64,
}

/// A host path seen at `target` inside the jail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bind {
    pub source: PathBuf,
    pub target: PathBuf,
}

impl Bind {
    pub fn same(path: impl Into<PathBuf>) -> Bind {
        let path = path.into();
        Bind {
            source: path.clone(),
            target: path,
        }
    }
}

/// The host's system directories a runtime needs, read-only.
pub const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32", "/etc",
];

/// Device nodes a runtime may open.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom"];

/// Whether the platform can sandbox here: it runs as root and can make
/// network namespaces (the other namespaces come with the same privilege).
pub fn host_can_sandbox() -> bool {
    unsafe_ffi::is_root() && super::netns::supported()
}

/// Runs the helper: never returns on success (the runtime's status becomes
/// the process's), returns the error that stopped it otherwise.
pub fn run() -> io::Error {
    let spec = match std::env::var(JAIL_SPEC_ENV)
        .map_err(|_| io::Error::other(format!("{JAIL_SPEC_ENV} is not set")))
        .and_then(|s| serde_json::from_str::<JailSpec>(&s).map_err(io::Error::other))
    {
        Ok(spec) => spec,
        Err(e) => return e,
    };
    // The runtime must not see how it was confined.
    std::env::remove_var(JAIL_SPEC_ENV);
    match confine(&spec) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

/// Entry point for the binary: runs the helper and reports a failure.
pub fn main() -> std::process::ExitCode {
    let e = run();
    eprintln!("virga jail: cannot confine the instance: {e}");
    std::process::ExitCode::from(JAIL_FAILED as u8)
}

enum Never {}

fn confine(spec: &JailSpec) -> io::Result<Never> {
    // Everything the runtime gets is prepared before the first fork, so the
    // children only make syscalls.
    let program = cstring(spec.program.as_os_str())?;
    let mut argv = vec![program.clone()];
    for a in &spec.args {
        argv.push(cstring(OsStr::new(a))?);
    }
    let envp: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).map_err(io::Error::other)
        })
        .collect::<io::Result<_>>()?;
    let filter = seccomp_filters()?;

    check(unsafe_ffi::unshare(
        libc::CLONE_NEWNS
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUTS
            | libc::CLONE_NEWCGROUP,
    ))
    .map_err(|e| context(e, "create the instance's namespaces"))?;
    let (alive_r, alive_w) = unsafe_ffi::pipe()?;
    let init = check(unsafe_ffi::fork())?;
    if init != 0 {
        // The helper: hold the write end, so pid 1 knows it is alive, and
        // wait for pid 1.
        unsafe_ffi::close(alive_r);
        let status = unsafe_ffi::wait_for(init)?;
        pass_on(status);
    }
    unsafe_ffi::close(alive_w);
    // pid 1 of the instance's namespace from here on.
    unsafe_ffi::die_with_parent(alive_r)?;
    build_root(spec).map_err(|e| context(e, "build the instance's root"))?;
    let hostname = spec.hostname.as_bytes();
    check(unsafe_ffi::sethostname(hostname))?;
    unsafe_ffi::set_rlimit(libc::RLIMIT_NOFILE, spec.max_open_files)?;
    unsafe_ffi::set_rlimit(libc::RLIMIT_CORE, 0)?;
    let runtime = check(unsafe_ffi::fork())?;
    if runtime == 0 {
        let e = become_runtime(spec, &argv, &envp, &filter);
        eprintln!("virga jail: cannot start {}: {e}", spec.program.display());
        unsafe_ffi::exit(JAIL_FAILED);
    }
    let status = unsafe_ffi::reap_until(runtime);
    unsafe_ffi::exit(as_exit_code(status));
}

/// In the runtime's process: drop every privilege, then exec.
fn become_runtime(
    spec: &JailSpec,
    argv: &[CString],
    envp: &[CString],
    filters: &[seccompiler::BpfProgram],
) -> io::Error {
    let cwd = match cstring(spec.cwd.as_os_str()) {
        Ok(c) => c,
        Err(e) => return e,
    };
    if let Err(e) = unsafe_ffi::drop_to(spec.uid, spec.gid) {
        return context(e, "drop to the function's user");
    }
    if let Err(e) = check(unsafe_ffi::chdir(&cwd)) {
        return context(e, &format!("enter {}", spec.cwd.display()));
    }
    if let Err(e) = unsafe_ffi::no_new_privs() {
        return e;
    }
    // The jailer ran with huge pages off (`sandbox::set_huge_pages`); the
    // function's program gets the host's policy.
    super::set_huge_pages(true);
    for f in filters {
        if let Err(e) = seccompiler::apply_filter(f) {
            return io::Error::other(format!("install the seccomp filter: {e}"));
        }
    }
    unsafe_ffi::exec(argv, envp)
}

/// Mounts the instance's root on `spec.root` and pivots into it.
fn build_root(spec: &JailSpec) -> io::Result<()> {
    use unsafe_ffi::{mount, pivot_root, umount_detached, MountFlags as F};
    // Nothing mounted from here on may reach the host's namespace.
    mount(None, Path::new("/"), None, F::REC | F::PRIVATE, None)?;
    let root = &spec.root;
    mount(
        Some("tmpfs"),
        root,
        Some("tmpfs"),
        F::NOSUID | F::NODEV,
        Some("size=1m,mode=0755"),
    )?;
    // /tmp first: a bind below it (a model or script under /tmp on the
    // host) then lands on top of it instead of being hidden by it.
    let tmp_size = format!("size={}m,mode=1777", spec.tmp_mb);
    let tmp = root.join("tmp");
    mkdir_all(&tmp)?;
    mount(
        Some("tmpfs"),
        &tmp,
        Some("tmpfs"),
        F::NOSUID | F::NODEV,
        Some(&tmp_size),
    )?;
    let mut targets: BTreeMap<PathBuf, &Bind> = BTreeMap::new();
    for b in &spec.binds {
        targets.insert(b.target.clone(), b);
    }
    // Parents before children: a bind of /usr/lib/x under /usr is mounted after /usr.
    for (target, bind) in targets {
        let inside = root.join(target.strip_prefix("/").unwrap_or(&target));
        let meta = match std::fs::symlink_metadata(&bind.source) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(context(e, &bind.source.display().to_string())),
        };
        if meta.file_type().is_symlink() && bind.source == bind.target {
            // Merged-/usr hosts: /bin -> usr/bin stays a link.
            if let Some(parent) = inside.parent() {
                mkdir_all(parent)?;
            }
            if !inside.exists() {
                symlink(std::fs::read_link(&bind.source)?, &inside)?;
            }
            continue;
        }
        if std::fs::metadata(&bind.source)?.is_dir() {
            mkdir_all(&inside)?;
        } else {
            if let Some(parent) = inside.parent() {
                mkdir_all(parent)?;
            }
            std::fs::File::create(&inside)?;
        }
        mount(
            path_str(&bind.source),
            &inside,
            None,
            F::BIND | F::REC,
            None,
        )
        .map_err(|e| context(e, &format!("bind {}", bind.source.display())))?;
        mount(
            None,
            &inside,
            None,
            F::BIND | F::REMOUNT | F::RDONLY | F::NOSUID | F::NODEV,
            None,
        )
        .map_err(|e| context(e, &format!("make {} read-only", bind.target.display())))?;
    }
    for target in &spec.hide {
        let inside = root.join(target.strip_prefix("/").unwrap_or(target));
        if inside.is_dir() {
            mount(
                Some("tmpfs"),
                &inside,
                Some("tmpfs"),
                F::NOSUID | F::NODEV | F::NOEXEC | F::RDONLY,
                Some("size=4k,mode=0555"),
            )?;
        }
    }
    let proc_dir = root.join("proc");
    mkdir_all(&proc_dir)?;
    mount(
        Some("proc"),
        &proc_dir,
        Some("proc"),
        F::NOSUID | F::NODEV | F::NOEXEC,
        None,
    )?;
    let dev = root.join("dev");
    mkdir_all(&dev)?;
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        F::NOSUID | F::NOEXEC,
        Some("size=64k,mode=0755"),
    )?;
    for d in DEVICES {
        let node = dev.join(d);
        std::fs::File::create(&node)?;
        mount(
            path_str(&Path::new("/dev").join(d)),
            &node,
            None,
            F::BIND,
            None,
        )?;
    }
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(to, dev.join(link))?;
    }
    let shm = dev.join("shm");
    mkdir_all(&shm)?;
    mount(
        Some("tmpfs"),
        &shm,
        Some("tmpfs"),
        F::NOSUID | F::NODEV,
        Some(&tmp_size),
    )?;
    // /dev's tmpfs is done being written: nothing may add device files.
    mount(
        None,
        &dev,
        None,
        F::REMOUNT | F::NOSUID | F::NOEXEC | F::RDONLY,
        Some("size=64k,mode=0755"),
    )?;
    pivot_root(root)?;
    umount_detached(Path::new("/.old"))?;
    std::fs::remove_dir("/.old")?;
    // The root's own tmpfs holds only mount points: read-only too.
    mount(
        None,
        Path::new("/"),
        None,
        F::REMOUNT | F::BIND | F::RDONLY | F::NOSUID | F::NODEV,
        None,
    )?;
    Ok(())
}

fn path_str(p: &Path) -> Option<&str> {
    p.to_str()
}

fn mkdir_all(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
}

/// The seccomp filters of every instance: deny what a function has no use
/// for and an attacker would (mounts, namespaces, tracing other processes,
/// kernel keyrings and modules, BPF, perf, reboot, swap, kexec, handles).
/// `clone3` fails with ENOSYS, not EPERM, so glibc falls back to `clone`,
/// whose namespace flags the filter can see.
pub fn seccomp_filters() -> io::Result<Vec<seccompiler::BpfProgram>> {
    use seccompiler::{
        SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    };
    let arch: seccompiler::TargetArch = std::env::consts::ARCH
        .try_into()
        .map_err(|e| io::Error::other(format!("seccomp: {e:?}")))?;
    let mut denied: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED_SYSCALLS.iter().map(|&nr| (nr, Vec::new())).collect();
    // clone(2) may not ask for a new namespace; seccompiler matches "flags &
    // FLAG == FLAG", so each namespace flag gets its own rule.
    let mut clone_rules = Vec::new();
    for flag in [
        libc::CLONE_NEWNS,
        libc::CLONE_NEWPID,
        libc::CLONE_NEWNET,
        libc::CLONE_NEWIPC,
        libc::CLONE_NEWUTS,
        libc::CLONE_NEWUSER,
        libc::CLONE_NEWCGROUP,
    ] {
        clone_rules.push(
            SeccompRule::new(vec![SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(flag as u64),
                flag as u64,
            )
            .map_err(io::Error::other)?])
            .map_err(io::Error::other)?,
        );
    }
    denied.insert(libc::SYS_clone, clone_rules);
    let eperm = SeccompFilter::new(
        denied,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(io::Error::other)?;
    let enosys = SeccompFilter::new(
        [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(io::Error::other)?;
    Ok(vec![
        eperm.try_into().map_err(io::Error::other)?,
        enosys.try_into().map_err(io::Error::other)?,
    ])
}

/// Syscalls no instance may make (besides namespace-creating `clone`).
const DENIED_SYSCALLS: &[i64] = &[
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_userfaultfd,
    libc::SYS_acct,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_adjtimex,
    libc::SYS_quotactl,
    libc::SYS_syslog,
    libc::SYS_fsopen,
    libc::SYS_fsmount,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
];

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{s:?} contains a NUL byte"),
        )
    })
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn context(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// A wait status as an exit code: a death by signal S is 128 + S, as shells say.
fn as_exit_code(status: libc::c_int) -> i32 {
    if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        libc::WEXITSTATUS(status)
    }
}

/// Ends the helper the way pid 1 ended, so the platform reads the runtime's
/// own exit (a crash by signal stays a signal: an OOM kill is told apart).
fn pass_on(status: libc::c_int) -> ! {
    let code = as_exit_code(status);
    if (129..=128 + 64).contains(&code) {
        unsafe_ffi::raise_default(code - 128);
    }
    unsafe_ffi::exit(code)
}

/// The system calls, each behind a safe signature.
#[allow(unsafe_code)]
mod unsafe_ffi {
    use std::ffi::{CStr, CString};
    use std::io;
    use std::path::Path;

    pub struct MountFlags;
    impl MountFlags {
        pub const REC: libc::c_ulong = libc::MS_REC;
        pub const PRIVATE: libc::c_ulong = libc::MS_PRIVATE;
        pub const BIND: libc::c_ulong = libc::MS_BIND;
        pub const REMOUNT: libc::c_ulong = libc::MS_REMOUNT;
        pub const RDONLY: libc::c_ulong = libc::MS_RDONLY;
        pub const NOSUID: libc::c_ulong = libc::MS_NOSUID;
        pub const NODEV: libc::c_ulong = libc::MS_NODEV;
        pub const NOEXEC: libc::c_ulong = libc::MS_NOEXEC;
    }

    fn c(s: &str) -> io::Result<CString> {
        CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))
    }

    fn cpath(p: &Path) -> io::Result<CString> {
        use std::os::unix::ffi::OsStrExt;
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))
    }

    fn ok(ret: libc::c_int) -> io::Result<()> {
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    pub fn mount(
        source: Option<&str>,
        target: &Path,
        fstype: Option<&str>,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) -> io::Result<()> {
        let source = source.map(c).transpose()?;
        let target = cpath(target)?;
        let fstype = fstype.map(c).transpose()?;
        let data = data.map(c).transpose()?;
        let ptr = |s: &Option<CString>| s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
        // SAFETY: every pointer is a NUL-terminated string that outlives the
        // call, or null where mount(2) allows it.
        ok(unsafe {
            libc::mount(
                ptr(&source),
                target.as_ptr(),
                ptr(&fstype),
                flags,
                ptr(&data).cast(),
            )
        })
        .map_err(|e| io::Error::new(e.kind(), format!("mount {}: {e}", target.to_string_lossy())))
    }

    /// Makes `root` the process's `/`, the old root at `/.old`.
    pub fn pivot_root(root: &Path) -> io::Result<()> {
        let old = root.join(".old");
        std::fs::create_dir_all(&old)?;
        let new = cpath(root)?;
        let old = cpath(&old)?;
        // SAFETY: both are NUL-terminated paths alive across the call.
        ok(unsafe { libc::syscall(libc::SYS_pivot_root, new.as_ptr(), old.as_ptr()) as i32 })?;
        std::env::set_current_dir("/")
    }

    pub fn umount_detached(target: &Path) -> io::Result<()> {
        let t = cpath(target)?;
        // SAFETY: a NUL-terminated path alive across the call.
        ok(unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) })
    }

    pub fn is_root() -> bool {
        // SAFETY: geteuid(2) cannot fail and takes nothing.
        unsafe { libc::geteuid() == 0 }
    }

    pub fn unshare(flags: libc::c_int) -> libc::c_int {
        // SAFETY: unshare(2) takes flags only.
        unsafe { libc::unshare(flags) }
    }

    pub fn fork() -> libc::c_int {
        // SAFETY: the jailer is single-threaded (it runs before any thread
        // is started), so the child may go on running ordinary Rust code.
        unsafe { libc::fork() }
    }

    pub fn pipe() -> io::Result<(libc::c_int, libc::c_int)> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors into the array it is given.
        ok(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
        Ok((fds[0], fds[1]))
    }

    pub fn close(fd: libc::c_int) {
        // SAFETY: closes a descriptor this module created and owns.
        unsafe {
            libc::close(fd);
        }
    }

    /// Dies with SIGKILL when the helper (the parent) dies; if it is already
    /// gone (the write end of `alive` is closed everywhere), exits now.
    pub fn die_with_parent(alive: libc::c_int) -> io::Result<()> {
        // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number.
        ok(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) })?;
        let mut byte = 0u8;
        // SAFETY: reads at most one byte into a live local.
        let flags = unsafe { libc::fcntl(alive, libc::F_GETFL) };
        // SAFETY: sets O_NONBLOCK on a descriptor this module owns.
        unsafe { libc::fcntl(alive, libc::F_SETFL, flags | libc::O_NONBLOCK) };
        // SAFETY: reads at most one byte into a live local.
        let n = unsafe { libc::read(alive, (&mut byte as *mut u8).cast(), 1) };
        if n == 0 {
            exit(super::JAIL_FAILED);
        }
        Ok(())
    }

    pub fn wait_for(pid: libc::c_int) -> io::Result<libc::c_int> {
        let mut status = 0;
        loop {
            // SAFETY: waitpid writes the status into a live local.
            let r = unsafe { libc::waitpid(pid, &mut status, 0) };
            if r == pid {
                return Ok(status);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// As pid 1: reaps every child until `runtime` exits; returns its status.
    pub fn reap_until(runtime: libc::c_int) -> libc::c_int {
        loop {
            let mut status = 0;
            // SAFETY: waitpid writes the status into a live local.
            let r = unsafe { libc::waitpid(-1, &mut status, 0) };
            if r == runtime {
                return status;
            }
            if r < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                // No children left: the runtime is gone without a status.
                return 0;
            }
        }
    }

    pub fn sethostname(name: &[u8]) -> libc::c_int {
        // SAFETY: the pointer and length describe a live byte slice.
        unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }
    }

    pub fn set_rlimit(resource: libc::__rlimit_resource_t, value: u64) -> io::Result<()> {
        let limit = libc::rlimit {
            rlim_cur: value,
            rlim_max: value,
        };
        // SAFETY: setrlimit reads a live rlimit.
        ok(unsafe { libc::setrlimit(resource, &limit) })
    }

    /// Leaves root for good: no supplementary groups, then gid and uid (all
    /// three ids each, so nothing can switch back; capabilities go with uid 0).
    pub fn drop_to(uid: u32, gid: u32) -> io::Result<()> {
        // SAFETY: setgroups reads zero entries; the set*id calls take ids.
        unsafe {
            ok(libc::setgroups(0, std::ptr::null()))?;
            ok(libc::setresgid(gid, gid, gid))?;
            ok(libc::setresuid(uid, uid, uid))?;
        }
        Ok(())
    }

    pub fn no_new_privs() -> io::Result<()> {
        // SAFETY: prctl(PR_SET_NO_NEW_PRIVS) takes integers only.
        ok(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })
    }

    pub fn chdir(dir: &CStr) -> libc::c_int {
        // SAFETY: a NUL-terminated path alive across the call.
        unsafe { libc::chdir(dir.as_ptr()) }
    }

    /// Replaces the process image; returns only on failure.
    pub fn exec(argv: &[CString], envp: &[CString]) -> io::Error {
        let mut args: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        args.push(std::ptr::null());
        let mut env: Vec<*const libc::c_char> = envp.iter().map(|a| a.as_ptr()).collect();
        env.push(std::ptr::null());
        // SAFETY: both arrays are null-terminated and point at strings that
        // live until exec replaces the process (or fails and returns).
        unsafe { libc::execve(args[0], args.as_ptr(), env.as_ptr()) };
        io::Error::last_os_error()
    }

    pub fn exit(code: i32) -> ! {
        // SAFETY: _exit ends the process without running the parent's atexit
        // handlers or flushing buffers it shares with the parent.
        unsafe { libc::_exit(code) }
    }

    /// Dies by `signal` with its default action.
    pub fn raise_default(signal: i32) {
        // SAFETY: resets the disposition and sends the signal to this process.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::kill(libc::getpid(), signal);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_round_trips_through_its_variable() {
        let spec = JailSpec {
            root: "/data/jail".into(),
            uid: 1_000_001,
            gid: 1_000_001,
            hostname: "instance".into(),
            program: "/usr/bin/python3".into(),
            args: vec!["handler.py".into()],
            cwd: "/var/task".into(),
            binds: vec![Bind::same("/usr")],
            hide: vec!["/var/task/data".into()],
            tmp_mb: 512,
            max_open_files: 1024,
        };
        let text = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<JailSpec>(&text).unwrap(), spec);
    }

    #[test]
    fn the_seccomp_filters_compile_for_this_machine() {
        let filters = seccomp_filters().unwrap();
        assert_eq!(filters.len(), 2);
        assert!(filters.iter().all(|f| !f.is_empty()));
    }

    #[test]
    fn a_death_by_signal_is_128_plus_the_signal() {
        assert_eq!(as_exit_code(libc::SIGKILL), 137);
        assert_eq!(as_exit_code(3 << 8), 3);
    }
}
