#!/usr/bin/env python3
"""Cluster figures on one host: a JetStream broker (nats-server) and two
virga nodes on loopback, each with its own data dir, plus one single-node
virga for comparison. Prints medians; everything stops by itself.

    python3 measure.py path/to/virga path/to/iris.model
"""
import json, os, socket, statistics, subprocess, sys, tempfile, time, urllib.request

virga, model = sys.argv[1], os.path.abspath(sys.argv[2])
tmp = tempfile.mkdtemp()
procs = []


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def serve(name, extra):
    p = subprocess.Popen(
        [virga, "serve", "--addr", "127.0.0.1:0", "--data-dir", f"{tmp}/{name}"] + extra,
        stdout=subprocess.PIPE, stderr=open(f"{tmp}/{name}.log", "w"), text=True)
    procs.append(p)
    line = p.stdout.readline()
    return "http://" + line.strip().rsplit("http://", 1)[1]


def req(method, url, body=None):
    r = urllib.request.Request(url, data=body.encode() if body else None, method=method)
    with urllib.request.urlopen(r) as resp:
        return resp.read()


def manifest(mem):
    return (f'name = "iris"\nruntime = "model"\nmemory_mb = {mem}\n[model]\n'
            f'task = "tabular-classification"\npath = "{model}"\n')


def deploy(base, mem):
    return req("PUT", f"{base}/v1/functions/iris?base_dir={tmp}/code", manifest(mem))


ROWS = '{"instances": [[5.1, 3.5, 1.4, 0.2]]}'


def invoke(base):
    return json.loads(req("POST", f"{base}/2015-03-31/functions/iris/invocations", ROWS))


try:
    os.makedirs(f"{tmp}/code")
    port = free_port()
    procs.append(subprocess.Popen(
        ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", f"{tmp}/js",
         "--user", "virga", "--pass", "secret"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(0.5)
    open(f"{tmp}/creds", "w").write("virga:secret\n")
    cl = ["--cluster", f"nats://127.0.0.1:{port}", "--cluster-credentials", f"{tmp}/creds"]
    a = serve("a", cl + ["--node", "a"])
    b = serve("b", cl + ["--node", "b"])
    single = serve("single", [])

    # Deploy through A until B serves the new memory size.
    visible, deploy_a, deploy_single = [], [], []
    for i in range(20):
        mem = 512 + 64 * (i % 2 + 1)
        t0 = time.perf_counter()
        deploy(a, mem)
        t1 = time.perf_counter()
        deploy_a.append((t1 - t0) * 1e3)
        while True:
            try:
                if json.loads(req("GET", f"{b}/v1/functions/iris"))["memory_mb"] == mem:
                    break
            except Exception:
                pass
            time.sleep(0.002)
        visible.append((time.perf_counter() - t1) * 1e3)
        t0 = time.perf_counter()
        deploy(single, mem)
        deploy_single.append((time.perf_counter() - t0) * 1e3)

    # Warm invokes: a cluster node (publishing its records) vs a single node.
    invoke(b), invoke(single)
    lat = {"cluster": [], "single": []}
    for _ in range(5):
        for name, base in (("cluster", b), ("single", single)):
            for _ in range(100):
                t0 = time.perf_counter()
                invoke(base)
                lat[name].append((time.perf_counter() - t0) * 1e3)

    # Record lag: invoke on B until A lists the record.
    lag, prev = [], None
    for _ in range(20):
        req("POST", f"{b}/2015-03-31/functions/iris/invocations", ROWS)
        # B's own store has it once its writer's batch is in.
        while True:
            rid = json.loads(req("GET", f"{b}/v1/invocations?function=iris&limit=1"))["invocations"][-1]["request_id"]
            if rid != prev:
                break
            time.sleep(0.001)
        prev = rid
        t0 = time.perf_counter()
        while True:
            rows = json.loads(req("GET", f"{a}/v1/invocations?function=iris&limit=50"))["invocations"]
            if any(r["request_id"] == rid for r in rows):
                break
            time.sleep(0.002)
        lag.append((time.perf_counter() - t0) * 1e3)

    med = statistics.median
    print(f"deploy through A (publish included) p50 {med(deploy_a):.1f} ms; single node {med(deploy_single):.1f} ms; ratio {med(deploy_a) / med(deploy_single):.2f}x")
    print(f"deploy visible and applied on B after A answered: p50 {med(visible):.1f} ms, max {max(visible):.1f} ms (n={len(visible)})")
    print(f"warm invoke p50: cluster node {med(lat['cluster']):.3f} ms, single node {med(lat['single']):.3f} ms, ratio {med(lat['cluster']) / med(lat['single']):.2f}x")
    print(f"record of B indexed on A after B answered+listed it: p50 {med(lag):.1f} ms, max {max(lag):.1f} ms (n={len(lag)})")
finally:
    for p in procs:
        p.kill()
