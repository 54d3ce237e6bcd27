//! A snap-start template (`snap_start = "fork"`): a model instance that has
//! loaded and warmed its model and then, instead of serving, forks a new
//! instance each time the platform asks.
//!
//! The loop is single-threaded, so a fork copies a process with no other
//! thread and no lock held: the child is a consistent copy, shares the
//! weights copy-on-write, and creates whatever threads it needs itself.
//!
//! One fork, in order:
//! 1. `GET` [`TEMPLATE_NEXT_PATH`] (a long poll) returns a
//!    [`TemplateOrder::Fork`];
//! 2. fork; the child leads its own process group and blocks on a pipe;
//! 3. the template reports the child's pid ([`TEMPLATE_FORKED_PATH`]); the
//!    platform moves the child into the instance's cgroup and answers;
//! 4. the template releases the child (one byte on the pipe), or kills it
//!    when the platform refused; the child sets its environment (its own
//!    Runtime API address) and returns to the caller, which serves as any
//!    instance does.
//!
//! A child forked with [`ForkOrder::hold`] (a spare) stays blocked after
//! step 3 until a [`TemplateOrder::Release`] names it: forking and, above
//! all, placing it (a cgroup v1 move waits for an RCU grace period) happen
//! before the cold start that takes it.
//!
//! Children are reaped by the kernel (`SIGCHLD` ignored in the template;
//! the child restores the default).

use std::collections::HashMap;
use std::time::Duration;

use virga_spec::contract::{
    ForkOrder, Forked, TemplateOrder, TEMPLATE_FORKED_PATH, TEMPLATE_NEXT_PATH,
};

use crate::WorkerError;

/// A child held until released: its pid and the pipe's write end.
struct Held {
    pid: i32,
    fd: i32,
}

/// Serves fork orders; returns only in a forked child, which then serves
/// invocations with `handler`, or with the error that stopped the template.
pub fn serve<H>(handler: H) -> Result<H, WorkerError> {
    let api = std::env::var("AWS_LAMBDA_RUNTIME_API").map_err(|_| WorkerError::NoRuntimeApi)?;
    let base = format!("http://{api}");
    let err = |e: Box<dyn std::error::Error + Send + Sync>| WorkerError::Api {
        base: base.clone(),
        source: e,
    };
    sys::ignore_children()?;
    let mut held: HashMap<String, Held> = HashMap::new();
    loop {
        // A held child that died (killed by the platform) needs no pipe.
        held.retain(|_, h| {
            let alive = sys::alive(h.pid);
            if !alive {
                sys::close(h.fd);
            }
            alive
        });
        // No pooled connection: a child must not inherit one it could use.
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5))
            .max_idle_connections(0)
            .build();
        let text = agent
            .get(&format!("{base}{TEMPLATE_NEXT_PATH}"))
            .call()
            .map_err(|e| err(e.into()))?
            .into_string()
            .map_err(|e| err(e.into()))?;
        let order = match serde_json::from_str(&text).map_err(|e| err(e.into()))? {
            TemplateOrder::Fork(order) => order,
            TemplateOrder::Release { id } => {
                // Unknown: it died meanwhile; the platform sees that itself.
                if let Some(h) = held.remove(&id) {
                    sys::release(h.fd);
                    sys::close(h.fd);
                }
                continue;
            }
        };
        let (read, write) = sys::pipe()?;
        match sys::fork()? {
            0 => {
                sys::close(write);
                // Its siblings' pipes are not its to write.
                for h in held.values() {
                    sys::close(h.fd);
                }
                sys::child_setup();
                let released = sys::wait_byte(read);
                sys::close(read);
                drop(agent);
                if !released {
                    // The platform refused it, or the template died first.
                    sys::exit(1);
                }
                return Ok(become_instance(handler, &order));
            }
            pid => {
                sys::close(read);
                // Also here, so the group exists whichever runs first.
                sys::set_group(pid);
                let report = serde_json::to_string(&Forked {
                    id: order.id.clone(),
                    pid,
                })
                .map_err(|e| err(e.into()))?;
                let placed = agent
                    .post(&format!("{base}{TEMPLATE_FORKED_PATH}"))
                    .set("Content-Type", "application/json")
                    .send_string(&report);
                if placed.is_err() {
                    sys::kill(pid);
                } else if order.hold {
                    held.insert(order.id, Held { pid, fd: write });
                    continue;
                } else {
                    sys::release(write);
                }
                sys::close(write);
            }
        }
    }
}

/// In a released child: the environment of the instance it now is.
fn become_instance<H>(handler: H, order: &ForkOrder) -> H {
    for (k, v) in &order.env {
        std::env::set_var(k, v);
    }
    std::env::set_var("AWS_LAMBDA_RUNTIME_API", &order.runtime_api);
    std::env::remove_var(virga_spec::contract::SNAP_START);
    handler
}

#[allow(unsafe_code)]
mod sys {
    use std::io;

    use crate::WorkerError;

    fn os(what: &str) -> WorkerError {
        WorkerError::Init(format!("{what}: {}", io::Error::last_os_error()))
    }

    pub fn ignore_children() -> Result<(), WorkerError> {
        // SAFETY: setting a signal's disposition to SIG_IGN installs no handler.
        if unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) } == libc::SIG_ERR {
            return Err(os("cannot ignore SIGCHLD"));
        }
        Ok(())
    }

    pub fn pipe() -> Result<(i32, i32), WorkerError> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors into the array it is given.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(os("cannot make a pipe"));
        }
        Ok((fds[0], fds[1]))
    }

    pub fn fork() -> Result<i32, WorkerError> {
        // SAFETY: the template is single-threaded when it forks (no thread
        // was started since the model loaded), so the child's copy of every
        // lock and allocator state is consistent.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(os("fork failed"));
        }
        Ok(pid)
    }

    /// In the child: its own process group (so the platform's signals to
    /// it spare the template) and the default `SIGCHLD` back.
    pub fn child_setup() {
        // SAFETY: plain syscalls on the calling process.
        unsafe {
            libc::setpgid(0, 0);
            libc::signal(libc::SIGCHLD, libc::SIG_DFL);
        }
    }

    /// Blocks until one byte arrives; false when the pipe closed first.
    pub fn wait_byte(fd: i32) -> bool {
        let mut b = 0u8;
        loop {
            // SAFETY: reads at most one byte into a local.
            let n = unsafe { libc::read(fd, (&mut b as *mut u8).cast(), 1) };
            if n == 1 {
                return true;
            }
            if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return false;
        }
    }

    pub fn release(fd: i32) {
        // SAFETY: writes one byte from a static.
        unsafe {
            libc::write(fd, b"1".as_ptr().cast(), 1);
        }
    }

    pub fn close(fd: i32) {
        // SAFETY: closes a descriptor this module opened and owns.
        unsafe {
            libc::close(fd);
        }
    }

    pub fn set_group(pid: i32) {
        // SAFETY: setpgid(2) on the template's own child; a failure (the
        // child did it first, or died) changes nothing.
        unsafe {
            libc::setpgid(pid, pid);
        }
    }

    /// Whether the template's child `pid` still exists (it is reaped at
    /// once, `SIGCHLD` being ignored).
    pub fn alive(pid: i32) -> bool {
        // SAFETY: signal 0 only checks that the process exists.
        pid > 0 && unsafe { libc::kill(pid, 0) } == 0
    }

    pub fn kill(pid: i32) {
        if pid > 0 {
            // SAFETY: kill(2) on the template's own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }

    pub fn exit(code: i32) -> ! {
        // SAFETY: _exit skips the parent's atexit handlers and buffers,
        // which belong to the template.
        unsafe { libc::_exit(code) }
    }
}
