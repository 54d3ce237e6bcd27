#!/usr/bin/env python3
"""A Lambda custom runtime for service, job and batching tests.

With AWS_LAMBDA_MAX_CONCURRENCY=n it polls invocation/next from n threads,
as a runtime of a Lambda Managed Instance does. Events:
- {"meet": k, "id": x}: wait (up to 5 s) until k invocations are in flight
  at once in this process, then answer {"id", "met", "pid", "threads"}.
- {"batch": [event, ...]} with the Virga-Batch-Size header: answer
  {"batch": [{"id", "batch_size", "pid"}, ...]}; an item {"fail": true}
  fails alone (listed in "errors"), as does such an event sent alone.
- anything else: {"id", "pid", "batch_size": 1}.
An event (or any item of a batch) with "sleep": seconds is answered that
much later.
"""
import json
import os
import threading
import time
import urllib.request

API = f"http://{os.environ['AWS_LAMBDA_RUNTIME_API']}/2018-06-01/runtime"
THREADS = int(os.environ.get("AWS_LAMBDA_MAX_CONCURRENCY", "1") or "1")
lock = threading.Condition()
in_flight = 0


def post(path, body):
    req = urllib.request.Request(API + path, data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(req) as r:
        r.read()


def handle(event, batch_size):
    global in_flight
    if isinstance(event, dict):
        items = event.get("batch") if batch_size and isinstance(event.get("batch"), list) else [event]
        time.sleep(max((float(i.get("sleep", 0)) for i in items if isinstance(i, dict)), default=0))
    if batch_size and isinstance(event, dict) and isinstance(event.get("batch"), list):
        items = event["batch"]
        out, errors = [], []
        for item in items:
            if isinstance(item, dict) and item.get("fail"):
                out.append(None)
                errors.append({"errorType": "ItemFailed", "errorMessage": "asked to fail"})
            else:
                out.append({"id": item.get("id") if isinstance(item, dict) else None,
                            "batch_size": len(items), "pid": os.getpid()})
                errors.append(None)
        doc = {"batch": out}
        if any(errors):
            doc["errors"] = errors
        return doc
    if isinstance(event, dict) and "meet" in event:
        want = int(event["meet"])
        deadline = time.time() + 5
        with lock:
            in_flight += 1
            lock.notify_all()
            while in_flight < want and time.time() < deadline:
                lock.wait(0.05)
            met = in_flight >= want
        # Stay in flight a little so the others see us too.
        time.sleep(0.2)
        with lock:
            in_flight -= 1
        return {"id": event.get("id"), "met": met, "pid": os.getpid(), "threads": THREADS}
    return {"id": event.get("id") if isinstance(event, dict) else None,
            "pid": os.getpid(), "batch_size": 1}


def loop():
    while True:
        with urllib.request.urlopen(API + "/invocation/next") as resp:
            rid = resp.headers["Lambda-Runtime-Aws-Request-Id"]
            batch_size = resp.headers.get("Virga-Batch-Size")
            raw = resp.read()
        event = json.loads(raw) if raw else {}
        if not batch_size and isinstance(event, dict) and event.get("fail"):
            post(f"/invocation/{rid}/error", {"errorType": "ItemFailed", "errorMessage": "asked to fail"})
            continue
        post(f"/invocation/{rid}/response", handle(event, batch_size))


threads = [threading.Thread(target=loop, daemon=True) for _ in range(THREADS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
