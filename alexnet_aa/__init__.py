"""alexnet_aa: one AlexNet, written once against the Python Array API, on every backend.

>>> import alexnet_aa
>>> alexnet_aa.count_params("paper")
60965224
"""

from .architecture import VARIANTS, count_macs, count_params, get_architecture, layer_infos
from .arrays import example_input, to_numpy
from .backend import (
    Backend,
    BackendError,
    BackendUnavailableError,
    UnknownBackendError,
    UnsupportedError,
    available_backends,
    get_backend,
    registered_backends,
)
from .bundles import AlexNetWeights
from .model import AlexNet, Prediction
from .training import SGD, Schedule
from .weights import WeightsError, WeightsFileError, load_weights, save_weights

__version__ = "0.1.0"

__all__ = [
    "AlexNet",
    "AlexNetWeights",
    "Backend",
    "BackendError",
    "BackendUnavailableError",
    "Prediction",
    "SGD",
    "Schedule",
    "UnknownBackendError",
    "UnsupportedError",
    "VARIANTS",
    "WeightsError",
    "WeightsFileError",
    "available_backends",
    "count_macs",
    "count_params",
    "example_input",
    "get_architecture",
    "get_backend",
    "layer_infos",
    "load_weights",
    "registered_backends",
    "save_weights",
    "to_numpy",
]
