#!/usr/bin/env python3
"""Lesson 19: what single-shot receives cost against the multishot ones they replaced
(finding 1 of the second engineer's review), by 19_measure.py's method: server CPU per
request from /proc/PID/stat and io_uring_enter calls per request from the server's last
line, under lesson 11's load client, a fresh server per run, the two alternating.

    python3 book/src/measurements/19_single_shot.py OLD NEW CLIENT ROUNDS [A B]

OLD: a release 19_uring_server built at f24227d (multishot receive); NEW: one built
with single-shot receives; CLIENT: a release 11_load_test_client. A and B name them
(by default "multishot" and "single-shot"; with OLD lesson 08's server, "08" and "19").
"""

import importlib.util
import os
import statistics
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("measure", os.path.join(here, "19_measure.py"))
measure = importlib.util.module_from_spec(spec)
spec.loader.exec_module(measure)

old, new, client, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
a, b = sys.argv[5:7] if len(sys.argv) >= 7 else ("multishot", "single-shot")
measure.RELEASE = ""
measure.SERVERS[a] = [old]
measure.SERVERS[b] = [new]
real_run = measure.subprocess.run


def run(command, **kwargs):
    if command[0] == "11_load_test_client":
        command = [client] + command[1:]
    return real_run(command, **kwargs)


measure.subprocess.run = run

print(f"# lesson 19, {a} vs {b}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
print(f"# {os.uname().release}, {os.cpu_count()} cores, load average before: {os.getloadavg()[0]:.2f}")
for conns, requests in [(50, 6000), (500, 600)]:
    print(f"\n## {conns} x 64 B, {conns * requests} round trips, {rounds} alternating rounds")
    results = {a: [], b: []}
    for _ in range(rounds):
        for server in results:
            results[server].append(measure.cpu_round(server, conns, requests))
    for server, runs in results.items():
        cpu = [r[0] for r in runs]
        enters = [r[2] for r in runs if r[2] is not None]
        print(f"{server}: cpu/request median {statistics.median(cpu):.2f} us "
              f"(spread {measure.spread(cpu):.0%}; rounds {', '.join(f'{c:.2f}' for c in cpu)}); "
              + (f"io_uring_enter per request median {statistics.median(enters):.3f}; "
                 if enters else "")
              + f"requests/s median {statistics.median([r[1] for r in runs]):.0f}")
    ratio = statistics.median([r[0] for r in results[b]]) / statistics.median(
        [r[0] for r in results[a]])
    print(f"{b} vs {a}: {ratio - 1:+.0%} server CPU per request")
print(f"\n# load average after: {os.getloadavg()[0]:.2f}")
