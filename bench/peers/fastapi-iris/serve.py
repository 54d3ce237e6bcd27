#!/usr/bin/env python3
"""Starts the peer: uvicorn, 2 workers, on 127.0.0.1 and a port the kernel
picks. The socket is bound here and handed to uvicorn with --fd, so the
port is never chosen before it is held; the first line printed is
`listening on http://127.0.0.1:<port>`.

    python serve.py [--workers 2]
"""
import os
import socket
import sys

workers = sys.argv[sys.argv.index("--workers") + 1] if "--workers" in sys.argv else "2"
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", 0))
sock.listen(2048)
sock.set_inheritable(True)
print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
here = os.path.dirname(os.path.abspath(__file__))
os.execv(sys.executable, [
    sys.executable, "-m", "uvicorn", "app:app", "--app-dir", here, "--fd", str(sock.fileno()),
    "--workers", workers, "--log-level", "warning", "--no-access-log", "--backlog", "2048",
])
