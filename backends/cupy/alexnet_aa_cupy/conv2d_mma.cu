// conv2d_mma.cu — grouped 2-D cross-correlation + bias (+ ReLU) in half precision on tensor cores.
//
// Conventions (every kernel in this file):
//   storage      T = half_t (float16) or bf16_t (bfloat16) for x, w, b and y (precision.cuh);
//                products and sums in float32 (mma.sync ... .f32 accumulators), the epilogue
//                (+ bias, ReLU) in float32, rounded once to T when stored.
//   layout       activations NCHW (x_nchw, y_nchw), contiguous; weights OIHW (w_oihw): the
//                canonical (out, in/groups, kh, kw), i.e. per group a row-major M x K matrix,
//                K contiguous: the mma's A operand as it is ("row"); bias b_o: (out,).
//   GEMM view    per group g:  Y_g[m, n] = sum_k A_g[m, k] * B_g[k, n]
//                  m = output channel within the group       (M = out/groups)
//                  n = (image, oh, ow) flattened              (N = batch*OH*OW)
//                  k = (c, r, s) flattened, c within the group (K = in/groups*kh*kw)
//                A_g[m, k] = w_oihw[(g*M + m)*K + k]
//                B_g[k, n] = x_nchw[img, g*Cg + c, oh*sh - ph + r, ow*sw - pw + s],
//                            0 outside the image (zero padding), gathered on the fly.
//   tiling       mma_tile.cuh: BM x BN block tiles, slices of 32 along K; a thread gathers 16
//                consecutive k of one output pixel n (stored as two 16-byte words into Bs[n]);
//                A is read as 16-byte vectors where vec_a is set (the launch wrapper's choice:
//                K % 8 == 0 and w 16-byte aligned; every AlexNet layer but conv1), element by
//                element otherwise.
//   index types  long long for image bases and the flat n index, int within one image.
//   NaN          the fused ReLU is v < 0 ? 0 : v (maximum(v, 0): NaN stays NaN).
//   entry points extern "C", one per tile and storage type (kernels.py: NAME_EXPRESSIONS);
//                no system headers (NVRTC).

#include "mma_tile.cuh"

template <class T, int BM, int BN, int WM, int WN>
__device__ __forceinline__ void conv2d_mma_forward_tile(
    const T* __restrict__ x_nchw, const T* __restrict__ w_oihw, const T* __restrict__ b_o, T* __restrict__ y_nchw,
    int N, int C, int H, int W, int O, int OH, int OW, int KH, int KW, int SH, int SW, int PH, int PW, int G, int relu,
    int vec_a)
{
    constexpr int THREADS = (BM / WM) * (BN / WN) * 32;
    constexpr int A_ELEMS = BM * MMA_BK / THREADS;     // A elements per thread and slice
    constexpr int B_SPLIT = THREADS / BN;              // threads per column n of B
    constexpr int B_ELEMS = MMA_BK / B_SPLIT;          // consecutive k per thread and slice
    static_assert(A_ELEMS == 16 && B_ELEMS == 16, "each thread stages 16 elements of A and 16 of B per slice");

    __shared__ __align__(16) T As[2][BM][MMA_BK + MMA_PAD];
    __shared__ __align__(16) T Bs[2][BN][MMA_BK + MMA_PAD];

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
    const int wm = warp / (BN / WN);
    const int wn = warp % (BN / WN);

    const T* __restrict__ a_g = w_oihw + (long long)g * M * K;

    // This thread's column of B: pixel n = n0 + bn, k = k0 + bk0 .. + 15 of each slice.
    const int bn = tid % BN;
    const int bk0 = (tid / BN) * B_ELEMS;
    const long long n = n0 + bn;
    const bool n_ok = n < NP;
    const long long img = n_ok ? n / P : 0;
    const int p = n_ok ? (int)(n - img * P) : 0;
    const int ih0 = (p / OW) * SH - PH;
    const int iw0 = (p % OW) * SW - PW;
    const T* __restrict__ x_img = x_nchw + (img * C + (long long)g * Cg) * HW;

    unsigned a_stage[A_ELEMS / 2];
    unsigned short b_stage[B_ELEMS];
    unsigned short a_elem[A_ELEMS];

    auto load_slice = [&](int k0) {
        if (vec_a) {
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                const int v = tid + THREADS * i;       // BM rows x 4 vectors of 8
                const int m = m0 + v / 4;
                const int k = k0 + (v % 4) * 8;
                uint4 q = {0u, 0u, 0u, 0u};
                if (m < M && k < K) q = *reinterpret_cast<const uint4*>(a_g + (long long)m * K + k);
                a_stage[4 * i + 0] = q.x; a_stage[4 * i + 1] = q.y; a_stage[4 * i + 2] = q.z; a_stage[4 * i + 3] = q.w;
            }
        } else {
#pragma unroll
            for (int i = 0; i < A_ELEMS; ++i) {
                const int v = tid + THREADS * i;       // BM rows x 32 k, lanes along k
                const int m = m0 + v / MMA_BK;
                const int k = k0 + v % MMA_BK;
                a_elem[i] = (m < M && k < K) ? a_g[(long long)m * K + k].bits : (unsigned short)0;
            }
        }
#pragma unroll
        for (int i = 0; i < B_ELEMS; ++i) {
            const int k = k0 + bk0 + i;
            unsigned short v = 0;
            if (n_ok && k < K) {
                const int c = k / KHW;
                const int rs = k - c * KHW;
                const int r = rs / KW;
                const int ih = ih0 + r;
                const int iw = iw0 + rs - r * KW;
                if ((unsigned)ih < (unsigned)H && (unsigned)iw < (unsigned)W) v = x_img[c * HW + ih * W + iw].bits;
            }
            b_stage[i] = v;
        }
    };
    auto store_slice = [&](int buf) {
        if (vec_a) {
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                const int v = tid + THREADS * i;
                uint4 q = {a_stage[4 * i + 0], a_stage[4 * i + 1], a_stage[4 * i + 2], a_stage[4 * i + 3]};
                *reinterpret_cast<uint4*>(&As[buf][v / 4][(v % 4) * 8]) = q;
            }
        } else {
#pragma unroll
            for (int i = 0; i < A_ELEMS; ++i) {
                const int v = tid + THREADS * i;
                As[buf][v / MMA_BK][v % MMA_BK].bits = a_elem[i];
            }
        }
        uint4 q0, q1;
        q0.x = b_stage[0] | ((unsigned)b_stage[1] << 16);   q0.y = b_stage[2] | ((unsigned)b_stage[3] << 16);
        q0.z = b_stage[4] | ((unsigned)b_stage[5] << 16);   q0.w = b_stage[6] | ((unsigned)b_stage[7] << 16);
        q1.x = b_stage[8] | ((unsigned)b_stage[9] << 16);   q1.y = b_stage[10] | ((unsigned)b_stage[11] << 16);
        q1.z = b_stage[12] | ((unsigned)b_stage[13] << 16); q1.w = b_stage[14] | ((unsigned)b_stage[15] << 16);
        *reinterpret_cast<uint4*>(&Bs[buf][bn][bk0]) = q0;
        *reinterpret_cast<uint4*>(&Bs[buf][bn][bk0 + 8]) = q1;
    };

    float acc[WM / 16][WN / 8][4];
    mma_tile_mainloop<T, BM, BN, WM, WN>(As, Bs, acc, K, wm, wn, lane, load_slice, store_slice);

    // Epilogue: + bias, ReLU (float32), round to T, scatter to NCHW.
    const int gq = lane >> 2;
    const int tq = lane & 3;
#pragma unroll
    for (int i = 0; i < WM / 16; ++i)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int m = m0 + wm * WM + i * 16 + gq + 8 * h;
            if (m >= M) continue;
            const int o = g * M + m;
            const float bias = load_float(b_o[o]);
#pragma unroll
            for (int j = 0; j < WN / 8; ++j)
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const long long nn = n0 + wn * WN + j * 8 + 2 * tq + e;
                    if (nn >= NP) continue;
                    const long long im = nn / P;
                    float v = acc[i][j][2 * h + e] + bias;
                    if (relu) v = v < 0.0f ? 0.0f : v;  // NaN stays NaN (as maximum(v, 0))
                    y_nchw[(im * O + o) * P + (nn - im * P)] = store_float<T>(v);
                }
        }
}

#define CONV2D_MMA_ARGS(T)                                                                         \
    const T* __restrict__ x_nchw, const T* __restrict__ w_oihw, const T* __restrict__ b_o,         \
    T* __restrict__ y_nchw, int N, int C, int H, int W, int O, int OH, int OW, int KH, int KW,     \
    int SH, int SW, int PH, int PW, int G, int relu, int vec_a
#define CONV2D_MMA_PASS x_nchw, w_oihw, b_o, y_nchw, N, C, H, W, O, OH, OW, KH, KW, SH, SW, PH, PW, G, relu, vec_a

// 128 x 128 tile, 8 warps of 64 x 32: large layers.
extern "C" __global__ void __launch_bounds__(256)
conv2d_mma_forward_128x128_float16(CONV2D_MMA_ARGS(half_t))
{
    conv2d_mma_forward_tile<half_t, 128, 128, 64, 32>(CONV2D_MMA_PASS);
}

extern "C" __global__ void __launch_bounds__(256)
conv2d_mma_forward_128x128_bfloat16(CONV2D_MMA_ARGS(bf16_t))
{
    conv2d_mma_forward_tile<bf16_t, 128, 128, 64, 32>(CONV2D_MMA_PASS);
}

// 64 x 64 tile, 4 warps of 32 x 32: small problems (batch 1, small maps).
extern "C" __global__ void __launch_bounds__(128)
conv2d_mma_forward_64x64_float16(CONV2D_MMA_ARGS(half_t))
{
    conv2d_mma_forward_tile<half_t, 64, 64, 32, 32>(CONV2D_MMA_PASS);
}

extern "C" __global__ void __launch_bounds__(128)
conv2d_mma_forward_64x64_bfloat16(CONV2D_MMA_ARGS(bf16_t))
{
    conv2d_mma_forward_tile<bf16_t, 64, 64, 32, 32>(CONV2D_MMA_PASS);
}

#undef CONV2D_MMA_ARGS
#undef CONV2D_MMA_PASS
