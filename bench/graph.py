"""PNG rendering: an 800x600 graph of 20 series x 1 day at 10 s, graunt
against graphite-web 1.1.10's cairo renderer (gunicorn, 4 workers) over the
same whisper files, same run.

  python3 bench/graph.py [--samples 10] [--graunt target/release/graunt]

Reuses bench/render.py's tree (1,000 series; the graph takes 20 of them)
and its peer start-up. Median latency of sequential GET /render requests
after one warm-up. Results print as a Markdown row.
"""
import argparse
import http.client
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import render  # noqa: E402

PATH = ("/render?target=servers.host00%5B0-1%5D*.cpu.user&from=-1d&width=800&height=600"
        "&now=" + str(render.NOW))


def measure(port, samples):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)

    def get():
        c.request("GET", PATH)
        r = c.getresponse()
        body = r.read()
        if r.status != 200 or not body.startswith(b"\x89PNG"):
            raise SystemExit("bad answer %d: %r" % (r.status, body[:200]))

    get()
    times = []
    for _ in range(samples):
        t = time.perf_counter()
        get()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--graunt", default="target/release/graunt")
    ap.add_argument("--python", default=".venv/bin/python")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="graunt-graph-bench-")
    data = os.path.join(work, "data")
    whisper_dir = os.path.join(data, "whisper")
    os.makedirs(whisper_dir)
    render.build_tree(args.python, whisper_dir, 1000)
    try:
        proc, port = render.start_graunt(args.graunt, data)
        try:
            g = measure(port, args.samples)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait()
        gw = os.path.join(work, "graphite-web")
        os.makedirs(gw)
        proc, port = render.start_graphite_web(os.path.abspath(args.python), whisper_dir, gw)
        try:
            p = measure(port, args.samples)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("| measure | graunt | graphite-web 1.1.10 (cairo) | ratio |")
    print("| --- | --- | --- | --- |")
    print("| 800x600 PNG, 20 series x 1 day (median) | %.1f ms | %.1f ms | %.1fx |"
          % (g * 1e3, p * 1e3, p / g))


if __name__ == "__main__":
    sys.exit(main())
