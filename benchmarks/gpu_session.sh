#!/usr/bin/env bash
# One GPU session for the cupy backend: install, record the clocks, smoke-test every kernel on AlexNet's
# real layer shapes (the gate: if cupy cannot run, the script stops there), check the captured forward bit
# for bit against the eager one, run the conformance suite at every storage dtype (float32, float16,
# bfloat16; gradients in float32), benchmark latency and throughput (captured, eager, PyTorch + cuDNN,
# torch.compile) with per-layer, conv and linear tables, and one training step against PyTorch.
#
#   bash benchmarks/gpu_session.sh        # from the repository root; results in $OUT
#   BUDGET=400 bash benchmarks/gpu_session.sh   # where less device time is left (the device tool's status)
#
# Made for the lent machine (H100/H200, Python 3.12, cupy-cuda13x + NVRTC, torch + cuDNN,
# setuptools but no hatchling, no network). Every step has its own timeout and the whole script stays
# within BUDGET seconds (default 570, under the device tool's 600 s a call: run it with timeout_s=600 and
# carry=[".whl"]); the steps come in order of priority, a step cut short keeps
# what it wrote (pytest ends its session and writes its report; the benchmark rewrites its report after
# every measurement), and a failing step is reported and the next one still runs. The
# device tool returns at most 8 files from $OUT: this script writes summary.txt (one line a step),
# log.txt (every step's output), clocks.csv (nvidia-smi before and after the benchmarks),
# conformance.json, bench.md and train.md.
#
# Dry run without a GPU (checks the script and every Python step up to the first device call):
#   DRY_RUN=1 bash benchmarks/gpu_session.sh
#
# Prepare before the device call: array-api-compat (and ml_dtypes, for bfloat16, in case the image
# lacks it) travel as wheels in .whl/ (gitignored: the device call must carry it, carry=[".whl"]).
# From the repository root, with network:
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 -d .whl array-api-compat==1.16.0 ml_dtypes
#
# Without array-api-compat the core (alexnet_aa) cannot be imported: the script warns, and every
# Python step fails.
set -u
OUT=${OUT:-/tmp/gpu_session_out}
BUDGET=${BUDGET:-570}
DRY_RUN=${DRY_RUN:-}
mkdir -p "$OUT"
export CUPY_CACHE_DIR=${CUPY_CACHE_DIR:-/tmp/alexnet_aa_cupy_cache}
unset CUPY_TF32                       # true float32 in cuBLAS
PY=${PY:-python3}
STATUS=0
LAST_RC=0
# pytest as a step: timeout's SIGTERM becomes a KeyboardInterrupt, so pytest still ends its session and writes
# its JSON report (a job started in the background may have SIGINT ignored, so SIGINT itself is not relied on)
PYTEST=($PY -c 'import signal, sys, pytest; signal.signal(signal.SIGTERM, signal.default_int_handler); sys.exit(pytest.main())')

step() {  # step NAME CAP_SECONDS CMD... : run with timeout min(CAP, time left), appended to $OUT/log.txt
    local name=$1 cap=$2; shift 2
    local left=$((BUDGET - SECONDS))
    local t=$((cap < left ? cap : left))
    if [ "$t" -lt 10 ]; then echo "== $name: skipped, budget spent" | tee -a "$OUT/summary.txt"; STATUS=1; LAST_RC=124; return; fi
    echo "== $name (timeout ${t}s, ${SECONDS}s elapsed)" | tee -a "$OUT/log.txt"
    local t0=$SECONDS
    timeout --kill-after=10 "$t" "$@" > >(tee -a "$OUT/log.txt") 2>&1
    local rc=$?
    LAST_RC=$rc
    echo "== $name: rc=$rc in $((SECONDS - t0))s" | tee -a "$OUT/summary.txt" "$OUT/log.txt"
    [ "$rc" -eq 0 ] || STATUS=1
}

clocks() {  # the GPU's clocks, power and temperature, one CSV row per call
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=timestamp,name,pstate,clocks.sm,clocks.mem,clocks.max.sm,clocks.max.mem,power.draw,temperature.gpu \
            --format=csv >> "$OUT/clocks.csv" 2>&1
    else
        echo "nvidia-smi not found" >> "$OUT/clocks.csv"
    fi
}

# array-api-compat is not on the GPU image: it travels as a wheel in .whl/ (carried by the device call;
# built for the GPU machine's Python 3.12, so a dry run here leaves it alone).
if [ -z "$DRY_RUN" ] && ls .whl/*.whl >/dev/null 2>&1; then
    step wheels 60 $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
elif ! $PY -c 'import array_api_compat' >/dev/null 2>&1; then
    {
        echo "WARNING: no .whl/*.whl and array_api_compat is not importable: alexnet_aa (which depends on it)"
        echo "         cannot be imported and every step will fail. Prepare it as the header of this script says."
    } | tee -a "$OUT/summary.txt" >&2
fi
if [ -z "$DRY_RUN" ]; then
    step install 120 $PY -m pip install --no-build-isolation --no-deps -q -e . -e backends/numpy -e backends/cupy
fi
clocks
step nvidia-smi 20 nvidia-smi

# First, the gate: can cupy run here at all (exit 3 if not: nothing else could, so the script stops), with
# every kernel compiled into CUPY_CACHE_DIR for the later steps. Then kernels alone, against the float64 loops
# of tests/test_cuda_kernels.py; every Winograd case (3x3 and 5x5) and the real AlexNet conv shapes at batch 2
# with every algorithm and tile, in float32 and on tensor cores.
step smoke 120 $PY - <<'EOF'
import importlib.util, sys
import numpy as np
from alexnet_aa_cupy import CupyBackend, kernels

ok, why = CupyBackend.available()
print("available:", ok, why)
if not ok:
    sys.exit(3)
be = CupyBackend()
print("cold compile (warmup) s:", round(be.warmup(), 2))
for k, v in be.describe().items():
    print(f"  {k}: {v}")
spec = importlib.util.spec_from_file_location("tck", "tests/test_cuda_kernels.py")
t = importlib.util.module_from_spec(spec); sys.modules["tck"] = t; spec.loader.exec_module(t)
import cupy as cp
worst, fails = 0.0, []
def check(what, y, ref, tol):
    global worst
    y = cp.asnumpy(y); err = t._rel_err(y, ref) if y.shape == ref.shape else float("inf")
    worst = max(worst, err)
    print(f"{'ok ' if err < tol else 'BAD'} {what}: rel err {err:.2e}")
    if not err < tol: fails.append(what)
rng = np.random.default_rng(0)
def algos_for(w_shape, stride):  # "gemm", then every Winograd algorithm that takes the layer
    return ["gemm", *(a for a in kernels.WINOGRAD_ALGOS if kernels.winograd_applies(w_shape, stride, a))]
cases = dict(t.CONV_CASES)
for name, (n, c, h, w, o, k, p, g) in t.WINOGRAD_CASES.items():
    cases["wino-" + name] = (n, c, h, w, o, (k, k), (1, 1), p, g)
for name, (c, h, o, k, s, p, g) in t.ALEXNET_CONVS.items():   # real layer shapes, batch 2
    cases["alexnet-" + name] = (2, c, h, h, o, (k, k), (s, s), (p, p), g)
for case, (n, c, h, w, o, k, s, p, g) in cases.items():
    x, w_oihw, b = t._conv_case(rng, n, c, h, w, o, k, s, p, g)
    ref = t.conv2d_ref(x, w_oihw, b, s, p, g, True) if n * h * w * c < 2e6 else None
    prep = be.prepare({"w": w_oihw, "b": b})
    xs = be.asarray(x)
    runs = [("gemm", tile) for tile in kernels.CONV_TILES]
    for algo in algos_for(prep["w"].shape, s)[1:]:
        runs += [(algo, tile) for tile in ([None, *kernels.WINOGRAD_TILES] if (o // g) % 4 == 0 else [None])]
    # the weight transform done in prepare vs on the fly from the IHWO array: the same kernel
    ws = [prep["w"], prep["w"].ihwo] if isinstance(prep["w"], kernels.ConvWeight) else [prep["w"]]
    for wv in ws:
        for algo, tile in runs:
            y = kernels.conv2d(xs, wv, prep["b"], s, p, g, True, algo=algo, tile=tile)
            if ref is not None:
                check(f"conv2d {case} {algo} {tile or 'auto'} w={type(wv).__name__}", y, ref, 1e-5)
    # non-contiguous input through the backend method
    xn = cp.asfortranarray(xs)
    if ref is not None:
        check(f"conv2d {case} non-contiguous", be.conv2d(xn, prep["w"], prep["b"], s, p, g, True), ref, 1e-5)
# batch independence on the real 3x3 and 5x5 layers: each image alone == inside a batch of 5, bitwise, both algorithms
for name in ("paper-conv2", "tv-conv2", "paper-conv4", "tv-conv3"):
    c, h, o, k, s, p, g = t.ALEXNET_CONVS[name]
    x, w_oihw, b = t._conv_case(rng, 5, c, h, h, o, (k, k), (s, s), (p, p), g)
    prep, xs = be.prepare({"w": w_oihw, "b": b}), be.asarray(x)
    for algo in algos_for(prep["w"].shape, (s, s)):
        yb = cp.asnumpy(kernels.conv2d(xs, prep["w"], prep["b"], (s, s), (p, p), g, True, algo=algo))
        same = all(np.array_equal(cp.asnumpy(kernels.conv2d(xs[i:i + 1], prep["w"], prep["b"], (s, s), (p, p), g, True,
                                                              algo=algo))[0], yb[i]) for i in range(5))
        print(f"{'ok ' if same else 'BAD'} conv2d {name} {algo}: batch-independent (bitwise) = {same}")
        if not same: fails.append(f"batch-independence {name} {algo}")
for case, (shape, kern, stride, ceil, _) in t.POOL_CASES.items():
    x = (rng.standard_normal(shape) - 3).astype(np.float32)
    check(f"max_pool2d {case}", be.max_pool2d(be.asarray(x), kern, stride, ceil), t.max_pool2d_ref(x, kern, stride, ceil), 1e-7)
for shape, size, alpha, beta, k in [((2, 7, 3, 5), 5, 0.5, 0.75, 1.0), ((3, 6, 4, 4), 3, 0.3, 0.75, 2.0),
                                    ((2, 5, 2, 3), 4, 1.0, 0.5, 1.5), ((4, 96, 55, 55), 5, 5e-4, 0.75, 2.0)]:
    x = (rng.standard_normal(shape) * 2).astype(np.float32)
    check(f"lrn {shape} size={size}", be.lrn(be.asarray(x), size, alpha, beta, k), t.lrn_ref(x, size, alpha, beta, k), 1e-5)
for relu in (True, False):
    for n in (5, 40):   # the GEMV and the GEMM
        x, w, b = (rng.standard_normal(sh).astype(np.float32) for sh in ((n, 1300), (70, 1300), (70,)))
        ref = x.astype(np.float64) @ w.T.astype(np.float64) + b
        prep = be.prepare({"w": w, "b": b})
        check(f"linear batch={n} relu={relu}", be.linear(be.asarray(x), prep["w"], prep["b"], relu),
              np.maximum(ref, 0) if relu else ref, 1e-5)
# half precision on tensor cores: every AlexNet conv layer (batch 2) and fc6, each tile, against float64 of the
# same rounded inputs (one output rounding: 4 units of roundoff), bitwise the same across tiles
import ml_dtypes
for dtype, np_dt, tol in (("float16", np.float16, 2e-3), ("bfloat16", ml_dtypes.bfloat16, 1.6e-2)):
    hb = CupyBackend(dtype=dtype)
    for name, (c, h, o, k, s, p, g) in t.ALEXNET_CONVS.items():
        x, w_oihw, b = t._conv_case(rng, 2, c, h, h, o, (k, k), (s, s), (p, p), g)
        xr, wr, br = (a.astype(np_dt).astype(np.float32) for a in (x, w_oihw, b))
        ref = t.conv2d_ref(xr, wr, br, (s, s), (p, p), g, True)
        prep, xs = hb.prepare({"w": w_oihw, "b": b}), hb.asarray(x)
        ys = [kernels.conv2d_mma(xs, prep["w"], prep["b"], (s, s), (p, p), g, True, tile=tile) for tile in kernels.MMA_CONV_TILES]
        same = all(bool(cp.array_equal(ys[0].view(cp.uint16), y.view(cp.uint16))) for y in ys)
        print(f"{'ok ' if same else 'BAD'} conv2d_mma {dtype} {name}: tiles bitwise equal = {same}")
        if not same: fails.append(f"conv2d_mma tiles {dtype} {name}")
        check(f"conv2d_mma {dtype} {name}", hb.to_host(ys[0]).astype(np.float32), ref, tol)
    x, w, b = (rng.standard_normal(sh).astype(np.float32) for sh in ((3, 9216), (4096, 9216), (4096,)))
    xr, wr, br = (a.astype(np_dt).astype(np.float64) for a in (x, w / 96, b))
    prep = hb.prepare({"w": w / 96, "b": b})
    for tile in kernels.LINEAR_MMA_TILES:
        y = kernels.linear(hb.asarray(x), prep["w"], prep["b"], True, tile=tile)
        check(f"linear_mma {dtype} fc6 {tile}", hb.to_host(y).astype(np.float32), np.maximum(xr @ wr.T + br, 0), tol)
# NaN stays NaN through the fused ReLU (conv: the default algorithms; linear's epilogue), exactly at the reference's NaN.
x, w_oihw, b = t._conv_case(rng, 2, 6, 9, 11, 8, (3, 3), (1, 1), (1, 1), 2)
x = t._poison(x, np.nan, t.NONFINITE_AT)
ref = t.conv2d_ref(x, w_oihw, b, (1, 1), (1, 1), 2, True)
prep = be.prepare({"w": w_oihw, "b": b})
for algo in algos_for(prep["w"].shape, (1, 1)):
    y = cp.asnumpy(kernels.conv2d(be.asarray(x), prep["w"], prep["b"], (1, 1), (1, 1), 2, True, algo=algo))
    same = np.array_equal(np.isnan(y), np.isnan(ref))
    print(f"{'ok ' if same else 'BAD'} conv2d {algo} NaN input: NaN where the reference's is = {same}")
    if not same: fails.append(f"conv2d {algo} NaN")
xl = np.array([[np.nan, -1.0, 2.0]], np.float32)
yl = cp.asnumpy(be.linear(be.asarray(xl), be.asarray(np.eye(3, dtype=np.float32)), be.asarray(np.zeros(3, np.float32)), True))
print(f"{'ok ' if np.isnan(yl[0, 0]) else 'BAD'} linear relu keeps NaN: {yl.tolist()}")
if not np.isnan(yl[0, 0]): fails.append("linear NaN")
print(f"worst rel err {worst:.2e}; failures: {fails or 'none'}")
sys.exit(1 if fails else 0)
EOF

if [ "$LAST_RC" -eq 3 ] && [ -z "$DRY_RUN" ]; then
    echo "== cupy cannot run on this machine (see the smoke step): nothing else can be measured; stopping" \
        | tee -a "$OUT/summary.txt"
    exit 1
fi

# The captured forward against the eager one, bit for bit, at every dtype; GEMV and GEMM, bit for bit.
step graph 60 "${PYTEST[@]}" -q tests/test_cupy_graph.py -rs -p no:cacheprovider

# The conformance suite at every dtype (float32 with its gradients; the half dtypes are inference only and
# have their own named tolerances). Its JSON report (per backend and op: cases, largest error, tolerance;
# xfails and skips with reasons) is kept in $OUT.
step conformance 180 "${PYTEST[@]}" -q tests/test_conformance.py -rsx -p no:cacheprovider \
    --alexnet-backend "cupy,cupy[dtype=float16],cupy[dtype=bfloat16]" --alexnet-report "$OUT/conformance.json"

# Latency and throughput at every dtype (captured, eager, cuDNN, torch.compile at batch 1), agreement of the
# half dtypes with float32 on 1,000 inputs, per layer, conv and linear sweeps.
clocks
if [ -z "$DRY_RUN" ]; then
    step bench 260 $PY benchmarks/bench_cupy.py --seconds 0.5 --layer-reps 3 --agreement 1000 --out "$OUT/bench.md"
else
    step bench 30 $PY benchmarks/bench_cupy.py --help
fi
clocks

# One training step (forward + backward + SGD) against PyTorch + cuDNN, TF32 off on both sides.
if [ -z "$DRY_RUN" ]; then
    step train 60 $PY benchmarks/bench_train.py --backend cupy --device cuda --variants paper,torchvision --batch 128 \
        --repeats 5 --out "$OUT/train.md"
fi

echo "== total ${SECONDS}s, status $STATUS" | tee -a "$OUT/summary.txt"
exit $STATUS
