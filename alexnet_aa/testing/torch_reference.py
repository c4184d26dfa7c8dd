"""AlexNet in ``torch.nn.functional``, from the same layer table and canonical weights.

An oracle independent of our ops (PyTorch's own conv, LRN, pooling, linear)
for the tests, and the peer the benchmarks time against. torch is imported
by the caller and passed in, so this module imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ..architecture import LRN, AdaptiveAvgPool, Architecture, Conv, Dropout, Flatten, Linear, MaxPool


def torch_weights(torch: Any, params: Mapping[str, Any], device: str = "cpu") -> dict[str, Any]:
    """Canonical host arrays → float32 torch tensors (canonical layouts are torch's)."""
    return {name: torch.as_tensor(value, dtype=torch.float32, device=device).contiguous() for name, value in params.items()}


def torch_layers(torch: Any, arch: Architecture, weights: Mapping[str, Any], x: Any) -> Iterator[tuple[str, Any]]:
    """Yield ``(layer name, output)`` for every layer of ``arch``, NCHW, in evaluation mode."""
    F = torch.nn.functional
    for layer in arch.layers:
        name = layer.name
        if isinstance(layer, Conv):
            x = F.conv2d(x, weights[f"{name}.weight"], weights[f"{name}.bias"], layer.stride, layer.padding, 1, layer.groups)
            if layer.relu:
                x = F.relu(x)
        elif isinstance(layer, LRN):
            x = F.local_response_norm(x, layer.size, alpha=layer.alpha, beta=layer.beta, k=layer.k)
        elif isinstance(layer, MaxPool):
            x = F.max_pool2d(x, layer.kernel, layer.stride, ceil_mode=layer.ceil_mode)
        elif isinstance(layer, AdaptiveAvgPool):
            x = F.adaptive_avg_pool2d(x, layer.output_size)
        elif isinstance(layer, Flatten):
            x = torch.flatten(x, 1)
        elif isinstance(layer, Linear):
            x = F.linear(x, weights[f"{name}.weight"], weights[f"{name}.bias"])
            if layer.relu:
                x = F.relu(x)
        elif not isinstance(layer, Dropout):
            raise TypeError(f"unknown layer {layer!r}")
        yield name, x


def torch_forward(torch: Any, arch: Architecture, weights: Mapping[str, Any], x: Any) -> Any:
    """The logits of ``arch`` on ``x`` (a torch tensor), under ``torch.inference_mode``."""
    with torch.inference_mode():
        for _, x in torch_layers(torch, arch, weights, x):
            pass
    return x
