#!/usr/bin/env python3
"""`/render` latency with authentication on and off (issue 15).

sumSeries over 1,000 series x 1 day at 10 s (bench/render.py's tree), median
of sequential POSTs after a warm-up, `now` fixed, against one node:

  - open: no `[[user]]`;
  - bearer: a `[[user]]` with a token, sent as `Authorization: Bearer`;
  - basic: a `[[user]]` with an argon2 password, sent as HTTP Basic (the
    first request pays argon2, later ones hit the 60 s cache);
  - tenant: a bearer token with `namespaces = ["servers."]` (every read
    through the namespace fence).

Usage: cargo build --release -p graunt && python3 bench/auth.py [--samples 20]
"""

import argparse
import base64
import http.client
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import render  # noqa: E402

TOKEN = "bench-token-0123456789"


def post(port, headers):
    body = urllib.parse.urlencode({"target": render.SUM, "from": "-1d", "now": str(render.NOW),
                                   "format": "json"})
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    h = {"Content-Type": "application/x-www-form-urlencoded"}
    h.update(headers)
    t = time.perf_counter()
    c.request("POST", "/render", body, h)
    r = c.getresponse()
    data = r.read()
    elapsed = time.perf_counter() - t
    if r.status != 200 or b"datapoints" not in data:
        raise SystemExit("bad answer %d: %r" % (r.status, data[:300]))
    return elapsed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--graunt", default="target/release/graunt")
    ap.add_argument("--python", default=".venv/bin/python")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="graunt-auth-bench-")
    try:
        whisper = os.path.join(work, "data", "whisper")
        os.makedirs(whisper)
        render.build_tree(args.python, whisper, 1000)
        hashed = subprocess.run([args.graunt, "passwd"], input="bench password\n", capture_output=True,
                                text=True, check=True).stdout.strip()
        basic = "Basic " + base64.b64encode(b"ops:bench password").decode()
        configs = {
            "open": ("", {}),
            "bearer": ('[[user]]\nname = "ops"\ntoken = "%s"\n' % TOKEN, {"Authorization": "Bearer " + TOKEN}),
            "basic": ('[[user]]\nname = "ops"\npassword_hash = "%s"\n' % hashed, {"Authorization": basic}),
            "tenant": ('[[user]]\nname = "t"\ntoken = "%s"\nnamespaces = ["servers."]\n' % TOKEN,
                       {"Authorization": "Bearer " + TOKEN}),
        }
        rows = []
        for name, (config, headers) in configs.items():
            conf = os.path.join(work, "%s.toml" % name)
            with open(conf, "w") as f:
                f.write(config)
            port = render.free_port()
            proc = subprocess.Popen(
                [args.graunt, "serve", "--config", conf, "--data-dir", os.path.join(work, "data"),
                 "--http-addr", "127.0.0.1:%d" % port, "--line-addr", "", "--pickle-addr", "",
                 "--carbonlink-addr", "", "--statsd-addr", ""],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                render.wait_http(port, "/version")
                first = post(port, headers)
                times = [post(port, headers) for _ in range(args.samples)]
                rows.append((name, first, statistics.median(times)))
                print(rows[-1], file=sys.stderr)
            finally:
                proc.terminate()
                proc.wait()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = rows[0][2]
    print("| login | first request | median of the next %d | / open |" % args.samples)
    print("| --- | --- | --- | --- |")
    for name, first, median in rows:
        print("| %s | %.1f ms | %.1f ms | %.2fx |" % (name, first * 1e3, median * 1e3, median / base))


if __name__ == "__main__":
    main()
