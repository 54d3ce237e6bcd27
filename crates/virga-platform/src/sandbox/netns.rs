//! An instance's network namespace, made by the platform before the
//! instance exists: loopback only, with the instance's Runtime API listener
//! already bound inside it at `127.0.0.1:9001`, as on Lambda. No other
//! process can reach that listener: it exists only in this namespace, and
//! the instance joins it between fork and exec.

use std::io;
use std::net::TcpListener;
use std::os::fd::OwnedFd;

/// Where the Runtime API listens inside every instance's namespace.
pub const RUNTIME_API_ADDR: &str = "127.0.0.1:9001";

/// A fresh network namespace and the Runtime API listener inside it.
#[derive(Debug)]
pub struct InstanceNet {
    pub listener: TcpListener,
    /// Kept open until the instance has joined the namespace.
    pub namespace: OwnedFd,
}

/// Creates a namespace with `lo` up and binds the Runtime API in it. Runs on
/// a dedicated OS thread, which `unshare` moves into the new namespace and
/// which ends right after: no worker thread of the async runtime ever
/// changes namespace. Sockets keep the namespace they were made in.
pub fn new_instance_net() -> io::Result<InstanceNet> {
    std::thread::Builder::new()
        .name("virga-netns".into())
        .spawn(|| {
            ffi::unshare_net()?;
            ffi::loopback_up()?;
            let listener = TcpListener::bind(RUNTIME_API_ADDR)?;
            let namespace = std::fs::File::open("/proc/thread-self/ns/net")?.into();
            Ok(InstanceNet {
                listener,
                namespace,
            })
        })?
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the namespace thread panicked")))
}

/// Binds a listener on an ephemeral loopback port inside an existing
/// namespace (a snap-start template's, for one of its forked children), on
/// a dedicated OS thread that joins the namespace and then ends.
pub fn bind_in(namespace: &OwnedFd) -> io::Result<TcpListener> {
    let ns = namespace.try_clone()?;
    std::thread::Builder::new()
        .name("virga-netns".into())
        .spawn(move || {
            ffi::enter_net(&ns)?;
            TcpListener::bind("127.0.0.1:0")
        })?
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the namespace thread panicked")))
}

/// Whether this host lets the platform make network namespaces.
pub fn supported() -> bool {
    new_instance_net().is_ok()
}

#[allow(unsafe_code)]
mod ffi {
    use std::io;

    pub fn unshare_net() -> io::Result<()> {
        // SAFETY: unshare(2) takes flags only; CLONE_NEWNET affects only the
        // calling thread, which is about to end.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn enter_net(ns: &std::os::fd::OwnedFd) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: setns(2) on a namespace descriptor the caller owns; it
        // moves only the calling thread, which is about to end.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// A new namespace's `lo` starts down.
    pub fn loopback_up() -> io::Result<()> {
        // SAFETY: a plain socket used only for the two ioctls below, closed
        // before returning; `ifreq` is plain data zero-initialised, its name
        // field set within bounds.
        unsafe {
            let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
            if sock < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut req: libc::ifreq = std::mem::zeroed();
            for (i, b) in b"lo".iter().enumerate() {
                req.ifr_name[i] = *b as libc::c_char;
            }
            let mut result = libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req);
            if result >= 0 {
                req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
                result = libc::ioctl(sock, libc::SIOCSIFFLAGS, &req);
            }
            let err = io::Error::last_os_error();
            libc::close(sock);
            if result < 0 {
                return Err(err);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listener_is_reachable_only_inside_its_namespace() {
        let Ok(net) = new_instance_net() else {
            eprintln!("skipped: this host cannot create network namespaces");
            return;
        };
        // Bound at the fixed address, yet the same address in the test's
        // own namespace is not it (two instances can both own :9001).
        assert_eq!(
            net.listener.local_addr().unwrap().to_string(),
            RUNTIME_API_ADDR
        );
        let other = new_instance_net().unwrap();
        assert_eq!(
            other.listener.local_addr().unwrap().to_string(),
            RUNTIME_API_ADDR
        );
        // A second listener in the same namespace (a forked child's) is
        // reachable from it, not from here.
        let child = bind_in(&net.namespace).unwrap();
        assert_ne!(
            child.local_addr().unwrap(),
            net.listener.local_addr().unwrap()
        );
        net.listener.set_nonblocking(true).unwrap();
        if let Ok(mut s) = std::net::TcpStream::connect(RUNTIME_API_ADDR) {
            use std::io::Write;
            let _ = s.write_all(b"x");
            assert!(
                net.listener.accept().is_err(),
                "a connection from outside the namespace reached the listener"
            );
        }
    }
}
