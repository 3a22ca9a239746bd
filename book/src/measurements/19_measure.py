#!/usr/bin/env python3
"""Lesson 19's measurements: system calls per request (strace -c -f) for the echo
servers of lessons 05 (poll), 08 (epoll) and 19 (io_uring), and the server's CPU time
per request (from /proc/PID/stat) for 08 and 19, both under lesson 11's load client.

Run from the repository root, after building the release binaries:

    cargo build --release --bin 05_poll_server --bin 08_event_loop_server \\
        --bin 19_uring_server --bin 11_load_test_client
    python3 book/src/measurements/19_measure.py > book/src/measurements/19_uring.txt

Every run is bounded (a fixed number of round trips), on loopback, with a fresh
server; the CPU rounds alternate 08 and 19 so that a busy moment of the machine
falls on both; each figure is the median of the rounds, with the spread
(slowest - fastest) / median beside it.
"""

import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

RELEASE = "target/release/"
SERVERS = {
    "05": ["05_poll_server"],
    "08": ["08_event_loop_server"],
    "19": ["19_uring_server"],
}
ROUNDS = 7
TICKS = os.sysconf("SC_CLK_TCK")


def start(server, wrap=()):
    """Starts a server on a free port with --quiet; returns (process, port)."""
    command = list(wrap) + [RELEASE + SERVERS[server][0], "--quiet", "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = process.stdout.readline()
    if not first.startswith("listening on"):
        sys.exit(f"{server}: no 'listening on' line: {first!r} {process.stderr.read()}")
    return process, int(first.rsplit(":", 1)[1])


def server_pid(process, traced):
    """The server's pid: the process itself, or strace's child."""
    if not traced:
        return process.pid
    for _ in range(200):
        try:
            with open(f"/proc/{process.pid}/task/{process.pid}/children") as f:
                children = f.read().split()
            if children:
                return int(children[0])
        except OSError:
            pass
        time.sleep(0.01)
    sys.exit("cannot find the traced server")


def stop(process, pid):
    """SIGINT; returns the server's log."""
    os.kill(pid, signal.SIGINT)
    return process.communicate(timeout=30)[0]


def load(port, conns, requests):
    """Runs lesson 11's load client; returns its summary fields."""
    ran = subprocess.run(
        [RELEASE + "11_load_test_client", "--port", str(port), "--conns", str(conns),
         "--requests", str(requests), "--size", "64"],
        capture_output=True, text=True, timeout=300)
    summary = [line for line in ran.stdout.splitlines() if line.startswith("summary ")]
    if ran.returncode != 0 or not summary:
        sys.exit(f"load client failed: {ran.stdout} {ran.stderr}")
    fields = dict(part.split("=") for part in summary[0].split()[1:])
    if fields["errors"] != "0":
        sys.exit(f"load client saw errors: {summary[0]}")
    return fields


def cpu_ticks(pid):
    """utime + stime of the whole process (fields 14 and 15 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        after_name = f.read().rsplit(")", 1)[1].split()
    return int(after_name[11]) + int(after_name[12])


def syscalls(server, conns, requests):
    """strace -c -f of the server while the load runs: {name: calls}."""
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        process, port = start(server, wrap=("strace", "-c", "-f", "-o", out.name))
        pid = server_pid(process, True)
        load(port, conns, requests)
        stop(process, pid)
        counts = {}
        for line in out.read().splitlines():
            parts = line.split()
            # % time, seconds, usecs/call, calls, [errors], syscall
            if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
                counts[parts[-1]] = int(parts[3])
        return counts


def cpu_round(server, conns, requests):
    """One bounded run on a fresh server: (server CPU us per request, requests/s,
    io_uring_enter calls per request or None)."""
    process, port = start(server)
    before = cpu_ticks(process.pid)
    fields = load(port, conns, requests)
    used = cpu_ticks(process.pid) - before
    log = stop(process, process.pid)
    done = int(fields["requests"])
    match = re.search(r"(\d+) io_uring_enter", log)
    enters = int(match.group(1)) / done if match else None
    return used / TICKS * 1e6 / done, float(fields["rps"]), enters


def spread(values):
    middle = statistics.median(values)
    return (max(values) - min(values)) / middle if middle else 0.0


def main():
    print(f"# lesson 19 measurements, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"# {os.uname().sysname} {os.uname().release}, {os.cpu_count()} cores, "
          f"load average before: {os.getloadavg()[0]:.2f}")
    conns, requests = 50, 200
    total = conns * requests
    print(f"\n## system calls per request: strace -c -f, {conns} x 64 B, {total} round trips")
    for server in ["05", "08", "19"]:
        counts = syscalls(server, conns, requests)
        top = sorted(counts.items(), key=lambda kv: -kv[1])[:5]
        shown = ", ".join(f"{name} {calls / total:.2f}" for name, calls in top)
        print(f"{server}: {sum(counts.values()) / total:.2f} per request ({shown})")

    for conns, requests in [(50, 6000), (500, 600)]:
        total = conns * requests
        print(f"\n## server CPU per request, {conns} x 64 B, {total} round trips, "
              f"{ROUNDS} alternating rounds")
        results = {"08": [], "19": []}
        for _ in range(ROUNDS):
            for server in results:
                results[server].append(cpu_round(server, conns, requests))
        for server, runs in results.items():
            cpu = [run[0] for run in runs]
            rps = [run[1] for run in runs]
            enters = [run[2] for run in runs if run[2] is not None]
            batching = (f"; io_uring_enter per request median {statistics.median(enters):.3f}"
                        if enters else "")
            print(f"{server}: cpu/request median {statistics.median(cpu):.2f} us "
                  f"(spread {spread(cpu):.0%}; rounds {', '.join(f'{c:.2f}' for c in cpu)}); "
                  f"requests/s median {statistics.median(rps):.0f} (spread {spread(rps):.0%})"
                  f"{batching}")
        print(f"19 vs 08: {statistics.median([r[0] for r in results['19']]) / statistics.median([r[0] for r in results['08']]) - 1:+.0%} "
              "server CPU per request")
    print(f"\n# load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
