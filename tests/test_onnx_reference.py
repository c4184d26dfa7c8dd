"""The ONNX graph of the layer table (the ONNX Runtime peer of benchmarks/bench_cpu_peers.py)."""

import numpy as np
import pytest

from alexnet_aa import AlexNet, example_input
from alexnet_aa.architecture import VARIANTS, Dropout, get_architecture
from alexnet_aa.testing import relative_error
from alexnet_aa.testing.compare import oracle
from alexnet_aa.testing.onnx_reference import onnx_model
from alexnet_aa.weights import he_weights

onnx = pytest.importorskip("onnx", reason="needs onnx: pip install onnx")


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_is_a_valid_graph_named_after_its_layers(variant):
    arch = get_architecture(variant)
    model = onnx_model(onnx, arch, he_weights(arch, 0), batch=2)  # onnx.checker inside
    names = {node.name.split(".")[0] for node in model.graph.node}
    assert names == {layer.name for layer in arch.layers if not isinstance(layer, Dropout)}  # the identity there
    assert {init.name for init in model.graph.initializer} == set(he_weights(arch, 0))


@pytest.mark.parametrize("variant", ["torchvision", "torchvision+tanh", "torchvision+sigmoid+dropout=0.2"])
def test_the_graph_computes_the_reference_logits(variant):
    """onnx's own pure-NumPy runtime on the torchvision graph and ablated ones (its LRN is not ONNX
    Runtime's: the LRN variants are checked against the reference by the benchmark, on ONNX Runtime,
    before timing)."""
    from onnx.reference import ReferenceEvaluator

    arch = get_architecture(variant)
    weights, x = he_weights(arch, 1), example_input("torchvision", 1, 3)
    got = ReferenceEvaluator(onnx_model(onnx, arch, weights)).run(None, {"input": x})[0]
    assert relative_error(got, np.asarray(AlexNet(variant, oracle(), weights=weights)(x))) < 1e-5


def test_an_adaptive_pool_onnx_cannot_express_is_refused():
    arch = get_architecture("torchvision")
    with pytest.raises(ValueError, match="ONNX has no adaptive average pool"):
        onnx_model(onnx, arch, he_weights(arch, 0), input_size=100)
