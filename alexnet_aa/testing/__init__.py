"""The conformance suite: proves a backend computes the same AlexNet as the reference.

Every case draws fresh random data, runs one op (or the whole network) on
the backend under test and on the float64 oracle — the ``array-api``
backend on NumPy — and compares them by relative L2 error
``‖y − ref‖₂ / ‖ref‖₂`` against a named tolerance (DESIGN.md §5). Failures
report the measured error, the op, backend, shapes, dtype and the seed.

Run it against any registered backend, ours or yours::

    python -m pytest --pyargs alexnet_aa.testing.conformance --alexnet-backend NAME

(the pytest plugin :mod:`alexnet_aa.testing.plugin` is registered by the
``alexnet-aa`` distribution). See ``docs/writing-a-backend.md``.
"""

from .compare import (
    TOLERANCES,
    ConformanceError,
    assert_conforms,
    oracle,
    relative_error,
    tolerance,
)

__all__ = ["TOLERANCES", "ConformanceError", "assert_conforms", "oracle", "relative_error", "tolerance"]
