"""Benchmark one training step of a backend against PyTorch, in one run: forward + backward + update.

Both sides run the same canonical weights, input, labels and dropout masks (drawn on the host,
DESIGN.md §8) in float32: ours through ``model.train_step`` (the training forward, the loss, every
layer's backward twin, the paper's SGD with momentum and weight decay in place on the backend's
weights), PyTorch through ``torch.nn.functional`` with autograd and ``torch.optim.SGD`` with the same
momentum and weight decay (the same update while the learning rate is constant). Times are the
best of ``--repeats`` after a warm-up step; the ratio is our images/s over PyTorch's (> 1: ours is
faster). Per-layer backward times follow.

    python benchmarks/bench_train.py [--backend numpy] [--variants paper,torchvision] [--batch 32] [--out FILE]
    python benchmarks/bench_train.py --backend cupy --device cuda      # on a GPU machine, against cuDNN
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from alexnet_aa import AlexNet, get_architecture
from alexnet_aa.testing.torch_reference import torch_layers
from alexnet_aa.training import SGD, dropout_masks
from alexnet_aa.weights import he_weights
from report import best_of, emit, layer_table

LR, MOMENTUM, WEIGHT_DECAY = 0.01, 0.9, 5e-4  # the paper's


def settle(backend):
    """A function that returns once the arrays it is given are computed: MLX is lazy (``mx.eval``),
    CuPy asynchronous (its stream), NumPy done already."""
    if backend.name == "mlx":
        import mlx.core as mx

        return lambda arrays: mx.eval(*arrays)
    if backend.name == "cupy":
        import cupy

        return lambda arrays: cupy.cuda.get_current_stream().synchronize()
    return lambda arrays: None


def ours(model: AlexNet, x, labels, seed: int):
    """One step, ``model.train_step`` with the paper's SGD (momentum 0.9, weight decay 5e-4), in
    place on the backend's weights. ``step.wait()`` returns once every updated weight is computed;
    ``step.layers(layer_ms)`` times each layer's backward (no update), each waited for."""
    wait = settle(model.backend)
    opt = SGD(LR, MOMENTUM, WEIGHT_DECAY)

    def step():
        return model.train_step(x, labels, opt, seed)

    def layers(layer_ms: dict):
        _, steps = model.backward_steps(x, labels, seed)  # the forward has run: its loss is a float
        start = time.perf_counter()
        for s in steps:
            wait(list(s.grads.values()) + ([s.dx] if s.dx is not None else []))
            now = time.perf_counter()
            layer_ms[s.layer.name] = (now - start) * 1e3
            start = now

    step.wait = lambda: wait(list(model.native_params.values()))
    step.layers = layers
    return step


def theirs(torch, arch, weights, x, labels, masks, device: str):
    params = {name: torch.tensor(w, device=device, requires_grad=True) for name, w in weights.items()}
    arrays = {**params, **{f"{name}.mask": torch.tensor(m, device=device) for name, m in masks.items()}}
    opt = torch.optim.SGD(params.values(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    tx, tl = torch.tensor(x, device=device), torch.tensor(labels, device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        for _, z in torch_layers(torch, arch, arrays, tx):
            pass
        loss = torch.nn.functional.cross_entropy(z, tl)
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", default="numpy")
    p.add_argument("--device", default="cpu", help="PyTorch's device (cpu, cuda)")
    p.add_argument("--variants", default="paper,torchvision")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", help="also write the Markdown report here")
    args = p.parse_args(argv)

    import torch

    if args.device == "cuda":
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False

    def sync():
        if args.device == "cuda":
            torch.cuda.synchronize()

    lines = [
        f"# one training step: {args.backend} backend vs PyTorch ({args.device}), batch {args.batch}",
        "",
        f"- machine: {platform.machine()}, {os.cpu_count()} cores ({platform.processor() or platform.platform()})",
        f"- numpy {np.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads), python {platform.python_version()}",
        f"- step = forward + backward + SGD update (lr {LR}, momentum {MOMENTUM}, weight decay {WEIGHT_DECAY}: "
        "`model.train_step` against `torch.optim.SGD`), dropout on (host masks, the same on both sides); "
        f"best of {args.repeats} after one warm-up step; float32",
        f"- command: `python benchmarks/bench_train.py --backend {args.backend} --device {args.device} "
        f"--variants {args.variants} --batch {args.batch} --repeats {args.repeats}`",
        "",
        f"| variant | batch | {args.backend} img/s | torch img/s | {args.backend}/torch speed | first loss {args.backend} | first loss torch |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    layer_tables = []
    rng = np.random.default_rng(0)
    for variant in args.variants.split(","):
        arch = get_architecture(variant)
        weights = he_weights(arch, 0)
        size = arch.input_size
        x = rng.standard_normal((args.batch, 3, size, size), dtype=np.float32)
        labels = rng.integers(0, 1000, args.batch)
        masks = dropout_masks(arch, args.batch, 1, size)
        model = AlexNet(variant, args.backend, weights=weights)
        mine, peer = ours(model, x, labels, 1), theirs(torch, arch, weights, x, labels, masks, args.device)
        l_ours, l_torch = float(mine()), float(peer())  # the first step's loss: the same weights on both sides
        t_ours = best_of(mine, args.repeats, mine.wait)
        layer_ms: dict[str, float] = {}
        mine.layers(layer_ms)  # before PyTorch's timing: its threads spin for a while after each step
        layer_tables.append((variant, layer_ms))
        t_torch = best_of(peer, args.repeats, sync)
        lines.append(f"| {variant} | {args.batch} | {args.batch / t_ours:,.1f} | {args.batch / t_torch:,.1f} | "
                     f"{t_torch / t_ours:.2f} | {l_ours:.4f} | {l_torch:.4f} |")
        print(lines[-1], flush=True)
    lines.append("")
    for variant, layer_ms in layer_tables:
        lines += layer_table(f"{args.backend} backward per layer: {variant}, batch {args.batch} "
                             "(ms, without the update)", layer_ms, 1)
    return emit(lines, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
