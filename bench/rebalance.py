#!/usr/bin/env python3
"""Cluster growth (issue 17): how fast series move to a new member, against
a plain copy of the same files, and what moves cost ingest and reads.

1. Three members at replication 2 (schema 10s:1h,1m:1d), a relay following
   them; SERIES series of six points each written through the relay.
2. Without moves: a burst of BURST points through the relay (points/s until
   every replica is received), and `/render` of sumSeries over 1,111 series
   (median of 20).
3. Node 4 joins with `rebalance_bytes_per_second = 0`: wall time until every
   member reports the rebalance done; series and bytes moved (sum over
   members); series/s and MB/s.
4. A plain copy of one member's whisper tree (`cp -r`, warm page cache):
   files/s and MB/s.
5. Node 5 joins with the members throttled to THROTTLE bytes/s, so moves run
   throughout: the same burst and reads while they do.

Usage: cargo build --release -p graunt && python3 bench/rebalance.py [--series 20000]
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from render import free_port  # noqa: E402


def get(port, path, timeout=60):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=timeout) as r:
        return r.read()


def wait(what, f, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            v = f()
            if v:
                return v
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("timed out waiting for " + what)


def metric(port, name):
    for line in get(port, "/metrics").decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


class Member:
    def __init__(self, binary, work, node_id, config, join=None, log=None):
        self.id = node_id
        self.log = log
        self.http, self.pickle = free_port(), free_port()
        self.data = os.path.join(work, "n%d" % node_id)
        args = [binary, "serve", "--config", config, "--data-dir", self.data, "--node-id", str(node_id),
                "--http-addr", "127.0.0.1:%d" % self.http, "--pickle-addr", "127.0.0.1:%d" % self.pickle,
                "--line-addr", "", "--carbonlink-addr", "", "--statsd-addr", ""]
        args += ["--cluster-join", join] if join else ["--cluster-init"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                     stderr=open(log, "w") if log else subprocess.DEVNULL)
        wait("node %d" % node_id, lambda: get(self.http, "/version"))

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)


def statuses(port):
    return {n["node"]: n for n in json.loads(get(port, "/cluster/rebalance"))["nodes"]}


def rebalanced(port, before, ids):
    s = statuses(port)
    for i in ids:
        n = s.get(i)
        if not n or n.get("job") != "idle" or not n.get("balanced") or n.get("pending_series") != 0:
            return False
        if i in before and n.get("rebalances_done", 0) <= before[i]:
            return False
    return s


def send(port, lines):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(lines)
    s.close()


def received(members):
    return sum(metric(m.http, "graunt_points_received_total") for m in members)


def burst(relay_port, members, series, ts, count):
    """Points/s of `count` new points through the relay until every replica
    is received."""
    lines = "".join("grow.s%d %d %d\n" % (i % series, i, ts + 10 * (i // series)) for i in range(count)).encode()
    before = received(members)
    t = time.perf_counter()
    send(relay_port, lines)
    wait("the burst", lambda: received(members) >= before + 2 * count)
    return count / (time.perf_counter() - t)


def reads(port, samples=20):
    path = "/render?target=sumSeries(grow.s1*)&from=-1h&format=json"
    get(port, path)
    times = []
    for _ in range(samples):
        t = time.perf_counter()
        get(port, path)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def tree_bytes(root):
    files = total = 0
    for d, _, names in os.walk(root):
        for n in names:
            if n.endswith(".wsp"):
                files += 1
                total += os.path.getsize(os.path.join(d, n))
    return files, total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--series", type=int, default=20000)
    ap.add_argument("--burst", type=int, default=200000)
    ap.add_argument("--throttle", type=int, default=20 << 20)
    ap.add_argument("--graunt", default="target/release/graunt")
    args = ap.parse_args()
    binary = os.path.abspath(args.graunt)
    work = tempfile.mkdtemp(prefix="graunt-rebalance-bench-")
    members = []
    relay = None
    try:
        schemas = os.path.join(work, "schemas.conf")
        with open(schemas, "w") as f:
            f.write("[all]\npattern = .*\nretentions = 10s:1h,1m:1d\n")
        fast = os.path.join(work, "fast.toml")
        with open(fast, "w") as f:
            f.write('schemas = "%s"\nrebalance_bytes_per_second = 0\n' % schemas)
        members.append(Member(binary, work, 1, fast))
        seed = "127.0.0.1:%d" % members[0].http
        for i in (2, 3):
            members.append(Member(binary, work, i, fast, seed))
        wait("three members", lambda: len(json.loads(get(members[0].http, "/cluster/state"))["members"]) == 3)
        relay_port = free_port()
        conf = os.path.join(work, "relay.toml")
        with open(conf, "w") as f:
            f.write('cluster = ["%s"]\ncluster_poll_interval = 0.1\nself_metrics_interval = 3600\n' % seed)
            f.write('[[tenant]]\nname = "t"\nmax_age = 100000000\n')
            f.write('listener = [{ protocol = "line", addr = "127.0.0.1:%d" }]\n' % relay_port)
        relay = subprocess.Popen([binary, "relay", "--config", conf],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait("the relay", lambda: socket.create_connection(("127.0.0.1", relay_port)).close() or True)
        now = int(time.time())
        t0 = now - now % 10 - 1200
        send(relay_port, "".join("grow.s%d %d %d\n" % (i, i, t0 + 10 * k)
                                 for i in range(args.series) for k in range(6)).encode())
        wait("the history in files", lambda: sum(tree_bytes(m.data)[0] for m in members) == 2 * args.series
             and all(metric(m.http, "graunt_cache_points") == 0 for m in members))
        print("history: %d series on 3 members" % args.series, file=sys.stderr)

        quiet_ingest = burst(relay_port, members, args.series, t0 + 60, args.burst)
        quiet_read = reads(members[0].http)
        print("without moves: %.0f points/s, render %.1f ms" % (quiet_ingest, quiet_read * 1000), file=sys.stderr)

        before = {i: s["rebalances_done"] for i, s in statuses(members[0].http).items()}
        t = time.perf_counter()
        members.append(Member(binary, work, 4, fast, seed))
        done = wait("node 4's rebalance", lambda: rebalanced(members[0].http, before, [1, 2, 3, 4]))
        moved_time = time.perf_counter() - t
        moved = sum(s["moved_series"] for s in done.values())
        moved_bytes = sum(s["moved_bytes"] for s in done.values())
        deleted = sum(s["deleted_series"] for s in done.values())
        print("node 4: %d series (%d deletes), %.1f MB in %.1f s" % (moved, deleted, moved_bytes / 1e6, moved_time),
              file=sys.stderr)

        files, size = tree_bytes(members[0].data)
        copy_to = os.path.join(work, "copy")
        subprocess.run(["sync"])
        t = time.perf_counter()
        subprocess.run(["cp", "-r", os.path.join(members[0].data, "whisper"), copy_to], check=True)
        subprocess.run(["sync"])
        copy_time = time.perf_counter() - t

        # Node 5 joins with every member throttled: moves run throughout.
        slow = os.path.join(work, "slow.toml")
        with open(slow, "w") as f:
            f.write('schemas = "%s"\nrebalance_bytes_per_second = %d\n' % (schemas, args.throttle))
        before = {i: s["rebalances_done"] for i, s in statuses(members[0].http).items()}
        for m in members:
            m.stop()
        restarted = []
        for m in members:
            args_join = None if m.id == 1 else seed
            n = Member.__new__(Member)
            n.id, n.http, n.pickle, n.data = m.id, m.http, m.pickle, m.data
            cmd = [binary, "serve", "--config", slow, "--data-dir", n.data, "--node-id", str(n.id),
                   "--http-addr", "127.0.0.1:%d" % n.http, "--pickle-addr", "127.0.0.1:%d" % n.pickle,
                   "--line-addr", "", "--carbonlink-addr", "", "--statsd-addr", ""]
            if args_join:
                cmd += ["--cluster-join", args_join]
            n.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            restarted.append(n)
        members = restarted
        for m in members:
            wait("node %d again" % m.id, lambda: get(m.http, "/version"))
        wait("the members", lambda: len(statuses(members[0].http)) == 4)
        members.append(Member(binary, work, 5, slow, seed))
        wait("moves under way", lambda: any(s["job"] == "rebalance" for s in statuses(members[0].http).values()))
        busy_ingest = burst(relay_port, members, args.series, t0 + 120, args.burst)
        busy_read = reads(members[0].http)
        still = any(s["job"] == "rebalance" for s in statuses(members[0].http).values())
        print("with moves: %.0f points/s, render %.1f ms (moves still running after: %s)"
              % (busy_ingest, busy_read * 1000, still), file=sys.stderr)
        wait("node 5's rebalance", lambda: rebalanced(members[0].http, {}, [1, 2, 3, 4, 5]), timeout=1800)

        print("| measure | graunt | peer in the same run | ratio |")
        print("| --- | --- | --- | --- |")
        print("| moving series to a 4th member (unthrottled) | %d series, %.1f MB in %.2f s: %.0f series/s, %.1f MB/s "
              "| `cp -r` of one member's tree, %d files, %.1f MB in %.2f s: %.0f files/s, %.1f MB/s | %.2fx (series/s) |"
              % (moved, moved_bytes / 1e6, moved_time, moved / moved_time, moved_bytes / 1e6 / moved_time,
                 files, size / 1e6, copy_time, files / copy_time, size / 1e6 / copy_time,
                 (moved / moved_time) / (files / copy_time)))
        print("| ingest burst of %d points through the relay (RF 2) | %.0f points/s while moves run "
              "| %.0f points/s without moves | %.2fx |" % (args.burst, busy_ingest, quiet_ingest, busy_ingest / quiet_ingest))
        print("| `/render` sumSeries over 1,111 series, 1 h (median of 20) | %.1f ms while moves run "
              "| %.1f ms without moves | %.2fx |" % (busy_read * 1000, quiet_read * 1000, busy_read / quiet_read))
        print("moves still running when the busy measurements ended: %s" % still)
    finally:
        if relay:
            relay.terminate()
        for m in members:
            try:
                m.proc.kill()
            except Exception:
                pass
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
