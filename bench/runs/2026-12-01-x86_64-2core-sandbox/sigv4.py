"""Platform CPU per warm invoke: --auth none (unsigned) vs --auth sigv4 (signed)."""
import urllib.parse, urllib.error, json, os, subprocess, sys, tempfile, time, urllib.request, statistics
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

virga, repo, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
manifest = open(f"{repo}/functions/noop.toml").read()
tick = os.sysconf("SC_CLK_TCK")

def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / tick

def start(auth):
    d = tempfile.mkdtemp()
    creds = None
    if auth == "sigv4":
        out = subprocess.check_output([virga, "keys", "create", "bench", "--role", "admin", "--data-dir", d + "/data", "--format", "json"])
        k = json.loads(out)
        creds = Credentials(k["access_key_id"], k["secret_access_key"])
    p = subprocess.Popen([virga, "serve", "--addr", "127.0.0.1:0", "--data-dir", d + "/data", "--auth", auth],
                         stdout=subprocess.PIPE, stderr=open(d + "/log", "w"), text=True)
    base = p.stdout.readline().split("listening on ")[1].strip()
    send(base, creds, "PUT", "/v1/functions/noop?base_dir=" + urllib.parse.quote(f"{repo}/functions", safe=""), manifest.encode())
    return p, base, creds

def send(base, creds, method, path, body=b""):
    headers = {}
    if creds:
        r = AWSRequest(method=method, url=base + path, data=body)
        SigV4Auth(creds, "lambda", "us-east-1").add_auth(r)
        headers = dict(r.headers)
    req = urllib.request.Request(base + path, data=body if method != "GET" else None, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.read()
    except urllib.error.HTTPError as e:
        sys.exit(f"{method} {path}: {e.code} {e.read()[:300]}")

servers = {a: start(a) for a in ("none", "sigv4")}
for a, (p, base, c) in servers.items():
    for _ in range(20):
        send(base, c, "POST", "/2015-03-31/functions/noop/invocations", b"{}")
per = {"none": [], "sigv4": []}
for _ in range(5):
    for a, (p, base, c) in servers.items():
        c0 = cpu(p.pid)
        for _ in range(n):
            send(base, c, "POST", "/2015-03-31/functions/noop/invocations", b"{}")
        per[a].append((cpu(p.pid) - c0) / n * 1e6)
for a, v in per.items():
    print(f"--auth {a}: platform CPU per warm invoke, median of 5x{n}: {statistics.median(v):.0f} us")
print(f"SigV4 verification adds {statistics.median(per['sigv4']) - statistics.median(per['none']):.0f} us of platform CPU per invoke")
for p, _, _ in servers.values():
    p.terminate()
