"""Splits each c=1 request of `timeline.sh`'s trace into its steps.

Reads `perf script -F comm,pid,tid,time,event,trace` on stdin; argv[1] is
the pid of `virga serve`, argv[2] the pids below it (comma-separated). Each request is the chain: wrk writes it, the
platform reads it (gateway), writes the job to the runtime (Runtime API
`next` answer), the runtime reads it and writes its reply, the platform
reads the reply, writes the answer to wrk, wrk reads it. Prints the median
and quartiles of every step in microseconds."""

import re
import statistics
import sys

platform = int(sys.argv[1])
runtime = {int(x) for x in sys.argv[2].split(",") if x and int(x) != platform}
line_re = re.compile(
    r"^\s*(\S.*?)\s+(\d+)/(\d+)\s+([\d.]+):\s+syscalls:sys_(enter|exit)_(\w+):\s*(.*)$"
)
READS = {"read", "recvfrom"}
WRITES = {"write", "sendto", "writev"}
pending = {}  # tid -> (t_enter, syscall, fd)
calls = []  # (t_enter, t_exit, who, syscall, fd, ret)
comms = {}


def who(comm, pid):
    if pid == platform:
        return "P"
    if comm == "wrk":
        return "C"
    if pid in runtime:
        return "R"
    return None


for line in sys.stdin:
    m = line_re.match(line)
    if not m:
        continue
    comm, pid, tid, t, kind, sc, rest = m.groups()
    pid, tid, t = int(pid), int(tid), float(t) * 1e6
    if kind == "enter":
        fd = re.search(r"fd: (0x[0-9a-f]+)", rest)
        pending[tid] = (t, sc, int(fd.group(1), 16) if fd else -1)
    else:
        start = pending.pop(tid, None)
        if start is None or start[1] != sc:
            continue
        ret = int(rest.strip(), 16) if rest.strip().startswith("0x") else int(rest.strip() or 0)
        if ret >= 1 << 63:
            ret -= 1 << 64
        w = who(comm, pid)
        if w and sc in READS | WRITES and ret > 0:
            if w == "R":
                comms[comm] = comms.get(comm, 0) + 1
            calls.append((start[0], t, w, sc, start[2], ret))

# Each call at the moment it moves data: a read when it returns (a blocking
# read enters long before its data is written), a write when it enters.
calls = [(x if sc in WRITES else y, y, w, sc, fd, ret) for (x, y, w, sc, fd, ret) in calls]
calls.sort()
steps = {
    "wrk write -> platform has the request": [],
    "platform: request -> job written to runtime": [],
    "runtime has the job": [],
    "runtime: job -> reply written": [],
    "platform has the reply": [],
    "platform: reply -> answer written to wrk": [],
    "wrk has the answer": [],
    "total (wrk write -> wrk read)": [],
    "  of which in the platform (2 + 6)": [],
    "  of which the outer exchange (1 + 7)": [],
}
names = list(steps)


def find(i, pred):
    while i < len(calls):
        if pred(calls[i]):
            return i
        i += 1
    return None


# The two connections of the platform: the gateway's (the fd most often
# read first after wrk writes) and the Runtime API's (the fd most often
# written just before the runtime reads).
from collections import Counter

first_reads, ra_writes = Counter(), Counter()
for k, c in enumerate(calls):
    if c[2] == "C" and c[3] in WRITES:
        j = find(k + 1, lambda x: x[2] == "P" and x[3] in READS)
        if j is not None:
            first_reads[calls[j][4]] += 1
    if c[2] == "R" and c[3] in READS:
        j = k - 1
        while j >= 0 and not (calls[j][2] == "P" and calls[j][3] in WRITES):
            j -= 1
        if j >= 0:
            ra_writes[calls[j][4]] += 1
gw = first_reads.most_common(1)[0][0]
ra = ra_writes.most_common(1)[0][0]

i = 0
n = skipped = 0
wrk_gap = []
while True:
    a = find(i, lambda c: c[2] == "C" and c[3] in WRITES)
    if a is None:
        break
    b = find(a + 1, lambda c: c[2] == "P" and c[3] in READS and c[4] == gw)
    c = b is not None and find(b + 1, lambda c: c[2] == "P" and c[3] in WRITES and c[4] == ra)
    d = c and find(c + 1, lambda c: c[2] == "R" and c[3] in READS)
    e = d and find(d + 1, lambda c: c[2] == "R" and c[3] in WRITES)
    f = e and find(e + 1, lambda c: c[2] == "P" and c[3] in READS and c[4] == ra)
    g = f and find(f + 1, lambda c: c[2] == "P" and c[3] in WRITES and c[4] == gw)
    h = g and find(g + 1, lambda c: c[2] == "C" and c[3] in READS)
    if not h:
        break
    nxt = find(a + 1, lambda c: c[2] == "C" and c[3] in WRITES)
    # A chain must not skip a request of wrk's (c=1: one at a time).
    if nxt is not None and nxt < h:
        skipped += 1
        i = a + 1
        continue
    if nxt is not None:
        wrk_gap.append(calls[nxt][0] - calls[h][0])
    t = [calls[k][0] for k in (a, b, c, d, e, f, g, h)]
    for k in range(7):
        steps[names[k]].append(t[k + 1] - t[k])
    steps[names[7]].append(t[7] - t[0])
    steps[names[8]].append((t[2] - t[1]) + (t[6] - t[5]))
    steps[names[9]].append((t[1] - t[0]) + (t[7] - t[6]))
    n += 1
    i = h + 1
steps["wrk: answer read -> next request written"] = wrk_gap

print(f"{n} requests traced ({skipped} not matched); runtime process(es): {', '.join(sorted(comms))}")
print(f"{'step (us)':<46} {'p25':>7} {'p50':>7} {'p75':>7}")
for k, (name, v) in enumerate(steps.items()):
    if not v:
        continue
    q = statistics.quantiles(v, n=4)
    label = f"{k + 1}. {name}" if k < 7 else name
    if k == 10:
        label = name
    print(f"{label:<46} {q[0]:>7.1f} {q[1]:>7.1f} {q[2]:>7.1f}")
