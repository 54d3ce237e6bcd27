#!/usr/bin/env python3
"""Per-invocation instruction costs from a callgrind dump (instructions.sh
writes one). callgrind_annotate cannot name the functions of a dump taken
after an earlier one; this reads the uncompressed file itself.

  callgrind-costs.py DUMP INVOCATIONS            self cost, top 40 functions
  callgrind-costs.py DUMP INVOCATIONS CALLEE     who calls CALLEE: cost, calls
"""
import collections
import sys


def main():
    path, n = sys.argv[1], int(sys.argv[2])
    callee = sys.argv[3] if len(sys.argv) > 3 else None
    own = collections.Counter()
    via = collections.Counter()
    calls = collections.Counter()
    fn = cfn = None
    pending = None
    for line in open(path):
        line = line.rstrip("\n")
        if line.startswith("fn="):
            fn = line[3:]
        elif line.startswith("cfn="):
            cfn = line[4:]
        elif line.startswith("calls="):
            pending = int(line[6:].split()[0])
        elif line[:1].isdigit() or line[:1] in ("+", "-", "*"):
            parts = line.split()
            if len(parts) < 2:
                continue
            cost = int(parts[1])
            if pending is None:
                own[fn] += cost
            else:
                if callee and callee in cfn:
                    via[fn] += cost
                    calls[fn] += pending
                pending = None
    total = sum(own.values())
    if callee:
        print(f"{callee}: {sum(via.values()) / n:.0f} instructions, "
              f"{sum(calls.values()) / n:.1f} calls per invocation")
        for f, c in via.most_common(25):
            print(f"{c / n:8.0f} {calls[f] / n:6.2f} calls  {f[:150]}")
        return
    print(f"{total / n:.0f} instructions per invocation")
    for f, c in own.most_common(40):
        print(f"{c / n:8.0f} {100 * c / total:5.1f}%  {f[:150]}")


main()
