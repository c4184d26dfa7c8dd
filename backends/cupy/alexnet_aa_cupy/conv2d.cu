// conv2d.cu — grouped 2-D cross-correlation + bias (+ ReLU) as an implicit GEMM.
//
// Conventions (every kernel in this file):
//   layout       activations NCHW (x_nchw, y_nchw), row-major, contiguous.
//                weights IHWO (w_ihwo): (in/groups, kh, kw, out), prepared once
//                from the canonical OIHW by CupyBackend.prepare; bias b_o: (out,).
//   GEMM view    per group g:  Y_g[m, n] = sum_k A_g[k, m] * B_g[k, n]
//                  m = output channel within the group       (M = out/groups)
//                  n = (image, oh, ow) flattened              (N = batch*OH*OW)
//                  k = (c, r, s) flattened, c within the group (K = in/groups*kh*kw)
//                A_g[k, m] = w_ihwo[k*out + g*M + m]  (rows contiguous along m)
//                B_g[k, n] = x_nchw[img, g*Cg + c, oh*sh - ph + r, ow*sw - pw + s],
//                            0 outside the image (zero padding), gathered on the fly.
//   tiling       one block computes a BM x BN tile of Y_g; K is walked in BK
//                slices staged in shared memory (double buffered, one
//                __syncthreads per slice, next slice prefetched into registers
//                while the current one is multiplied); each thread owns a
//                TM x TN register micro-tile, read from shared memory as float4.
//   index types  long long for the GEMM n index and the block's base pointers;
//                int for offsets from those bases (the launch wrapper checks that
//                (images one block touches) * C*H*W and * O*OH*OW < 2^31, and
//                H, W < 2^15 + pad so window origins pack into 16 bits each).
//   accumulator  float32 (fused multiply-add), bias added and ReLU applied in
//                the epilogue (v < 0 ? 0 : v, i.e. maximum(v, 0): NaN stays NaN).
//   entry points extern "C", one per tile configuration (names listed in
//                kernels.py: NAME_EXPRESSIONS); no system headers (NVRTC); the GEMM
//                main loop and micro-kernel are gemm_tile.cuh's, shared with
//                conv2d_winograd.cu.

#include "gemm_tile.cuh"

template <int BM, int BN, int BK, int TM, int TN>
__device__ __forceinline__ void conv2d_forward_tile(
    const float* __restrict__ x_nchw, const float* __restrict__ w_ihwo,
    const float* __restrict__ b_o, float* __restrict__ y_nchw,
    int N, int C, int H, int W, int O, int OH, int OW, int KH, int KW,
    int SH, int SW, int PH, int PW, int G, int relu)
{
    constexpr int THREADS = (BM / TM) * (BN / TN);
    constexpr int NWARPS = THREADS / 32;
    constexpr int A_COLS = BM / 32;           // m columns loaded per lane
    constexpr int B_COLS = BN / 32;           // n columns loaded per lane
    constexpr int ROWS = BK / NWARPS;         // k rows loaded per warp and slice
    constexpr int MSTEP = (BM / TM) * 4;      // stride between a thread's float4 groups along m
    constexpr int NSTEP = (BN / TN) * 4;      // ... along n
    static_assert(TM % 4 == 0 && TN % 4 == 0, "micro-tile must be float4 groups");
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

    const int g = blockIdx.z;
    const int m0 = blockIdx.y * BM;
    const long long n0 = (long long)blockIdx.x * BN;
    const int tid = threadIdx.x;
    const int lane = tid & 31;
    const int warp = tid >> 5;
    const int tx = tid % (BN / TN);
    const int ty = tid / (BN / TN);

    const float* __restrict__ a_g = w_ihwo + g * M;   // + k*O + m

    // Offsets below are relative to the first image this block touches, so
    // they fit in int (the launch wrapper checks (images per block) * C*H*W
    // and * O*OH*OW < 2^31); the bases are long long.
    const long long img0 = n0 / P;
    const float* __restrict__ x_blk = x_nchw + (img0 * C + (long long)g * Cg) * HW;

    // The n columns this lane gathers never change: decompose them once into
    // an offset to the image/group plane and the packed window origin
    // (ih0 << 16 | (iw0 & 0xffff); H, W < 2^15, checked by the wrapper).
    int xoff[B_COLS];
    int org[B_COLS];
#pragma unroll
    for (int j = 0; j < B_COLS; ++j) {
        const long long n = n0 + lane + 32 * j;
        if (n < NP) {
            const long long img = n / P;
            const int p = (int)(n - img * P);
            const int oh = p / OW;
            const int ow = p - oh * OW;
            xoff[j] = (int)(img - img0) * C * HW;
            org[j] = (int)(((unsigned)(oh * SH - PH) << 16) | ((unsigned)(ow * SW - PW) & 0xffffu));
        } else {                              // outside the GEMM: always padding
            xoff[j] = 0;
            org[j] = (int)0xc0000000u;           // ih0 = -2^14: never inside
        }
    }

    float a_stage[ROWS][A_COLS];
    float b_stage[ROWS][B_COLS];

    // Global -> registers: K slice starting at k0.
    auto load_slice = [&](int k0) {
#pragma unroll
        for (int i = 0; i < ROWS; ++i) {
            const int k = k0 + warp + NWARPS * i;
            const bool kok = k < K;
            const int c = kok ? k / KHW : 0;
            const int rs = k - c * KHW;
            const int r = rs / KW;
            const int s = rs - r * KW;
#pragma unroll
            for (int j = 0; j < A_COLS; ++j) {
                const int m = m0 + lane + 32 * j;
                a_stage[i][j] = (kok && m < M) ? a_g[(long long)k * O + m] : 0.0f;
            }
#pragma unroll
            for (int j = 0; j < B_COLS; ++j) {
                const int ih = (org[j] >> 16) + r;
                const int iw = (int)(short)(org[j] & 0xffff) + s;
                const bool ok = kok && (unsigned)ih < (unsigned)H && (unsigned)iw < (unsigned)W;
                b_stage[i][j] = ok ? x_blk[xoff[j] + c * HW + ih * W + iw] : 0.0f;
            }
        }
    };
    auto store_slice = [&](int buf) { store_staged<NWARPS>(As[buf], Bs[buf], a_stage, b_stage, warp, lane); };

    float acc[TM][TN];
    gemm_tile_mainloop(As, Bs, acc, K, tx, ty, load_slice, store_slice);

    // Epilogue: + bias, ReLU, scatter to NCHW.
    float* __restrict__ y_blk = y_nchw + img0 * O * P;
    int yoff[TN];                             // -1: column outside the GEMM
#pragma unroll
    for (int q = 0; q < TN / 4; ++q)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const long long n = n0 + q * NSTEP + tx * 4 + j;
            const long long img = n / P;
            yoff[4 * q + j] = n < NP ? (int)(img - img0) * O * P + (int)(n - img * P) : -1;
        }
#pragma unroll
    for (int q = 0; q < TM / 4; ++q)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int m = m0 + q * MSTEP + ty * 4 + i;
            if (m >= M) continue;
            const int o = g * M + m;
            const float bias = b_o[o];
            const int orow = o * P;
#pragma unroll
            for (int j = 0; j < TN; ++j) {
                if (yoff[j] < 0) continue;
                float v = acc[4 * q + i][j] + bias;
                if (relu) v = v < 0.0f ? 0.0f : v;  // NaN stays NaN (as maximum(v, 0))
                y_blk[yoff[j] + orow] = v;
            }
        }
}

#define CONV2D_ARGS                                                                     \
    const float* __restrict__ x_nchw, const float* __restrict__ w_ihwo,                 \
    const float* __restrict__ b_o, float* __restrict__ y_nchw,                          \
    int N, int C, int H, int W, int O, int OH, int OW, int KH, int KW,                  \
    int SH, int SW, int PH, int PW, int G, int relu
#define CONV2D_PASS x_nchw, w_ihwo, b_o, y_nchw, N, C, H, W, O, OH, OW, KH, KW, SH, SW, PH, PW, G, relu

// 128 x 128 tile, 8 x 8 per thread, 256 threads: large layers (out/groups >= 128).
extern "C" __global__ void __launch_bounds__(256, 2)
conv2d_forward_128x128(CONV2D_ARGS)
{
    conv2d_forward_tile<128, 128, 8, 8, 8>(CONV2D_PASS);
}

// 64 x 128 tile, 8 x 8 per thread, 128 threads: out/groups of 64, 96, 192.
extern "C" __global__ void __launch_bounds__(128, 4)
conv2d_forward_64x128(CONV2D_ARGS)
{
    conv2d_forward_tile<64, 128, 8, 8, 8>(CONV2D_PASS);
}

// 64 x 64 tile, 4 x 4 per thread, 256 threads: small problems (batch 1, small maps).
extern "C" __global__ void __launch_bounds__(256, 2)
conv2d_forward_64x64(CONV2D_ARGS)
{
    conv2d_forward_tile<64, 64, 8, 4, 4>(CONV2D_PASS);
}

#undef CONV2D_ARGS
#undef CONV2D_PASS
