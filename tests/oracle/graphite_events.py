"""Replays a list of HTTP steps against a stock graphite-web 1.1.10 with its
own event database (Django's test client, no server) and prints each answer.

  graphite_events.py STEPS.json

Each step is {"method": "GET"|"POST"|"DELETE", "path": ..., optionally
"body" (the request body, text) and "accept"}. Prints a JSON list with
{"status", "body", "content_type"} for each step.
"""
import json
import sys
import tempfile

import graphite_web


def main():
    with open(sys.argv[1]) as f:
        steps = json.load(f)
    web = graphite_web.client(tempfile.mkdtemp(prefix="whisper-"))
    out = []
    for step in steps:
        extra = {}
        if "accept" in step:
            extra["HTTP_ACCEPT"] = step["accept"]
        method = step["method"]
        if method == "POST":
            response = web.post(step["path"], data=step.get("body", ""),
                                content_type="application/json", **extra)
        elif method == "DELETE":
            response = web.delete(step["path"], **extra)
        else:
            response = web.get(step["path"], **extra)
        out.append(graphite_web.answer(response))
    json.dump(out, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
