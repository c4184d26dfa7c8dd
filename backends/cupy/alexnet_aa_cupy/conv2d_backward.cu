// conv2d_backward.cu — the weight gradient of conv2d.cu's convolution, as a GEMM reduced over the batch.
//
// Conventions (every kernel in this file):
//   math         dw[c, r, s, o] = sum_n x~[img, g*Cg + c, oh*sh - ph + r, ow*sw - pw + s] * g[img, o, oh, ow]
//                over n = (img, oh, ow), for output channel o in group g (alexnet_aa.reference.conv2d_backward);
//                g is dy already masked by the ReLU (the launch wrapper does it). The input gradient is
//                conv2d.cu's forward kernel run on the dilated, padded g with the flipped, group-transposed
//                weights (kernels.conv2d_backward), so it reuses the implicit-GEMM tiles.
//   layout       activations NCHW (x_nchw, g_nchw), contiguous; the gradient in the weights' IHWO layout,
//                dw_ihwo[k*O + o] with k = (c, r, s) flattened (K = in/groups*kh*kw), as prepare() stores w.
//   GEMM view    per group g:  DW_g[k, m] = sum_n A_g[n, k] * B_g[n, m]
//                  k = (c, r, s) within the group            (the tile's BM side)
//                  m = output channel within the group       (the tile's BN side, M = out/groups)
//                  n = (image, oh, ow) flattened             (the reduction, N*OH*OW long)
//                A_g[n, k] = x~ gathered on the fly (0 in the padding), B_g[n, m] = g_nchw[img, g*M + m, oh, ow].
//   determinism  no atomics: the reduction is cut into `splits` fixed, contiguous ranges of n (blockIdx.z =
//                split * G + group); each block writes its own partial tile to partial_sko (splits, K, O), and
//                conv2d_backward_weight_reduce adds the partials in split order. The same shapes give the same
//                bits on every run on one GPU model (the split count depends on the SM count).
//   tiling       gemm_tile.cuh's main loop (double-buffered shared memory, register micro-tiles); the loads
//                here gather along the reduction: each warp row is one n, decomposed once per row and slice.
//   index types  long long for image bases and the reduction index n; int for offsets inside one image plane
//                group and for positions inside one split's range (the launch wrapper checks C*H*W, O*OH*OW
//                and the range length `chunk` < 2^31).
//   accumulator  float32 (fused multiply-add) within a split; the partials added in float32, in split order.
//   entry points extern "C", one per tile configuration plus the reduction (names in kernels.py:
//                NAME_EXPRESSIONS); no system headers (NVRTC).

#include "gemm_tile.cuh"

template <int BM, int BN, int BK, int TM, int TN>
__device__ __forceinline__ void conv2d_backward_weight_tile(
    const float* __restrict__ x_nchw, const float* __restrict__ g_nchw, float* __restrict__ partial_sko,
    int N, int C, int H, int W, int O, int OH, int OW, int KH, int KW,
    int SH, int SW, int PH, int PW, int G, long long chunk)
{
    constexpr int THREADS = (BM / TM) * (BN / TN);
    constexpr int NWARPS = THREADS / 32;
    constexpr int A_COLS = BM / 32;           // k columns loaded per lane
    constexpr int B_COLS = BN / 32;           // m columns loaded per lane
    constexpr int ROWS = BK / NWARPS;         // reduction rows loaded per warp and slice
    constexpr int MSTEP = (BM / TM) * 4;
    constexpr int NSTEP = (BN / TN) * 4;
    static_assert(BM % 32 == 0 && BN % 32 == 0, "tile must be a multiple of a warp");
    static_assert(THREADS % 32 == 0 && BK % NWARPS == 0, "BK must be a multiple of the warp count");

    __shared__ __align__(16) float As[2][BK][BM];
    __shared__ __align__(16) float Bs[2][BK][BN];

    const int Cg = C / G;
    const int M = O / G;
    const int KHW = KH * KW;
    const int K = Cg * KHW;
    const int HW = H * W;
    const int P = OH * OW;
    const long long NP = (long long)N * P;

    const int g = blockIdx.z % G;
    const int split = blockIdx.z / G;
    const int m0 = blockIdx.x * BN;
    const int k0 = blockIdx.y * BM;
    const long long n_begin = split * chunk;
    const long long n_end = n_begin + chunk < NP ? n_begin + chunk : NP;
    const int L = n_begin < n_end ? (int)(n_end - n_begin) : 0;   // this split's share of the reduction
    const int tid = threadIdx.x;
    const int lane = tid & 31;
    const int warp = tid >> 5;
    const int tx = tid % (BN / TN);
    const int ty = tid / (BN / TN);

    // The k columns this lane gathers never change: (channel offset, r, s), once.
    int coff[A_COLS], kr[A_COLS], ks[A_COLS];
#pragma unroll
    for (int j = 0; j < A_COLS; ++j) {
        const int k = k0 + lane + 32 * j;
        const int c = k < K ? k / KHW : 0;
        const int rs = k - c * KHW;
        coff[j] = c * HW;
        kr[j] = k < K ? rs / KW : -(1 << 14);  // outside the GEMM: a row no window reaches
        ks[j] = rs - (rs / KW) * KW;
    }

    float a_stage[ROWS][A_COLS];
    float b_stage[ROWS][B_COLS];

    auto load_slice = [&](int t0) {
#pragma unroll
        for (int i = 0; i < ROWS; ++i) {
            const int t = t0 + warp + NWARPS * i;
            const bool tok = t < L;
            const long long n = n_begin + (tok ? t : 0);
            const long long img = n / P;
            const int p = (int)(n - img * P);
            const int oh = p / OW;
            const int ow = p - oh * OW;
            const float* __restrict__ x_img = x_nchw + (img * C + (long long)g * Cg) * HW;
            const float* __restrict__ g_img = g_nchw + (img * O + (long long)g * M) * P + p;
#pragma unroll
            for (int j = 0; j < A_COLS; ++j) {
                const int ih = oh * SH - PH + kr[j];
                const int iw = ow * SW - PW + ks[j];
                const bool ok = tok && (unsigned)ih < (unsigned)H && (unsigned)iw < (unsigned)W;
                a_stage[i][j] = ok ? x_img[coff[j] + ih * W + iw] : 0.0f;
            }
#pragma unroll
            for (int j = 0; j < B_COLS; ++j) {
                const int m = m0 + lane + 32 * j;
                b_stage[i][j] = (tok && m < M) ? g_img[(long long)m * P] : 0.0f;
            }
        }
    };
    auto store_slice = [&](int buf) { store_staged<NWARPS>(As[buf], Bs[buf], a_stage, b_stage, warp, lane); };

    float acc[TM][TN];
    gemm_tile_mainloop(As, Bs, acc, L, tx, ty, load_slice, store_slice);

    // This split's partial tile: partial_sko[(split*K + k)*O + g*M + m].
    float* __restrict__ out = partial_sko + (long long)split * K * O + g * M;
#pragma unroll
    for (int q = 0; q < TM / 4; ++q)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int k = k0 + q * MSTEP + ty * 4 + i;
            if (k >= K) continue;
#pragma unroll
            for (int qn = 0; qn < TN / 4; ++qn)
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    const int m = m0 + qn * NSTEP + tx * 4 + j;
                    if (m < M) out[(long long)k * O + m] = acc[4 * q + i][4 * qn + j];
                }
        }
}

#define CONV2D_BACKWARD_WEIGHT_ARGS                                                     \
    const float* __restrict__ x_nchw, const float* __restrict__ g_nchw,                 \
    float* __restrict__ partial_sko,                                                    \
    int N, int C, int H, int W, int O, int OH, int OW, int KH, int KW,                  \
    int SH, int SW, int PH, int PW, int G, long long chunk
#define CONV2D_BACKWARD_WEIGHT_PASS x_nchw, g_nchw, partial_sko, N, C, H, W, O, OH, OW, KH, KW, SH, SW, PH, PW, G, chunk

// 128 (k) x 128 (m) tile, 8 x 8 per thread, 256 threads: AlexNet's conv2-conv5 (K >= 1200, out/groups >= 128).
extern "C" __global__ void __launch_bounds__(256, 2)
conv2d_backward_weight_128x128(CONV2D_BACKWARD_WEIGHT_ARGS)
{
    conv2d_backward_weight_tile<128, 128, 8, 8, 8>(CONV2D_BACKWARD_WEIGHT_PASS);
}

// 64 x 64 tile, 4 x 4 per thread, 256 threads: small layers and conv1 (K = 363, out/groups = 64 or 96).
extern "C" __global__ void __launch_bounds__(256, 2)
conv2d_backward_weight_64x64(CONV2D_BACKWARD_WEIGHT_ARGS)
{
    conv2d_backward_weight_tile<64, 64, 8, 4, 4>(CONV2D_BACKWARD_WEIGHT_PASS);
}

#undef CONV2D_BACKWARD_WEIGHT_ARGS
#undef CONV2D_BACKWARD_WEIGHT_PASS

// dw_ko[i] = sum over s = 0 .. splits-1, in that order, of partial_sko[s*KO + i]: one thread per element.
extern "C" __global__ void __launch_bounds__(256)
conv2d_backward_weight_reduce(const float* __restrict__ partial_sko, float* __restrict__ dw_ko,
                              long long KO, int splits)
{
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < KO; i += step) {
        float sum = 0.0f;
        for (int s = 0; s < splits; ++s) sum += partial_sko[s * KO + i];
        dw_ko[i] = sum;
    }
}
