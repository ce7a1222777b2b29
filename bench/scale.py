#!/usr/bin/env python3
"""Thousands of hosts on a small cluster (issue 19).

HOSTS simulated hosts, each with its own TCP connection, send METRICS
metrics every 10 s (plaintext) to one of 2 relays that follow a 3-node
cluster at replication 2 (schema 10s:1h,1m:1d). Hosts are spread evenly
over each 10 s round. Every value is a function of (host, metric, round),
so everything can be checked at the end.

Measured:
- creation: seconds from the first point until every series has both of
  its files (sum of the members' `graunt_creates_total` reaching
  2 x series; the members' few self-metric files are within that count);
- steady state (the second half of the rounds): mean CPU of each member
  (share of one core), cache points at the start and end of the window;
- `sumSeries(hosts.*.cpu.user)` over 1 h while the load runs (every 5 s,
  rotating over the members) and after it (median of 20, cluster and
  `local=1`), with any `X-Graunt-Partial` answer counted;
- after the load: seconds until every member's cache is drained;
- raft: log lines of the members naming a timeout;
- verification: every member is asked (`local=1`) for every host's
  series; each series must be on exactly two members with every value
  as sent.

Usage: cargo build --release -p graunt && python3 bench/scale.py --hosts 2000
"""

import argparse
import asyncio
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from render import free_port  # noqa: E402
from rebalance import Member, get, wait  # noqa: E402

GROUPS = ["cpu", "memory", "disk", "net", "proc"]


def metric_names(count):
    """`cpu.user` first (the queried one), then group.mNN."""
    names = ["cpu.user"]
    for m in range(1, count):
        names.append("%s.m%02d" % (GROUPS[m * len(GROUPS) // count], m))
    return names


def value(host, m, r, metrics):
    return float((host * metrics + m) * 1000 + r)


def host_name(host):
    return "h%05d" % host


# --- the load: one process, asyncio, a connection per host --------------------

async def generate(relays, hosts, metrics, rounds, t0, interval):
    names = metric_names(metrics)
    writers = []
    for h in range(hosts):
        port = relays[h % len(relays)]
        for attempt in range(50):
            try:
                _, w = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                await asyncio.sleep(0.1)
        else:
            raise SystemExit("cannot connect to the relay on %d" % port)
        writers.append(w)
    loop = asyncio.get_running_loop()
    start = loop.time() + (t0 - time.time())
    sent = 0
    for r in range(rounds):
        ts = t0 + r * interval
        for h in range(hosts):
            at = start + r * interval + h * interval / hosts
            delay = at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            prefix = "hosts.%s." % host_name(h)
            payload = "".join("%s%s %d %d\n" % (prefix, names[m], value(h, m, r, metrics), ts)
                              for m in range(metrics))
            writers[h].write(payload.encode())
            sent += metrics
        await asyncio.gather(*(w.drain() for w in writers))
    for w in writers:
        w.close()
    await asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)
    print(json.dumps({"sent": sent}), flush=True)


# --- the cluster ----------------------------------------------------------------

def prom(port):
    out = {}
    for line in get(port, "/metrics").decode().splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            out[k] = float(v)
    return out


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def disk_written_mb():
    """Megabytes written to the machine's disks so far (all of them)."""
    total = 0
    for dev in os.listdir("/sys/block"):
        if dev.startswith(("loop", "zram", "ram")):
            continue
        with open("/sys/block/%s/stat" % dev) as f:
            total += int(f.read().split()[6]) * 512
    return total / 1e6


def rss_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def render(port, target, extra=None, timeout=120):
    params = {"target": target, "from": "-1h", "format": "json"}
    params.update(extra or {})
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    t = time.perf_counter()
    c.request("POST", "/render", urllib.parse.urlencode(params),
              {"Content-Type": "application/x-www-form-urlencoded"})
    r = c.getresponse()
    data = r.read()
    elapsed = time.perf_counter() - t
    if r.status != 200:
        raise SystemExit("render %s: %d %r" % (target, r.status, data[:300]))
    return elapsed, r.getheader("X-Graunt-Partial"), json.loads(data)


def timed_sum(port, extra=None):
    elapsed, partial, answer = render(port, "sumSeries(hosts.*.cpu.user)", extra)
    if not answer:
        raise SystemExit("sumSeries answered nothing")
    return elapsed, partial


def verify(members, hosts, metrics, rounds, t0, interval):
    """Every series on exactly two members, every value as sent."""
    names = metric_names(metrics)
    copies = {}
    wrong = 0
    extra = {"local": "1", "from": str(t0 - interval), "until": str(t0 + rounds * interval)}
    for m in members:
        for first in range(0, hosts, 20):
            group = ",".join(host_name(h) for h in range(first, min(hosts, first + 20)))
            _, _, answer = render(m.http, "hosts.{%s}.*.*" % group, extra)
            for s in answer:
                name = s["target"]
                parts = name.split(".")
                h = int(parts[1][1:])
                mi = names.index(parts[2] + "." + parts[3])
                got = {ts: v for v, ts in s["datapoints"] if v is not None}
                want = {t0 + r * interval: value(h, mi, r, metrics) for r in range(rounds)}
                if got != want:
                    wrong += 1
                    if wrong <= 5:
                        print("wrong on node %d: %s %s" % (m.id, name, sorted(set(want.items()) ^ set(got.items()))[:4]),
                              file=sys.stderr)
                copies[name] = copies.get(name, 0) + 1
    series = hosts * metrics
    return {
        "series_found": len(copies),
        "series_expected": series,
        "series_not_on_two": sum(1 for c in copies.values() if c != 2) + (series - len(copies)),
        "copies_with_wrong_values": wrong,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=2000)
    ap.add_argument("--metrics", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=18)
    ap.add_argument("--interval", type=int, default=10)
    ap.add_argument("--graunt", default="target/release/graunt")
    ap.add_argument("--label", default="")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--linger", type=float, default=0,
                    help="seconds to keep the cluster up after the run (to look at it)")
    ap.add_argument("--generate", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.generate:
        g = json.loads(args.generate)
        asyncio.run(generate(g["relays"], args.hosts, args.metrics, args.rounds, g["t0"], args.interval))
        return

    binary = os.path.abspath(args.graunt)
    work = tempfile.mkdtemp(prefix="graunt-scale-bench-")
    procs = []
    try:
        schemas = os.path.join(work, "schemas.conf")
        with open(schemas, "w") as f:
            f.write("[all]\npattern = .*\nretentions = 10s:1h,1m:1d\n")
        conf = os.path.join(work, "node.toml")
        with open(conf, "w") as f:
            f.write('schemas = "%s"\n' % schemas)
        logs = [os.path.join(work, "n%d.log" % i) for i in (1, 2, 3)]
        members = [Member(binary, work, 1, conf, log=logs[0])]
        procs.append(members[0].proc)
        seed = "127.0.0.1:%d" % members[0].http
        for i in (2, 3):
            members.append(Member(binary, work, i, conf, seed, log=logs[i - 1]))
            procs.append(members[-1].proc)
        wait("three members", lambda: len(json.loads(get(members[0].http, "/cluster/state"))["members"]) == 3)

        relays = []
        relay_procs = []
        for i in range(2):
            port = free_port()
            path = os.path.join(work, "relay%d.toml" % i)
            with open(path, "w") as f:
                f.write('cluster = ["%s"]\nmax_connections = 20000\n' % seed)
                f.write('[[tenant]]\nname = "hosts"\nmax_age = 100000000\n')
                f.write('listener = [{ protocol = "line", addr = "127.0.0.1:%d" }]\n' % port)
            p = subprocess.Popen([binary, "relay", "--config", path], stdout=subprocess.DEVNULL,
                                 stderr=open(os.path.join(work, "relay%d.log" % i), "w"))
            procs.append(p)
            relay_procs.append(p)
            wait("relay %d" % i, lambda: socket.create_connection(("127.0.0.1", port)).close() or True)
            relays.append(port)
        # The relays must know the ring before the first point.
        time.sleep(3)

        series = args.hosts * args.metrics
        now = time.time()
        t0 = int(now) - int(now) % args.interval + 2 * args.interval
        gen = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--hosts", str(args.hosts),
                                "--metrics", str(args.metrics), "--rounds", str(args.rounds),
                                "--interval", str(args.interval),
                                "--generate", json.dumps({"relays": relays, "t0": t0})],
                               stdout=subprocess.PIPE)
        procs.append(gen)
        wait("the first round", lambda: time.time() >= t0, timeout=60)
        load_end = t0 + args.rounds * args.interval
        steady_from = t0 + (args.rounds // 2) * args.interval

        created_at = None
        samples = []  # (time, cpu per member, cache per member)
        during = []
        partial = 0
        next_query = t0 + 2 * args.interval
        q = 0
        steady = None
        while time.time() < load_end:
            t = time.time()
            stats = [prom(m.http) for m in members]
            cpu = [cpu_seconds(m.proc.pid) for m in members]
            relay_cpu = [cpu_seconds(p.pid) for p in relay_procs] + [disk_written_mb()]
            cache = [s.get("graunt_cache_points", 0) for s in stats]
            creates = sum(s.get("graunt_creates_total", 0) for s in stats)
            if created_at is None and creates >= 2 * series:
                created_at = t - t0
                print("every series created after %.1f s" % created_at, file=sys.stderr)
            samples.append((t, cpu, cache, relay_cpu))
            if steady is None and t >= steady_from:
                steady = len(samples) - 1
            if t >= next_query:
                elapsed, part = timed_sum(members[q % 3].http)
                q += 1
                during.append(elapsed)
                partial += part is not None
                next_query = t + 5
            time.sleep(max(0.0, 1.0 - (time.time() - t)))

        out, _ = gen.communicate(timeout=300)
        sent = json.loads(out.decode().strip().splitlines()[-1])["sent"]
        end = samples[-1]
        first = samples[steady if steady is not None else len(samples) // 2]
        span = end[0] - first[0]
        node_cpu = [(b - a) / span for a, b in zip(first[1], end[1])]
        relay_cpu = [(b - a) / span for a, b in zip(first[3], end[3])]
        disk_mb_s = relay_cpu.pop()
        caches = [s[2] for s in samples[steady:]] if steady is not None else []

        def drained():
            stats = [prom(m.http) for m in members]
            return all(s.get("graunt_cache_points", 0) < 1000 for s in stats) and \
                sum(s.get("graunt_committed_points_total", 0) for s in stats) >= 2 * sent
        wait("the caches to drain", drained, timeout=900)
        drain = time.time() - load_end
        if created_at is None:
            created_at = time.time() - t0
        timed_sum(members[0].http)
        after = []
        for i in range(20):
            elapsed, part = timed_sum(members[i % 3].http)
            after.append(elapsed)
            partial += part is not None
        local = [timed_sum(members[0].http, {"local": "1"})[0] for _ in range(20)]

        timeouts = 0
        for m in members:
            with open(m.log, errors="replace") as f:
                timeouts += sum(1 for line in f if "timeout" in line.lower())
        rss = [rss_mib(m.proc.pid) for m in members]
        checked = verify(members, args.hosts, args.metrics, args.rounds, t0, args.interval)

        result = {
            "label": args.label,
            "hosts": args.hosts,
            "series": series,
            "points_per_second": args.hosts * args.metrics / args.interval,
            "points_sent": sent,
            "created_all_after_s": round(created_at, 1),
            "node_cpu_steady": [round(c, 3) for c in node_cpu],
            "node_cpu_steady_mean": round(sum(node_cpu) / len(node_cpu), 3),
            "relay_cpu_steady": [round(c, 3) for c in relay_cpu],
            "disk_written_mb_per_s_steady": round(disk_mb_s, 1),
            "cache_points_steady_first": caches[0] if caches else None,
            "cache_points_steady_last": caches[-1] if caches else None,
            "cache_points_steady_max": [max(c[i] for c in caches) for i in range(3)] if caches else None,
            "drained_after_load_s": round(drain, 1),
            "sum_during_ms_median": round(statistics.median(during) * 1000, 1) if during else None,
            "sum_during_ms_max": round(max(during) * 1000, 1) if during else None,
            "sum_after_ms_median": round(statistics.median(after) * 1000, 1),
            "sum_after_local_ms_median": round(statistics.median(local) * 1000, 1),
            "partial_answers": partial,
            "raft_timeout_lines": timeouts,
            "node_rss_mib": [round(r) for r in rss],
        }
        result.update(checked)
        print(json.dumps(result, indent=1), flush=True)
        if args.linger:
            print("members' HTTP ports: %s; up for %.0f s" % ([m.http for m in members], args.linger),
                  file=sys.stderr, flush=True)
            time.sleep(args.linger)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        if args.keep:
            print("kept " + work, file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
