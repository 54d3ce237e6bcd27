#!/usr/bin/env python3
"""Asynchronous events and routed calls in a cluster, on one host: a NATS
JetStream broker (nats-server; with --r3, three servers and R3 streams) and
virga nodes on loopback, each with its own data dir, against a single node
on its SQLite queue. Prints medians; everything stops by itself.

    python3 measure.py path/to/virga path/to/iris.model [--r3]

For each setup: the accept rate of a burst of Event invokes (16 client
threads spread over the doors), the delivery throughput of that burst, and
the delivery lag (from the accept request leaving the
client's send to the delivery reaching the scheduler) at a paced 50 events/s. Then a synchronous call through a node
without an instance (routed to the warm one) against the same call on the
warm node.
"""
import http.client, json, os, socket, statistics, subprocess, sys, tempfile, threading, time

virga, model = sys.argv[1], os.path.abspath(sys.argv[2])
r3 = "--r3" in sys.argv
tmp = tempfile.mkdtemp()
procs = []
BURST, CLIENTS, PACED, RATE = 2000, 16, 200, 50.0
sent_at = {}


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
    return line.strip().rsplit("http://", 1)[1]


class Client:
    def __init__(self, hostport):
        h, p = hostport.split(":")
        self.c = http.client.HTTPConnection(h, int(p), timeout=60)

    def req(self, method, path, body=None, headers=None):
        self.c.request(method, path, body=body, headers=headers or {})
        r = self.c.getresponse()
        return r.status, dict(r.getheaders()), r.read()


def get(hostport, path):
    return json.loads(Client(hostport).req("GET", path)[2])


MANIFEST = (f'name = "iris"\nruntime = "model"\nmemory_mb = 512\nmax_concurrency = 4\n'
            f'keep_alive_ms = 600000\n[model]\ntask = "tabular-classification"\npath = "{model}"\n')
ROWS = '{"instances": [[5.1, 3.5, 1.4, 0.2]]}'
INVOKE = "/2015-03-31/functions/iris/invocations"


def records(door):
    return get(door, "/v1/invocations?function=iris&limit=100000")["invocations"]


def wait_records(door, ids, limit=300):
    """The records of the given request ids, once all of them are there."""
    want, t0 = set(ids), time.time()
    while time.time() - t0 < limit:
        rs = [r for r in records(door) if r["request_id"] in want]
        if len({r["request_id"] for r in rs}) >= len(want):
            return rs
        time.sleep(0.2)
    raise SystemExit(f"records missing after {limit} s")


def events(doors, n, paced=None):
    """n Event invokes over the doors; returns (seconds, ids)."""
    ids, lock = [], threading.Lock()
    per = n // CLIENTS if paced is None else n

    def client(i):
        c = Client(doors[i % len(doors)])
        for k in range(per):
            if paced:
                time.sleep(max(0.0, t0 + k / paced - time.time()))
            sent = time.time()
            s, h, b = c.req("POST", INVOKE, ROWS, {"X-Amz-Invocation-Type": "Event"})
            assert s == 202, (s, b)
            with lock:
                rid = h.get("x-amzn-requestid") or h.get("X-Amzn-RequestId")
                ids.append(rid)
                sent_at[rid] = sent

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS if paced is None else 1)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.time() - t0, ids


def iso(t):
    from datetime import datetime
    return datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()


def q(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def setup(label, doors, first):
    """Measures one setup; `first` is where to deploy and read records."""
    Client(first).req("PUT", "/v1/functions/iris", MANIFEST)
    time.sleep(3)  # the deploy reaches every node; heartbeats
    for d in doors:  # warm an instance on each door
        Client(d).req("POST", INVOKE, ROWS)
    secs, ids = events(doors, BURST)
    t_acc = time.time()
    wait_records(first, ids)
    drained = time.time() - t_acc + secs
    _, pids = events(doors, PACED, paced=RATE)
    # From the accept request leaving the client to the delivery reaching
    # the scheduler (the record's received_at; same host, same clock).
    lag = [(iso(r["received_at"]) - sent_at[r["request_id"]]) * 1e3 for r in wait_records(first, pids)]
    print(f"{label}: accept {len(ids) / secs:.0f} ev/s ({len(ids)} in {secs:.2f} s); "
          f"burst delivered in {drained:.2f} s ({len(ids) / drained:.0f} ev/s); "
          f"lag at {RATE:.0f} ev/s p50 {statistics.median(lag):.1f} ms p99 {q(lag, 0.99):.1f} ms (n={len(lag)})")
    return len(ids) / secs, statistics.median(lag)


def sync_latency(door, n=500):
    c = Client(door)
    c.req("POST", INVOKE, ROWS)
    out, routed = [], 0
    for _ in range(n):
        t0 = time.perf_counter()
        s, h, _ = c.req("POST", INVOKE, ROWS)
        out.append((time.perf_counter() - t0) * 1e3)
        routed += "x-virga-node" in {k.lower() for k in h}
    return out, routed


try:
    # The broker: one server, or three in a cluster with R3 streams.
    servers, cluster_ports = [], [free_port() for _ in range(3)]
    for i in range(3 if r3 else 1):
        port = free_port()
        args = ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", f"{tmp}/js{i}",
                "-n", f"n{i}", "--user", "virga", "--pass", "secret"]
        if r3:
            routes = ",".join(f"nats://127.0.0.1:{p}" for j, p in enumerate(cluster_ports) if j != i)
            args += ["--cluster_name", "virga", "--cluster", f"nats://127.0.0.1:{cluster_ports[i]}", "--routes", routes]
        procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        servers.append(f"nats://127.0.0.1:{port}")
    time.sleep(3 if r3 else 0.5)
    open(f"{tmp}/creds", "w").write("virga:secret\n")
    cl = ["--cluster", ",".join(servers), "--cluster-credentials", f"{tmp}/creds",
          "--cluster-replicas", "3" if r3 else "1"]

    single = serve("single", [])
    setup("single node, SQLite queue", [single], single)
    a = serve("a", cl + ["--node", "a"])
    setup(f"1 node on JetStream{' R3' if r3 else ''}", [a], a)
    b = serve("b", cl + ["--node", "b"])
    c = serve("c", cl + ["--node", "c"])
    setup(f"3 nodes on JetStream{' R3' if r3 else ''}", [a, b, c], a)

    # Routed vs local: a fresh function warm on A only, called through D
    # (a node that never ran it) and through A.
    d = serve("d", cl + ["--node", "d"])
    Client(a).req("PUT", "/v1/functions/solo", MANIFEST.replace('"iris"', '"solo"'))
    time.sleep(3)
    INVOKE = "/2015-03-31/functions/solo/invocations"
    Client(a).req("POST", INVOKE, ROWS)
    time.sleep(5)  # D hears that A is warm
    lat = {"local": [], "routed": []}
    routed_n = 0
    for _ in range(3):
        x, _ = sync_latency(a, 200)
        lat["local"] += x
        y, n = sync_latency(d, 200)
        lat["routed"] += y
        routed_n += n
    med = statistics.median
    print(f"sync invoke p50: local on the warm node {med(lat['local']):.3f} ms (p99 {q(lat['local'], .99):.3f}), "
          f"routed through another node {med(lat['routed']):.3f} ms (p99 {q(lat['routed'], .99):.3f}); "
          f"extra {med(lat['routed']) - med(lat['local']):.3f} ms, ratio {med(lat['routed']) / med(lat['local']):.2f}x; "
          f"{routed_n} of {len(lat['routed']) + 3} routed")
finally:
    for p in procs:
        p.kill()
