"""Prints, as JSON, where carbon 1.1's ConsistentHashingRouter sends each
name read from stdin (one per line), for the destinations, replication
factor, diverse-replicas switch and hash type given as arguments:

  carbon_placement.py HASH_TYPE REPLICATION DIVERSE host:port[:instance] ...
"""
import json
import sys

from carbon.routers import ConsistentHashingRouter
from carbon.util import parseDestinations


class Settings(dict):
    __getattr__ = dict.get


def main():
    hash_type, replication, diverse = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
    router = ConsistentHashingRouter(Settings(
        REPLICATION_FACTOR=replication, DIVERSE_REPLICAS=diverse, ROUTER_HASH_TYPE=hash_type))
    for destination in parseDestinations(sys.argv[4:]):
        router.addDestination(destination)
    out = []
    for name in sys.stdin.read().split("\n"):
        if name:
            out.append(["%s:%s:%s" % d for d in router.getDestinations(name)])
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
