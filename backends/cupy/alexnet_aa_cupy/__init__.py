"""alexnet_aa backend ``cupy``: hand-written CUDA kernels (NVRTC via CuPy) on NVIDIA GPUs.

Importing this package does not import cupy; :meth:`CupyBackend.available`
says why it cannot run (cupy missing, no driver or GPU, no NVRTC).
"""

from .backend import CupyBackend

__all__ = ["CupyBackend"]
