// linear.cu — the fully connected layers: y = x w^T + b (+ ReLU), and the epilogue of the cuBLAS path.
//
// Conventions:
//   math         y[n, o] = sum_i x[n, i] * w[o, i] + b[o], then maximum(v, 0) where relu is set
//                (v < 0 ? 0 : v: NaN stays NaN, -inf -> 0).
//   split-K      the reduction over i is cut into fixed chunks of KC = LINEAR_K_CHUNK (512, a
//                multiple of every K slice below): chunk c covers i in [c*KC, min((c+1)*KC, I)).
//                A GEMM kernel writes each chunk's float32 partial sum p_cno[c, n, o], accumulated
//                in i order from 0; linear_reduce then adds the chunks in order c = 0, 1, ..., the
//                bias, applies ReLU and stores y. The chunks depend on I only, so every kernel and
//                tile below sums every output element in the same order: the result of an image
//                does not depend on its batch or on which kernel ran (DESIGN.md §7), bit for bit.
//   float32      w_io: (in, out), out contiguous (CupyBackend(dtype="float32") prepares linear
//                weights "IO"). linear_gemv_forward_<R>: one thread per output o and chunk, R = 1, 2,
//                4 or 8 rows of x staged in shared memory, sum = fmaf(w, x, sum) in i
//                order — one coalesced pass over the weight, for small batches.
//                linear_gemm_forward_<tile>: gemm_tile.cuh's register-blocked GEMM (A = w_io, the
//                same fmaf chain in i order), for large batches.
//   half         w_oi: (out, in), in contiguous (the mma's A operand as it is: dtype="float16" or
//                "bfloat16" prepares linear weights "OI"); linear_mma_forward_<tile>_<T>:
//                mma_tile.cuh, float32 partials.
//   linear_bias_act_forward: + bias (+ ReLU) in place on y = x @ w (cuBLAS, CupyBackend(tf32=True)).
//   layout       x_ni (batch, in), y_no (batch, out), p_cno (chunks, batch, out), row-major, contiguous.
//   index types  long long for flat indices and row bases.
//   entry points extern "C" (kernels.py: NAME_EXPRESSIONS); no system headers (NVRTC).

#include "gemm_tile.cuh"
#include "mma_tile.cuh"

constexpr int LINEAR_K_CHUNK = 512;
constexpr int LINEAR_GEMV_THREADS = 256;

// p_cno[c, n, o] for the R rows n0 .. n0 + R - 1 of blockIdx.z, the chunk c = blockIdx.y, the outputs o
// of blockIdx.x: the rows' chunk of x in shared memory, one weight column per thread. R = 1, 2, 4 or 8
// (linear_gemv_forward_<R>): a batch of 1 reads x once per weight element, not 8 times.
template <int R>
__device__ __forceinline__ void linear_gemv(const float* __restrict__ x_ni, const float* __restrict__ w_io,
                                            float* __restrict__ p_cno, int N, int I, int O)
{
    __shared__ float xs[R][LINEAR_K_CHUNK];
    const int c = blockIdx.y;
    const int k0 = c * LINEAR_K_CHUNK;
    const int kn = I - k0 < LINEAR_K_CHUNK ? I - k0 : LINEAR_K_CHUNK;
    const long long n0 = (long long)blockIdx.z * R;
    const int rows = N - n0 < R ? (int)(N - n0) : R;
    for (int e = threadIdx.x; e < R * LINEAR_K_CHUNK; e += LINEAR_GEMV_THREADS) {
        const int r = e / LINEAR_K_CHUNK;
        const int k = e - r * LINEAR_K_CHUNK;
        xs[r][k] = (r < rows && k < kn) ? x_ni[(n0 + r) * I + k0 + k] : 0.0f;
    }
    __syncthreads();
    const int o = blockIdx.x * LINEAR_GEMV_THREADS + threadIdx.x;
    if (o >= O) return;
    const float* __restrict__ w = w_io + (long long)k0 * O + o;
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = 0.0f;
#pragma unroll 4
    for (int k = 0; k < kn; ++k) {
        const float wv = w[(long long)k * O];
#pragma unroll
        for (int r = 0; r < R; ++r) acc[r] = fmaf(wv, xs[r][k], acc[r]);
    }
#pragma unroll
    for (int r = 0; r < R; ++r)   // unrolled: acc stays in registers
        if (r < rows) p_cno[((long long)c * N + n0 + r) * O + o] = acc[r];
}

#define LINEAR_GEMV_ENTRY(R)                                                                               \
    extern "C" __global__ void __launch_bounds__(LINEAR_GEMV_THREADS)                                      \
    linear_gemv_forward_##R(const float* __restrict__ x_ni, const float* __restrict__ w_io,                \
                            float* __restrict__ p_cno, int N, int I, int O)                                \
    {                                                                                                      \
        linear_gemv<R>(x_ni, w_io, p_cno, N, I, O);                                                        \
    }
LINEAR_GEMV_ENTRY(1)
LINEAR_GEMV_ENTRY(2)
LINEAR_GEMV_ENTRY(4)
LINEAR_GEMV_ENTRY(8)
#undef LINEAR_GEMV_ENTRY

// The same partial sums by the register-blocked GEMM: A[k][m] = w_io[(k0 + k)*O + m] (lanes along m),
// B[k][n] = x_ni[n*I + k0 + k], m = output, n = row of x; blockIdx.z is the chunk.
template <int BM, int BN, int BK, int TM, int TN>
__device__ __forceinline__ void linear_gemm_tile(const float* __restrict__ x_ni, const float* __restrict__ w_io,
                                                 float* __restrict__ p_cno, int N, int I, int O)
{
    constexpr int THREADS = (BM / TM) * (BN / TN);
    constexpr int NWARPS = THREADS / 32;
    constexpr int A_COLS = BM / 32;
    constexpr int B_COLS = BN / 32;
    constexpr int ROWS = BK / NWARPS;
    constexpr int MSTEP = (BM / TM) * 4;
    constexpr int NSTEP = (BN / TN) * 4;
    static_assert(LINEAR_K_CHUNK % BK == 0, "a chunk must be whole K slices");
    static_assert(THREADS % 32 == 0 && BK % NWARPS == 0, "BK must be a multiple of the warp count");

    __shared__ __align__(16) float As[2][BK][BM];
    __shared__ __align__(16) float Bs[2][BK][BN];

    const int c = blockIdx.z;
    const int k0 = c * LINEAR_K_CHUNK;
    const int kn = I - k0 < LINEAR_K_CHUNK ? I - k0 : LINEAR_K_CHUNK;
    const int m0 = blockIdx.y * BM;
    const int n0 = blockIdx.x * BN;
    const int tid = threadIdx.x;
    const int lane = tid & 31;
    const int warp = tid >> 5;
    const int tx = tid % (BN / TN);
    const int ty = tid / (BN / TN);

    float a_stage[ROWS][A_COLS];
    float b_stage[ROWS][B_COLS];
    auto load_slice = [&](int kb) {
#pragma unroll
        for (int i = 0; i < ROWS; ++i) {
            const int k = kb + warp + NWARPS * i;
            const bool kok = k < kn;
#pragma unroll
            for (int j = 0; j < A_COLS; ++j) {
                const int m = m0 + lane + 32 * j;
                a_stage[i][j] = (kok && m < O) ? w_io[(long long)(k0 + k) * O + m] : 0.0f;
            }
#pragma unroll
            for (int j = 0; j < B_COLS; ++j) {
                const int n = n0 + lane + 32 * j;
                b_stage[i][j] = (kok && n < N) ? x_ni[(long long)n * I + k0 + k] : 0.0f;
            }
        }
    };
    auto store_slice = [&](int buf) { store_staged<NWARPS>(As[buf], Bs[buf], a_stage, b_stage, warp, lane); };

    float acc[TM][TN];
    gemm_tile_mainloop(As, Bs, acc, kn, tx, ty, load_slice, store_slice);

    float* __restrict__ p = p_cno + (long long)c * N * O;
#pragma unroll
    for (int q = 0; q < TN / 4; ++q)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int n = n0 + q * NSTEP + tx * 4 + j;
            if (n >= N) continue;
#pragma unroll
            for (int qm = 0; qm < TM / 4; ++qm)
#pragma unroll
                for (int i = 0; i < 4; ++i) {
                    const int m = m0 + qm * MSTEP + ty * 4 + i;
                    if (m < O) p[(long long)n * O + m] = acc[4 * qm + i][4 * q + j];
                }
        }
}

#define LINEAR_GEMM_ARGS \
    const float* __restrict__ x_ni, const float* __restrict__ w_io, float* __restrict__ p_cno, int N, int I, int O

// 128 x 128 tile (outputs x rows), 8 x 8 per thread, 256 threads: large batches.
extern "C" __global__ void __launch_bounds__(256, 2)
linear_gemm_forward_128x128(LINEAR_GEMM_ARGS)
{
    linear_gemm_tile<128, 128, 8, 8, 8>(x_ni, w_io, p_cno, N, I, O);
}

// 64 x 64 tile, 4 x 4 per thread, 256 threads: fewer rows, or few outputs.
extern "C" __global__ void __launch_bounds__(256, 2)
linear_gemm_forward_64x64(LINEAR_GEMM_ARGS)
{
    linear_gemm_tile<64, 64, 8, 4, 4>(x_ni, w_io, p_cno, N, I, O);
}

#undef LINEAR_GEMM_ARGS

// Half precision: the partial sums on tensor cores, A[m][k] = w_oi[m*I + k0 + k] (m = output),
// B[k][n] = x_ni[n*I + k0 + k] (column n = row n of x, K contiguous), blockIdx.z the chunk.
// Both operands are read as 16-byte vectors where vec is set (the launch wrapper's choice: I % 8 == 0
// and both arrays 16-byte aligned), element by element otherwise.
template <class T, int BM, int BN, int WM, int WN>
__device__ __forceinline__ void linear_mma_tile(const T* __restrict__ x_ni, const T* __restrict__ w_oi,
                                                float* __restrict__ p_cno, int N, int I, int O, int vec)
{
    constexpr int THREADS = (BM / WM) * (BN / WN) * 32;
    constexpr int A_VECS = (BM * MMA_BK / 8 + THREADS - 1) / THREADS;   // 8-element vectors per thread
    constexpr int B_VECS = (BN * MMA_BK / 8 + THREADS - 1) / THREADS;
    static_assert(LINEAR_K_CHUNK % MMA_BK == 0, "a chunk must be whole K slices");

    __shared__ __align__(16) T As[2][BM][MMA_BK + MMA_PAD];
    __shared__ __align__(16) T Bs[2][BN][MMA_BK + MMA_PAD];

    const int c = blockIdx.z;
    const int k0 = c * LINEAR_K_CHUNK;
    const int kn = I - k0 < LINEAR_K_CHUNK ? I - k0 : LINEAR_K_CHUNK;
    const int m0 = blockIdx.y * BM;
    const int n0 = blockIdx.x * BN;
    const int tid = threadIdx.x;
    const int lane = tid & 31;
    const int warp = tid >> 5;
    const int wm = warp / (BN / WN);
    const int wn = warp % (BN / WN);

    // One 8-element vector of a row (of w or of x) from k = k0 + kb + 8*q, zero past the chunk or the row.
    auto gather8 = [&](const T* __restrict__ row, int kb, int q, unsigned (&out)[4]) {
        const int k = kb + 8 * q;
        if (vec) {
            uint4 v = {0u, 0u, 0u, 0u};
            if (k < kn) v = *reinterpret_cast<const uint4*>(row + k0 + k);
            out[0] = v.x; out[1] = v.y; out[2] = v.z; out[3] = v.w;
            return;
        }
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const unsigned lo = k + 2 * e < kn ? row[k0 + k + 2 * e].bits : 0u;
            const unsigned hi = k + 2 * e + 1 < kn ? row[k0 + k + 2 * e + 1].bits : 0u;
            out[e] = lo | (hi << 16);
        }
    };

    unsigned a_stage[A_VECS][4];
    unsigned b_stage[B_VECS][4];
    auto load_slice = [&](int kb) {
#pragma unroll
        for (int i = 0; i < A_VECS; ++i) {
            const int v = tid + THREADS * i;           // BM rows x 4 vectors
            const int m = m0 + v / 4;
            a_stage[i][0] = a_stage[i][1] = a_stage[i][2] = a_stage[i][3] = 0u;
            if (v < BM * 4 && m < O) gather8(w_oi + (long long)m * I, kb, v % 4, a_stage[i]);
        }
#pragma unroll
        for (int i = 0; i < B_VECS; ++i) {
            const int v = tid + THREADS * i;           // BN columns x 4 vectors
            const int n = n0 + v / 4;
            b_stage[i][0] = b_stage[i][1] = b_stage[i][2] = b_stage[i][3] = 0u;
            if (v < BN * 4 && n < N) gather8(x_ni + (long long)n * I, kb, v % 4, b_stage[i]);
        }
    };
    auto store_slice = [&](int buf) {
#pragma unroll
        for (int i = 0; i < A_VECS; ++i) {
            const int v = tid + THREADS * i;
            if (v < BM * 4)
                *reinterpret_cast<uint4*>(&As[buf][v / 4][(v % 4) * 8]) = {a_stage[i][0], a_stage[i][1], a_stage[i][2], a_stage[i][3]};
        }
#pragma unroll
        for (int i = 0; i < B_VECS; ++i) {
            const int v = tid + THREADS * i;
            if (v < BN * 4)
                *reinterpret_cast<uint4*>(&Bs[buf][v / 4][(v % 4) * 8]) = {b_stage[i][0], b_stage[i][1], b_stage[i][2], b_stage[i][3]};
        }
    };

    float acc[WM / 16][WN / 8][4];
    mma_tile_mainloop<T, BM, BN, WM, WN>(As, Bs, acc, kn, wm, wn, lane, load_slice, store_slice);

    float* __restrict__ p = p_cno + (long long)c * N * O;
    const int gq = lane >> 2;
    const int tq = lane & 3;
#pragma unroll
    for (int i = 0; i < WM / 16; ++i)
#pragma unroll
        for (int j = 0; j < WN / 8; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int m = m0 + wm * WM + i * 16 + gq + 8 * (e >> 1);
                const int n = n0 + wn * WN + j * 8 + 2 * tq + (e & 1);
                if (m < O && n < N) p[(long long)n * O + m] = acc[i][j][e];
            }
}

#define LINEAR_MMA_ARGS(T) \
    const T* __restrict__ x_ni, const T* __restrict__ w_oi, float* __restrict__ p_cno, int N, int I, int O, int vec

// 128 x 8 tile (outputs x rows), 4 warps of 32 x 8: batches up to 8, the weight read once.
extern "C" __global__ void __launch_bounds__(128)
linear_mma_forward_128x8_float16(LINEAR_MMA_ARGS(half_t))
{
    linear_mma_tile<half_t, 128, 8, 32, 8>(x_ni, w_oi, p_cno, N, I, O, vec);
}

extern "C" __global__ void __launch_bounds__(128)
linear_mma_forward_128x8_bfloat16(LINEAR_MMA_ARGS(bf16_t))
{
    linear_mma_tile<bf16_t, 128, 8, 32, 8>(x_ni, w_oi, p_cno, N, I, O, vec);
}

// 128 x 128 tile, 8 warps of 64 x 32: large batches.
extern "C" __global__ void __launch_bounds__(256)
linear_mma_forward_128x128_float16(LINEAR_MMA_ARGS(half_t))
{
    linear_mma_tile<half_t, 128, 128, 64, 32>(x_ni, w_oi, p_cno, N, I, O, vec);
}

extern "C" __global__ void __launch_bounds__(256)
linear_mma_forward_128x128_bfloat16(LINEAR_MMA_ARGS(bf16_t))
{
    linear_mma_tile<bf16_t, 128, 128, 64, 32>(x_ni, w_oi, p_cno, N, I, O, vec);
}

#undef LINEAR_MMA_ARGS

// y[n, o] = T(sum over chunks c, in order, of p_cno[c, n, o] + b[o]), ReLU where asked; one thread per element.
template <class T>
__device__ __forceinline__ void linear_reduce(const float* __restrict__ p_cno, const T* __restrict__ b_o,
                                              T* __restrict__ y_no, long long NO, int O, int chunks, int relu)
{
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < NO; idx += step) {
        float v = p_cno[idx];
        for (int c = 1; c < chunks; ++c) v += p_cno[c * NO + idx];
        v += load_float(b_o[idx % O]);
        if (relu) v = v < 0.0f ? 0.0f : v;  // NaN stays NaN (as maximum(v, 0))
        y_no[idx] = store_float<T>(v);
    }
}

#define LINEAR_REDUCE_ENTRY(name, T)                                                                 \
    extern "C" __global__ void __launch_bounds__(256)                                                \
    name(const float* __restrict__ p_cno, const T* __restrict__ b_o, T* __restrict__ y_no, long long NO, \
         int O, int chunks, int relu)                                                                \
    {                                                                                                \
        linear_reduce<T>(p_cno, b_o, y_no, NO, O, chunks, relu);                                     \
    }
LINEAR_REDUCE_ENTRY(linear_reduce_forward, float)
LINEAR_REDUCE_ENTRY(linear_reduce_forward_float16, half_t)
LINEAR_REDUCE_ENTRY(linear_reduce_forward_bfloat16, bf16_t)
#undef LINEAR_REDUCE_ENTRY

extern "C" __global__ void __launch_bounds__(256)
linear_bias_act_forward(float* __restrict__ y_nf, const float* __restrict__ b_f,
                        long long total, int F, int relu)
{
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += step) {
        float v = y_nf[idx] + b_f[idx % F];
        if (relu) v = v < 0.0f ? 0.0f : v;  // NaN stays NaN (as maximum(v, 0))
        y_nf[idx] = v;
    }
}
