"""Tag index at scale: graunt serve with SERIES tagged series against
graphite-web 1.1.10's local (sqlite) tag database with PEER_SERIES series,
same queries, same run.

  python3 bench/tags.py [--series 1000000] [--peer-series 10000]
                        [--graunt target/release/graunt] [--python .venv/bin/python]

The series: `<metric>;dc=dcD;host=hH;rack=rR`, 10 metrics (cpu.load,
mem.free, ...) on SERIES/10 hosts, each host in one of 10 data centres and
one of 100 racks. graunt's index is written as its log
(`<data>/tags/series.log`, what a node has after taking those names) and
the node started on it: measured are the start time (process start to its
HTTP port answering) and the RSS (less that of an empty node, per series).
Then, each the median of 21 requests over HTTP (keep-alive, sequential):

  - find: /tags/findSeries?expr=name=cpu.load&expr=dc=dc1 (what
    seriesByTag('name=cpu.load','dc=dc1') resolves; SERIES/100 names back);
  - narrow: findSeries for name=cpu.load, dc=dc1, rack=r11 (SERIES/1000);
  - values: /tags/autoComplete/values?tag=host&expr=name=cpu.load&expr=dc=dc1&valuePrefix=h1&limit=100;
  - tags: /tags/autoComplete/tags?expr=name=cpu.load (Grafana's tag list);
  - render: /render?target=seriesByTag('name=cpu.load','dc=dc1','rack=r11')&format=json
    (no files: resolution and an empty answer).

graphite-web: the same series (PEER_SERIES of them) posted to
/tags/tagMultiSeries, then the same requests through Django's test client
(in-process, no HTTP: its figures flatter it); graunt is also measured on
PEER_SERIES series for the same-size ratio. Prints Markdown rows.
"""
import argparse
import http.client
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__))))
from render import free_port  # noqa: E402

METRICS = ["cpu.load", "cpu.user", "cpu.system", "mem.free", "mem.used",
           "disk.used", "disk.free", "net.rx", "net.tx", "load.avg"]


def names(series):
    hosts = max(1, series // len(METRICS))
    for h in range(hosts):
        for m in METRICS:
            yield "%s;dc=dc%d;host=h%d;rack=r%d" % (m, h % 10, h, h % 100)


QUERIES = [
    ("find", "/tags/findSeries?expr=name%3Dcpu.load&expr=dc%3Ddc1"),
    ("narrow", "/tags/findSeries?expr=name%3Dcpu.load&expr=dc%3Ddc1&expr=rack%3Dr11"),
    ("values", "/tags/autoComplete/values?tag=host&expr=name%3Dcpu.load&expr=dc%3Ddc1"
               "&valuePrefix=h1&limit=100"),
    ("tags", "/tags/autoComplete/tags?expr=name%3Dcpu.load"),
    ("render", "/render?format=json&from=-1h&target=" + urllib.parse.quote(
        "seriesByTag('name=cpu.load','dc=dc1','rack=r11')", safe="")),
]


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def start_graunt(binary, data_dir):
    port = free_port()
    t = time.perf_counter()
    proc = subprocess.Popen(
        [binary, "serve", "--data-dir", data_dir, "--http-addr", "127.0.0.1:%d" % port,
         "--line-addr", "", "--pickle-addr", "", "--carbonlink-addr", "", "--statsd-addr", ""],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
            c.request("GET", "/version")
            c.getresponse().read()
            break
        except OSError:
            if proc.poll() is not None:
                raise SystemExit("graunt exited")
            time.sleep(0.01)
    return proc, port, time.perf_counter() - t


def time_graunt(port, samples=21):
    out = {}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    for label, path in QUERIES:
        times = []
        size = 0
        for _ in range(samples):
            t = time.perf_counter()
            conn.request("GET", path)
            r = conn.getresponse()
            body = r.read()
            times.append(time.perf_counter() - t)
            assert r.status == 200, (path, r.status, body[:200])
            size = len(body)
        out[label] = (statistics.median(times) * 1000, size)
    return out


def graunt_run(binary, series):
    work = tempfile.mkdtemp(prefix="bench-tags-")
    try:
        empty, port, _ = start_graunt(binary, os.path.join(work, "empty"))
        base = rss_kib(empty.pid)
        empty.terminate()
        empty.wait()
        data = os.path.join(work, "data")
        os.makedirs(os.path.join(data, "tags"))
        with open(os.path.join(data, "tags", "series.log"), "w") as f:
            for n in names(series):
                f.write("+" + n + "\n")
        proc, port, start = start_graunt(binary, data)
        try:
            rss = rss_kib(proc.pid)
            times = time_graunt(port)
        finally:
            proc.terminate()
            proc.wait()
        return start, (rss - base) * 1024 / series, times
    finally:
        shutil.rmtree(work, ignore_errors=True)


PEER = r'''
import json, os, statistics, sys, tempfile, time
sys.path.insert(0, sys.argv[1])
from graphite_web import client
web = client(tempfile.mkdtemp())
names = json.load(sys.stdin)
t = time.perf_counter()
for i in range(0, len(names), 100):
    r = web.post("/tags/tagMultiSeries", {"path": names[i:i + 100]})
    assert r.status_code == 200, r.content[:200]
load = time.perf_counter() - t
out = {"load": load}
for label, path in json.loads(sys.argv[2]):
    times = []
    for _ in range(21):
        t = time.perf_counter()
        r = web.get(path)
        body = r.content
        times.append(time.perf_counter() - t)
        assert r.status_code == 200, (path, r.status_code, body[:300])
    out[label] = [statistics.median(times) * 1000, len(body)]
json.dump(out, sys.stdout)
'''


def peer_run(python, series):
    import json
    oracle = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "oracle")
    # The render query needs whisper files graphite-web would look for; with
    # none it resolves the expressions and answers [] as graunt does.
    r = subprocess.run([python, "-c", PEER, oracle, json.dumps(QUERIES)],
                       input=json.dumps(list(names(series))), capture_output=True, text=True,
                       env=dict(os.environ, GRAPHITE_NO_PREFIX="True"))
    if r.returncode != 0:
        raise SystemExit(r.stderr[-3000:])
    return json.loads(r.stdout)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--series", type=int, default=1_000_000)
    p.add_argument("--peer-series", type=int, default=10_000)
    p.add_argument("--graunt", default="target/release/graunt")
    p.add_argument("--python", default=".venv/bin/python")
    a = p.parse_args()
    start, per_series, big = graunt_run(a.graunt, a.series)
    _, _, small = graunt_run(a.graunt, a.peer_series)
    peer = peer_run(a.python, a.peer_series)
    print("graunt, %d series: start %.2f s, index %.0f bytes/series" % (a.series, start, per_series))
    print("graphite-web, %d series: tagMultiSeries load %.1f s" % (a.peer_series, peer["load"]))
    print()
    print("| query | graunt %d series | graunt %d series | graphite-web %d series | graphite-web / graunt (same size) |"
          % (a.series, a.peer_series, a.peer_series))
    print("|---|---|---|---|---|")
    for label, _ in QUERIES:
        g, s, w = big[label], small[label], peer[label]
        print("| %s | %.2f ms (%d B) | %.2f ms | %.2f ms | %.1fx |"
              % (label, g[0], g[1], s[0], w[0], w[0] / s[0] if s[0] else 0))


if __name__ == "__main__":
    main()
