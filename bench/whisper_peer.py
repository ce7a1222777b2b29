"""Python whisper's side of `cargo bench -p graunt-storage --bench whisper`.

Runs one workload over files the Rust bench prepared and prints the seconds
it took, measured in-process with perf_counter (interpreter start-up excluded).

  whisper_peer.py many_files DIR COUNT NOW
  whisper_peer.py one_file PATH CALLS NOW
  whisper_peer.py fetch DIR COUNT NOW
  whisper_peer.py create DIR COUNT NOW   (10s:1h,1m:1d, fallocate as carbon's default)
"""
import os
import sys
import time

import whisper


def main():
    kind, target, count, now = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    if kind == "many_files":
        paths = [os.path.join(target, "m%05d.wsp" % i) for i in range(count)]
        start = time.perf_counter()
        for i, path in enumerate(paths):
            whisper.update_many(path, [(now - 5, float(i))], now=now)
        elapsed = time.perf_counter() - start
    elif kind == "one_file":
        start = time.perf_counter()
        for call in range(count):
            base = now - 1000 + call * 10
            points = [(base - 10 * k, float(k)) for k in range(100)]
            whisper.update_many(target, points, now=base)
        elapsed = time.perf_counter() - start
    elif kind == "fetch":
        paths = [os.path.join(target, "f%04d.wsp" % i) for i in range(count)]
        start = time.perf_counter()
        total = 0
        for path in paths:
            (_, _, _), values = whisper.fetch(path, now - 86400, now, now=now)
            total += len(values)
        elapsed = time.perf_counter() - start
        assert total == count * 8640, total
    elif kind == "create":
        os.makedirs(target, exist_ok=True)
        paths = [os.path.join(target, "c%05d.wsp" % i) for i in range(count)]
        start = time.perf_counter()
        for path in paths:
            whisper.create(path, [(10, 360), (60, 1440)], useFallocate=True)
        elapsed = time.perf_counter() - start
    else:
        raise SystemExit("unknown workload %s" % kind)
    print("%.6f" % elapsed)


if __name__ == "__main__":
    main()
