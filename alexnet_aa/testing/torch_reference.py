"""AlexNet in ``torch.nn.functional``, from the same layer table and canonical weights.

An oracle independent of our ops — PyTorch's own conv, LRN, pooling, adaptive
average pooling and linear — for the tests, and the peer the benchmarks time
against. :class:`TorchOps` is an interpreter of the layer table: each layer
spec applies itself through it as it does through
:class:`alexnet_aa.ops.BackendOps` in the model. torch is imported by the
caller and passed in, so this module imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ..architecture import Architecture


def torch_weights(torch: Any, params: Mapping[str, Any], device: str = "cpu") -> dict[str, Any]:
    """Canonical host arrays → float32 torch tensors (canonical layouts are torch's)."""
    return {name: torch.as_tensor(value, dtype=torch.float32, device=device).contiguous() for name, value in params.items()}


class TorchOps:
    """The op set of the layer specs, on NCHW torch tensors through ``torch.nn.functional`` (evaluation mode)."""

    def __init__(self, torch: Any) -> None:
        self.torch, self.F = torch, torch.nn.functional

    def conv2d(self, x, w, b, stride, padding, groups, relu):
        y = self.F.conv2d(x, w, b, stride, padding, 1, groups)
        return self.F.relu(y) if relu else y

    def max_pool2d(self, x, kernel, stride, ceil_mode):
        return self.F.max_pool2d(x, kernel, stride, ceil_mode=ceil_mode)

    def lrn(self, x, size, alpha, beta, k):
        return self.F.local_response_norm(x, size, alpha=alpha, beta=beta, k=k)

    def linear(self, x, w, b, relu):
        y = self.F.linear(x, w, b)
        return self.F.relu(y) if relu else y

    def adaptive_avg_pool2d(self, x, output_size):
        return self.F.adaptive_avg_pool2d(x, output_size)

    def flatten(self, x):
        return self.torch.flatten(x, 1)

    def dropout(self, x, p, mask=None):
        return x if mask is None else x * mask

    def activation(self, x, name):
        return self.torch.tanh(x) if name == "tanh" else self.torch.sigmoid(x)


def torch_layers(torch: Any, arch: Architecture, weights: Mapping[str, Any], x: Any) -> Iterator[tuple[str, Any]]:
    """Yield ``(layer name, output)`` for every layer of ``arch``, NCHW, in evaluation mode."""
    ops = TorchOps(torch)
    for layer in arch.layers:
        x = layer.apply(ops, weights, x)
        yield layer.name, x


def torch_forward(torch: Any, arch: Architecture, weights: Mapping[str, Any], x: Any) -> Any:
    """The logits of ``arch`` on ``x`` (a torch tensor), under ``torch.inference_mode``."""
    with torch.inference_mode():
        for _, x in torch_layers(torch, arch, weights, x):
            pass
    return x


def torch_gradients(torch: Any, arch: Architecture, weights: Mapping[str, Any], x: Any, labels: Any,
                    masks: Mapping[str, Any] | None = None, dtype: Any = None) -> tuple[float, dict[str, Any]]:
    """``(loss, grads)`` by PyTorch autograd: the mean ``F.cross_entropy`` of ``arch`` on ``x`` against
    ``labels``, with the dropout ``masks`` (layer name → host mask, as
    :func:`alexnet_aa.training.dropout_masks` draws them), in ``dtype`` (default float32); gradients
    as NumPy arrays by canonical name."""
    dtype = dtype or torch.float32
    params = {name: torch.as_tensor(value, dtype=dtype).clone().requires_grad_(True) for name, value in weights.items()}
    arrays = {**params, **{f"{name}.mask": torch.as_tensor(m, dtype=dtype) for name, m in (masks or {}).items()}}
    for _, z in torch_layers(torch, arch, arrays, torch.as_tensor(x, dtype=dtype)):
        pass
    loss = torch.nn.functional.cross_entropy(z, torch.as_tensor(labels, dtype=torch.int64))
    loss.backward()
    return float(loss.detach()), {name: p.grad.numpy() for name, p in params.items()}
