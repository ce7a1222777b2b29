"""Memory per cached point, split by kind: graunt serve with its writer held
back takes METRICS x ROUNDS points (bench/ingest.py's load), then the
growth of its anonymous memory (smaps_rollup) is divided by the points.

  python3 bench/cache_memory.py BIN [METRICS] [ROUNDS]

Where bench/ingest.py reports RSS, this separates anonymous memory from
file pages, and takes the metric and round counts, so a per-metric cost
can be told from a per-point one (run 100000 1 and 10000 100). Build BIN
with the system allocator to see the structures' live size without what
mimalloc keeps of freed memory.
"""
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ingest  # noqa: E402


def snapshot(pid):
    fields = {}
    for line in open("/proc/%d/smaps_rollup" % pid):
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit():
            fields[parts[0].rstrip(":")] = int(parts[1])
    return fields


def main():
    binary = sys.argv[1]
    metrics = int(sys.argv[2]) if len(sys.argv) > 2 else 100000
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    work = tempfile.mkdtemp(prefix="graunt-cache-memory-")
    peer = ingest.Graunt(binary, work, True)
    base = int(time.time()) - int(time.time()) % 10 - rounds * 10
    payloads = ingest.make_payloads(metrics, rounds, base)
    total = metrics * rounds
    time.sleep(1)
    before = snapshot(peer.proc.pid)
    for t in ingest.send_all(peer.port, payloads):
        t.join()
    while peer.counters()[0] < total:
        time.sleep(0.2)
    time.sleep(1)
    after = snapshot(peer.proc.pid)
    peer.stop()
    shutil.rmtree(work, ignore_errors=True)
    for kind in ("Rss", "Anonymous", "Pss_File"):
        print("%s: %.1f bytes per cached point" % (kind, (after.get(kind, 0) - before.get(kind, 0)) * 1024.0 / total))


if __name__ == "__main__":
    main()
