"""AlexNet as an ONNX graph, from the same layer table and canonical weights.

The ONNX Runtime peer of the CPU benchmarks (``benchmarks/bench_cpu_peers.py``):
:class:`OnnxOps` is an interpreter of the layer table, as
:class:`~alexnet_aa.testing.torch_reference.TorchOps` is, that records one ONNX
node (or two: an op and its ReLU) per op instead of computing. Each node is
named after its layer (``conv1``, ``conv1.relu``, ``lrn1``, …), so the ONNX
Runtime profiler's per-node times line up with our per-layer ones. ``onnx`` is
imported by the caller and passed in, so this module imports nothing heavy.

ONNX's ``LRN`` divides α by the window size, as :func:`alexnet_aa.reference.lrn`
does, so the table's parameters pass through unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..architecture import Architecture, layer_infos


class OnnxOps:
    """The op set of the layer specs, recording ONNX nodes on symbolic tensors (their names) for
    the layer being applied (``self.layer``); weights are initializers named as the canonical ones."""

    def __init__(self, helper: Any) -> None:
        self.helper, self.nodes, self.layer, self.shape = helper, [], "", None

    def _node(self, op: str, inputs: list[str], suffix: str = "", **attrs: Any) -> str:
        name = self.layer + suffix
        self.nodes.append(self.helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def _relu(self, y: str, relu: bool) -> str:
        return self._node("Relu", [y], ".relu") if relu else y

    def conv2d(self, x, w, b, stride, padding, groups, relu):
        kernel = self.kernel_of[w]
        y = self._node("Conv", [x, w, b], kernel_shape=[kernel, kernel], strides=[stride, stride],
                       pads=[padding] * 4, group=groups)
        return self._relu(y, relu)

    def max_pool2d(self, x, kernel, stride, ceil_mode):
        return self._node("MaxPool", [x], kernel_shape=[kernel, kernel], strides=[stride, stride],
                          ceil_mode=int(ceil_mode))

    def lrn(self, x, size, alpha, beta, k):
        return self._node("LRN", [x], size=size, alpha=alpha, beta=beta, bias=k)

    def linear(self, x, w, b, relu):
        return self._relu(self._node("Gemm", [x, w, b], transB=1), relu)

    def adaptive_avg_pool2d(self, x, output_size):
        side = self.shape[1]  # this layer's input side (set by onnx_model from the table)
        if side == output_size:
            return self._node("Identity", [x])
        if side % output_size:
            raise ValueError(f"{self.layer}: ONNX has no adaptive average pool; {side}x{side} -> {output_size}x"
                             f"{output_size} is not a plain average pool (use an input size whose pool5 is a multiple)")
        kernel = side // output_size
        return self._node("AveragePool", [x], kernel_shape=[kernel, kernel], strides=[kernel, kernel])

    def flatten(self, x):
        return self._node("Flatten", [x], axis=1)

    def dropout(self, x, p, mask=None):
        return x  # evaluation mode: the identity

    def activation(self, x, name):
        return self._node("Tanh" if name == "tanh" else "Sigmoid", [x], f".{name}")


def onnx_model(onnx: Any, arch: Architecture, weights: Mapping[str, np.ndarray], input_size: int | None = None,
               batch: int | None = None) -> Any:
    """An ONNX ``ModelProto`` (opset 17) computing ``arch``'s logits from ``input`` (NCHW float32;
    ``batch`` fixed, or symbolic when None) with ``weights`` as initializers, checked by ``onnx.checker``."""
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    ops = OnnxOps(helper)
    ops.kernel_of = {f"{row.name}.weight": row.layer.kernel for row in layer_infos(arch, input_size)
                     if hasattr(row.layer, "kernel") and f"{row.name}.weight" in weights}
    x = "input"
    for row in layer_infos(arch, input_size):
        ops.layer, ops.shape = row.name, row.in_shape
        x = row.layer.apply(ops, {name: name for name in weights}, x)
    size = arch.input_size if input_size is None else input_size
    graph = helper.make_graph(
        ops.nodes, f"alexnet_{arch.variant}",
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [batch or "N", 3, size, size])],
        [helper.make_tensor_value_info(x, onnx.TensorProto.FLOAT, [batch or "N", arch.num_classes])],
        [numpy_helper.from_array(np.ascontiguousarray(v, dtype=np.float32), name) for name, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="alexnet_aa")
    onnx.checker.check_model(model)
    return model
