"""carbon 1.1.10's rewrite rules and white/blacklists applied to names, as
carbon's receivers and pipeline apply them: the blacklist, then the
whitelist (when not empty), then [pre] and [post] rewrite rules.

  python carbon_rules.py REWRITE_RULES WHITELIST BLACKLIST NAMES

Prints a JSON object: name -> the name carbon passes on, or null when a
list drops it.
"""
import json
import sys

from carbon.regexlist import RegexList
from carbon.rewrite import PRE, POST, RewriteRuleManager

rewrite, whitelist, blacklist, names = sys.argv[1:5]
RewriteRuleManager.rules_file = rewrite
RewriteRuleManager.read_rules()
white, black = RegexList(), RegexList()
white.list_file, black.list_file = whitelist, blacklist
white.read_list()
black.read_list()

out = {}
with open(names) as f:
    for line in f:
        name = line.rstrip("\n")
        if not name:
            continue
        if black and name in black:
            out[name] = None
            continue
        if white and name not in white:
            out[name] = None
            continue
        for ruleset in (PRE, POST):
            for rule in RewriteRuleManager.rules(ruleset):
                name_before = name
                name = rule.apply(name)
        out[line.rstrip("\n")] = name
print(json.dumps(out, indent=1, sort_keys=True))
