"""The numpy backend against ONNX Runtime and PyTorch on the CPU: every variant, batch 1 and 32.

Each peer runs in its own process, and the peers alternate, round after round
(thread pools that spin after a call, OpenMP's and ONNX Runtime's, would
otherwise slow whatever runs next in the same process). The same canonical
weights (He-scaled, seeded) and input go to each. Every peer's logits are
checked against our float64 reference before anything is timed:

- ours: the numpy backend (``AlexNet(variant, "numpy")``);
- PyTorch: ``torch.nn.functional`` on the same layer table, under
  ``inference_mode``;
- ONNX Runtime: the layer table as an ONNX graph
  (:mod:`alexnet_aa.testing.onnx_reference`), every graph optimisation on, one
  intra-op thread per core.

A cell's time is the best over all rounds of each process's best of
``--repeats`` calls after a warm-up. GFLOP/s counts 2 × MACs of the table. The
peak is the measured SGEMM rate of NumPy's BLAS (2048³, all cores). Per-layer
times: ours from the forward's own layers; ONNX Runtime's from its profiler
(the node times of each layer summed; the Conv+ReLU fusion keeps the Conv's
name).

    pip install onnxruntime      # the peer; never a test dependency
    python benchmarks/bench_cpu_peers.py [--variants paper,caffe,torchvision] [--batches 1,32] [--rounds 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from alexnet_aa.architecture import VARIANTS, count_macs, get_architecture
from report import best_of, blas_line, emit

PEERS = ("ours", "torch", "onnxruntime")
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# -- one peer, in its own process ----------------------------------------------------------------


def _peer(peer: str, variant: str, batch: int, data: str, repeats: int, profile: bool) -> dict:
    """Time ``peer`` on the weights and input in ``data`` (an .npz); the relative error of its logits
    against the reference logits stored there; per-layer milliseconds if ``profile``."""
    from alexnet_aa.testing import relative_error

    arrays = np.load(data)
    weights = {k[2:]: arrays[k] for k in arrays.files if k.startswith("w:")}
    x, reference = arrays["x"], arrays["reference"]
    arch = get_architecture(variant)
    layers: dict[str, float] = {}
    if peer == "ours":
        from alexnet_aa import AlexNet

        model = AlexNet(variant, "numpy", weights=weights)
        run = lambda: np.asarray(model(x))  # noqa: E731
        if profile:
            run()  # warm-up
            for _ in range(repeats):
                start, step = time.perf_counter(), {}
                for name, _ in model.iter_layers(x):
                    now = time.perf_counter()
                    step[name], start = (now - start) * 1e3, now
                layers = {k: min(layers.get(k, float("inf")), v) for k, v in step.items()}
    elif peer == "torch":
        import torch

        from alexnet_aa.testing.torch_reference import torch_forward, torch_weights

        tw, tx = torch_weights(torch, weights), torch.from_numpy(x)
        run = lambda: torch_forward(torch, arch, tw, tx).numpy()  # noqa: E731
    else:
        import onnx
        import onnxruntime as ort

        from alexnet_aa.testing.onnx_reference import onnx_model

        model_bytes = onnx_model(onnx, arch, weights, batch=batch).SerializeToString()

        def session(profile_prefix: str | None = None):
            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.intra_op_num_threads, opts.inter_op_num_threads = CORES, 1
            if profile_prefix:
                opts.enable_profiling, opts.profile_file_prefix = True, profile_prefix
            return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])

        sess = session()
        run = lambda: sess.run(None, {"input": x})[0]  # noqa: E731
        if profile:
            with tempfile.TemporaryDirectory() as tmp:
                prof = session(str(Path(tmp) / "ort"))
                for _ in range(repeats + 1):
                    prof.run(None, {"input": x})
                layers = _ort_layers(json.loads(Path(prof.end_profiling()).read_text()), repeats + 1)
    err = relative_error(run(), reference)
    return {"seconds": best_of(run, repeats), "error": err, "layers": layers}


def _ort_layers(trace: list[dict], runs: int) -> dict[str, float]:
    """Milliseconds per layer from ONNX Runtime's profile, the fastest of ``runs`` runs. Its node names
    are ours (``conv1``, ``conv1.relu``) as its optimiser leaves them: ``fused fc6`` (Gemm+ReLU),
    ``conv1.relu_nchwc`` (Conv+ReLU in its blocked layout); nodes it adds itself (``ReorderOutput``,
    the layout conversion) keep their own names."""
    per_run: dict[str, list[float]] = {}
    for event in trace:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            node = event["name"][: -len("_kernel_time")].removeprefix("fused ").removesuffix("_nchwc")
            per_run.setdefault(node.split(".")[0], []).append(event["dur"] / 1e3)
    out = {}
    for layer, times in per_run.items():  # each layer's node times in run order: the fastest run's sum
        per = len(times) // runs
        out[layer] = min(sum(times[i * per:(i + 1) * per]) for i in range(runs))
    return out


def _sgemm_gflops(n: int = 2048) -> float:
    a, b = np.random.default_rng(0).standard_normal((2, n, n), dtype=np.float32)
    return 2 * n**3 / best_of(lambda: a @ b, 5) / 1e9


# -- the parent: data, rounds, the report --------------------------------------------------------


def _child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{' '.join(args)} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--batches", default="1,32")
    p.add_argument("--rounds", type=int, default=3, help="alternations of the three peers' processes")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per process, after a warm-up")
    p.add_argument("--profile-batch", type=int, default=32, help="batch of the per-layer tables")
    p.add_argument("--out", help="also write the Markdown report here")
    p.add_argument("--peer", choices=PEERS, help=argparse.SUPPRESS)
    p.add_argument("--sgemm", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--variant", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.sgemm:
        print(json.dumps({"gflops": _sgemm_gflops(), "blas": blas_line()}))
        return 0
    if args.peer:
        print(json.dumps(_peer(args.peer, args.variant, args.batch, args.data, args.repeats, args.profile)))
        return 0

    import onnxruntime
    import torch

    from alexnet_aa import AlexNet, example_input
    from alexnet_aa.testing.compare import oracle
    from alexnet_aa.weights import he_weights

    sgemm = _child("--sgemm")
    peak = sgemm["gflops"]
    variants, sizes = args.variants.split(","), [int(b) for b in args.batches.split(",")]
    rows, profiles = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in variants:
            arch = get_architecture(variant)
            weights = he_weights(arch, 0)
            for batch in sizes:
                x = example_input(variant, batch, 0)
                reference = np.asarray(AlexNet(variant, oracle(), weights=weights)(x))
                data = str(Path(tmp) / f"{variant}-{batch}.npz")
                np.savez(data, x=x, reference=reference, **{f"w:{k}": v for k, v in weights.items()})
                common = ["--variant", variant, "--batch", str(batch), "--data", data, "--repeats", str(args.repeats)]
                best = {peer: float("inf") for peer in PEERS}
                errors = {}
                for _ in range(args.rounds):
                    for peer in PEERS:
                        result = _child("--peer", peer, *common)
                        best[peer], errors[peer] = min(best[peer], result["seconds"]), result["error"]
                rows.append((variant, batch, best, errors))
                if batch == args.profile_batch:
                    profiles[variant] = {peer: _child("--peer", peer, *common, "--profile")["layers"]
                                         for peer in ("ours", "onnxruntime")}

    lines = [
        "# numpy backend vs ONNX Runtime and PyTorch on the CPU",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} with",
        "",
        "```bash",
        " ".join(["python", "benchmarks/bench_cpu_peers.py", *(argv if argv is not None else sys.argv[1:])]),
        "```",
        "",
        f"- machine: {platform.machine()}, {CORES} cores ({platform.processor() or platform.platform()}); "
        f"measured SGEMM peak of NumPy's BLAS (2048³, all cores): **{peak:.0f} GFLOP/s**",
        f"- {sgemm['blas']}",
        f"- numpy {np.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads), onnxruntime "
        f"{onnxruntime.__version__} (all graph optimisations, {CORES} intra-op threads), python {platform.python_version()}",
        f"- each peer in its own process, {args.rounds} alternating rounds × best of {args.repeats} calls after a "
        "warm-up; float32; the same He-scaled weights and input for all; every peer's logits checked against "
        "the float64 reference",
        "",
        "| variant | batch | ours img/s | PyTorch img/s | ONNX Runtime img/s | ours / faster peer | ours GFLOP/s "
        "(% of peak) | ORT GFLOP/s (% of peak) | logits error ours / torch / ORT |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for variant, batch, best, errors in rows:
        flops = 2 * count_macs(variant) * batch
        rate = {peer: batch / s for peer, s in best.items()}
        faster = max(rate["torch"], rate["onnxruntime"])
        g = {peer: flops / best[peer] / 1e9 for peer in PEERS}
        lines.append(
            f"| {variant} | {batch} | {rate['ours']:.1f} | {rate['torch']:.1f} | {rate['onnxruntime']:.1f} | "
            f"**{rate['ours'] / faster:.2f}×** | {g['ours']:.0f} ({g['ours'] / peak:.0%}) | "
            f"{g['onnxruntime']:.0f} ({g['onnxruntime'] / peak:.0%}) | "
            + " / ".join(f"{errors[peer]:.1e}" for peer in PEERS) + " |")
    for variant, layers in profiles.items():
        ours, theirs = layers["ours"], layers["onnxruntime"]
        lines += ["", f"## {variant}, batch {args.profile_batch}: where the time goes (ms)", "",
                  "| layer | ours | ONNX Runtime (profiler) | ours / ORT |", "|---|---:|---:|---:|"]
        for name in [*ours, *(n for n in theirs if n not in ours)]:
            mine, t = ours.get(name), theirs.get(name)
            if t is None and (mine or 0) < 0.05:
                continue  # the identity layers (dropout, a 6x6 -> 6x6 average pool), which ORT removes
            cell = lambda v: "—" if v is None else f"{v:.2f}"  # noqa: E731
            ratio = f"{mine / t:.2f}" if mine and t else ""
            lines.append(f"| {name} | {cell(mine)} | {cell(t)} | {ratio} |")
        lines.append(f"| **total** | {sum(ours.values()):.2f} | {sum(theirs.values()):.2f} | "
                     f"{sum(ours.values()) / sum(theirs.values()):.2f} |")
    return emit(lines, args.out)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(main())
