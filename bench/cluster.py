#!/usr/bin/env python3
"""Cluster reads and ring changes (issue 8).

1. `/render` latency of sumSeries over 1,000 series x 1 day at 10 s on a
   3-node cluster (each file on its two owners, as `graunt relay lookup`
   places it with replication 2) against the same files on one node.
   Median of sequential POSTs after a warm-up, `now` fixed. The same for
   groupByNode over those and 100 more (two groups, their maximum, which
   folds on each member however fractional the values) and countSeries;
   and sumSeries over 300 series that stopped reporting an hour ago (each
   copy lacks its last hour, which the other holder is asked for).
2. A membership change: a 4th node joins; for each of 2 relays following
   the cluster (poll every 100 ms), the time from `graunt cluster join`
   returning to the relay's "ring rebuilt" log line, and the rebuild itself.

With `--old-graunt BIN` one member (`--old-member`, 3 by default; 1 is
the one the latency is asked of) runs an earlier version: every member is
then asked every target and must answer as the single node does, and each
member's fold counters are printed (a mixed-version check, for rolling
upgrades).

Usage: cargo build --release -p graunt && python3 bench/cluster.py
"""

import argparse
import datetime
import http.client
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import render  # noqa: E402


def post_render(port, target):
    body = urllib.parse.urlencode({"target": target, "from": "-1d", "now": str(render.NOW),
                                   "format": "json"})
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    t = time.perf_counter()
    c.request("POST", "/render", body, {"Content-Type": "application/x-www-form-urlencoded"})
    r = c.getresponse()
    data = r.read()
    elapsed = time.perf_counter() - t
    if r.status != 200 or b"datapoints" not in data:
        raise SystemExit("bad answer %d: %r" % (r.status, data[:300]))
    return elapsed, data


TARGETS = [
    ("sumSeries of 1,000 series x 1 day", render.SUM),
    ("groupByNode(…, 'max') of 1,100 series x 1 day, 2 groups", "groupByNode(servers.*.cpu.*,3,'max')"),
    ("countSeries of 1,000 series x 1 day", "countSeries(servers.*.cpu.user)"),
    ("sumSeries of 300 series x 1 day that stopped an hour ago", "sumSeries(stopped.*.cpu)"),
]

STOPPED = r"""
import sys, whisper, random
path, seed, now = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
whisper.create(path, [(10, 8640)], xFilesFactor=0.0, aggregationMethod='average')
r = random.Random(seed)
points = [(now - i * 10, r.random() * 100) for i in range(360, 8640)]
whisper.update_many(path, points, now=now)
"""


def build_stopped(python, whisper_dir, series):
    """Day-long series whose last hour is empty, as from hosts gone an hour ago."""
    protos = []
    for i in range(4):
        p = os.path.join(whisper_dir, "stopped-proto%d.wsp" % i)
        subprocess.run([python, "-c", STOPPED, p, str(100 + i), str(render.NOW)], check=True)
        protos.append(p)
    for n in range(series):
        d = os.path.join(whisper_dir, "stopped", "host%04d" % n)
        os.makedirs(d, exist_ok=True)
        shutil.copyfile(protos[n % len(protos)], os.path.join(d, "cpu.wsp"))
    for p in protos:
        os.remove(p)


def latency(port, samples, target):
    post_render(port, target)
    times = [post_render(port, target)[0] for _ in range(samples)]
    return statistics.median(times)


def start_member(binary, data, node_id, http_port, pickle_port):
    proc = subprocess.Popen(
        [binary, "serve", "--data-dir", data, "--node-id", str(node_id),
         "--http-addr", "127.0.0.1:%d" % http_port, "--pickle-addr", "127.0.0.1:%d" % pickle_port,
         "--line-addr", "", "--carbonlink-addr", "", "--statsd-addr", ""],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    render.wait_http(http_port, "/version")
    return proc


def cluster(binary, *args):
    subprocess.run([binary, "cluster"] + list(args), check=True, stdout=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=30)
    ap.add_argument("--graunt", default="target/release/graunt")
    ap.add_argument("--python", default=".venv/bin/python")
    ap.add_argument("--old-graunt", help="a binary of an earlier version, for a mixed-version check")
    ap.add_argument("--old-member", type=int, default=3,
                    help="which of the 3 members runs --old-graunt (1 is the one asked)")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="graunt-cluster-bench-")
    procs = []
    try:
        everything = os.path.join(work, "one", "whisper")
        os.makedirs(everything)
        render.build_tree(args.python, everything, 1000)
        build_stopped(args.python, everything, 300)
        ports = [(render.free_port(), render.free_port()) for _ in range(4)]
        dests = ",".join("127.0.0.1:%d:%d" % (p, i + 1) for i, (_, p) in enumerate(ports[:3]))
        names = []
        for root, _, files in os.walk(everything):
            for f in files:
                rel = os.path.relpath(os.path.join(root, f), everything)
                names.append(rel[:-4].replace(os.sep, "."))
        # Placed as the cluster's ring places them: copies on distinct
        # members, not distinct hosts (carbon's DIVERSE_REPLICAS would put
        # one copy only, all members being on 127.0.0.1, and the cluster
        # would still be moving the rest while it is measured).
        ring = os.path.join(work, "ring.toml")
        with open(ring, "w") as f:
            f.write('method = "carbon_ch"\nreplication = 2\ndiverse_replicas = false\n')
        out = subprocess.run([args.graunt, "relay", "lookup", "--config", ring, "--destinations", dests],
                             input="\n".join(names), capture_output=True, text=True, check=True).stdout
        placed = {}
        for line in out.splitlines():
            name, *owners = line.split()
            if len(owners) != 2:
                raise SystemExit("%s placed on %d members, not 2" % (name, len(owners)))
            for o in owners:
                node_id = int(o.rsplit(":", 1)[1])
                src = os.path.join(everything, *name.split(".")) + ".wsp"
                dst = os.path.join(work, "n%d" % node_id, "whisper", *name.split(".")) + ".wsp"
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                shutil.copyfile(src, dst)
                placed[node_id] = placed.get(node_id, 0) + 1
        one, one_port = render.start_graunt(args.graunt, os.path.join(work, "one"))
        procs.append(one)
        single = [latency(one_port, args.samples, t) for _, t in TARGETS]
        want = [post_render(one_port, t)[1] for _, t in TARGETS]
        for i in range(3):
            binary = args.old_graunt if args.old_graunt and i + 1 == args.old_member else args.graunt
            procs.append(start_member(binary, os.path.join(work, "n%d" % (i + 1)), i + 1, *ports[i]))
        http = ["127.0.0.1:%d" % h for h, _ in ports]
        cluster(args.graunt, "init", "--node", http[0])
        cluster(args.graunt, "join", "--node", http[1], "--via", http[0])
        cluster(args.graunt, "join", "--node", http[2], "--via", http[0])
        # Every member answers as the single node; with an older member
        # among them, each is asked (old and new ask each other).
        askers = ports[:3] if args.old_graunt else ports[:1]
        for (_, t), w in zip(TARGETS, want):
            for k, (h, _) in enumerate(askers):
                if post_render(h, t)[1] != w:
                    raise SystemExit("member %d's %s differs from the single node's" % (k + 1, t))
        if args.old_graunt:
            print("mixed versions (member %d runs %s): every member's answers equal the single node's"
                  % (args.old_member, args.old_graunt))
            for k, (h, _) in enumerate(askers):
                body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % h).read().decode()
                folds = [l for l in body.splitlines() if l.startswith("graunt_cluster_folds_total{")]
                print("member %d: %s" % (k + 1, ", ".join(folds) or "no fold counters"))
        three = [latency(ports[0][0], args.samples, t) for _, t in TARGETS]
        for node_id, count in placed.items():
            tree = os.path.join(work, "n%d" % node_id, "whisper")
            # Not the members' own metrics (carbon.agents.*), which appear
            # once a minute during a long run.
            held = sum(len(fs) for root, _, fs in os.walk(tree)
                       if not os.path.relpath(root, tree).split(os.sep)[0] == "carbon")
            if held != count:
                raise SystemExit("member %d holds %d files, %d were placed: the cluster moved series "
                                 "while it was measured" % (node_id, held, count))

        # Two relays following the cluster; a fourth node joins.
        logs = []
        for r in range(2):
            conf = os.path.join(work, "relay%d.toml" % r)
            with open(conf, "w") as f:
                f.write('cluster = ["%s"]\ncluster_poll_interval = 0.1\nself_metrics_interval = 3600\n' % http[0])
                f.write('[[tenant]]\nname = "t"\nlistener = [{ protocol = "line", addr = "127.0.0.1:0" }]\n')
            log = os.path.join(work, "relay%d.log" % r)
            logs.append(log)
            procs.append(subprocess.Popen([args.graunt, "relay", "--config", conf], stdout=subprocess.DEVNULL,
                                          stderr=open(log, "w"), env=dict(os.environ, RUST_LOG="info")))
        for log in logs:
            for _ in range(200):
                if " ready" in open(log).read():
                    break
                time.sleep(0.05)
        procs.append(start_member(args.graunt, os.path.join(work, "n4"), 4, *ports[3]))
        cluster(args.graunt, "join", "--node", http[3], "--via", http[0])
        joined = datetime.datetime.now(datetime.timezone.utc)
        results = []
        for log in logs:
            for _ in range(200):
                lines = [l for l in open(log) if "ring rebuilt" in l and "members=4" in l]
                if lines:
                    break
                time.sleep(0.05)
            else:
                raise SystemExit("relay did not rebuild: " + open(log).read()[-2000:])
            stamp = datetime.datetime.fromisoformat(lines[0].split()[0].replace("Z", "+00:00"))
            rebuild_us = int(lines[0].split("rebuild_us=")[1].split()[0])
            results.append(((stamp - joined).total_seconds() * 1000, rebuild_us))
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait()
        shutil.rmtree(work, ignore_errors=True)
    print("| measure | 3-node cluster | one node | ratio |")
    print("| --- | --- | --- | --- |")
    for (label, _), c, o in zip(TARGETS, three, single):
        print("| %s (median) | %.1f ms | %.1f ms | %.2fx |" % (label, c * 1e3, o * 1e3, c / o))
    for k, (after, rebuild) in enumerate(results):
        print("relay %d: ring with the new member %.0f ms after join returned (rebuild itself %d us)"
              % (k, after, rebuild))


if __name__ == "__main__":
    sys.exit(main())
