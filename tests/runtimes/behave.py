#!/usr/bin/env python3
"""A Lambda custom runtime that misbehaves on request, for end-to-end tests.

The event's "action" says what to do (default: env ACTION, else echo): echo, sleep, crash, alloc,
error, print, garbage. The manifest's env MODE=init-error or MODE=exit makes
initialisation fail; INIT_SLEEP=seconds makes it slow.
"""
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request

HOSTPORT = os.environ["AWS_LAMBDA_RUNTIME_API"]

def thp_enabled():
    """This process's transparent huge pages setting (THP_enabled in
    /proc/self/status), or None where the kernel does not say."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("THP_enabled:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


API = f"http://{HOSTPORT}/2018-06-01/runtime"


def post(path, body, headers=None):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(API + path, data=data, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


mode = os.environ.get("MODE", "")
if mode == "init-error":
    post("/init/error", {"errorType": "BadConfig", "errorMessage": "missing setting FOO"},
         {"Lambda-Runtime-Function-Error-Type": "BadConfig"})
    sys.exit(1)
if mode == "exit":
    sys.exit(3)
# A slow initialisation (seconds), before the first invocation/next.
time.sleep(float(os.environ.get("INIT_SLEEP", "0")))

hog = []
while True:
    with urllib.request.urlopen(API + "/invocation/next") as resp:
        rid = resp.headers["Lambda-Runtime-Aws-Request-Id"]
        deadline = resp.headers["Lambda-Runtime-Deadline-Ms"]
        arn = resp.headers["Lambda-Runtime-Invoked-Function-Arn"]
        raw = resp.read()
    event = json.loads(raw) if raw else {}
    if isinstance(event, dict) and isinstance(event.get("Records"), list) \
            and event["Records"] and event["Records"][0].get("eventSource") == "aws:sqs":
        # An SQS batch: log each message; report bodies "fail" as partial failures.
        records = event["Records"]
        print(f"batch {len(records)}", flush=True)
        failures = []
        for r in records:
            print(f"msg {r['body']} {r['attributes']['ApproximateReceiveCount']}", flush=True)
            if r["body"] == "fail":
                failures.append({"itemIdentifier": r["messageId"]})
        post(f"/invocation/{rid}/response", {"batchItemFailures": failures})
        continue
    if isinstance(event, dict) and isinstance(event.get("Records"), list) and event["Records"]:
        src = event["Records"][0].get("eventSource") or event["Records"][0].get("EventSource")
        if src == "aws:s3":
            print(f"s3 {event['Records'][0]['eventName']} {event['Records'][0]['s3']['object']['key']}", flush=True)
        elif src == "aws:sns":
            print(f"sns {event['Records'][0]['Sns']['Message']}", flush=True)
    default = os.environ.get("ACTION", "echo")
    action = event.get("action", default) if isinstance(event, dict) else default
    if action == "append":
        # Evidence of delivery that survives the platform: one line per delivery.
        with open(event["path"], "a") as f:
            f.write(rid + "\n")
    if action == "fail_unless" and not os.path.exists(event["path"]):
        post(f"/invocation/{rid}/error", {"errorType": "NotYet", "errorMessage": "flag file missing"},
             {"Lambda-Runtime-Function-Error-Type": "NotYet"})
        continue
    if action == "sleep":
        time.sleep(float(event.get("seconds", 1)))
    elif action == "crash":
        os._exit(7)
    elif action == "alloc":
        # Written, not just reserved: the pages count against the memory limit.
        hog.append(bytearray(b"x") * (int(event["mb"]) << 20))
    elif action == "error":
        post(f"/invocation/{rid}/error", {"errorType": "ValueError", "errorMessage": "bad input"},
             {"Lambda-Runtime-Function-Error-Type": "ValueError"})
        continue
    elif action == "print":
        for i in range(3):
            print(f"line {i} of {rid}", flush=True)
    elif action == "garbage":
        s = socket.create_connection(tuple(HOSTPORT.rsplit(":", 1)))
        s.sendall(b"\x00\xffNOT HTTP AT ALL\r\n\r\n")
        s.close()
        status = post("/invocation/not-a-request-id/response", {"x": 1})
        assert status == 400, status
    body = {
        "echo": event,
        "pid": os.getpid(),
        "env": {k: os.environ.get(k) for k in (
            "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_FUNCTION_VERSION",
            "AWS_LAMBDA_INITIALIZATION_TYPE", "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME",
            "LAMBDA_TASK_ROOT", "_HANDLER", "GREETING")},
        "deadline_ms": int(deadline),
        "thp": thp_enabled(),
        "arn": arn,
    }
    post(f"/invocation/{rid}/response", body)
