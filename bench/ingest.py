"""Sustained plaintext ingest: graunt serve against Python carbon-cache 1.1.10,
same schema, same load, same run.

  python3 bench/ingest.py [--metrics 100000] [--rounds 10] [--graunt target/release/graunt]
                          [--python .venv/bin/python]

For each peer: start it in a fresh directory, send METRICS x ROUNDS lines
(one point per metric per round, 10 s apart) over 2 TCP connections as fast as
the peer reads them, and report
  - accepted/s: points divided by the time until the peer had read them all
    (graunt: its received counter; carbon: its metricsReceived self-metric),
  - persisted/s: points divided by the time until all were in whisper
    (graunt: committed counter; carbon: committedPoints self-metric),
  - peak RSS during the run.
Then a second phase per peer measures bytes per cached point: the writer held
back, all points sent, (RSS - RSS before) / points.
Results print as Markdown rows for docs/BENCHMARKS.md.

With --existing (issue 19), the files are made first (one round, waited
for), then the other rounds are sent and persisted/s counts only points
into existing files; after graunt's run, `bench/pwrite_floor.c` (built with
gcc) writes the same rounds into graunt's files with one open, a pwrite per
point and a close per file: the floor of the same run.
"""
import argparse
import os
import pickle
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

SCHEMAS = "[carbon]\npattern = ^carbon\\.\nretentions = 1s:1h\n\n[all]\npattern = .*\nretentions = 10s:1h\n"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("port %d never opened" % port)


def rss_kib(pid, field="VmRSS"):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def make_payloads(metrics, rounds, base, connections=2):
    """Round-major lines, split into one payload per connection by metric."""
    payloads = []
    for c in range(connections):
        parts = []
        for r in range(rounds):
            ts = base + r * 10
            parts.append("".join("bench.host%05d.cpu %d %d\n" % (m, r, ts)
                                 for m in range(c, metrics, connections)).encode())
        payloads.append(b"".join(parts))
    return payloads


def send_all(port, payloads):
    def one(payload):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(payload)
        s.close()
    threads = [threading.Thread(target=one, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    return threads


class Graunt:
    name = "graunt"

    def __init__(self, binary, work, hold_writer=False):
        self.work = work
        self.port = free_port()
        self.http = free_port()
        with open(os.path.join(work, "schemas.conf"), "w") as f:
            f.write(SCHEMAS)
        with open(os.path.join(work, "graunt.toml"), "w") as f:
            f.write("max_cache_size = 100000000\n")
            if hold_writer:
                f.write("max_updates_per_second = 0.001\n")
        self.proc = subprocess.Popen(
            [binary, "serve", "--data-dir", os.path.join(work, "data"),
             "--line-addr", "127.0.0.1:%d" % self.port, "--pickle-addr", "",
             "--carbonlink-addr", "", "--http-addr", "127.0.0.1:%d" % self.http,
             "--schemas", os.path.join(work, "schemas.conf"),
             "--config", os.path.join(work, "graunt.toml")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)
        wait_port(self.http)

    def counters(self):
        body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.http).read().decode()
        values = {}
        for line in body.splitlines():
            if not line.startswith("#") and " " in line:
                k, v = line.rsplit(" ", 1)
                values[k] = float(v)
        return values.get("graunt_points_received_total", 0), values.get("graunt_committed_points_total", 0)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=600)


class CarbonCache:
    name = "carbon-cache 1.1.10"

    def __init__(self, python, work, hold_writer=False):
        self.work = work
        self.port = free_port()
        self.cache_port = free_port()
        conf = os.path.join(work, "conf")
        storage = os.path.join(work, "storage")
        os.makedirs(conf)
        os.makedirs(os.path.join(storage, "log"))
        with open(os.path.join(conf, "storage-schemas.conf"), "w") as f:
            f.write(SCHEMAS)
        with open(os.path.join(conf, "carbon.conf"), "w") as f:
            f.write("[cache]\nSTORAGE_DIR = %s\nLOCAL_DATA_DIR = %s/whisper\nLOG_DIR = %s/log\n"
                    "PID_DIR = %s\nLINE_RECEIVER_INTERFACE = 127.0.0.1\nLINE_RECEIVER_PORT = %d\n"
                    "ENABLE_UDP_LISTENER = False\nPICKLE_RECEIVER_INTERFACE = 127.0.0.1\n"
                    "PICKLE_RECEIVER_PORT = %d\nCACHE_QUERY_INTERFACE = 127.0.0.1\n"
                    "CACHE_QUERY_PORT = %d\nMAX_CACHE_SIZE = inf\nMAX_UPDATES_PER_SECOND = %s\n"
                    "MAX_CREATES_PER_MINUTE = inf\nCARBON_METRIC_INTERVAL = 1\n"
                    "LOG_UPDATES = False\nLOG_CREATES = False\nLOG_CACHE_HITS = False\n"
                    "LOG_LISTENER_CONN_SUCCESS = False\nWHISPER_FALLOCATE_CREATE = True\n"
                    "CACHE_WRITE_STRATEGY = max\n"
                    % (storage, storage, storage, storage, self.port, free_port(), self.cache_port,
                       "1" if hold_writer else "inf"))
        self.proc = subprocess.Popen(
            [python, os.path.join(os.path.dirname(python), "carbon-cache.py"),
             "--config=%s" % os.path.join(conf, "carbon.conf"), "--nodaemon", "start"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)
        wait_port(self.cache_port)
        self.prefix = "carbon.agents.%s-a." % socket.gethostname().replace(".", "_")
        self.storage = storage
        self.seen = {}

    def _cached(self, metric):
        s = socket.create_connection(("127.0.0.1", self.cache_port))
        body = pickle.dumps({"type": "cache-query", "metric": metric}, protocol=2)
        s.sendall(struct.pack("!L", len(body)) + body)
        data = b""
        while len(data) < 4 or len(data) < 4 + struct.unpack("!L", data[:4])[0]:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        return pickle.loads(data[4:])["datapoints"]

    def _series(self, stat):
        """Per-second self-metric values, from cache and file, by timestamp."""
        import whisper
        name = self.prefix + stat
        points = dict(self.seen.get(stat, {}))
        path = os.path.join(self.storage, "whisper", *name.split(".")) + ".wsp"
        if os.path.exists(path):
            (start, _, step), values = whisper.fetch(path, time.time() - 3500)
            for i, v in enumerate(values):
                if v is not None:
                    points[start + i * step] = v
        for ts, v in self._cached(name):
            points[int(ts)] = v
        self.seen[stat] = points
        return sum(points.values())

    def counters(self):
        return self._series("metricsReceived"), self._series("committedPoints")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def throughput(peer, payloads, total, timeout):
    start = time.time()
    threads = send_all(peer.port, payloads)
    accepted_at = persisted_at = None
    peak = 0
    committed = 0
    while time.time() - start < timeout and persisted_at is None:
        received, committed = peer.counters()
        peak = max(peak, rss_kib(peer.proc.pid))
        now = time.time()
        if accepted_at is None and received >= total:
            accepted_at = now
        if committed >= total:
            persisted_at = now
        time.sleep(0.1)
    for t in threads:
        t.join()
    peak = max(peak, rss_kib(peer.proc.pid, "VmHWM"))
    if persisted_at is None:
        print("%s persisted %d of %d points in %d s" % (peer.name, committed, total, timeout), file=sys.stderr)
    return accepted_at and accepted_at - start, persisted_at and persisted_at - start, peak


def cached_bytes(peer, payloads, total, timeout):
    before = rss_kib(peer.proc.pid)
    start = time.time()
    threads = send_all(peer.port, payloads)
    for t in threads:
        t.join()
    while time.time() - start < timeout:
        if peer.counters()[0] >= total:
            break
        time.sleep(0.2)
    time.sleep(1)
    return (rss_kib(peer.proc.pid) - before) * 1024.0 / total


def existing(peer, payloads, metrics, rounds, timeout):
    """Seconds to accept and to persist rounds 1.. into files round 0 made."""
    first = [b"\n".join(p.split(b"\n", metrics // len(payloads))[:-1]) + b"\n" for p in payloads]
    rest = [p[len(f):] for p, f in zip(payloads, first)]
    for t in send_all(peer.port, first):
        t.join()
    deadline = time.time() + timeout
    while peer.counters()[1] < metrics:
        if time.time() > deadline:
            raise SystemExit("%s did not create the files in %d s" % (peer.name, timeout))
        time.sleep(0.2)
    time.sleep(2)
    received0, committed0 = peer.counters()
    total = metrics * (rounds - 1)
    start = time.time()
    threads = send_all(peer.port, rest)
    accepted_at = persisted_at = None
    while time.time() - start < timeout and persisted_at is None:
        received, committed = peer.counters()
        now = time.time()
        if accepted_at is None and received - received0 >= total:
            accepted_at = now
        if committed - committed0 >= total:
            persisted_at = now
        time.sleep(0.05)
    for t in threads:
        t.join()
    return total, accepted_at and accepted_at - start, persisted_at and persisted_at - start


def floor(tree, rounds, first_ts):
    """The pwrite floor over the files under `tree` (see the module docs)."""
    here = os.path.dirname(os.path.abspath(__file__))
    exe = os.path.join(tempfile.mkdtemp(prefix="graunt-floor-"), "pwrite_floor")
    subprocess.run(["gcc", "-O2", "-o", exe, os.path.join(here, "pwrite_floor.c")], check=True)
    paths = []
    for d, _, names in os.walk(tree):
        paths.extend(os.path.join(d, n) for n in names if n.endswith(".wsp") and "carbon" not in d)
    out = subprocess.run([exe, str(rounds), str(first_ts)], input="\n".join(sorted(paths)).encode(),
                         stdout=subprocess.PIPE, check=True).stdout.decode().split()
    shutil.rmtree(os.path.dirname(exe), ignore_errors=True)
    return int(out[1]), float(out[2])


def main_existing(args):
    base = int(time.time()) - int(time.time()) % 10 - args.rounds * 10
    payloads = make_payloads(args.metrics, args.rounds, base)
    peers = [lambda w: Graunt(args.graunt, w)]
    if not args.graunt_only:
        peers.append(lambda w: CarbonCache(os.path.abspath(args.python), w))
    rows = []
    for make in peers:
        work = tempfile.mkdtemp(prefix="graunt-ingest-")
        peer = make(work)
        total, accepted, persisted = existing(peer, payloads, args.metrics, args.rounds, args.timeout)
        peer.stop()
        rows.append((peer.name, total, accepted, persisted))
        print(rows[-1], file=sys.stderr)
        if isinstance(peer, Graunt):
            subprocess.run(["sync"])
            points, seconds = floor(os.path.join(work, "data", "whisper"), args.rounds - 1, base + 10)
            rows.append(("pwrite floor (open, a pwrite per point, close)", points, None, seconds))
            print(rows[-1], file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)
    print("| writer | points into existing files | accepted | persisted |")
    print("| --- | --- | --- | --- |")
    for name, total, accepted, persisted in rows:
        print("| %s | %d | %s | %s |" % (
            name, total, "%.0f points/s" % (total / accepted) if accepted else "-",
            "%.0f points/s (%.2f s)" % (total / persisted, persisted) if persisted else "not done"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--metrics", type=int, default=100000)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--graunt", default="target/release/graunt")
    ap.add_argument("--python", default=".venv/bin/python")
    ap.add_argument("--timeout", type=int, default=600)
    ap.add_argument("--graunt-only", action="store_true", help="skip carbon-cache (to compare two graunt builds)")
    ap.add_argument("--existing", action="store_true", help="persisted points/s into existing files, with the pwrite floor")
    args = ap.parse_args()
    if args.existing:
        return main_existing(args)
    total = args.metrics * args.rounds
    base = int(time.time()) - int(time.time()) % 10 - args.rounds * 10
    payloads = make_payloads(args.metrics, args.rounds, base)
    print("%d metrics x %d rounds = %d points, %.1f MB of lines" %
          (args.metrics, args.rounds, total, sum(map(len, payloads)) / 1e6), file=sys.stderr)
    rows = []
    peers = [lambda w, h: Graunt(args.graunt, w, h)]
    if not args.graunt_only:
        peers.append(lambda w, h: CarbonCache(os.path.abspath(args.python), w, h))
    for make in peers:
        work = tempfile.mkdtemp(prefix="graunt-ingest-")
        peer = make(work, False)
        accepted, persisted, peak = throughput(peer, payloads, total, args.timeout)
        peer.stop()
        shutil.rmtree(work, ignore_errors=True)
        work = tempfile.mkdtemp(prefix="graunt-ingest-")
        peer = make(work, True)
        per_point = cached_bytes(peer, payloads, total, args.timeout)
        peer.stop()
        shutil.rmtree(work, ignore_errors=True)
        rows.append((peer.name, accepted, persisted, peak, per_point))
        print(rows[-1], file=sys.stderr)

    def rate(seconds):
        return "%.0f points/s (%.1f s)" % (total / seconds, seconds) if seconds else "not done in %d s" % args.timeout

    print("| peer | accepted | persisted to whisper | peak RSS | bytes per cached point |")
    print("| --- | --- | --- | --- | --- |")
    for name, accepted, persisted, peak, per_point in rows:
        print("| %s | %s | %s | %.0f MiB | %.0f |" % (name, rate(accepted), rate(persisted), peak / 1024.0, per_point))
    if len(rows) < 2:
        return
    (g, c) = rows
    if g[1] and c[1] and g[2] and c[2]:
        print("\ngraunt / carbon-cache: accepted %.1fx, persisted %.1fx, memory per cached point %.2fx"
              % (c[1] / g[1], c[2] / g[2], g[4] / c[4] if c[4] else float("nan")))


if __name__ == "__main__":
    main()
