"""Collection for the README's `python3 -m pytest`: modules whose optional engine is not installed are
not imported by --doctest-modules (their tests skip with the reason)."""

import importlib.util

collect_ignore = [] if importlib.util.find_spec("distributed") else ["alexnet_aa/distributed.py"]
