"""``alexnet_aa.visualize``: tile layout of the filter grid, activation grids, the command's files."""

from __future__ import annotations

import numpy as np
import pytest

from alexnet_aa.cli import main
from alexnet_aa.visualize import (
    GAP_VALUE,
    activation_grid,
    filter_grid,
    grid_shape,
    synthetic_image,
    tile_grid,
)

Image = pytest.importorskip("PIL.Image", reason="the pictures are written with Pillow")


@pytest.mark.parametrize("n, shape", [(96, (8, 12)), (64, (8, 8)), (256, (16, 16)), (384, (16, 24)),
                                      (192, (12, 16)), (1, (1, 1)), (7, (3, 3))])
def test_grid_shape(n, shape):
    assert grid_shape(n) == shape


def _tiles(image: np.ndarray, rows: int, cols: int, tile: int, gap: int = 1):
    """Split a grid image back into its tiles, checking that every gap line is GAP_VALUE."""
    assert image.shape[:2] == (rows * tile + (rows + 1) * gap, cols * tile + (cols + 1) * gap)
    step = tile + gap
    for r in range(rows + 1):
        assert (image[r * step : r * step + gap] == GAP_VALUE).all(), f"gap row {r} is not blank"
    for c in range(cols + 1):
        assert (image[:, c * step : c * step + gap] == GAP_VALUE).all(), f"gap column {c} is not blank"
    return [image[gap + r * step : gap + r * step + tile, gap + c * step : gap + c * step + tile]
            for r in range(rows) for c in range(cols)]


@pytest.mark.parametrize("n, rows, cols", [(96, 8, 12), (64, 8, 8)])
def test_filter_grid_layout_and_normalisation(n, rows, cols):
    """paper/caffe conv1 (96 filters) → 8×12, torchvision (64) → 8×8; each tile its filter, min-max per filter."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((n, 3, 11, 11)) * rng.uniform(0.01, 10, (n, 1, 1, 1))  # very different scales
    scale = 3
    grid = filter_grid(w, scale=scale)
    assert grid.dtype == np.uint8 and grid.shape[2] == 3
    tiles = _tiles(grid, rows, cols, 11 * scale)
    for i, tile in enumerate(tiles):
        assert tile.min() == 0 and tile.max() == 255, f"filter {i} is not min-max normalised on its own"
        f = w[i].transpose(1, 2, 0)
        want = np.round((f - f.min()) / (f.max() - f.min()) * 255).astype(np.uint8)
        np.testing.assert_array_equal(tile[::scale, ::scale], want, err_msg=f"tile {i} is not filter {i}")
        np.testing.assert_array_equal(tile, want.repeat(scale, 0).repeat(scale, 1))


def test_filter_grid_rejects_non_rgb_filters():
    with pytest.raises(ValueError, match="RGB filters"):
        filter_grid(np.ones((4, 5, 3, 3)))


def test_activation_grid_per_channel_and_dead_channels():
    rng = np.random.default_rng(1)
    a = np.maximum(rng.standard_normal((12, 13, 13)), 0)
    a[3] = 0.0  # a dead channel
    a[4] *= 1000.0
    grid = activation_grid(a)  # 13 px maps are scaled up to >= 24 px: scale 2
    assert grid.ndim == 2
    tiles = _tiles(grid, 3, 4, 26)  # 12 channels: 3 rows of 4
    assert (tiles[3] == 0).all(), "a constant channel must be black"
    for i in (0, 4, 11):
        assert tiles[i].min() == 0 and tiles[i].max() == 255


def test_tile_grid_checks_its_arguments():
    with pytest.raises(ValueError, match="cannot hold"):
        tile_grid(np.zeros((5, 2, 2)), 2, 2)
    with pytest.raises(ValueError, match="scale"):
        tile_grid(np.zeros((1, 2, 2)), scale=0)


def test_synthetic_image():
    card = synthetic_image(227, seed=3)
    assert card.shape == (227, 227, 3) and card.dtype == np.uint8 and card.std() > 20
    np.testing.assert_array_equal(card, synthetic_image(227, seed=3))


def test_visualize_command_writes_the_pictures(tmp_path, capsys):
    # a 400x256 image, left half red, right half blue: the 224 centre crop keeps both halves
    rgb = np.zeros((256, 400, 3), np.uint8)
    rgb[:, :200, 0] = 255
    rgb[:, 200:, 2] = 255
    image = tmp_path / "halves.png"
    Image.fromarray(rgb).save(image)
    out = tmp_path / "pictures"
    assert main(["visualize", "--variant", "torchvision", "--out", str(out), "--image", str(image)]) == 0
    printed = capsys.readouterr().out
    assert "seeded random" in printed and str(image) in printed and "top-5 classes" in printed

    names = ["conv1_filters", "input"] + [f"activations_{n}" for n in
                                          ("conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5",
                                           "avgpool")]
    assert sorted(p.stem for p in out.glob("*.png")) == sorted(names)
    sizes = {p.stem: Image.open(p).size for p in out.glob("*.png")}
    assert sizes["conv1_filters"] == (8 * 44 + 9, 8 * 44 + 9)  # 64 filters of 11x11 at scale 4: 8x8 tiles
    assert sizes["input"] == (224, 224)
    assert sizes["activations_conv1"] == (8 * 55 + 9,) * 2  # 64 channels of 55x55
    assert sizes["activations_conv2"] == (16 * 27 + 17, 12 * 27 + 13)  # 192 channels of 27x27 as 12x16
    assert sizes["activations_pool5"] == (16 * 24 + 17,) * 2  # 256 channels of 6x6, scaled to 24 px
    assert Image.open(out / "conv1_filters.png").mode == "RGB"
    assert Image.open(out / "activations_conv3.png").mode == "L"
    _tiles(np.asarray(Image.open(out / "conv1_filters.png")), 8, 8, 44)
    seen = np.asarray(Image.open(out / "input.png"))
    assert seen[112, 10, 0] > 200 and seen[112, 10, 2] < 50, "the centre crop's left part is red"
    assert seen[112, 213, 2] > 200 and seen[112, 213, 0] < 50, "the centre crop's right part is blue"


def test_visualize_uses_the_given_weights(tmp_path):
    """``--weights``: the filter grid shows the file's conv1, whatever fc8's width."""
    from alexnet_aa.architecture import get_architecture
    from alexnet_aa.weights import he_weights, save_weights

    params = he_weights(get_architecture("paper", num_classes=10), 7)
    ramp = np.linspace(-1.0, 1.0, 11)
    params["conv1.weight"][:] = 0.0
    params["conv1.weight"][:, 0] = ramp[None, :, None]  # every filter: red rising from top to bottom
    path = save_weights(tmp_path / "w.safetensors", params)
    assert main(["visualize", "--weights", str(path), "--out", str(tmp_path / "out")]) == 0
    grid = np.asarray(Image.open(tmp_path / "out" / "conv1_filters.png"))
    tiles = _tiles(grid, 8, 12, 44)  # paper: 96 filters as 8x12
    for tile in tiles:  # min-max over the whole filter: red -1 → 0, +1 → 255; green and blue 0 → 128
        assert tile[0, :, 0].max() == 0 and tile[-1, :, 0].min() == 255 and (tile[..., 1:] == 128).all()
