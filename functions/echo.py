#!/usr/bin/env python3
"""A Lambda custom runtime in plain Python (standard library only).

It speaks the AWS Lambda Runtime API exactly as a `bootstrap` on AWS does:
loop on invocation/next, post each result to invocation/{id}/response.
The handler echoes the event back, adding which instance served it.
"""
import json
import os
import urllib.request

API = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime"
INSTANCE = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")


def handler(event, request_id):
    print(f"echoing {len(json.dumps(event))} bytes", flush=True)
    return {"echo": event, "instance": INSTANCE, "request_id": request_id}


def main():
    while True:
        with urllib.request.urlopen(API + "/invocation/next") as resp:
            request_id = resp.headers["Lambda-Runtime-Aws-Request-Id"]
            raw = resp.read()
        event = json.loads(raw) if raw else None
        try:
            body, path = json.dumps(handler(event, request_id)).encode(), "response"
        except Exception as e:  # report, keep serving
            body = json.dumps({"errorType": type(e).__name__, "errorMessage": str(e)}).encode()
            path = "error"
        req = urllib.request.Request(f"{API}/invocation/{request_id}/{path}", data=body, method="POST")
        urllib.request.urlopen(req).close()


if __name__ == "__main__":
    main()
