"""Cold start of one function with the sandbox and without, alternating.

python3 cold_start.py VIRGA REPO N FUNCTION  (FUNCTION: noop or efficientnet-lite0)"""
import base64, io, json, os, statistics, subprocess, sys, tempfile, time, urllib.request

virga, repo, n, fn = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
code = {"noop": "functions", "efficientnet-lite0": "functions/models"}[fn]
manifest = open(f"{repo}/{code}/{fn}.toml").read()
# A tiny valid PNG (1x1).
png = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
payload = b"{}" if fn == "noop" else json.dumps({"image": base64.b64encode(png).decode(), "top_k": 1}).encode()

def start(iso):
    d = tempfile.mkdtemp()
    p = subprocess.Popen([virga, "serve", "--addr", "127.0.0.1:0", "--data-dir", d + "/data", "--isolation", iso],
                         stdout=subprocess.PIPE, stderr=open(d + "/log", "w"), text=True)
    line = p.stdout.readline()
    base = line.split("listening on ")[1].strip()
    req = urllib.request.Request(f"{base}/v1/functions/{fn}?base_dir={repo}/{code}",
                                 data=manifest.encode(), method="PUT")
    urllib.request.urlopen(req).read()
    return p, base

def call(base, method, path, body=None):
    req = urllib.request.Request(base + path, data=body, method=method)
    with urllib.request.urlopen(req) as r:
        return r.headers, r.read()

def cold(base):
    call(base, "DELETE", f"/v1/functions/{fn}/instances")
    for _ in range(400):
        _, b = call(base, "GET", f"/v1/functions/{fn}/instances")
        if not json.loads(b)["instances"]:
            break
        time.sleep(0.005)
    h, _ = call(base, "POST", f"/2015-03-31/functions/{fn}/invocations", payload)
    rid = h["x-amzn-RequestId"]
    _, b = call(base, "GET", f"/v1/invocations?function={fn}&limit=5")
    rec = next(r for r in json.loads(b)["invocations"] if r["request_id"] == rid)
    return rec["init_ms"], rec["isolation"]

servers = {iso: start(iso) for iso in ("on", "off")}
res = {"on": [], "off": []}
for _ in range(n):
    for iso, (_, base) in servers.items():
        ms, label = cold(base)
        res[iso].append(ms)
for iso, v in res.items():
    v.sort()
    print(f"isolation {iso}: p50 {statistics.median(v):.1f} ms, p90 {v[int(len(v)*0.9)]:.1f} ms (n={len(v)})")
print(f"sandbox adds {statistics.median(res['on']) - statistics.median(res['off']):.1f} ms at p50")
for p, _ in servers.values():
    p.terminate()
