// conv2d_winograd.cu — 3x3, stride-1 grouped convolution + bias (+ ReLU) by Winograd F(2x2, 3x3).
//
// Conventions (every kernel in this file):
//   layout       activations NCHW (x_nchw, y_nchw), row-major, contiguous;
//                w_ihwo: (in/groups, 3, 3, out), as for conv2d.cu; bias b_o: (out,).
//   algorithm    Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks"
//                (2016), F(2x2, 3x3): each 2x2 output tile Y of a (channel, image)
//                plane comes from the 4x4 input tile d whose top-left corner is
//                (2*th - ph, 2*tw - pw) (0 outside the image: zero padding):
//                  U = G g G^T        (per weight (o, c): 3x3 -> 4x4)
//                  V = B^T d B        (per input tile (c, t): 4x4 -> 4x4)
//                  M[xi] = sum_c U[xi][c, o] V[xi][c, t]   (16 GEMMs per group, xi = 4*i + j)
//                  Y = A^T M A        (per output tile (o, t): 4x4 -> 2x2)
//                with
//                  B^T = [ 1  0 -1  0 ]    G = [  1    0    0  ]    A^T = [ 1  1  1  0 ]
//                        [ 0  1  1  0 ]        [ 1/2  1/2  1/2 ]          [ 0  1 -1 -1 ]
//                        [ 0 -1  1  0 ]        [ 1/2 -1/2  1/2 ]
//                        [ 0  1  0 -1 ]        [  0    0    1  ]
//   buffers      u_xco: (16, in/groups, out)   U, columns of group g at [g*out/G, (g+1)*out/G)
//                v_xct: (16, in, Tp)           V, channel c = g*Cg + c_in_group
//                m_xot: (16, out, Tp)          M
//                t = (image, th, tw) flattened, T = N * ceil(OH/2) * ceil(OW/2) tiles,
//                padded to Tp = T rounded up to a multiple of 4 (V is zero there), so
//                every row of V and M starts 16-byte aligned and is read as float4.
//   GEMM         per (xi, g): M_g[m, n] = sum_k A[k, m] * B[k, n], A = U (rows along
//                m, ld = out), B = V (rows along n, ld = Tp); one block per BM x BN
//                tile, blockIdx.z = xi*G + g; K (= in/groups) walked in BK slices,
//                double-buffered shared memory, float4 global loads (A as scalars
//                in the *_scalar entry point, for out/groups not a multiple of 4),
//                TM x TN register micro-tile, float4 shared reads and global stores.
//                The k order of every sum is fixed (0, 1, ..., K-1), so the result
//                does not depend on the tile, the grid or the batch size.
//   index types  long long for element indices of the transforms and the per-(xi, g)
//                base pointers of the GEMM; int for offsets inside one (xi, g) matrix
//                (the launch wrapper checks in/groups*out, in*Tp and out*Tp < 2^31).
//   accumulator  float32 everywhere (fused multiply-add in the GEMM); transforms in
//                float32 with the operation order written below; bias added and ReLU
//                applied in the output transform.
//   entry points extern "C" (names listed in kernels.py: NAME_EXPRESSIONS); no system
//                headers (NVRTC).

// U = G g G^T for every (c, o): w_ihwo (Cg, 3, 3, O) -> u_xco (16, Cg, O).
extern "C" __global__ void __launch_bounds__(256)
conv2d_winograd_weight(const float* __restrict__ w_ihwo, float* __restrict__ u_xco, int Cg, int O)
{
    const long long CgO = (long long)Cg * O;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < CgO;
         e += (long long)gridDim.x * blockDim.x) {
        const long long c = e / O;
        const int o = (int)(e - c * O);
        const float* __restrict__ src = w_ihwo + c * 9 * O + o;   // g[r][s] = src[(3r + s) * O]
        float g[3][3];
#pragma unroll
        for (int r = 0; r < 3; ++r)
#pragma unroll
            for (int s = 0; s < 3; ++s) g[r][s] = src[(3 * r + s) * O];
        float t[4][3];                        // G g: rows
#pragma unroll
        for (int s = 0; s < 3; ++s) {
            t[0][s] = g[0][s];
            t[1][s] = 0.5f * (g[0][s] + g[1][s] + g[2][s]);
            t[2][s] = 0.5f * (g[0][s] - g[1][s] + g[2][s]);
            t[3][s] = g[2][s];
        }
#pragma unroll
        for (int i = 0; i < 4; ++i) {         // (G g) G^T: columns
            const float u0 = t[i][0];
            const float u1 = 0.5f * (t[i][0] + t[i][1] + t[i][2]);
            const float u2 = 0.5f * (t[i][0] - t[i][1] + t[i][2]);
            const float u3 = t[i][2];
            u_xco[(4 * i + 0) * CgO + e] = u0;
            u_xco[(4 * i + 1) * CgO + e] = u1;
            u_xco[(4 * i + 2) * CgO + e] = u2;
            u_xco[(4 * i + 3) * CgO + e] = u3;
        }
    }
}

// V = B^T d B for every (channel c, tile t < Tp): x_nchw (N, C, H, W) -> v_xct (16, C, Tp);
// tiles t >= T (the padding up to Tp) are written as zeros.
extern "C" __global__ void __launch_bounds__(256)
conv2d_winograd_input(const float* __restrict__ x_nchw, float* __restrict__ v_xct,
                      int C, int H, int W, int TH, int TW, int PH, int PW, long long T, long long Tp)
{
    const long long CT = (long long)C * Tp;
    const int TT = TH * TW;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < CT;
         e += (long long)gridDim.x * blockDim.x) {
        const long long c = e / Tp;
        const long long t = e - c * Tp;
        float d[4][4];
        if (t < T) {
            const long long img = t / TT;
            const int p = (int)(t - img * TT);
            const int th = p / TW;
            const int ih0 = 2 * th - PH;
            const int iw0 = 2 * (p - th * TW) - PW;
            const float* __restrict__ plane = x_nchw + (img * C + c) * H * W;
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const int ih = ih0 + i;
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    const int iw = iw0 + j;
                    d[i][j] = ((unsigned)ih < (unsigned)H && (unsigned)iw < (unsigned)W) ? plane[ih * W + iw] : 0.0f;
                }
            }
        } else {
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) d[i][j] = 0.0f;
        }
        float b[4][4];                        // B^T d: rows
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            b[0][j] = d[0][j] - d[2][j];
            b[1][j] = d[1][j] + d[2][j];
            b[2][j] = d[2][j] - d[1][j];
            b[3][j] = d[1][j] - d[3][j];
        }
#pragma unroll
        for (int i = 0; i < 4; ++i) {         // (B^T d) B: columns
            v_xct[(4 * i + 0) * CT + e] = b[i][0] - b[i][2];
            v_xct[(4 * i + 1) * CT + e] = b[i][1] + b[i][2];
            v_xct[(4 * i + 2) * CT + e] = b[i][2] - b[i][1];
            v_xct[(4 * i + 3) * CT + e] = b[i][1] - b[i][3];
        }
    }
}

// Y = A^T M A + bias (+ ReLU) for every (output channel o, tile t < T): m_xot (16, O, Tp) -> y_nchw.
extern "C" __global__ void __launch_bounds__(256)
conv2d_winograd_output(const float* __restrict__ m_xot, const float* __restrict__ b_o, float* __restrict__ y_nchw,
                       int O, int OH, int OW, int TH, int TW, long long T, long long Tp, int relu)
{
    const long long OT = (long long)O * T;
    const long long OTp = (long long)O * Tp;
    const int TT = TH * TW;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < OT;
         e += (long long)gridDim.x * blockDim.x) {
        const long long o = e / T;
        const long long t = e - o * T;
        const float* __restrict__ src = m_xot + o * Tp + t;
        float m[4][4];
#pragma unroll
        for (int xi = 0; xi < 16; ++xi) m[xi / 4][xi % 4] = src[xi * OTp];
        float a[2][4];                        // A^T M: rows
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            a[0][j] = m[0][j] + m[1][j] + m[2][j];
            a[1][j] = m[1][j] - m[2][j] - m[3][j];
        }
        const float bias = b_o[o];
        float yv[2][2];                       // (A^T M) A: columns
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            yv[i][0] = a[i][0] + a[i][1] + a[i][2] + bias;
            yv[i][1] = a[i][1] - a[i][2] - a[i][3] + bias;
        }
        const long long img = t / TT;
        const int p = (int)(t - img * TT);
        const int th = p / TW;
        const int oh0 = 2 * th;
        const int ow0 = 2 * (p - th * TW);
        float* __restrict__ plane = y_nchw + (img * O + o) * OH * OW;
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int j = 0; j < 2; ++j) {
                float v = yv[i][j];
                if (relu) v = v > 0.0f ? v : 0.0f;
                if (oh0 + i < OH && ow0 + j < OW) plane[(oh0 + i) * OW + ow0 + j] = v;
            }
    }
}

// The 16 * G GEMMs M[xi]_g = U[xi]_g^T V[xi]_g (see "GEMM" above).
template <int BM, int BN, int BK, int TM, int TN, bool VEC_A>
__device__ __forceinline__ void conv2d_winograd_gemm_tile(
    const float* __restrict__ u_xco, const float* __restrict__ v_xct, float* __restrict__ m_xot,
    int K, int O, int G, int Tp)
{
    constexpr int THREADS = (BM / TM) * (BN / TN);
    constexpr int A_F4 = BK * BM / 4;                 // float4 groups per A slice
    constexpr int B_F4 = BK * BN / 4;
    constexpr int A_PER = (A_F4 + THREADS - 1) / THREADS;
    constexpr int B_PER = (B_F4 + THREADS - 1) / THREADS;
    constexpr int MSTEP = (BM / TM) * 4;
    constexpr int NSTEP = (BN / TN) * 4;
    static_assert(TM % 4 == 0 && TN % 4 == 0, "micro-tile must be float4 groups");
    static_assert(THREADS % 32 == 0, "whole warps");

    __shared__ __align__(16) float As[2][BK][BM];
    __shared__ __align__(16) float Bs[2][BK][BN];

    const int M = O / G;
    const int z = blockIdx.z;
    const int xi = z / G;
    const int g = z - xi * G;
    const int m0 = blockIdx.y * BM;
    const int n0 = blockIdx.x * BN;
    const int tid = threadIdx.x;
    const int tx = tid % (BN / TN);
    const int ty = tid / (BN / TN);

    const float* __restrict__ a_blk = u_xco + (long long)xi * K * O + g * M;            // + k*O + m
    const float* __restrict__ b_blk = v_xct + ((long long)xi * G + g) * K * Tp;        // + k*Tp + n
    float* __restrict__ c_blk = m_xot + ((long long)xi * O + g * M) * Tp;              // + m*Tp + n

    float4 a_stage[A_PER];
    float4 b_stage[B_PER];
    const float4 zero4 = {0.0f, 0.0f, 0.0f, 0.0f};

    auto load_slice = [&](int k0) {
#pragma unroll
        for (int i = 0; i < A_PER; ++i) {
            const int idx = tid + i * THREADS;
            const int kk = idx / (BM / 4);
            const int mm = (idx - kk * (BM / 4)) * 4;
            const int k = k0 + kk, m = m0 + mm;
            float4 v = zero4;
            if ((A_F4 % THREADS == 0 || idx < A_F4) && k < K) {
                const float* src = a_blk + k * O + m;
                if (VEC_A) {
                    if (m < M) v = *reinterpret_cast<const float4*>(src);   // M % 4 == 0: all four in range
                } else {
                    if (m + 0 < M) v.x = src[0];
                    if (m + 1 < M) v.y = src[1];
                    if (m + 2 < M) v.z = src[2];
                    if (m + 3 < M) v.w = src[3];
                }
            }
            a_stage[i] = v;
        }
#pragma unroll
        for (int i = 0; i < B_PER; ++i) {
            const int idx = tid + i * THREADS;
            const int kk = idx / (BN / 4);
            const int nn = (idx - kk * (BN / 4)) * 4;
            const int k = k0 + kk, n = n0 + nn;
            b_stage[i] = ((B_F4 % THREADS == 0 || idx < B_F4) && k < K && n < Tp)
                             ? *reinterpret_cast<const float4*>(b_blk + k * Tp + n) : zero4;
        }
    };
    auto store_slice = [&](int buf) {
#pragma unroll
        for (int i = 0; i < A_PER; ++i) {
            const int idx = tid + i * THREADS;
            if (A_F4 % THREADS == 0 || idx < A_F4) {
                const int kk = idx / (BM / 4);
                *reinterpret_cast<float4*>(&As[buf][kk][(idx - kk * (BM / 4)) * 4]) = a_stage[i];
            }
        }
#pragma unroll
        for (int i = 0; i < B_PER; ++i) {
            const int idx = tid + i * THREADS;
            if (B_F4 % THREADS == 0 || idx < B_F4) {
                const int kk = idx / (BN / 4);
                *reinterpret_cast<float4*>(&Bs[buf][kk][(idx - kk * (BN / 4)) * 4]) = b_stage[i];
            }
        }
    };

    float acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = 0.0f;

    const int slices = (K + BK - 1) / BK;
    load_slice(0);
    store_slice(0);
    __syncthreads();

    for (int t = 0; t < slices; ++t) {
        const int buf = t & 1;
        const bool more = t + 1 < slices;
        if (more) load_slice((t + 1) * BK);   // in flight while we multiply

#pragma unroll 2
        for (int kk = 0; kk < BK; ++kk) {
            float a[TM], b[TN];
#pragma unroll
            for (int q = 0; q < TM / 4; ++q) {
                const float4 v = *reinterpret_cast<const float4*>(&As[buf][kk][q * MSTEP + ty * 4]);
                a[4 * q + 0] = v.x; a[4 * q + 1] = v.y; a[4 * q + 2] = v.z; a[4 * q + 3] = v.w;
            }
#pragma unroll
            for (int q = 0; q < TN / 4; ++q) {
                const float4 v = *reinterpret_cast<const float4*>(&Bs[buf][kk][q * NSTEP + tx * 4]);
                b[4 * q + 0] = v.x; b[4 * q + 1] = v.y; b[4 * q + 2] = v.z; b[4 * q + 3] = v.w;
            }
#pragma unroll
            for (int i = 0; i < TM; ++i)
#pragma unroll
                for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }

        if (more) store_slice(buf ^ 1);       // buffer buf^1 was last read before the previous barrier
        __syncthreads();
    }

    // Epilogue: float4 stores along n (Tp % 4 == 0, so a group is all in or all out).
#pragma unroll
    for (int q = 0; q < TM / 4; ++q)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int m = m0 + q * MSTEP + ty * 4 + i;
            if (m >= M) continue;
#pragma unroll
            for (int p = 0; p < TN / 4; ++p) {
                const int n = n0 + p * NSTEP + tx * 4;
                if (n >= Tp) continue;
                float4 v;
                v.x = acc[4 * q + i][4 * p + 0]; v.y = acc[4 * q + i][4 * p + 1];
                v.z = acc[4 * q + i][4 * p + 2]; v.w = acc[4 * q + i][4 * p + 3];
                *reinterpret_cast<float4*>(c_blk + m * Tp + n) = v;
            }
        }
}

#define WINOGRAD_GEMM_ARGS                                                                \
    const float* __restrict__ u_xco, const float* __restrict__ v_xct, float* __restrict__ m_xot, \
    int K, int O, int G, int Tp
#define WINOGRAD_GEMM_PASS u_xco, v_xct, m_xot, K, O, G, Tp

// 128 x 128 tile, 8 x 8 per thread, 256 threads, K slices of 16.
extern "C" __global__ void __launch_bounds__(256, 2)
conv2d_winograd_gemm_128x128(WINOGRAD_GEMM_ARGS)
{
    conv2d_winograd_gemm_tile<128, 128, 16, 8, 8, true>(WINOGRAD_GEMM_PASS);
}

// 64 x 128 tile, 8 x 8 per thread, 128 threads, K slices of 16.
extern "C" __global__ void __launch_bounds__(128, 4)
conv2d_winograd_gemm_64x128(WINOGRAD_GEMM_ARGS)
{
    conv2d_winograd_gemm_tile<64, 128, 16, 8, 8, true>(WINOGRAD_GEMM_PASS);
}

// 64 x 64 tile, 4 x 4 per thread, 256 threads, K slices of 16: small problems (batch 1).
extern "C" __global__ void __launch_bounds__(256, 2)
conv2d_winograd_gemm_64x64(WINOGRAD_GEMM_ARGS)
{
    conv2d_winograd_gemm_tile<64, 64, 16, 4, 4, true>(WINOGRAD_GEMM_PASS);
}

// 64 x 64 tile with scalar loads of U: out/groups not a multiple of 4 (never in AlexNet).
extern "C" __global__ void __launch_bounds__(256, 2)
conv2d_winograd_gemm_64x64_scalar(WINOGRAD_GEMM_ARGS)
{
    conv2d_winograd_gemm_tile<64, 64, 16, 4, 4, false>(WINOGRAD_GEMM_PASS);
}

#undef WINOGRAD_GEMM_ARGS
#undef WINOGRAD_GEMM_PASS
