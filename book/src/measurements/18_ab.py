#!/usr/bin/env python3
"""A/B: 08 level-triggered vs 18 current-thread, alternating rounds, 50 x 64 B with 0 and 5,000 idle."""
import subprocess, sys, time, os, re, statistics, resource
B = "target/release/"  # run from the repository root
SERVERS = [("08 epoll, level-triggered", [B + "08_event_loop_server", "--quiet"]),
           ("18 tokio, current-thread", [B + "18_async_server", "--quiet", "--runtime", "current"])]
LOADS = [("50 x 64 B", []), ("50 x 64 B + 5,000 idle", ["--idle", "5000"])]
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
tick = os.sysconf("SC_CLK_TCK")
def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / tick
res = {}
for r in range(ROUNDS):
    for lname, largs in LOADS:
        for sname, cmd in SERVERS:
            s = subprocess.Popen(cmd + ["--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            line = s.stdout.readline()
            port = line.strip().rsplit(":", 1)[1]
            c = subprocess.Popen([B + "11_load_test_client", "--port", port, "--conns", "50", "--size", "64",
                                  "--duration", "2", "--threads", "1"] + largs, stdout=subprocess.PIPE, text=True)
            c0 = None; out = []
            for l in c.stdout:
                out.append(l)
                if l.startswith("measuring: started"): c0 = cpu(s.pid)
                if l.startswith("measuring: finished"): c1 = cpu(s.pid)
            c.wait(timeout=120)
            s.send_signal(2); s.wait(timeout=10)
            m = re.search(r"summary requests=(\d+) seconds=([\d.]+) rps=([\d.]+)", "".join(out))
            n, secs, rps = int(m.group(1)), float(m.group(2)), float(m.group(3))
            us = (c1 - c0) / n * 1e6 if c0 is not None else float("nan")
            res.setdefault((lname, sname), []).append((rps, us))
            print(f"round {r+1} {sname:28} {lname:24} {rps:9.0f} req/s {us:5.2f} us/request", flush=True)
print()
for lname, _ in LOADS:
    for sname, _ in SERVERS:
        v = res[(lname, sname)]
        print(f"{lname:24} {sname:28} median {statistics.median(x for x,_ in v):9.0f} req/s, {statistics.median(y for _,y in v):5.2f} us/request; rounds " + ", ".join(f"{x:.0f}/{y:.2f}" for x,y in v))
