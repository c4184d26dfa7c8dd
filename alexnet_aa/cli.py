"""The ``alexnet-aa`` command (also ``python -m alexnet_aa``).

Subcommands: ``summary`` (the layer table and its formulas), ``backends``
(what is installed and why something cannot run), ``run`` (one forward pass,
timed), ``compare`` (every available backend against the float64
reference, layer by layer), ``weights import`` / ``weights download``
(other formats and published weights → canonical ``.safetensors``),
``classify`` (top-k ImageNet classes of image files), ``features`` (one
layer's output for every image, as Zarr), both also on a Dask cluster
(``--scheduler``, :mod:`alexnet_aa.distributed`), ``train`` (train or
fine-tune on an image folder, :mod:`alexnet_aa.trainer`) and ``visualize``
(conv1 filters and per-layer activation maps as PNG).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterator

import numpy as np

from .architecture import VARIANTS, get_architecture, variant_name
from .arrays import check_batch, example_input
from .backend import (
    BACKWARD_OPS,
    INSTALL_HINTS,
    BackendError,
    available_backends,
    backend_class,
    missing_backward_ops,
    parse_spec,
)
from .model import AlexNet
from .summary import format_ablations, format_text
from .testing.compare import decisive_rows, oracle, relative_error, tolerance
from .weights import PREPROCESS_KEY, WeightsError, he_weights

# Heavier modules (Pillow, urllib, onnx, torch) load only in the subcommands that use them.


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def _variant(text: str) -> str:
    """A ``--variant``: one of :data:`VARIANTS`, or one with ablations (``paper+tanh``), canonically spelled."""
    try:
        return variant_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


VARIANT_HELP = f"{', '.join(VARIANTS)}, or one with ablations such as paper+tanh+no-lrn (see summary --ablations)"


_BACKEND_HELP = ("a backend (alexnet-aa backends), with constructor options if any: 'cupy[dtype=float16]', "
                 "'mlx[dtype=bfloat16]'")


def _add_variant(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variant", default="paper", type=_variant, help=f"AlexNet variant: {VARIANT_HELP} (default: paper)")


def _weights_arg(args) -> object:
    """The ``--weights`` file, else He-scaled random weights (well-separated logits) seeded by ``--seed``."""
    return args.weights if args.weights else he_weights(get_architecture(args.variant), args.seed)


def cmd_summary(args) -> int:
    variant = "+".join([args.variant, *args.ablate])
    if args.ablations:
        print(format_ablations(variant))
        return 0
    print(format_text(variant, explain=args.explain, input_size=args.input_size))
    return 0


def cmd_backends(args) -> int:
    status = available_backends()
    pad = " " * 10
    for name, (ok, why) in status.items():
        print(f"{name:<10} {'available' if ok else 'unavailable'}" + ("" if ok else f": {why}"))
        try:
            cls = backend_class(name)
        except BackendError:  # a broken plugin: its reason is the line above
            continue
        try:  # what the class declares holds whether or not it can run here
            backend = cls() if ok else cls
            print(f"{pad} layout {cls.layout} (conv weights {cls.conv_weight_layout}, "
                  f"linear weights {cls.linear_weight_layout}), dtype {backend.dtype}")
            missing = missing_backward_ops(cls)
            print(f"{pad} training: " + (f"inference only (no {', '.join(missing)})" if missing else
                                          "yes (" + ", ".join(BACKWARD_OPS) + ")"))
            for capability, reason in cls.unsupported.items():
                print(f"{pad} unsupported {capability}: {reason}")
            if ok:
                for key, value in backend.describe().items():
                    print(f"{pad} {key}: {value}")
        except Exception as exc:  # a backend's constructor or describe() must not hide the others
            print(f"{pad} describe() failed: {exc}")
    for name, hint in INSTALL_HINTS.items():
        if name not in status:
            print(f"{name:<10} not installed: {hint}")
    return 0


def _forward_timed(model: AlexNet, x) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Every layer's output on the host (canonical order) and the seconds until it was there
    (for NHWC backends, including the transpose back to NCHW)."""
    outputs, seconds = {}, {}
    start = time.perf_counter()
    for name, y in model.iter_layers(x):
        # the copy to the host forces lazy (MLX) and asynchronous (CuPy) work to finish
        outputs[name] = model.backend.to_host(model.canonical(name, y))
        seconds[name] = time.perf_counter() - start
        start = time.perf_counter()
    return outputs, seconds


def cmd_run(args) -> int:
    check_batch(args.variant, args.batch)
    model = AlexNet(args.variant, args.backend, weights=_weights_arg(args))
    compile_s = model.backend.warmup()
    x = example_input(args.variant, args.batch, args.seed)
    model(x)  # first call: allocations, lazy compilation
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        logits = model.backend.to_host(model(x))
        times.append(time.perf_counter() - t0)
    best = min(times)
    pred = model.predict(x, top=5)
    print(f"{model!r} on input {tuple(x.shape)} float32 (seed {args.seed})")
    print(f"output {tuple(logits.shape)}; warmup/compile {compile_s:.3f} s")
    print(f"time: {best * 1e3:.2f} ms per batch, {best / args.batch * 1e3:.2f} ms per image, "
          f"{args.batch / best:.1f} images/s (best of {args.repeats})")
    for i in range(min(args.batch, 4)):
        top = ", ".join(f"{model.categories[c]} [{c}] ({p:.3f})" for c, p in zip(pred.indices[i], pred.probabilities[i]))
        print(f"image {i}: top-5 classes {top}")
    return 0


def cmd_compare(args) -> int:
    names = args.backend or list(available_backends())  # unavailable ones are reported as skipped
    for name in args.backend or []:
        backend_class(parse_spec(name)[0])  # a mistyped name is an error (listing the known ones), not a skip
    check_batch(args.variant, args.batch)
    weights = _weights_arg(args)
    x = example_input(args.variant, args.batch, args.seed)
    ref_outputs, ref_seconds = _forward_timed(AlexNet(args.variant, oracle(), weights=weights), x)
    print(f"AlexNet ({args.variant}), input {tuple(x.shape)} seed {args.seed}; reference: array-api on NumPy float64")
    print("error = relative L2 error against the reference; time includes the copy of each layer's output to the host\n")
    failed = []
    columns = []
    for name in names:
        try:
            model = AlexNet(args.variant, name, weights=weights)
        except BackendError as exc:
            print(f"{name}: skipped: {exc}\n")
            continue
        model.backend.warmup()
        _forward_timed(model, x)  # warm caches and lazy compilation before timing
        outputs, seconds = _forward_timed(model, x)
        tol = tolerance(model.backend, "network")
        errors = {k: relative_error(outputs[k], ref_outputs[k]) for k in ref_outputs}
        decided = decisive_rows(ref_outputs["fc8"], tol)  # a near-tie may flip within the tolerance
        same_top1 = np.array_equal(outputs["fc8"].argmax(1)[decided], ref_outputs["fc8"].argmax(1)[decided])
        ok = errors["fc8"] <= tol and same_top1 and not np.isnan(outputs["fc8"]).any()
        if not ok:
            failed.append(name)
        columns.append((name, errors, seconds, tol, ok, same_top1))
    header = f"{'layer':<8}" + "".join(f"  {n + ' error':>16}  {n + ' ms':>10}" for n, *_ in columns) + f"  {'reference ms':>12}"
    print(header)
    for layer in ref_outputs:
        row = f"{layer:<8}" + "".join(f"  {e[layer]:>16.2e}  {s[layer] * 1e3:>10.2f}" for _, e, s, *_ in columns)
        print(row + f"  {ref_seconds[layer] * 1e3:>12.2f}")
    print(f"{'total':<8}" + "".join(f"  {'':>16}  {sum(s.values()) * 1e3:>10.2f}" for _, _, s, *_ in columns)
          + f"  {sum(ref_seconds.values()) * 1e3:>12.2f}")
    print()
    for name, errors, _, tol, ok, same_top1 in columns:
        verdict = "agrees" if ok else "DISAGREES"
        print(f"{name}: {verdict} (logits error {errors['fc8']:.2e}, tolerance {tol:.0e}, top-1 "
              f"{'same' if same_top1 else 'different'} where the reference's margin is decisive)")
    if not columns:
        print("no backend could run", file=sys.stderr)
        return 2
    return 1 if failed else 0


def cmd_weights_import(args) -> int:
    from .importers import read_any, write_canonical

    imported = read_any(args.src, args.variant, use_torch=False if args.no_torch else None)
    out = write_canonical(imported, args.output)
    n = sum(int(t.size) for t in imported.params.values())
    print(f"wrote {out}: {imported.variant} variant, {len(imported.params)} tensors, {n:,} parameters "
          f"(from {imported.source_format})")
    return 0


def cmd_weights_download(args) -> int:
    from .download import download

    path = download(args.bundle, url=args.url, cache=args.cache, force=args.force,
                    progress=False if args.no_progress else None)
    print(path)
    return 0


@contextlib.contextmanager
def _image_model(args) -> Iterator:
    """The :class:`~alexnet_aa.classify.Classifier` here, or with ``--scheduler`` the
    :class:`~alexnet_aa.distributed.ClusterModel` on that cluster (only then is Dask imported);
    the note of weights without preprocessing metadata is printed either way."""
    from .classify import Classifier

    if not args.scheduler:
        model = Classifier(args.weights, variant=args.variant, backend=args.backend)
        _print_note(model.describe())
        yield model
        return
    try:
        from .distributed import ClusterModel, connect
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in ("dask", "distributed"):
            raise ValueError("--scheduler needs Dask: pip install 'alexnet-aa[distributed]'") from None
        raise
    client = connect(args.scheduler, args.connect_timeout)
    try:
        with ClusterModel(client, args.weights, variant=args.variant, backend=args.backend,
                          in_flight=args.in_flight) as model:
            _print_note(model.describe())
            yield model
    finally:
        client.close()


def _print_note(info: dict) -> None:
    if info["note"]:
        print(info["note"], file=sys.stderr)


def _progress(args, total: int, stream):
    """A tqdm bar on stderr when ``stream`` is a terminal (and not --no-progress), else None."""
    if not stream.isatty() or args.no_progress or total < 2:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="img", file=sys.stderr)


def _image_files(args) -> list:
    from .images import iter_image_files

    files = iter_image_files(args.images)
    if not files:
        raise ValueError(f"no image files found in {', '.join(args.images)}")
    return files


def cmd_classify(args) -> int:
    """``alexnet-aa classify``: here, or with ``--scheduler`` on a Dask cluster; the same output either way."""
    import json

    files = _image_files(args)
    results, n, failed = [], 0, 0
    with _image_model(args) as model:
        batches = model.classify_batches(files, batch=args.batch, top=args.top)
        bar = _progress(args, len(files), sys.stdout)
        try:
            with contextlib.closing(batches):  # on an error too: a cluster's outstanding batches are cancelled
                for entries in batches:
                    n += len(entries)
                    failed += sum(1 for e in entries if e["error"])
                    if bar is not None:
                        bar.update(len(entries))
                    if args.json:
                        results.extend(entries)
                    else:
                        for entry in entries:
                            _print_result(entry)
        finally:
            if bar is not None:
                bar.close()
    if args.json:
        print(json.dumps(results, indent=2))
    if failed:
        print(f"alexnet-aa classify: {failed} of {n} images could not be classified", file=sys.stderr)
        return 1
    return 0


def cmd_features(args) -> int:
    """``alexnet-aa features``: one layer's output for every image, written as a Zarr group
    (:func:`alexnet_aa.classify.write_features`), here or with ``--scheduler`` on a Dask cluster."""
    from .classify import check_out, layer_shape, write_features

    files = _image_files(args)
    check_out(args.out)  # before any model is built
    n = failed = 0
    with _image_model(args) as model:
        info = model.describe()
        written = write_features(args.out, info, args.layer, args.batch,
                                 model.feature_batches(files, batch=args.batch, layer=args.layer))
        bar = _progress(args, len(files), sys.stderr)
        try:
            with contextlib.closing(written):  # closed on an error too: the partial store goes
                for entries in written:
                    n += len(entries)
                    for entry in entries:
                        if entry["error"]:
                            failed += 1
                            print(f"{entry['path']}: error: {entry['error']}", file=sys.stderr)
                    if bar is not None:
                        bar.update(len(entries))
        finally:
            if bar is not None:
                bar.close()
    shape = "x".join(map(str, layer_shape(info, args.layer)))
    print(f"wrote {args.out}: {args.layer} features ({shape} float32) of {n} images ({failed} failed); "
          f"read them with dask.array.from_zarr({str(args.out)!r}, component={args.layer!r})")
    if failed:
        print(f"alexnet-aa features: {failed} of {n} images could not be read", file=sys.stderr)
        return 1
    return 0


def _print_result(entry: dict) -> None:
    if entry["error"]:
        print(f"{entry['path']}: error: {entry['error']}", file=sys.stderr)
        return
    print(entry["path"])
    for rank, t in enumerate(entry["top"], 1):
        print(f"  {rank}. {t['probability']:7.2%}  {t['name']} ({t['index']})")


def cmd_visualize(args) -> int:
    """``alexnet-aa visualize``: write the PNGs (:func:`alexnet_aa.visualize.visualize`) and say what went in."""
    from .categories import class_names
    from .images import load_image
    from .preprocess import Preprocess, default_preprocess
    from .visualize import visualize

    weights, preprocess, variant, metadata = None, None, args.variant, {}
    if args.weights:
        from .importers import read_any

        imported = read_any(args.weights, args.variant)
        weights, variant, metadata = imported.params, imported.variant, imported.metadata
        if PREPROCESS_KEY in metadata:
            preprocess = Preprocess.from_json(metadata[PREPROCESS_KEY])
        print(f"weights: {args.weights} ({variant} variant, from {imported.source_format})")
    else:
        variant = variant or "paper"
        print(f"weights: none given, seeded random He-scaled weights (seed {args.seed}): "
              "the filters are noise, not learned features")
    preprocess = preprocess or default_preprocess(variant)
    if args.image:
        image = load_image(args.image)
        print(f"image: {args.image}, preprocessed as {preprocess.source or 'the weights file says'}")
    else:
        image = None
        print(f"image: none given, a synthetic test image (seed {args.seed})")
    pictures = visualize(args.out, variant=variant, weights=weights, image=image, preprocess=preprocess,
                         backend=args.backend, seed=args.seed, filter_scale=args.scale)
    for path in pictures.paths.values():
        print(f"wrote {path}")
    names = class_names(metadata, weights["fc8.weight"].shape[0]) if weights is not None else None
    top = ", ".join(f"{names[i] if names else i} ({p:.3f})" for i, p in pictures.top5)
    print(f"top-5 classes on the {args.backend} backend: {top}")
    return 0


def cmd_train(args) -> int:
    """``alexnet-aa train``: :func:`alexnet_aa.trainer.train` with a progress bar on a terminal and one
    line per epoch otherwise; Ctrl-C stops it with the last whole checkpoint in place."""
    from .trainer import Interrupted, TrainConfig, format_record, train

    fields = set(TrainConfig.__dataclass_fields__)
    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})
    bar = None
    tty = sys.stderr.isatty() and not args.no_progress

    def on_step(epoch, done, total, loss, acc, speed):
        nonlocal bar
        if not tty:
            return
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="img", desc=f"epoch {epoch}/{cfg.epochs}", file=sys.stderr, leave=False)
        bar.update(done - bar.n)
        bar.set_postfix_str(f"loss {loss:.4f} acc {acc:6.2%}")  # tqdm shows the img/s

    def on_epoch(record):
        nonlocal bar
        if bar is not None:
            bar.close()
            bar = None
        print(format_record(record, cfg.epochs), flush=True)

    try:
        history = train(cfg, resume=args.resume, on_step=on_step, on_epoch=on_epoch,
                        log=lambda line: print(line, file=sys.stderr, flush=True))
    except Interrupted as stop:
        print(f"alexnet-aa train: interrupted; {stop.path} holds epoch {stop.epoch}, the last whole one "
              f"(continue with --resume {stop.path})" if stop.path else
              "alexnet-aa train: interrupted before the first checkpoint", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # while setting up
        print("alexnet-aa train: interrupted before the first checkpoint", file=sys.stderr)
        return 130
    finally:
        if bar is not None:
            bar.close()
    last = history[-1]
    print(f"wrote {cfg.out} (epoch {last.epoch}), {cfg.metrics_path}, {cfg.plot_path}")
    return 0


def _add_recipe_args(p: argparse.ArgumentParser, lr_arg: tuple[object, str] = (float, "learning rate ε (default: the paper's 0.01)"),
                     augment: str = "paper") -> None:
    """The training recipe's options, shared by ``train`` and ``ablate`` (``lr_arg``: the type and help of
    ``--lr``; ``augment``: the default of ``--augment``)."""
    p.add_argument("--backend", default="numpy", help=_BACKEND_HELP + " (default: numpy)")
    p.add_argument("--epochs", type=_positive_int, default=10, help="train up to this epoch (default: 10)")
    p.add_argument("--batch", type=_positive_int, default=32, help="images per step (default: 32; the paper: 128)")
    p.add_argument("--lr", type=lr_arg[0], default=0.01, help=lr_arg[1])
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--bias-lr-mult", type=float, default=1.0, help="biases' lr multiplier (Caffe's AlexNet: 2)")
    p.add_argument("--bias-decay-mult", type=float, default=1.0, help="biases' weight-decay multiplier (Caffe's AlexNet: 0)")
    p.add_argument("--schedule", default="none",
                   help="none, step:N (lr ÷10 every N epochs) or plateau[:P] (÷10 after P epochs without a lower "
                   "validation error, at most 3 times: the paper's)")
    p.add_argument("--init", choices=("paper", "he"), default="paper",
                   help="a model not started from weights: the paper's N(0, 0.01²) (default) or He's N(0, 2/fan_in)")
    p.add_argument("--val-split", type=float, default=0.1, help="fraction of each class held out for validation (default: 0.1)")
    p.add_argument("--augment", choices=("paper", "none"), default=augment,
                   help=f"paper: random crops, flips, PCA colour noise; none: center crops (default: {augment})")
    p.add_argument("--workers", type=_positive_int, default=2, help="image-decoding threads (default: 2)")


def cmd_ablate(args) -> int:
    """``alexnet-aa ablate``: :func:`alexnet_aa.ablation.run_ablation`, one line per epoch of every
    run, then the table of the arms; Ctrl-C keeps the runs already finished in the JSON."""
    from .ablation import AblationError, format_summary, run_ablation
    from .trainer import TrainConfig

    fields = set(TrainConfig.__dataclass_fields__) - {"out", "input_size", "lr"}
    lrs = args.lr if isinstance(args.lr, list) else [args.lr]
    cfg = TrainConfig(out="", lr=lrs[0], **{k: v for k, v in vars(args).items() if k in fields})

    def on_epoch(arm, seed, r):
        val = "" if r.val_accuracy is None else f"  val error {1 - r.val_accuracy:6.2%}"
        print(f"{args.what} {arm} seed {seed}: epoch {r.epoch}/{args.epochs}  train loss {r.train_loss:.4f} "
              f"error {1 - r.train_accuracy:6.2%}{val}  {r.seconds:.1f} s", flush=True)

    try:
        result = run_ablation(cfg, args.what, args.seeds, args.out, lrs=lrs, input_size=args.input_size,
                              target_error=args.target_error, keep_checkpoints=args.keep_checkpoints,
                              log=lambda line: print(line, file=sys.stderr, flush=True), on_epoch=on_epoch)
    except AblationError as exc:
        return _fail(args, str(exc))
    except KeyboardInterrupt:
        print(f"alexnet-aa ablate: interrupted; {args.out}/ablate-{args.what}.json keeps the runs finished "
              "(the same command goes on from them)", file=sys.stderr)
        return 130
    print(format_summary(result))
    print(f"wrote {args.out}/ablate-{args.what}.json, {args.out}/ablate-{args.what}.png")
    return 0


def _comma_list(kind: type, what: str):
    """An argparse type: comma-separated ``kind`` values (``run_ablation`` checks what they must be)."""
    def parse(text: str) -> list:
        try:
            return [kind(part) for part in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}") from None

    return parse


def _add_train_parser(sub) -> None:
    p = sub.add_parser("train", help="train or fine-tune on a folder of images, one subfolder per class")
    p.add_argument("data", metavar="DATA_DIR", help="folder with one subfolder of images per class (sorted names = classes)")
    p.add_argument("--variant", default=None, type=_variant,
                   help=f"AlexNet variant: {VARIANT_HELP} (default: the --resume checkpoint's, else paper)")
    _add_recipe_args(p)
    p.add_argument("--weights", default=None, help="start from this weights file (any format `weights import` reads)")
    p.add_argument("--fresh-head", action="store_true", help="a new fc8 with one output per class folder")
    p.add_argument("--freeze", metavar="LAYER", default=None, help="keep every tensor up to and including LAYER (e.g. fc7, conv5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the order, the augmentation, dropout and the init")
    p.add_argument("--lighting", choices=("data", "imagenet"), default=None,
                   help="principal components of the colour noise (default: imagenet with --weights, else the data's)")
    p.add_argument("--ten-crop", action="store_true", help="validate on the average of 10 crops, as the paper tests")
    p.add_argument("--input-size", type=_positive_int, default=None, help="torchvision variant only: crop side (any >= 63)")
    p.add_argument("--no-dropout", dest="dropout", action="store_false", help="train without dropout")
    p.add_argument("--out", required=True, metavar="CKPT.safetensors", help="the checkpoint, rewritten after every epoch")
    p.add_argument("--resume", metavar="CKPT", default=None, help="continue the run this checkpoint recorded up to --epochs")
    p.add_argument("--metrics", default=None, help="JSON lines, one per epoch (default: beside --out, .metrics.jsonl)")
    p.add_argument("--plot", default=None, help="PNG of loss and accuracy per epoch (default: beside --out, .png)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (none anyway when stderr is not a TTY)")
    p.set_defaults(func=cmd_train)


def _add_ablate_parser(sub) -> None:
    from .ablation import EXPERIMENTS

    p = sub.add_parser("ablate", help="train each arm of one of the paper's ablations alike: JSON and a Figure-1 plot")
    p.add_argument("data", metavar="DATA_DIR", help="folder with one subfolder of images per class (sorted names = classes)")
    p.add_argument("--what", required=True, choices=list(EXPERIMENTS),
                   help="; ".join(f"{name}: {' vs '.join(a.label for a in arms)}" for name, (_, arms) in EXPERIMENTS.items()))
    p.add_argument("--variant", default="paper", type=_variant, help=f"the base table: {VARIANT_HELP} (default: paper)")
    p.add_argument("--input-size", type=_positive_int, default=None,
                   help="train every arm at this input side (the table's +input=S ablation; default: the variant's)")
    p.add_argument("--seeds", type=_comma_list(int, "whole numbers"), default=[0, 1, 2], help="comma-separated seeds, one run per arm each (default: 0,1,2)")
    p.add_argument("--target-error", type=float, default=0.25,
                   help="report the epochs each arm takes to this training error (default: the paper's 0.25)")
    _add_recipe_args(p, (_comma_list(float, "numbers"), "learning rate, or comma-separated rates: each arm trains the first seed at "
                                      "each and keeps the one with the lowest final training error (default: 0.01)"),
                     augment="none")
    p.add_argument("--out", required=True, metavar="DIR", help="where ablate-WHAT.json and ablate-WHAT.png go")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep every run's checkpoint in DIR/checkpoints")
    p.set_defaults(func=cmd_ablate)


def _add_weights_parsers(sub) -> None:
    p = sub.add_parser("weights", help="import other formats and download published weights (to .safetensors)")
    wsub = p.add_subparsers(dest="weights_command", required=True, metavar="ACTION")

    q = wsub.add_parser("import", help="torchvision .pth, ONNX zoo .onnx, .npz or .safetensors -> canonical .safetensors")
    q.add_argument("src", help="the file to import (.pth, .onnx, .npz, .safetensors)")
    q.add_argument("-o", "--output", required=True, help="the .safetensors file to write")
    q.add_argument("--variant", type=_variant, default=None,
                   help="check against this variant (default: the format's own, else the one the shapes fit)")
    q.add_argument("--no-torch", action="store_true",
                   help="read .pth files with alexnet_aa's restricted unpickler even when torch is installed")
    q.set_defaults(func=cmd_weights_import)

    q = wsub.add_parser("download", help="fetch published weights, verify their SHA-256, convert and cache them")
    q.add_argument("bundle", nargs="?", default="torchvision", help="the bundle (default: torchvision)")
    q.add_argument("--url", default=None, help="download from this URL instead (default: $ALEXNET_AA_WEIGHTS_URL, "
                   "else the published one); the digest must still match")
    q.add_argument("--cache", default=None, help="cache directory (default: $ALEXNET_AA_CACHE, else ~/.cache/alexnet_aa)")
    q.add_argument("--force", action="store_true", help="download again even if cached")
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.set_defaults(func=cmd_weights_download)

    p = sub.add_parser("classify", help="top-k ImageNet classes of images (files or directories)")
    _add_image_job_args(p)
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--json", action="store_true",
                   help="print a JSON list of {path, top: [{index, name, probability}], error}")
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("features", help="one layer's output for every image, as a Zarr array Dask reads")
    _add_image_job_args(p)
    p.add_argument("--layer", default="fc7", help="the layer to keep (default: fc7; any of the table's: conv1 … fc8)")
    p.add_argument("--out", required=True, metavar="DIR", help="the Zarr group to write (must not exist)")
    p.set_defaults(func=cmd_features)


def _add_image_job_args(p: argparse.ArgumentParser) -> None:
    """What ``classify`` and ``features`` share: the images, the model, and where they run."""
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR", help="image files, or directories to walk")
    p.add_argument("--weights", required=True, help="weights file (.safetensors with preprocessing metadata, "
                   "or .npz/.pth/.onnx); its preprocessing is applied")
    p.add_argument("--variant", type=_variant, default=None, help="require this variant (default: the weights')")
    p.add_argument("--backend", default="numpy", help=_BACKEND_HELP + " (default: numpy)")
    p.add_argument("--batch", type=_positive_int, default=8, help="images per forward pass (default: 8)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (none anyway when not on a terminal)")
    g = p.add_argument_group("on a Dask cluster (pip install 'alexnet-aa[distributed]')")
    g.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="run on the cluster of this Dask scheduler (tcp://HOST:8786): the weights and image paths "
                   "must name the same files on every worker")
    g.add_argument("--in-flight", type=_positive_int, default=None,
                   help="batches submitted or held at once (default: 2 per worker thread)")
    g.add_argument("--connect-timeout", type=_positive_seconds, default=10.0,
                   help="seconds to wait for the scheduler, and for a first worker (default: 10)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alexnet-aa", description="AlexNet on every Array API backend.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("summary", help="the layer table: shapes, parameters, MACs (from the formulas)")
    _add_variant(p)
    p.add_argument("--explain", action="store_true", help="show each formula with the layer's numbers")
    p.add_argument("--input-size", type=int, default=None, help="input side (default: the variant's)")
    p.add_argument("--ablate", action="append", default=[], metavar="NAME",
                   help="vary the table: tanh, sigmoid, no-lrn, no-overlap, dropout=P, groups=1, input=S (repeatable)")
    p.add_argument("--ablations", action="store_true", help="list every ablation with its parameter and MAC deltas")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("backends", help="every registered backend, available or not, and why")
    p.set_defaults(func=cmd_backends)

    p = sub.add_parser("run", help="one timed forward pass on seeded random input")
    p.add_argument("--backend", default="numpy", help=_BACKEND_HELP + " (default: numpy)")
    _add_variant(p)
    p.add_argument("--weights", help=".safetensors or .npz file (default: seeded random weights)")
    p.add_argument("--batch", type=_positive_int, default=1)
    p.add_argument("--repeats", type=_positive_int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("compare", help="every available backend against the float64 reference, per layer")
    p.add_argument("--backend", action="append", help="compare only this backend (repeatable): " + _BACKEND_HELP)
    _add_variant(p)
    p.add_argument("--weights", help=".safetensors or .npz file (default: seeded random weights)")
    p.add_argument("--batch", type=_positive_int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_compare)

    _add_weights_parsers(sub)
    _add_train_parser(sub)
    _add_ablate_parser(sub)

    p = sub.add_parser("visualize", help="PNGs of conv1's filters and of every layer's activation maps")
    p.add_argument("--weights", help=".safetensors or .npz file (default: seeded random weights)")
    p.add_argument("--out", required=True, help="directory to write the PNGs into (created if missing)")
    p.add_argument("--image", help="an image file (default: a synthetic test image)")
    p.add_argument("--variant", type=_variant, default=None,
                   help="AlexNet variant (default: guessed from --weights, else paper)")
    p.add_argument("--backend", default="numpy", help="backend that computes the activations: " + _BACKEND_HELP
                   + " (default: numpy)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and the synthetic image")
    p.add_argument("--scale", type=int, default=4, help="pixels per filter weight in conv1_filters.png (default: 4)")
    p.set_defaults(func=cmd_visualize)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .classify import ClusterError
    from .download import DownloadError

    try:
        status = args.func(args)
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        # the reader went away (`alexnet-aa summary | head`): stop quietly, as a Unix filter does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (BackendError, WeightsError, DownloadError, ClusterError, ValueError, ModuleNotFoundError) as exc:
        return _fail(args, str(exc))
    except MemoryError:
        return _fail(args, "out of memory: use a smaller --batch, or fewer or smaller images")
    except KeyboardInterrupt:  # `train` says what its checkpoint holds; the others have nothing to keep
        print(f"alexnet-aa {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # an unwritable output, a cache path that is a file, a full disk, …
        where = f"{exc.filename}: " if exc.filename else ""
        return _fail(args, f"{where}{exc.strerror or exc}")


def _fail(args, message: str) -> int:
    """One line on stderr naming the command, and exit status 2 (bad usage, input or environment)."""
    command = args.command + (f" {args.weights_command}" if getattr(args, "weights_command", None) else "")
    try:
        print(f"alexnet-aa {command}: error: {message}", file=sys.stderr)
    except OSError:  # stderr closed too: the status says it
        pass
    return 2


if __name__ == "__main__":
    sys.exit(main())
