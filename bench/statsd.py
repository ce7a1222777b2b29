"""statsd aggregation under a UDP flood: graunt agent against bucky 2.3.0
(PyPI), same flood, same run, both forwarding to the same kind of sink.

  python3 bench/statsd.py [--graunt target/release/graunt] [--bucky /tmp/bucky-venv/bin/bucky]
                          [--rates 250000,500000,1000000,2000000] [--seconds 5]

The flood: datagrams of 40 lines (as clients that batch send), mixed
counters (`|c`, value 1), timers (`|ms`) and gauges (`|g`) over 10,000 names,
sent by 2 sender processes at each offered rate for SECONDS. Each peer
flushes every second to a local TCP sink that counts what arrives. Delivered
counter samples = the sum of the flushed counts of the flood's counters
(graunt: `stats.counters.X.count`; bucky: `stats_counts.X`); loss = 1 -
delivered / sent. Metrics/s = metrics the peer aggregated (counter samples
delivered x all-metrics/counters ratio) per second of flood.

bucky 2.3.0 does not run as published on Python 3.11: it needs pycrypto
(which no longer builds; pycryptodome stands in), its carbon client writes
str to the socket (TypeError) and its statsd server process exits on the
first datagram. So the bench runs bucky's own StatsDServer/StatsDHandler
(its parsing and aggregation, unchanged) in one process with a minimal
plaintext forwarder (BUCKY_LAUNCHER below), installed in --bucky-venv.
Results print as Markdown rows for docs/BENCHMARKS.md.
"""
import argparse
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

BUCKY_LAUNCHER = r"""
import queue, socket, sys, threading, time
import bucky.cfg as cfg, bucky.statsd as statsd
cfg.statsd_ip, cfg.statsd_port = "127.0.0.1", int(sys.argv[1])
cfg.statsd_flush_time = 1.0
q = queue.Queue()
server = statsd.StatsDServer(q, cfg)
threading.Thread(target=server.run, daemon=True).start()
sink = socket.create_connection(("127.0.0.1", int(sys.argv[2])))
while True:
    _, name, value, ts = q.get()
    batch = ["%s %s %d" % (name, value, ts)]
    while not q.empty() and len(batch) < 5000:
        _, name, value, ts = q.get()
        batch.append("%s %s %d" % (name, value, ts))
    sink.sendall(("\n".join(batch) + "\n").encode())
"""

NAMES = 10000
LINES_PER_DATAGRAM = 40


def free_port(kind=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Sink:
    """A carbon plaintext receiver that sums counter counts per flood name."""

    def __init__(self, count_prefix):
        self.count_prefix = count_prefix
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.port = self.server.getsockname()[1]
        self.lock = threading.Lock()
        self.counted = 0.0
        self.lines = 0
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            conn, _ = self.server.accept()
            threading.Thread(target=self.read, args=(conn,), daemon=True).start()

    def read(self, conn):
        buf = b""
        prefix = self.count_prefix.encode()
        while True:
            data = conn.recv(1 << 20)
            if not data:
                return
            buf += data
            *lines, buf = buf.split(b"\n")
            counted = 0.0
            for line in lines:
                if line.startswith(prefix):
                    parts = line.split(b" ")
                    try:
                        counted += float(parts[1])
                    except (IndexError, ValueError):
                        pass
            with self.lock:
                self.counted += counted
                self.lines += len(lines)


def datagrams():
    """A cycle of datagrams; 1 in 2 lines a counter, 1 in 4 a timer, 1 in 4 a gauge."""
    out = []
    n = 0
    counters = 0
    for d in range(NAMES * 4 // LINES_PER_DATAGRAM):
        lines = []
        for _ in range(LINES_PER_DATAGRAM):
            name = "flood.m%05d" % (n % NAMES)
            kind = n % 4
            if kind in (0, 2):
                lines.append("%s.c:1|c" % name)
                counters += 1
            elif kind == 1:
                lines.append("%s.t:%d|ms" % (name, n % 997))
            else:
                lines.append("%s.g:%d|g" % (name, n % 101))
            n += 1
        out.append("\n".join(lines).encode())
    return out, counters, n


def sender(port, rate, seconds, result):
    packets, counters, total = datagrams()
    per_datagram_counters = counters / len(packets)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    addr = ("127.0.0.1", port)
    dgram_rate = rate / LINES_PER_DATAGRAM
    start = time.perf_counter()
    sent = 0
    i = 0
    n = len(packets)
    while True:
        now = time.perf_counter() - start
        if now >= seconds:
            break
        due = int(now * dgram_rate) + 1
        while sent < due:
            try:
                s.sendto(packets[i], addr)
            except OSError:
                pass
            sent += 1
            i = i + 1 if i + 1 < n else 0
        if sent >= due:
            time.sleep(0.0005)
    result.put((sent, sent * per_datagram_counters, time.perf_counter() - start))


def flood(port, rate, seconds, senders=2):
    q = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=sender, args=(port, rate / senders, seconds, q))
             for _ in range(senders)]
    for p in procs:
        p.start()
    results = [q.get() for _ in procs]
    for p in procs:
        p.join()
    datagrams_sent = sum(r[0] for r in results)
    counters_sent = sum(r[1] for r in results)
    elapsed = max(r[2] for r in results)
    return datagrams_sent, counters_sent, elapsed


def run_peer(name, start, sink, rates, seconds):
    rows = []
    for rate in rates:
        proc, port = start(sink.port)
        time.sleep(1.5)
        with sink.lock:
            sink.counted = 0.0
        dgrams, counters_sent, elapsed = flood(port, rate, seconds)
        time.sleep(3.5)  # two more flushes
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        time.sleep(0.5)
        with sink.lock:
            delivered = sink.counted
        offered = dgrams * LINES_PER_DATAGRAM / elapsed
        loss = max(0.0, 1.0 - delivered / counters_sent) if counters_sent else 0.0
        aggregated = offered * (1.0 - loss)
        rows.append((name, rate, offered, aggregated, loss))
        print("%s at %d/s: offered %.0f/s, aggregated %.0f/s, loss %.3f%%"
              % (name, rate, offered, aggregated, loss * 100), file=sys.stderr)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--graunt", default="target/release/graunt")
    ap.add_argument("--bucky-venv", default="/tmp/bucky-venv")
    ap.add_argument("--rates", default="250000,500000,1000000,2000000")
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--graunt-only", action="store_true", help="skip bucky (to compare two graunt builds)")
    args = ap.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    bucky = os.path.join(args.bucky_venv, "bin", "bucky")
    if not os.path.exists(bucky) and not args.graunt_only:
        subprocess.run([sys.executable, "-m", "venv", args.bucky_venv], check=True)
        pip = os.path.join(args.bucky_venv, "bin", "pip")
        subprocess.run([pip, "install", "-q", "--no-deps", "bucky==2.3.0"], check=True)
        subprocess.run([pip, "install", "-q", "six", "watchdog", "pycryptodome", "setproctitle"], check=True)
    work = tempfile.mkdtemp(prefix="graunt-statsd-bench-")

    graunt_sink = Sink("stats.counters.flood.")
    bucky_sink = Sink("stats_counts.flood.")

    def start_graunt(sink_port):
        port = free_port(socket.SOCK_DGRAM)
        proc = subprocess.Popen(
            [args.graunt, "agent", "--statsd-addr", "127.0.0.1:%d" % port,
             "--destination", "127.0.0.1:%d" % sink_port, "--flush-interval", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return proc, port

    def start_bucky(sink_port):
        port = free_port(socket.SOCK_DGRAM)
        launcher = os.path.join(work, "bucky_launcher.py")
        with open(launcher, "w") as f:
            f.write(BUCKY_LAUNCHER)
        python = os.path.join(args.bucky_venv, "bin", "python")
        proc = subprocess.Popen([python, launcher, str(port), str(sink_port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return proc, port

    rows = run_peer("graunt agent", start_graunt, graunt_sink, rates, args.seconds)
    if not args.graunt_only:
        rows += run_peer("bucky 2.3.0", start_bucky, bucky_sink, rates, args.seconds)
    print("| peer | offered metrics/s | aggregated metrics/s | loss |")
    print("| --- | --- | --- | --- |")
    for name, rate, offered, aggregated, loss in rows:
        print("| %s | %.0f | %.0f | %.3f%% |" % (name, offered, aggregated, loss * 100))


if __name__ == "__main__":
    sys.exit(main())
