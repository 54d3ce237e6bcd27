#!/usr/bin/env python3
"""Where a process's anonymous memory sits, over time.

  anon-by-mapping.py sample PID OUT.jsonl [EVERY_S]   one line per sample
  anon-by-mapping.py show OUT.jsonl                   a table over time

Each sample keeps the mappings with anonymous pages (/proc/PID/smaps).
mimalloc reserves its arenas as 1 GiB mappings, so "arena" is what the
Rust heap holds; "other" is glibc's heaps (the C libraries), thread stacks
and the rest.
"""
import json
import re
import sys
import time

HEADER = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S+)")


def snapshot(pid):
    maps, cur = [], None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            m = HEADER.match(line)
            if m:
                size_kb = (int(m.group(2), 16) - int(m.group(1), 16)) // 1024
                cur = {"start": m.group(1), "size_kb": size_kb, "anon_kb": 0}
                maps.append(cur)
            elif line.startswith("Anonymous:"):
                cur["anon_kb"] = int(line.split()[1])
    return [m for m in maps if m["anon_kb"]]


def sample(pid, out, every):
    t0 = time.time()
    with open(out, "w") as o:
        while True:
            try:
                maps = snapshot(pid)
            except OSError:
                return
            o.write(json.dumps({"t": round(time.time() - t0, 1), "maps": maps}) + "\n")
            o.flush()
            time.sleep(every)


def show(path):
    print(f"{'t s':>6} {'anon MB':>8} {'arena MB':>9} {'other MB':>9}")
    for line in open(path):
        r = json.loads(line)
        arena = sum(m["anon_kb"] for m in r["maps"] if m["size_kb"] >= 1 << 20)
        total = sum(m["anon_kb"] for m in r["maps"])
        print(f"{r['t']:>6.0f} {total / 1024:>8.1f} {arena / 1024:>9.1f} {(total - arena) / 1024:>9.1f}")


if __name__ == "__main__":
    if sys.argv[1] == "sample":
        sample(sys.argv[2], sys.argv[3], float(sys.argv[4]) if len(sys.argv) > 4 else 30)
    else:
        show(sys.argv[2])
