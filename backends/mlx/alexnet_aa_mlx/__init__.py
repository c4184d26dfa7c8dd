"""AlexNet-AA's ``mlx`` backend: ``alexnet_aa.AlexNet(..., backend="mlx")``.

Registered through the entry point ``alexnet_aa.backends: mlx = "alexnet_aa_mlx:MLXBackend"``.
Importing this package does not import ``mlx``; :meth:`MLXBackend.available` says whether it can run.
"""

from .backend import MIN_MLX_VERSION, MLXBackend

__all__ = ["MLXBackend", "MIN_MLX_VERSION"]
