#!/usr/bin/env python3
"""Runs a 100k UDP converge with --metrics and samples the CPU time of its
worker processes: steady-state CPU seconds per second, and CPU seconds from
the roll-out until the phase ends. usage: [NODES=N RACKS=R OUT=dir] loadtest/scripts/cpu_run.py BIN TAG"""
import os, sys, time, subprocess, json, urllib.request
bin_, tag = sys.argv[1], sys.argv[2]
d = os.environ.get("OUT", "./cpu-out"); os.makedirs(d, exist_ok=True)
tck = os.sysconf("SC_CLK_TCK")
def load(): return open("/proc/loadavg").read().split()[:3]
p = subprocess.Popen([bin_, "run", "--net", "udp", "--strategy", "tree", "--nodes", os.environ.get("NODES","100000"), "--racks", os.environ.get("RACKS","200"),
     "--scenario", "converge", "--metrics", "127.0.0.1:9465", "--json", f"{d}/{tag}.json"],
     stdout=open(f"{d}/{tag}.out", "w"), stderr=subprocess.STDOUT)
def workers():
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit(): continue
        try:
            st = open(f"/proc/{pid}/stat").read()
            if int(st.rsplit(")", 1)[1].split()[1]) == p.pid: out.append(int(pid))
        except Exception: pass
    return out
def cpu(pids):
    s = 0
    for pid in pids:
        try:
            f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            s += int(f[11]) + int(f[12])
        except Exception: pass
    return s / tck
def busy():
    f = open("/proc/stat").readline().split()[1:]
    v = list(map(int, f))
    return (sum(v) - v[3] - v[4]) / tck
def steal():
    # CPU time the hypervisor gave to others: a run with steal is slower for
    # reasons outside the code.
    return int(open("/proc/stat").readline().split()[8]) / tck
def phase():
    try:
        t = urllib.request.urlopen("http://127.0.0.1:9465/metrics", timeout=1).read().decode()
        for l in t.splitlines():
            if l.startswith("loadtest_phase_total"): return float(l.split()[1])
    except Exception: return None
res = {"load_start": load()}
state = "start"; pids = []
while p.poll() is None:
    ph = phase()
    if not pids:
        pids = workers()
        root = [q for q in pids if "--lo\x000\x00--hi\x001" in open(f"/proc/{q}/cmdline").read()]
    if state == "start" and ph == float(os.environ.get("NODES","100000")): state = "sync"
    elif state == "sync" and ph == 0:
        # Every worker exists by now (the first look may have come before
        # the last one started).
        pids = workers()
        root = [q for q in pids if "--lo\x000\x00--hi\x001" in open(f"/proc/{q}/cmdline").read()]
        state = "steady"; time.sleep(20); c0 = cpu(pids); t0 = time.time(); s0 = steal()
        st = subprocess.run(["perf", "stat", "-x,", "-e", "syscalls:sys_enter_sendto,syscalls:sys_enter_sendmmsg,syscalls:sys_enter_recvfrom,syscalls:sys_enter_recvmmsg",
                             "-p", ",".join(map(str, pids)), "--", "sleep", "10"], capture_output=True, text=True).stderr
        c1 = cpu(pids); t1 = time.time()
        res["steady_cpu_per_s"] = (c1 - c0) / (t1 - t0); res["load_steady"] = load()
        res["steady_steal_per_s"] = (steal() - s0) / (t1 - t0)
        res["anon_huge_mb"] = [int(l.split()[1]) // 1024 for l in open("/proc/meminfo") if l.startswith("AnonHugePages")][0]
        for line in st.splitlines():
            f = line.split(",")
            if len(f) > 2 and f[2].startswith("syscalls:"): res[f[2].split("_enter_")[1]] = int(f[0])
        if res.get("sendto"):
            res["steady_cpu_us_per_datagram"] = (c1 - c0) / res["sendto"] * 1e6
            res["steady_datagrams_per_s"] = res["sendto"] / (t1 - t0)
    elif state == "steady" and ph == float(os.environ.get("NODES","100000")):
        state = "converge"; series = [(time.time(), cpu(pids), busy(), cpu(root), steal())]
    elif state == "converge":
        series.append((time.time(), cpu(pids), busy(), cpu(root), steal()))
        if time.time() - series[0][0] > 30: state = "done"
    time.sleep(0.05)
res["load_end"] = load()
r = json.load(open(f"{d}/{tag}.json"))
if state in ("converge", "done"):
    end = series[0][0] + r["converge_max_s"]
    upto = [(c, b) for (t, c, b, _, _) in series if t <= end]
    res["converge_root_cpu_s"] = [x for (t, _, _, x, _) in series if t <= end][-1] - series[0][3]
    res["converge_steal_s"] = [x for (t, _, _, _, x) in series if t <= end][-1] - series[0][4]
    res["converge_cpu_s"] = upto[-1][0] - series[0][1]
    res["converge_others_cpu_s"] = (upto[-1][1] - series[0][2]) - res["converge_cpu_s"]
    res["converge_cpu_per_s"] = res["converge_cpu_s"] / r["converge_max_s"]
for k in ["reached", "converge_p50_s", "converge_p99_s", "down_p50_s", "down_p99_s", "datagrams_total", "max_datagram_bytes", "initial_sync_s", "root_rx_datagrams_per_hello", "wall_s"]:
    res[k] = r.get(k)
print(tag, json.dumps(res))
open(f"{d}/results.txt", "a").write(tag + " " + json.dumps(res) + "\n")
