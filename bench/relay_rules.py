"""Relay throughput with carbon's rule files: 100 rewrite rules and 100
aggregation rules, graunt relay against carbon-aggregator 1.1.10 (which
applies both, as carbon's aggregator pipeline does) and carbon-c-relay
(Debian's, with 100 `rewrite` and 100 `aggregate` clauses) on the same
input, in the same run.

  python3 bench/relay_rules.py [--lines 1000000] [--graunt target/release/graunt]
                               [--python .venv/bin/python]

Input: LINES plaintext lines `in.rK.hH.mM V T` over 2 TCP connections,
K = 0..99: each line matches one of 100 `[pre]` rewrite rules
(`^in\\.rK\\.(.*)` to `out.rK.\\1`) and then one of 100 aggregation rules
(`agg.rK.<m> (10) = sum out.rK.*.<m>`), which every relay must try in
turn. Every input is forwarded too (FORWARD_ALL) to one TCP sink; lines/s =
LINES / time until the sink holds LINES rewritten inputs (the aggregates
come on top). Relay CPU = user + system seconds of the relay process.
Results print as Markdown rows.
"""
import argparse
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from relay import cpu_seconds, free_port, send, sink  # noqa: E402

RULES = 100


def wait_port(port):
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            return
        except OSError:
            time.sleep(0.1)


def run(name, start, lines):
    counter = multiprocessing.Value("q", 0)
    port = free_port()
    s = multiprocessing.Process(target=sink, args=("127.0.0.1", port, counter), daemon=True)
    s.start()
    time.sleep(0.5)
    proc, in_port = start(port)
    t = int(time.time()) - 30
    halves = []
    for h in range(2):
        body = "".join("in.r%d.h%d.m%d %d %d\n" % (i % RULES, (i // RULES) % 50, h, i % 1000, t)
                       for i in range(h * lines // 2, (h + 1) * lines // 2))
        halves.append(body.encode())
    cpu0 = cpu_seconds(proc.pid)
    started = time.perf_counter()
    senders = [multiprocessing.Process(target=send, args=(in_port, b)) for b in halves]
    for p in senders:
        p.start()
    deadline = started + 900
    while counter.value < lines and time.perf_counter() < deadline:
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds(proc.pid) - cpu0
    got = counter.value
    for p in senders:
        p.join()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    s.terminate()
    print("%s: %d of %d lines in %.2f s: %.0f lines/s, %.2f CPU s"
          % (name, got, lines, elapsed, lines / elapsed, cpu), file=sys.stderr)
    return lines / elapsed, cpu, got >= lines, elapsed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=1000000)
    ap.add_argument("--graunt", default="target/release/graunt")
    ap.add_argument("--python", default=".venv/bin/python")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="graunt-rules-bench-")
    rewrite = os.path.join(work, "rewrite-rules.conf")
    aggregation = os.path.join(work, "aggregation-rules.conf")
    with open(rewrite, "w") as f:
        f.write("[pre]\n")
        for k in range(RULES):
            f.write("^in\\.r%d\\.(.*) = out.r%d.\\1\n" % (k, k))
    with open(aggregation, "w") as f:
        for k in range(RULES):
            f.write("agg.r%d.<m> (10) = sum out.r%d.*.<m>\n" % (k, k))

    def start_graunt(sink_port):
        port = free_port()
        conf = os.path.join(work, "relay.toml")
        with open(conf, "w") as f:
            f.write("self_metrics_interval = 3600\nmax_queue = 10000000\n")
            f.write('rewrite_rules = "%s"\naggregation_rules = "%s"\n' % (rewrite, aggregation))
            f.write('destinations = ["127.0.0.1:%d:a"]\n' % sink_port)
            f.write('[[tenant]]\nname = "bench"\nmax_age = 100000000\n')
            f.write('listener = [{ protocol = "line", addr = "127.0.0.1:%d" }]\n' % port)
        proc = subprocess.Popen([args.graunt, "relay", "--config", conf],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port)
        return proc, port

    def start_aggregator(sink_port):
        line = free_port()
        conf = os.path.join(work, "conf")
        storage = os.path.join(work, "storage")
        os.makedirs(conf, exist_ok=True)
        os.makedirs(os.path.join(storage, "log"), exist_ok=True)
        open(os.path.join(conf, "storage-schemas.conf"), "w").close()
        shutil.copy(aggregation, os.path.join(conf, "aggregation-rules.conf"))
        shutil.copy(rewrite, os.path.join(conf, "rewrite-rules.conf"))
        with open(os.path.join(conf, "carbon.conf"), "w") as f:
            f.write("[cache]\nSTORAGE_DIR = %s\nLOCAL_DATA_DIR = %s/whisper\nLOG_DIR = %s/log\nPID_DIR = %s\n\n"
                    % (storage, storage, storage, storage))
            f.write("[aggregator]\nLINE_RECEIVER_INTERFACE = 127.0.0.1\nLINE_RECEIVER_PORT = %d\n"
                    "PICKLE_RECEIVER_INTERFACE = 127.0.0.1\nPICKLE_RECEIVER_PORT = %d\n"
                    "ENABLE_UDP_LISTENER = False\nFORWARD_ALL = True\nDESTINATIONS = 127.0.0.1:%d\n"
                    "MAX_QUEUE_SIZE = 10000000\nMAX_DATAPOINTS_PER_MESSAGE = 5000\nUSE_FLOW_CONTROL = True\n"
                    "CARBON_METRIC_INTERVAL = 0\nMAX_AGGREGATION_INTERVALS = 5\n"
                    % (line, free_port(), sink_port))
        bindir = os.path.dirname(os.path.abspath(args.python))
        proc = subprocess.Popen([args.python, os.path.join(bindir, "carbon-aggregator.py"),
                                 "--config=%s" % os.path.join(conf, "carbon.conf"),
                                 "--rules=%s" % os.path.join(conf, "aggregation-rules.conf"),
                                 "--rewrite-rules=%s" % os.path.join(conf, "rewrite-rules.conf"),
                                 "--nodaemon", "start"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(line)
        return proc, line

    def start_c_relay(sink_port):
        port = free_port()
        conf = os.path.join(work, "c-relay.conf")
        with open(conf, "w") as f:
            f.write("cluster sink forward 127.0.0.1:%d;\n" % sink_port)
            for k in range(RULES):
                f.write("rewrite ^in\\.r%d\\.(.*) into out.r%d.\\1;\n" % (k, k))
            for k in range(RULES):
                f.write("aggregate ^out\\.r%d\\.[^.]+\\.([^.]+)$ every 10 seconds expire after 20 seconds "
                        "compute sum write to agg.r%d.\\1 send to sink;\n" % (k, k))
            f.write("match * send to sink;\n")
            f.write("listen\n  type linemode\n    127.0.0.1:%d proto tcp\n  ;\n" % port)
        proc = subprocess.Popen(["carbon-c-relay", "-f", conf, "-w", "2", "-q", "10000000", "-b", "5000"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port)
        return proc, port

    rows = []
    try:
        for name, start in [("graunt relay", start_graunt),
                            ("carbon-aggregator 1.1.10", start_aggregator),
                            ("carbon-c-relay 3.7.3", start_c_relay)]:
            rows.append((name, run(name, start, args.lines)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("| peer | lines/s | relay CPU seconds | every input delivered |")
    print("| --- | --- | --- | --- |")
    for name, r in rows:
        print("| %s | %.0f | %.2f | %s |" % (name, r[0], r[1], "yes" if r[2] else "no (%.0f s)" % r[3]))


if __name__ == "__main__":
    sys.exit(main())
