"""carbon-aggregator 1.1.10's aggregation, driven in-process with carbon's
own classes: the rules file read by its RuleManager, every input line
through its AggregationProcessor (FORWARD_ALL as given), then each buffer's
compute at a fixed `now` (what its LoopingCall runs every `frequency`
seconds), twice: once after the input, once after a second input that
lands partly in intervals already sent (carbon sends those again, with
every value of the interval).

  python carbon_aggregator.py RULES INPUT1 INPUT2 NOW FORWARD_ALL(0|1)

Prints JSON: {"forwarded": [[name, ts, value]...], "generated1": [...],
"generated2": [...]}, each sorted.
"""
import json
import sys
import time

from carbon.conf import settings

settings.FORWARD_ALL = sys.argv[5] == "1"
settings.MAX_AGGREGATION_INTERVALS = 5
settings.WRITE_BACK_FREQUENCY = None
settings.CACHE_METRIC_NAMES_MAX = 0

from twisted.internet.task import LoopingCall  # noqa: E402

# Buffers start a LoopingCall each; the reactor never runs here, the
# computes are called below at the chosen time.
LoopingCall.start = lambda self, interval, now=True: None
LoopingCall.running = False

from carbon import state  # noqa: E402
from carbon.aggregator.buffers import BufferManager  # noqa: E402
from carbon.aggregator.processor import AggregationProcessor  # noqa: E402
from carbon.aggregator.rules import RuleManager  # noqa: E402

generated = []


class Events:
    def metricGenerated(self, metric, datapoint):
        generated.append([metric, datapoint[0], datapoint[1]])


class Instrumentation:
    def increment(self, *a, **k):
        pass


state.events = Events()
state.instrumentation = Instrumentation()

rules, input1, input2, now = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
RuleManager.rules_file = rules
RuleManager.read_rules()
processor = AggregationProcessor()
forwarded = []


def feed(path):
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) != 3:
                continue
            name, value, ts = parts[0], float(parts[1]), int(parts[2])
            for out in processor.process(name, (ts, value)):
                forwarded.append([out[0], out[1][0], out[1][1]])


def compute():
    real_time = time.time
    time.time = lambda: now
    try:
        for buf in list(BufferManager.buffers.values()):
            buf.compute_value()
    finally:
        time.time = real_time
    out = sorted(generated)
    del generated[:]
    return out


feed(input1)
generated1 = compute()
feed(input2)
generated2 = compute()
print(json.dumps({"forwarded": sorted(forwarded), "generated1": generated1,
                  "generated2": generated2, "buffers_left": sorted(BufferManager.buffers)},
                 indent=0))
