// gemm_tile.cuh — the register-blocked shared-memory GEMM micro-kernel shared by
// conv2d.cu (implicit GEMM) and conv2d_winograd.cu (batched Winograd GEMM).
//
// A block computes a BM x BN tile of C = A^T B; K is walked in BK slices staged
// in shared memory as As[2][BK][BM] and Bs[2][BK][BN] (double buffered, one
// __syncthreads per slice, the next slice loaded into registers while the
// current one is multiplied). Thread (tx, ty) owns a TM x TN register
// micro-tile: rows q * MSTEP + ty * 4 + {0..3}, columns q * NSTEP + tx * 4 + {0..3},
// MSTEP = (BM / TM) * 4, NSTEP = (BN / TN) * 4, read from shared memory as
// float4. Each kernel keeps its own global loads (load_slice / store_slice:
// how A and B are gathered differs) and its own epilogue.
//
// How it reaches the compilers:
//   * NVRTC (kernels.py): source() inlines this file once at the top of the
//     concatenated module and turns the `#include "gemm_tile.cuh"` lines of the
//     .cu files into comments. No -I option: the module text handed to NVRTC
//     is then the whole program, so CuPy's on-disk cache key (the source text
//     and options) changes whenever this header does; with -I an edit here
//     would be served a stale cubin.
//   * nvcc (tests/test_cuda_kernels.py, each .cu alone) and g++ (the CPU
//     emulation, backends/cupy/tests/emu_entry.cpp): a quoted include is
//     found beside the including .cu; the tests also pass -I<this folder>.
// The include guard keeps a second inclusion in one translation unit harmless.
// No system headers (NVRTC).
#ifndef ALEXNET_AA_GEMM_TILE_CUH
#define ALEXNET_AA_GEMM_TILE_CUH

// acc = 0.
template <int TM, int TN>
__device__ __forceinline__ void zero_acc(float (&acc)[TM][TN])
{
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = 0.0f;
}

// acc += As_buf^T Bs_buf over one staged K slice, for thread (tx, ty)'s micro-tile.
template <int BK, int BM, int BN, int TM, int TN>
__device__ __forceinline__ void mma_slice(const float (&As_buf)[BK][BM], const float (&Bs_buf)[BK][BN],
                                          float (&acc)[TM][TN], int tx, int ty)
{
    constexpr int MSTEP = (BM / TM) * 4;      // stride between a thread's float4 groups along m
    constexpr int NSTEP = (BN / TN) * 4;      // ... along n
    static_assert(TM % 4 == 0 && TN % 4 == 0, "micro-tile must be float4 groups");

    // Unrolled by 2, not fully: full unrolling lets ptxas hoist the next
    // fragments and spill at the 128-register cap of 2 blocks/SM (sm_90).
#pragma unroll 2
    for (int kk = 0; kk < BK; ++kk) {
        float a[TM], b[TN];
#pragma unroll
        for (int q = 0; q < TM / 4; ++q) {
            const float4 v = *reinterpret_cast<const float4*>(&As_buf[kk][q * MSTEP + ty * 4]);
            a[4 * q + 0] = v.x; a[4 * q + 1] = v.y; a[4 * q + 2] = v.z; a[4 * q + 3] = v.w;
        }
#pragma unroll
        for (int q = 0; q < TN / 4; ++q) {
            const float4 v = *reinterpret_cast<const float4*>(&Bs_buf[kk][q * NSTEP + tx * 4]);
            b[4 * q + 0] = v.x; b[4 * q + 1] = v.y; b[4 * q + 2] = v.z; b[4 * q + 3] = v.w;
        }
#pragma unroll
        for (int i = 0; i < TM; ++i)
#pragma unroll
            for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
}

// The store of the lane-per-column loaders (conv2d.cu, conv2d_backward.cu, linear.cu): staged rows
// kk = warp + NWARPS * i of the slice, registers -> shared buffer, consecutive lanes on consecutive
// columns (consecutive banks).
template <int NWARPS, int ROWS, int A_COLS, int B_COLS, int BK, int BM, int BN>
__device__ __forceinline__ void store_staged(float (&As_buf)[BK][BM], float (&Bs_buf)[BK][BN],
                                             const float (&a_stage)[ROWS][A_COLS], const float (&b_stage)[ROWS][B_COLS],
                                             int warp, int lane)
{
#pragma unroll
    for (int i = 0; i < ROWS; ++i) {
        const int kk = warp + NWARPS * i;
#pragma unroll
        for (int j = 0; j < A_COLS; ++j) As_buf[kk][lane + 32 * j] = a_stage[i][j];
#pragma unroll
        for (int j = 0; j < B_COLS; ++j) Bs_buf[kk][lane + 32 * j] = b_stage[i][j];
    }
}

// The whole main loop: acc = A^T B over K, slices of BK.
//   load_slice(k0): global -> registers, the K slice starting at k0;
//   store_slice(buf): registers -> As[buf], Bs[buf].
// Buffer buf ^ 1 is stored only after the barrier that ends its last read.
template <int BK, int BM, int BN, int TM, int TN, class LoadSlice, class StoreSlice>
__device__ __forceinline__ void gemm_tile_mainloop(const float (&As)[2][BK][BM], const float (&Bs)[2][BK][BN],
                                                   float (&acc)[TM][TN], int K, int tx, int ty,
                                                   LoadSlice&& load_slice, StoreSlice&& store_slice)
{
    zero_acc(acc);

    const int slices = (K + BK - 1) / BK;
    load_slice(0);
    store_slice(0);
    __syncthreads();

    for (int t = 0; t < slices; ++t) {
        const int buf = t & 1;
        const bool more = t + 1 < slices;
        if (more) load_slice((t + 1) * BK);   // in flight while we multiply
        mma_slice(As[buf], Bs[buf], acc, tx, ty);
        if (more) store_slice(buf ^ 1);       // buffer buf^1 was last read before the previous barrier
        __syncthreads();
    }
}

#endif  // ALEXNET_AA_GEMM_TILE_CUH
