"""Gradients: the reference's backward twins against central finite differences in float64, the whole
network's gradients against finite differences, and the errors of a training call (DESIGN.md §8).

The conformance suite compares every backend's gradients with the reference's; this file is what
makes the reference trustworthy: each backward formula agrees with the derivative of its forward,
measured numerically, along random directions (``⟨∇f, v⟩`` against ``(f(a + εv) − f(a − εv)) / 2ε``).
"""

from __future__ import annotations

import numpy as np
import pytest

from alexnet_aa import AlexNet, UnsupportedError, get_architecture, ops
from alexnet_aa import reference as R
from alexnet_aa.reference import ArrayAPIBackend
from alexnet_aa.weights import he_weights

EPS = 1e-6


def _directional(f, args: list[np.ndarray], grads: list[np.ndarray], rng, which: range) -> float:
    """The worst relative gap between ``⟨grad, v⟩`` and the central difference of the scalar ``f``
    along a random unit direction ``v``, over the arguments ``which``."""
    worst = 0.0
    for i in which:
        v = rng.standard_normal(args[i].shape)
        v /= np.linalg.norm(v)
        plus = [a + EPS * v if j == i else a for j, a in enumerate(args)]
        minus = [a - EPS * v if j == i else a for j, a in enumerate(args)]
        numeric = (f(*plus) - f(*minus)) / (2 * EPS)
        analytic = float(np.sum(grads[i] * v))
        worst = max(worst, abs(numeric - analytic) / max(abs(analytic), 1e-8))
    return worst


CONVS = [  # (N, C, H, W, O, K, S, P, G)
    (2, 4, 9, 8, 6, 3, 2, 1, 2),
    (1, 3, 11, 11, 4, 5, 1, 2, 1),
    (2, 6, 7, 5, 4, 3, 3, 0, 2),  # stride 3 leaves input rows no window reads
    (1, 2, 6, 6, 4, 1, 1, 1, 1),  # padding wider than the kernel
    (1, 3, 23, 23, 4, 11, 4, 2, 1),  # conv1-like
]


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("case", CONVS, ids=[str(c) for c in CONVS])
def test_conv2d_backward_is_the_derivative(case, relu):
    n, c, h, w, o, k, s, p, g = case
    rng = np.random.default_rng(sum(case))
    x, wt, b = rng.standard_normal((n, c, h, w)), rng.standard_normal((o, c // g, k, k)), rng.standard_normal(o)
    y = R.conv2d(x, wt, b, (s, s), (p, p), g, relu)
    dy = rng.standard_normal(y.shape)
    dx, dw, db = R.conv2d_backward(x, wt, y, dy, (s, s), (p, p), g, relu)

    def f(x_, w_, b_):
        return float(np.sum(R.conv2d(x_, w_, b_, (s, s), (p, p), g, relu) * dy))

    assert _directional(f, [x, wt, b], [dx, dw, db], rng, range(3)) < 1e-6
    assert R.conv2d_backward(x, wt, y, dy, (s, s), (p, p), g, relu, need_dx=False)[0] is None


@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("h, k, s", [(9, 3, 2), (10, 3, 2), (7, 2, 2), (8, 3, 3)])
def test_max_pool2d_backward_is_the_derivative(h, k, s, ceil_mode):
    rng = np.random.default_rng(h * k + s)
    x = rng.permutation(2 * 3 * h * (h + 1)).reshape(2, 3, h, h + 1) / 10.0  # distinct values: no ties, no kinks
    y = R.max_pool2d(x, (k, k), (s, s), ceil_mode)
    dy = rng.standard_normal(y.shape)
    dx = R.max_pool2d_backward(x, y, dy, (k, k), (s, s), ceil_mode)
    f = lambda x_: float(np.sum(R.max_pool2d(x_, (k, k), (s, s), ceil_mode) * dy))  # noqa: E731
    assert _directional(f, [x], [dx], rng, range(1)) < 1e-6


def test_max_pool2d_ties_go_to_the_first_maximum_like_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).integers(-1, 2, (2, 3, 9, 10)).astype(np.float64)  # most windows tie
    for k, s, ceil in ((3, 2, False), (3, 2, True), (2, 2, False)):
        y = R.max_pool2d(x, (k, k), (s, s), ceil)
        dy = np.random.default_rng(1).standard_normal(y.shape)
        tx = torch.tensor(x, requires_grad=True)
        torch.nn.functional.max_pool2d(tx, k, s, ceil_mode=ceil).backward(torch.tensor(dy))
        np.testing.assert_allclose(R.max_pool2d_backward(x, y, dy, (k, k), (s, s), ceil), tx.grad.numpy(), atol=1e-12)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6])
def test_lrn_backward_is_the_derivative(size):
    """Even sizes too: the transposed window differs from the forward window there."""
    rng = np.random.default_rng(size)
    x = rng.standard_normal((2, 7, 3, 3)) * 2
    args = (size, 0.7, 0.6, 1.2)
    y = R.lrn(x, *args)
    dy = rng.standard_normal(x.shape)
    f = lambda x_: float(np.sum(R.lrn(x_, *args) * dy))  # noqa: E731
    assert _directional(f, [x], [R.lrn_backward(x, y, dy, *args)], rng, range(1)) < 1e-6


@pytest.mark.parametrize("relu", [False, True])
def test_linear_backward_is_the_derivative(relu):
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal((3, 17)), rng.standard_normal((5, 17)), rng.standard_normal(5)
    y = R.linear(x, w, b, relu)
    dy = rng.standard_normal(y.shape)
    f = lambda x_, w_, b_: float(np.sum(R.linear(x_, w_, b_, relu) * dy))  # noqa: E731
    assert _directional(f, [x, w, b], list(R.linear_backward(x, w, y, dy, relu)), rng, range(3)) < 1e-6


@pytest.mark.parametrize("name", ["tanh", "sigmoid"])
def test_activation_backward_is_the_derivative(name):
    rng = np.random.default_rng(5)
    be = ArrayAPIBackend(dtype="float64")
    x = 3 * rng.standard_normal((2, 3, 4, 5))
    y = np.asarray(ops.activation(be, x, name))
    want = np.tanh(x) if name == "tanh" else 1 / (1 + np.exp(-x))
    assert np.abs(y - want).max() < 1e-15
    dy = rng.standard_normal(y.shape)
    f = lambda x_: float(np.sum(np.asarray(ops.activation(be, x_, name)) * dy))  # noqa: E731
    assert _directional(f, [x], [np.asarray(ops.activation_backward(be, y, dy, name))], rng, range(1)) < 1e-6


@pytest.mark.parametrize("h, size", [(13, 6), (2, 6), (7, 3), (6, 6)])
def test_adaptive_avg_pool2d_backward_is_the_derivative(h, size):
    rng = np.random.default_rng(h)
    be = ArrayAPIBackend(dtype="float64")
    x = rng.standard_normal((2, 3, h, h + 1))
    dy = rng.standard_normal((2, 3, size, size))
    dx = np.asarray(ops.adaptive_avg_pool2d_backward(be, x, dy, size))
    f = lambda x_: float(np.sum(np.asarray(ops.adaptive_avg_pool2d(be, x_, size)) * dy))  # noqa: E731
    assert _directional(f, [x], [dx], rng, range(1)) < 1e-6


def test_softmax_cross_entropy_and_its_gradient():
    be = ArrayAPIBackend(dtype="float64")
    rng = np.random.default_rng(4)
    z, t = rng.standard_normal((4, 7)) * 30, np.array([0, 6, 3, 3])  # large logits: the max must be subtracted
    loss, dz = ops.softmax_cross_entropy(be, z, t)
    shifted = z - z.max(1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    assert loss == pytest.approx(-logp[np.arange(4), t].mean(), rel=1e-12)
    f = lambda z_: ops.softmax_cross_entropy(be, z_, t)[0]  # noqa: E731
    assert _directional(f, [z], [np.asarray(dz)], rng, range(1)) < 1e-6


def _network_loss(arch, arrays: dict, x, labels, grads: bool):
    """The loss of the layer table run through the float64 reference (and, with ``grads``, every
    weight's gradient by the layers' backward twins): what ``AlexNet.gradients`` computes, kept in
    float64 end to end (the model stores its weights in float32, DESIGN.md §2)."""
    be = ArrayAPIBackend(dtype="float64")
    run = ops.BackendOps(be)
    h, saved = x, []
    for layer in arch.layers:
        y = layer.apply(run, arrays, h)
        saved.append((layer, h, y))
        h = y
    loss, d = ops.softmax_cross_entropy(be, h, labels)
    if not grads:
        return loss
    out = {}
    for index in reversed(range(len(saved))):
        layer, layer_in, layer_out = saved[index]
        d, layer_grads = layer.backward(run, arrays, layer_in, layer_out, d, index > 0)
        out.update(layer_grads)
    return loss, out


@pytest.mark.parametrize("variant, size", [("paper", 227), ("caffe", 227), ("torchvision", 224), ("torchvision", 100),
                                           ("paper+tanh+no-overlap+input=99", 99),
                                           ("caffe+sigmoid+no-lrn+groups=1+dropout=0.3+input=99", 99)])
def test_network_gradients_are_the_derivative_of_the_loss(variant, size):
    """The whole table in float64, dropout on: ``⟨grads, v⟩`` against the loss's central difference
    along a random direction of all 61M weights (ε small enough that no ReLU unit changes sides)."""
    from alexnet_aa.training import dropout_masks

    rng = np.random.default_rng(size)
    arch = get_architecture(variant)
    weights = {k: w.astype(np.float64) for k, w in he_weights(arch, 1).items()}
    masks = {f"{k}.mask": m.astype(np.float64) for k, m in dropout_masks(arch, 2, 11, size).items()}
    x, labels = rng.standard_normal((2, 3, size, size)), np.array([5, 998])
    loss, grads = _network_loss(arch, {**weights, **masks}, x, labels, grads=True)
    v = {k: rng.standard_normal(w.shape) for k, w in weights.items()}
    norm = np.sqrt(sum(float(np.sum(d * d)) for d in v.values()))
    eps = 1e-6

    def loss_at(sign: float) -> float:
        return _network_loss(arch, {**{k: weights[k] + sign * eps * v[k] / norm for k in weights}, **masks}, x, labels, False)

    numeric = (loss_at(1.0) - loss_at(-1.0)) / (2 * eps)
    analytic = sum(float(np.sum(grads[k] * v[k])) for k in weights) / norm
    assert abs(numeric - analytic) < 1e-5 * abs(analytic), (numeric, analytic)


# -- errors: clear, typed, and the model unchanged --------------------------------------------


@pytest.fixture(scope="module")
def tv():
    return AlexNet("torchvision", "numpy", weights=he_weights(get_architecture("torchvision"), 2))


@pytest.mark.parametrize("labels, got", [
    (np.array([1]), r"int64 of shape \(1,\) with values 1\.\.1"),
    (np.array([1.0, 2.0]), r"float64 of shape \(2,\)"),
    (np.array([1, 1000]), r"int64 of shape \(2,\) with values 1\.\.1000"),
    (np.array([-1, 3]), r"int64 of shape \(2,\) with values -1\.\.3"),
    (np.array([[1, 2]]), r"int64 of shape \(1, 2\) with values 1\.\.2"),
])
def test_bad_labels_are_refused_before_any_work(tv, labels, got):
    before = tv.state_dict()
    with pytest.raises(ValueError, match=r"^\[gradients\] labels: expected 2 integer class indices in \[0, 1000\), got " + got + "$"):
        tv.gradients(np.zeros((2, 3, 100, 100), np.float32), labels)
    assert all(np.array_equal(before[k], v) for k, v in tv.state_dict().items())


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # inf - inf, on purpose
def test_a_non_finite_loss_is_an_error(tv):
    x = np.zeros((2, 3, 100, 100), np.float32)
    x[0, 0, 50, 50] = np.inf
    with pytest.raises(ValueError, match=r"^\[gradients\] loss: expected a finite value, got nan"):
        tv.gradients(x, np.array([1, 2]))


def test_an_inference_only_backend_names_the_missing_ops():
    from alexnet_aa import Backend

    class Forward(ArrayAPIBackend):  # the reference without its backward twins
        name = "forward-only"
        conv2d_backward, max_pool2d_backward = Backend.conv2d_backward, Backend.max_pool2d_backward
        lrn_backward, linear_backward = Backend.lrn_backward, Backend.linear_backward

    model = AlexNet("torchvision", Forward())
    with pytest.raises(UnsupportedError, match=r"^\[gradients\] the 'forward-only' backend cannot train \(inference only\): "
                                               r"it has no conv2d_backward, max_pool2d_backward, lrn_backward, linear_backward"):
        model.gradients(np.zeros((1, 3, 100, 100), np.float32), np.array([1]))


def test_a_backward_with_the_wrong_shapes_is_refused():
    be = ArrayAPIBackend()
    x = be.asarray(np.ones((1, 2, 7, 7)))
    y = ops.max_pool2d(be, x, 3, 2)
    with pytest.raises(ValueError, match=r"^\[max_pool2d_backward\] dy: expected shape \(1, 2, 3, 3\) \(the forward's output "
                                         r"for this x\), got \(1, 2, 4, 4\)$"):
        ops.max_pool2d_backward(be, x, y, be.asarray(np.ones((1, 2, 4, 4))), 3, 2)
    w = be.prepare({"w": np.ones((4, 2, 3, 3), np.float32)})["w"]
    y = ops.conv2d(be, x, w, None, 1, 1)
    with pytest.raises(ValueError, match=r"^\[conv2d_backward\] y: expected shape \(1, 4, 7, 7\)"):
        ops.conv2d_backward(be, x, w, y[:, :, :6], y, 1, 1)


def test_the_light_backward_ops_check_their_arguments():
    """flatten's and dropout's twins refuse what their forwards would: rows of another batch, another
    feature count, a mask that would broadcast or of another dtype."""
    be = ArrayAPIBackend()
    x = be.asarray(np.ones((2, 3, 2, 2)))
    with pytest.raises(ValueError, match=r"^\[flatten_backward\] dy: expected shape \(2, 12\) \(the forward's output "
                                         r"for this x\), got \(4, 6\)$"):
        ops.flatten_backward(be, x, be.asarray(np.ones((4, 6))))
    with pytest.raises(ValueError, match=r"^\[flatten_backward\] dy: expected shape \(2, 12\).*got \(2, 11\)$"):
        ops.flatten_backward(be, x, be.asarray(np.ones((2, 11))))
    dy = be.asarray(np.ones((2, 8)))
    for mask in (np.ones((1, 8)), np.ones(8)):
        with pytest.raises(ValueError, match=r"^\[dropout_backward\] mask: expected (a rank-2 array \(2, 8\) \(dy's\)"
                                             r"|dy's shape \(2, 8\)), got shape|got \(1, 8\)"):
            ops.dropout_backward(be, dy, be.asarray(mask))
    with pytest.raises(TypeError, match=r"^\[dropout_backward\] mask: expected dtype float32 \(the backend's\), got float64$"):
        ops.dropout_backward(be, dy, be.xp.asarray(np.ones((2, 8))))
    assert ops.dropout_backward(be, dy, None) is dy


def test_the_metal_lrn_kernel_has_a_vjp(monkeypatch):
    """A ``mx.fast.metal_kernel`` has no VJP of its own: ``lrn_differentiable`` gives it the explicit
    backward through ``mx.custom_function``. Metal is absent here, so a stand-in MLX cannot
    differentiate either (the plain-``mx`` forward behind ``stop_gradient``) takes the kernel's
    place; the gradient can only come from the wrapper's VJP."""
    mx = pytest.importorskip("mlx.core")
    from alexnet_aa_mlx import lrn_metal

    monkeypatch.setattr(lrn_metal, "lrn", lambda x, *args: mx.stop_gradient(lrn_metal.lrn_composed(x, *args)))
    rng = np.random.default_rng(9)
    x, dy = rng.standard_normal((2, 3, 4, 6)) * 2, rng.standard_normal((2, 3, 4, 6))
    args = (4, 0.5, 0.75, 1.0)
    _, (got,) = mx.vjp(lambda a: lrn_metal.lrn_differentiable(a, *args), [mx.array(x.astype(np.float32))],
                       [mx.array(dy.astype(np.float32))])
    nchw = lambda a: a.transpose(0, 3, 1, 2)  # noqa: E731  (the MLX functions work on NHWC)
    want = R.lrn_backward(nchw(x), R.lrn(nchw(x), *args), nchw(dy), *args)
    assert np.linalg.norm(nchw(np.asarray(got)) - want) / np.linalg.norm(want) < 1e-5
