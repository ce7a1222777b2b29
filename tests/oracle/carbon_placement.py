"""Prints, as JSON, where carbon 1.1's ConsistentHashingRouter sends each
name read from stdin (one per line), for the destinations, replication
factor, diverse-replicas switch and hash type given as arguments:

  carbon_placement.py [--tag-relay-normalized] HASH_TYPE REPLICATION DIVERSE host:port[:instance] ...

With --tag-relay-normalized, a tagged name is normalised first, as carbon's
relay does with TAG_RELAY_NORMALIZED = True.
"""
import json
import sys

from carbon.routers import ConsistentHashingRouter
from carbon.util import TaggedSeries, parseDestinations


class Settings(dict):
    __getattr__ = dict.get


def main():
    args = sys.argv[1:]
    normalize = args[:1] == ["--tag-relay-normalized"]
    if normalize:
        args = args[1:]
    hash_type, replication, diverse = args[0], int(args[1]), args[2] == "1"
    router = ConsistentHashingRouter(Settings(
        REPLICATION_FACTOR=replication, DIVERSE_REPLICAS=diverse, ROUTER_HASH_TYPE=hash_type))
    for destination in parseDestinations(args[3:]):
        router.addDestination(destination)
    out = []
    for name in sys.stdin.read().split("\n"):
        if name:
            if normalize:
                name = TaggedSeries.parse(name).path
            out.append(["%s:%s:%s" % d for d in router.getDestinations(name)])
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
