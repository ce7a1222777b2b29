"""Query latency and throughput: graunt serve against graphite-web 1.1.10
(under gunicorn) reading the same whisper files, same requests, same run.

  python3 bench/render.py [--series 1000] [--graunt target/release/graunt]
                          [--python .venv/bin/python] [--seconds 20]

The tree: SERIES metrics servers.hostNNNN.cpu.user (and .system for a tenth
of the hosts), one archive of 10 s for 1 day, full of data. The peers:
graunt serve on the tree (data dir = its parent), and graphite-web with 4
gunicorn sync workers (2 cores x 2) and no carbonlink. Measured per peer:

  - sum: latency of sumSeries(servers.*.cpu.user) over the whole day
    (format=json), median of several sequential requests;
  - dashboard: a Grafana-style refresh: 20 panels, one request each
    (POST /render with maxDataPoints, the last 6 h), sent together over 6
    connections as a browser does; the time until the last answer;
  - rps: requests per second with 16 concurrent clients cycling through the
    dashboard's 20 requests for SECONDS seconds.

Results print as Markdown rows for docs/BENCHMARKS.md.
"""
import argparse
import http.client
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

NOW = 1700006400  # 2023-11-15 00:00 UTC; every request passes it as `now`


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_http(port, path, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            c.request("GET", path)
            r = c.getresponse()
            r.read()
            if r.status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("no answer on port %d" % port)


def build_tree(python, whisper_dir, series):
    """A few distinct full files, copied to every metric path."""
    script = r"""
import sys, whisper, random
path, seed, now = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
whisper.create(path, [(10, 8640)], xFilesFactor=0.0, aggregationMethod='average')
r = random.Random(seed)
points = [(now - i * 10, r.random() * 100) for i in range(8640)]
whisper.update_many(path, points, now=now)
"""
    protos = []
    for i in range(8):
        p = os.path.join(whisper_dir, "proto%d.wsp" % i)
        subprocess.run([python, "-c", script, p, str(i), str(NOW)], check=True)
        protos.append(p)
    for n in range(series):
        host = "host%04d" % n
        kinds = ["user", "system"] if n % 10 == 0 else ["user"]
        for kind in kinds:
            d = os.path.join(whisper_dir, "servers", host, "cpu")
            os.makedirs(d, exist_ok=True)
            shutil.copyfile(protos[(n + len(kind)) % len(protos)], os.path.join(d, kind + ".wsp"))
    for p in protos:
        os.remove(p)


SUM = "sumSeries(servers.*.cpu.user)"
DASHBOARD = [
    "sumSeries(servers.*.cpu.user)",
    "averageSeries(servers.*.cpu.user)",
    "maxSeries(servers.*.cpu.user)",
    "aliasByNode(highestMax(servers.*.cpu.user,5),1)",
    "aliasByNode(lowestAverage(servers.*.cpu.user,5),1)",
    "movingAverage(sumSeries(servers.*.cpu.user),10)",
    "percentileOfSeries(servers.*.cpu.user,95)",
    "asPercent(sumSeries(servers.*.cpu.system),sumSeries(servers.*.cpu.user))",
    "aliasByNode(servers.host000*.cpu.user,1)",
    "aliasByNode(servers.host001*.cpu.*,1,3)",
    "summarize(sumSeries(servers.*.cpu.user),'1h','avg')",
    "nonNegativeDerivative(sumSeries(servers.host00*.cpu.user))",
    "groupByNode(servers.host00*.cpu.*,3,'sum')",
    "scale(averageSeries(servers.*.cpu.system),100)",
    "countSeries(servers.*.cpu.user)",
    "stddevSeries(servers.host0[0-4]*.cpu.user)",
    "alias(diffSeries(sumSeries(servers.*.cpu.user),sumSeries(servers.*.cpu.system)),'diff')",
    "aliasByNode(sortByMaxima(servers.host002*.cpu.user),1)",
    "keepLastValue(averageSeries(servers.host01*.cpu.user))",
    "aliasByNode(currentAbove(servers.host003*.cpu.user,50),1)",
]


def render_form(target, extra):
    params = [("target", target), ("format", "json"), ("now", str(NOW))] + extra
    return urllib.parse.urlencode(params)


class Client:
    def __init__(self, port):
        self.port = port
        self.conn = None

    def post(self, body):
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
            try:
                self.conn.request("POST", "/render", body=body,
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
                r = self.conn.getresponse()
                data = r.read()
                if r.status != 200:
                    raise SystemExit("HTTP %d for %s: %s" % (r.status, body, data[:300]))
                if r.getheader("Connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return data
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise


def measure(port, seconds, sum_samples):
    out = {}
    c = Client(port)
    body = render_form(SUM, [("from", "-1d")])
    c.post(body)  # warm: page cache, imports
    times = []
    for _ in range(sum_samples):
        t = time.perf_counter()
        c.post(body)
        times.append(time.perf_counter() - t)
    out["sum"] = statistics.median(times)

    panels = [render_form(t, [("from", "-6h"), ("maxDataPoints", "1200")]) for t in DASHBOARD]

    def dashboard():
        queue = list(panels)
        lock = threading.Lock()

        def worker():
            cl = Client(port)
            while True:
                with lock:
                    if not queue:
                        return
                    b = queue.pop()
                cl.post(b)

        t = time.perf_counter()
        threads = [threading.Thread(target=worker) for _ in range(6)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        return time.perf_counter() - t

    dashboard()
    out["dashboard"] = statistics.median([dashboard() for _ in range(3)])

    done = [0]
    stop = time.time() + seconds
    lock = threading.Lock()

    def client(i):
        cl = Client(port)
        k = i
        while time.time() < stop:
            cl.post(panels[k % len(panels)])
            k += 1
            with lock:
                done[0] += 1

    t = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    out["rps"] = done[0] / (time.perf_counter() - t)
    return out


def start_graunt(binary, data_dir):
    port = free_port()
    proc = subprocess.Popen(
        [binary, "serve", "--data-dir", data_dir, "--http-addr", "127.0.0.1:%d" % port,
         "--line-addr", "", "--pickle-addr", "", "--carbonlink-addr", ""],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(port, "/version")
    return proc, port


def start_graphite_web(python, whisper_dir, work):
    subprocess.run([python, "-m", "pip", "install", "-q", "gunicorn==23.0.0"], check=True)
    with open(os.path.join(work, "graunt_local_settings.py"), "w") as f:
        f.write("SECRET_KEY = 'bench'\nSTORAGE_DIR = %r\nLOG_DIR = %r\n" % (work, work))
        f.write("INDEX_FILE = %r\nWHISPER_DIR = %r\nSTANDARD_DIRS = [%r]\n"
                % (os.path.join(work, "index"), whisper_dir, whisper_dir))
        f.write("CARBONLINK_HOSTS = []\n")
        f.write("DATABASES = {'default': {'ENGINE': 'django.db.backends.sqlite3', 'NAME': %r}}\n"
                % os.path.join(work, "graphite.db"))
    with open(os.path.join(work, "bench_wsgi.py"), "w") as f:
        f.write("import inspect\n"
                "if not hasattr(inspect, 'getargspec'):\n"
                "    inspect.getargspec = inspect.getfullargspec\n"
                "from graphite.wsgi import application\n")
    env = dict(os.environ, GRAPHITE_SETTINGS_MODULE="graunt_local_settings",
               DJANGO_SETTINGS_MODULE="graphite.settings", PYTHONPATH=work)
    subprocess.run([python, "-c", "import inspect; inspect.getargspec = getattr(inspect, 'getargspec', inspect.getfullargspec);"
                    "import django; django.setup(); from django.core.management import call_command;"
                    "call_command('migrate', verbosity=0, run_syncdb=True)"], env=env, check=True)
    port = free_port()
    gunicorn = os.path.join(os.path.dirname(python), "gunicorn")
    proc = subprocess.Popen(
        [gunicorn, "-w", "4", "-b", "127.0.0.1:%d" % port, "--timeout", "600",
         "--chdir", work, "bench_wsgi:application"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(port, "/version/")
    return proc, port


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--series", type=int, default=1000)
    ap.add_argument("--graunt", default="target/release/graunt")
    ap.add_argument("--python", default=".venv/bin/python")
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--sum-samples", type=int, default=5)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="graunt-render-bench-")
    data = os.path.join(work, "data")
    whisper_dir = os.path.join(data, "whisper")
    os.makedirs(whisper_dir)
    build_tree(args.python, whisper_dir, args.series)
    results = {}
    try:
        proc, port = start_graunt(args.graunt, data)
        try:
            results["graunt"] = measure(port, args.seconds, max(args.sum_samples, 20))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait()
        gw_work = os.path.join(work, "graphite-web")
        os.makedirs(gw_work)
        proc, port = start_graphite_web(os.path.abspath(args.python), whisper_dir, gw_work)
        try:
            results["graphite-web"] = measure(port, args.seconds, args.sum_samples)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    g, p = results["graunt"], results["graphite-web"]
    print("| measure | graunt | graphite-web 1.1.10 | ratio |")
    print("| --- | --- | --- | --- |")
    print("| sumSeries over %d series x 1 day (median latency) | %.1f ms | %.1f ms | %.1fx |"
          % (args.series, g["sum"] * 1e3, p["sum"] * 1e3, p["sum"] / g["sum"]))
    print("| 20-panel dashboard refresh, 6 h, 6 connections | %.1f ms | %.1f ms | %.1fx |"
          % (g["dashboard"] * 1e3, p["dashboard"] * 1e3, p["dashboard"] / g["dashboard"]))
    print("| requests/s, 16 concurrent clients, dashboard mix | %.1f | %.2f | %.1fx |"
          % (g["rps"], p["rps"], g["rps"] / p["rps"]))


if __name__ == "__main__":
    sys.exit(main())
