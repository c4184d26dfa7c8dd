"""PyTorch CPU (torch.nn.functional) as an external oracle: same canonical weights, same logits."""

import numpy as np
import pytest

from alexnet_aa import AlexNet, example_input, to_numpy
from alexnet_aa.architecture import VARIANTS, get_architecture
from alexnet_aa.testing import relative_error
from alexnet_aa.testing.torch_reference import torch_forward, torch_weights
from alexnet_aa.weights import he_weights

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module", params=VARIANTS)
def case(request):
    variant = request.param
    weights = he_weights(get_architecture(variant), 7)
    x = example_input(variant, batch=2, seed=11)
    logits = torch_forward(torch, get_architecture(variant), torch_weights(torch, weights), torch.from_numpy(x)).numpy()
    return variant, weights, x, logits


@pytest.mark.parametrize("backend", ["numpy", "array-api", "mlx"])
def test_logits_agree_with_torch(case, backend):
    variant, weights, x, want = case
    try:
        model = AlexNet(variant, backend, weights=weights)
    except Exception as exc:  # an uninstalled or unavailable backend is not this test's subject
        pytest.skip(f"{backend}: {exc}")
    got = to_numpy(model(x))
    err = relative_error(got, want)
    assert err < 1e-4, f"{variant} on {backend}: relative L2 error against torch {err:.2e}"
    np.testing.assert_array_equal(got.argmax(1), want.argmax(1))


def test_lrn_window_odd_sizes_as_torch_even_sizes_as_onnx():
    """Odd sizes: PyTorch's local_response_norm and ours agree (N != C, large alpha). Even sizes:
    ours is ONNX's window c - floor((n-1)/2) .. c + ceil((n-1)/2), checked by a naive loop;
    PyTorch's reaches one channel further down instead."""
    from alexnet_aa import reference

    x = np.random.default_rng(0).standard_normal((3, 8, 4, 5)) * 3
    for size in (1, 3, 5, 7):
        want = torch.nn.functional.local_response_norm(torch.from_numpy(x), size, alpha=0.7, beta=0.75, k=1.5).numpy()
        assert relative_error(reference.lrn(x, size, 0.7, 0.75, 1.5), want) < 1e-12
    for size in (2, 4):
        lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
        naive = np.empty_like(x)
        for c in range(x.shape[1]):
            window = (x[:, max(0, c - lo) : min(x.shape[1], c + hi + 1)] ** 2).sum(axis=1)
            naive[:, c] = x[:, c] / (1.5 + 0.7 / size * window) ** 0.75
        assert relative_error(reference.lrn(x, size, 0.7, 0.75, 1.5), naive) < 1e-12
        torch_even = torch.nn.functional.local_response_norm(torch.from_numpy(x), size, alpha=0.7, beta=0.75, k=1.5).numpy()
        assert relative_error(torch_even, naive) > 1e-3, "PyTorch's even-size window now matches ONNX: update the docs"


@pytest.mark.parametrize("backend", ["array-api", "numpy"])
@pytest.mark.parametrize("variant, size", [("paper", 227), ("caffe", 227), ("torchvision", 224), ("torchvision", 100),
                                           ("paper+tanh+input=99", 99), ("caffe+sigmoid+no-overlap+groups=1+input=99", 99)])
def test_gradients_agree_with_torch_autograd(variant, size, backend):
    """``model.gradients`` against PyTorch autograd on the same weights, input, labels and dropout masks,
    both sides in float64 (so no ReLU unit sits within rounding of zero); float32 is what comes back."""
    from alexnet_aa.testing.torch_reference import torch_gradients
    from alexnet_aa.training import dropout_masks

    arch = get_architecture(variant)
    weights = he_weights(arch, 3)
    x = np.random.default_rng(size).standard_normal((2, 3, size, size)).astype(np.float32)
    labels = np.array([7, 512])
    for seed in (None, 21):
        loss, grads = AlexNet(variant, backend, weights=weights, dtype="float64").gradients(x, labels, seed)
        want_loss, want = torch_gradients(torch, arch, weights, x, labels, dropout_masks(arch, 2, seed, size), torch.float64)
        assert loss == pytest.approx(want_loss, rel=1e-10)
        errors = {k: relative_error(grads[k], want[k]) for k in want}
        assert max(errors.values()) < 1e-6, (seed, sorted(errors.items(), key=lambda kv: -kv[1])[:3])
