"""Drives Python whisper 1.1.10 as the oracle for graunt's storage tests.

Reads a JSON list of operations on stdin and prints a JSON list with one
result per operation. Each operation is an object with an "op" key:

  create       path, archives [[spp, points]...], xff, method, sparse
  update       path, value, ts, now
  update_many  path, points [[ts, value]...], now
  fetch        path, from, until, now, archive (precision string or null)
  info         path
  merge        from, to, time_from, time_to, now
  fill         src, dst, now          (the whisper-fill.py script's logic)
  set_order    items [ints...]        (iteration order of set(items))

A result is {"ok": value} or {"error": "ExceptionClass: message"}.
Values are JSON-safe: floats that are not finite become strings.
"""
import json
import math
import os
import sys
import time
import importlib.machinery
import importlib.util

import whisper


def safe(v):
    if isinstance(v, float) and not math.isfinite(v):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return [safe(x) for x in v]
    if isinstance(v, dict):
        return {k: safe(x) for k, x in v.items()}
    return v


def load_fill():
    path = os.path.join(os.path.dirname(sys.executable), "whisper-fill.py")
    loader = importlib.machinery.SourceFileLoader("whisper_fill", path)
    spec = importlib.util.spec_from_loader("whisper_fill", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def run(op):
    kind = op["op"]
    if kind == "create":
        whisper.create(op["path"], [tuple(a) for a in op["archives"]],
                       xFilesFactor=op.get("xff"), aggregationMethod=op.get("method"),
                       sparse=op.get("sparse", False))
        return None
    if kind == "update":
        return whisper.update(op["path"], op["value"], op.get("ts"), now=op["now"])
    if kind == "update_many":
        return whisper.update_many(op["path"], [tuple(p) for p in op["points"]], now=op["now"])
    if kind == "fetch":
        return whisper.fetch(op["path"], op["from"], op.get("until"), now=op["now"],
                             archiveToSelect=op.get("archive"))
    if kind == "info":
        return whisper.info(op["path"])
    if kind == "merge":
        return whisper.merge(op["from"], op["to"], op.get("time_from"), op.get("time_to"),
                             now=op["now"])
    if kind == "fill":
        real = time.time
        time.time = lambda: op["now"]
        try:
            fill = load_fill()
            return fill.fill_archives(op["src"], op["dst"], op["now"])
        finally:
            time.time = real
    if kind == "set_order":
        return list(set(op["items"]))
    raise ValueError("unknown op %r" % kind)


def main():
    results = []
    for op in json.load(sys.stdin):
        try:
            results.append({"ok": safe(run(op))})
        except Exception as exc:  # the error itself is the answer being compared
            results.append({"error": "%s: %s" % (type(exc).__name__, exc)})
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
