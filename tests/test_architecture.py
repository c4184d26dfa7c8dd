"""The layer tables and their formulas: published totals, and output sizes against PyTorch's."""

import math
import re
from pathlib import Path

import pytest

from alexnet_aa.architecture import (
    VARIANTS,
    flat_feature_layers,
    flattened_map_shape,
    get_architecture,
    conv_output_size,
    count_macs,
    count_params,
    layer_infos,
    param_shapes,
    pool_output_size,
)
from alexnet_aa.model import AlexNet


@pytest.mark.parametrize(
    "variant, params, macs",
    [("paper", 60_965_224, 724_406_816), ("caffe", 60_965_224, 724_406_816), ("torchvision", 61_100_840, 714_188_480)],
)
def test_published_totals(variant, params, macs):
    assert count_params(variant) == params
    assert count_macs(variant) == macs


@pytest.mark.parametrize("variant", VARIANTS)
def test_table_params_equal_built_model(variant):
    model = AlexNet(variant, "numpy")
    assert sum(v.size for v in model.state_dict().values()) == model.num_params == count_params(variant)
    assert {k: v.shape for k, v in model.state_dict().items()} == param_shapes(get_architecture(variant))


def test_pool_output_size_matches_torch():
    torch = pytest.importorskip("torch")
    for size in range(3, 80):
        for kernel, stride in [(3, 2), (2, 2), (3, 3), (5, 3)]:
            if size < kernel:
                continue
            x = torch.zeros(1, 1, size, size)
            for ceil in (False, True):
                want = torch.nn.functional.max_pool2d(x, kernel, stride, ceil_mode=ceil).shape[-1]
                assert pool_output_size(size, kernel, stride, ceil) == want, (size, kernel, stride, ceil)


def test_floor_and_ceil_differ_at_54_but_not_at_canonical_sizes():
    assert (pool_output_size(54, 3, 2), pool_output_size(54, 3, 2, True)) == (26, 27)
    for size in (55, 27, 13):
        assert pool_output_size(size, 3, 2) == pool_output_size(size, 3, 2, True)


def test_conv_output_size_formula():
    assert conv_output_size(227, 11, 4, 0) == 55
    assert conv_output_size(224, 11, 4, 2) == 55
    assert conv_output_size(27, 5, 1, 2) == 27


def test_explain_fills_in_numbers():
    conv1 = layer_infos(get_architecture("paper"))[0]
    assert "floor((227 - 11 + 2*0) / 4) + 1 = 55" in conv1.explain


def test_torchvision_accepts_other_sizes_and_too_small_is_an_error():
    infos = layer_infos(get_architecture("torchvision"), 100)
    assert [i.out_shape for i in infos if i.name == "avgpool"] == [(256, 6, 6)]
    with pytest.raises(ValueError, match="too small"):
        layer_infos(get_architecture("torchvision"), 40)


def test_unknown_variant_lists_known():
    with pytest.raises(ValueError, match="paper, caffe, torchvision"):
        get_architecture("vgg")


def test_num_classes_changes_only_the_head():
    shapes = param_shapes(get_architecture("paper", num_classes=10))
    assert shapes["fc8.weight"] == (10, 4096) and shapes["fc7.weight"] == (4096, 4096)


def test_flattened_map_and_flat_feature_layers_are_read_off_the_table():
    assert flattened_map_shape(get_architecture("paper")) == (256, 6, 6)
    assert flat_feature_layers(get_architecture("paper")) == ("flatten",)
    assert flat_feature_layers(get_architecture("torchvision")) == ("flatten", "drop6")  # dropout before fc6


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_spec_answers_for_itself(variant):
    """Each row's params are the sum of its canonical shapes, its config is one line, and the
    output-size formula (where there is one) ends in the output size."""
    for info in layer_infos(get_architecture(variant)):
        layer = info.layer
        assert info.params == sum(math.prod(s) for s in layer.param_shapes().values())
        assert layer.config() and "\n" not in layer.config() and layer.kind
        latex = layer.output_size_latex(info.in_shape)
        assert latex is None or latex.endswith(f"= {info.out_shape[1]}"), (layer.name, latex)


def test_nothing_outside_the_table_switches_on_the_layer_type():
    """The layer specs apply and describe themselves; only ``Architecture.layers_of`` filters by kind."""
    root = Path(__file__).resolve().parents[1]
    hits = [f"{path.relative_to(root)}:{n}" for folder in ("alexnet_aa", "backends", "benchmarks", "docs")
            for path in (root / folder).rglob("*.py")
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if re.search(r"isinstance\((i\.|info\.)?layer\b|type\((i\.|info\.)?layer\)\s*(is|==|in)|\blayer\.kind\s*(==|!=|in)\b", line)]
    assert len(hits) == 1 and hits[0].startswith("alexnet_aa/architecture.py:"), hits
