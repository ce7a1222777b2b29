"""graphite-web 1.1.10's time parser as an oracle.

Reads JSON [{"expr": "...", "tz": "UTC", "now": 1700000000}, ...] on stdin and
prints a JSON list: epoch seconds, or {"error": "..."}.
"""
import json
import sys

from django.conf import settings

settings.configure(TIME_ZONE="UTC", USE_TZ=True)

import pytz  # noqa: E402
from graphite.render.attime import parseATTime  # noqa: E402

out = []
for case in json.load(sys.stdin):
    tz = pytz.timezone(case["tz"])
    try:
        now = parseATTime(str(case["now"]), tz)
        out.append(int(parseATTime(case["expr"], tz, now).timestamp()))
    except Exception as exc:  # the failure itself is the answer
        out.append({"error": "%s: %s" % (type(exc).__name__, exc)})
json.dump(out, sys.stdout)
