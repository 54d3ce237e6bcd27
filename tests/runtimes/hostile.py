#!/usr/bin/env python3
"""A Lambda custom runtime that attacks its host on request, for the sandbox tests.

Each event names one attempt ({"try": NAME, ...}); the response says what
happened: {"ok": bool, "detail": ...}. An attempt that "succeeds" is a hole
in the sandbox; the tests assert every one fails.
"""
import ctypes
import errno
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request

API = f"http://{os.environ['AWS_LAMBDA_RUNTIME_API']}/2018-06-01/runtime"
libc = ctypes.CDLL(None, use_errno=True)


def post(path, body):
    req = urllib.request.Request(API + path, data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(req) as r:
        return r.status


def syscall_result(ret):
    if ret == -1:
        return False, errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
    return True, ret


def status_field(name):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return line.split(":", 1)[1].strip()
    return None


def attempt(ev):
    t = ev["try"]
    if t == "whoami":
        return True, {
            "uid": os.getuid(), "gid": os.getgid(), "euid": os.geteuid(),
            "groups": os.getgroups(), "pid": os.getpid(),
            "cap_eff": status_field("CapEff"), "cap_bnd": status_field("CapBnd"),
            "no_new_privs": status_field("NoNewPrivs"), "seccomp": status_field("Seccomp"),
            "hostname": socket.gethostname(),
            "nofile": __import__("resource").getrlimit(__import__("resource").RLIMIT_NOFILE),
            "core": __import__("resource").getrlimit(__import__("resource").RLIMIT_CORE),
            "cwd": os.getcwd(), "task_root": os.environ.get("LAMBDA_TASK_ROOT"),
            "runtime_api": os.environ.get("AWS_LAMBDA_RUNTIME_API"),
            "leaked": sorted(k for k in os.environ if k.startswith("VIRGA_JAIL")),
        }
    if t == "read":
        try:
            with open(ev["path"], "rb") as f:
                return True, len(f.read())
        except OSError as e:
            return False, errno.errorcode.get(e.errno, str(e))
    if t == "listdir":
        try:
            return True, os.listdir(ev["path"])
        except OSError as e:
            return False, errno.errorcode.get(e.errno, str(e))
    if t == "write":
        try:
            with open(ev["path"], "w") as f:
                f.write(ev.get("text", "pwned"))
            return True, ev["path"]
        except OSError as e:
            return False, errno.errorcode.get(e.errno, str(e))
    if t == "kill":
        try:
            os.kill(int(ev["pid"]), int(ev.get("signal", signal.SIGKILL)))
            return True, "signalled"
        except OSError as e:
            return False, errno.errorcode.get(e.errno, str(e))
    if t == "pids":
        return True, sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    if t == "connect":
        s = socket.socket()
        s.settimeout(2)
        try:
            s.connect((ev["host"], int(ev["port"])))
            return True, "connected"
        except OSError as e:
            return False, errno.errorcode.get(e.errno, str(e)) if e.errno else str(e)
        finally:
            s.close()
    if t == "bind":
        s = socket.socket()
        try:
            s.bind(("0.0.0.0", int(ev.get("port", 0))))
            s.listen()
            port = s.getsockname()[1]
            return True, port
        except OSError as e:
            return False, errno.errorcode.get(e.errno, str(e))
        finally:
            s.close()
    if t == "syscall":
        # unshare(CLONE_NEWUSER), mount, ptrace(PTRACE_ATTACH, 1), ...
        name = ev["name"]
        if name == "unshare_user":
            return syscall_result(libc.unshare(0x10000000))
        if name == "unshare_net":
            return syscall_result(libc.unshare(0x40000000))
        if name == "mount":
            return syscall_result(libc.mount(b"tmpfs", b"/tmp", b"tmpfs", 0, None))
        if name == "ptrace":
            return syscall_result(libc.ptrace(16, 1, None, None))
        if name == "setuid0":
            return syscall_result(libc.setuid(0))
        if name == "chroot":
            return syscall_result(libc.chroot(b"/tmp"))
        if name == "keyctl":
            return syscall_result(libc.syscall(250, 0, 0, 0, 0))
        if name == "bpf":
            return syscall_result(libc.syscall(321, 0, 0, 0))
        return False, "unknown syscall " + name
    if t == "threads":
        # Start threads until the system refuses; report how many.
        stop = threading.Event()
        started = 0
        threads = []
        try:
            while started < int(ev.get("limit", 5000)):
                th = threading.Thread(target=stop.wait)
                th.start()
                threads.append(th)
                started += 1
            result = (True, started)
        except RuntimeError as e:
            result = (False, started)
        stop.set()
        for th in threads:
            th.join()
        return result
    if t == "fill_tmp":
        written = 0
        chunk = b"x" * (1 << 20)
        path = "/tmp/fill"
        try:
            with open(path, "wb") as f:
                while written < int(ev["limit_mb"]) << 20:
                    f.write(chunk)
                    f.flush()
                    written += len(chunk)
            result = (True, written >> 20)
        except OSError as e:
            result = (False, {"errno": errno.errorcode.get(e.errno, str(e)), "mb": written >> 20})
        os.unlink(path)
        return result
    if t == "escape":
        # Outlive the instance: a double-forked, session-leading sleeper.
        pid = os.fork()
        if pid == 0:
            os.setsid()
            if os.fork() == 0:
                os.execvp("sleep", ["sleep", "300"])
            os._exit(0)
        os.waitpid(pid, 0)
        return True, "detached"
    return False, "unknown attempt " + t


while True:
    with urllib.request.urlopen(API + "/invocation/next") as resp:
        rid = resp.headers["Lambda-Runtime-Aws-Request-Id"]
        event = json.loads(resp.read() or b"{}")
    try:
        ok, detail = attempt(event)
    except Exception as e:  # a crash in an attempt is an answer too
        ok, detail = False, f"{type(e).__name__}: {e}"
    post(f"/invocation/{rid}/response", {"ok": ok, "detail": detail})
