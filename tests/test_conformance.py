"""The shared conformance suite, run for every registered backend (see alexnet_aa.testing.plugin)."""

from alexnet_aa.testing.conformance import *  # noqa: F403
