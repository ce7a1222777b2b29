#!/usr/bin/env python3
"""A burst of large renders against one node (issue 19, bounded query
concurrency): CONCURRENT clients at once each POST sumSeries over 1,000
series x 1 day at 10 s, ROUNDS times. Reports the node's peak RSS
(VmHWM), the median and slowest answer, and graunt_renders_waited_total,
for each `max_concurrent_renders` given, on the same files.

Usage: cargo build --release -p graunt &&
       python3 bench/burst.py --bounds 16,1000 [--concurrent 64]
"""

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import render  # noqa: E402
from cluster import post_render  # noqa: E402


def peak_rss_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def waited(port):
    body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port).read().decode()
    for line in body.splitlines():
        if line.startswith("graunt_renders_waited_total "):
            return float(line.split()[1])
    return 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--graunt", default="target/release/graunt")
    ap.add_argument("--python", default=".venv/bin/python")
    ap.add_argument("--bounds", default="16,1000")
    ap.add_argument("--concurrent", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="graunt-burst-")
    try:
        tree = os.path.join(work, "whisper")
        os.makedirs(tree)
        render.build_tree(args.python, tree, 1000)
        print("| max_concurrent_renders | clients at once | peak RSS | median answer | slowest | renders that waited |")
        print("| --- | --- | --- | --- | --- | --- |")
        for bound in [int(b) for b in args.bounds.split(",")]:
            data = os.path.join(work, "data-%d" % bound)
            os.makedirs(data)
            os.symlink(tree, os.path.join(data, "whisper"))
            conf = os.path.join(work, "graunt-%d.toml" % bound)
            with open(conf, "w") as f:
                f.write("max_concurrent_renders = %d\n" % bound)
            port = render.free_port()
            proc = subprocess.Popen(
                [args.graunt, "serve", "--data-dir", data, "--config", conf,
                 "--http-addr", "127.0.0.1:%d" % port, "--line-addr", "", "--pickle-addr", "",
                 "--carbonlink-addr", "", "--statsd-addr", ""],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                render.wait_http(port, "/version")
                want = post_render(port, render.SUM)[1]
                times = []
                lock = threading.Lock()

                def ask():
                    t, body = post_render(port, render.SUM)
                    if body != want:
                        raise SystemExit("an answer in the burst differs")
                    with lock:
                        times.append(t)

                for _ in range(args.rounds):
                    threads = [threading.Thread(target=ask) for _ in range(args.concurrent)]
                    for t in threads:
                        t.start()
                    for t in threads:
                        t.join()
                if len(times) != args.rounds * args.concurrent:
                    raise SystemExit("%d of %d renders answered" % (len(times), args.rounds * args.concurrent))
                print("| %d | %d | %.0f MiB | %.0f ms | %.0f ms | %d |" % (
                    bound, args.concurrent, peak_rss_mib(proc.pid), statistics.median(times) * 1e3,
                    max(times) * 1e3, waited(port)))
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
