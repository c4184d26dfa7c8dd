// mma_tile.cuh — the tensor-core GEMM main loop of the half-precision kernels (conv2d_mma.cu, linear.cu).
//
// A block computes a BM x BN tile of C = A B (A: M x K, B: K x N) with float32 accumulators, from
// 16-bit inputs T (half_t or bf16_t, precision.cuh), by the warp-wide PTX instruction
//     mma.sync.aligned.m16n8k16.row.col.f32.<f16|bf16>.<f16|bf16>.f32   (sm_80 and newer; compiled
//     for an older target the kernels trap, and CupyBackend refuses a half dtype on such a device).
// K is walked in slices of BK = 32, staged in shared memory as As[2][BM][BK + 8] (A row-major:
// K contiguous per row m) and Bs[2][BN][BK + 8] (B column-major: K contiguous per column n), double
// buffered with one __syncthreads per slice (the next slice is gathered into registers while the
// current one is multiplied); the 8 padding elements per row spread a warp's fragment loads over the
// banks. The warps tile the block as (BM / WM) x (BN / WN); each warp owns WM x WN = (WM/16) x (WN/8)
// mma tiles, in registers acc[WM/16][WN/8][4].
//
// Fragments (PTX ISA, "Matrix Fragments for mma.m16n8k16"; g = lane / 4, t = lane % 4):
//   A  a[0] = A[g][2t..2t+1]   a[1] = A[g+8][2t..2t+1]   a[2] = A[g][2t+8..]   a[3] = A[g+8][2t+8..]
//   B  b[0] = B[2t..2t+1][g]   b[1] = B[2t+8..2t+9][g]
//   C  c[0..1] = C[g][2t..2t+1]                 c[2..3] = C[g+8][2t..2t+1]
// each 32-bit register holding two consecutive K elements, the lower index in the low 16 bits —
// exactly two consecutive elements of an As row or a Bs column, read as one 32-bit word.
//
// Order of summation: every output element is updated by one mma per 16-wide K step, in K order,
// whatever the tile sizes, so the same inputs give the same bits in every tile configuration and in
// any batch (DESIGN.md §7). K tails are zero-filled by the loaders (0 * 0 adds nothing).
//
// How it reaches the compilers: like gemm_tile.cuh (kernels.source() inlines it once; nvcc and g++
// find it beside the including .cu). Without __CUDA_ARCH__ (the CPU emulation, which has no tensor
// cores) mma_m16n8k16 calls emu_mma_m16n8k16<T>(d, a, b), which the emulation harness provides
// (backends/cupy/tests/cuda_on_cpu.h: the warp's fragments exchanged through memory, products exact,
// sums in float64 then rounded). No system headers (NVRTC).
#ifndef ALEXNET_AA_MMA_TILE_CUH
#define ALEXNET_AA_MMA_TILE_CUH

#include "precision.cuh"

// d += A B for one m16n8k16 tile (the warp's 32 lanes together).
template <class T>
__device__ __forceinline__ void mma_m16n8k16(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]);

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
template <>
__device__ __forceinline__ void mma_m16n8k16<half_t>(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2])
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                 "{%0, %1, %2, %3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

template <>
__device__ __forceinline__ void mma_m16n8k16<bf16_t>(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2])
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                 "{%0, %1, %2, %3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#elif defined(__CUDA_ARCH__)
// Below sm_80 there is no m16n8k16: the module still compiles there (its float32 kernels run on any
// GPU CuPy supports), and CupyBackend refuses a half dtype on such a device before any launch.
template <class T>
__device__ __forceinline__ void mma_m16n8k16(float (&)[4], const unsigned (&)[4], const unsigned (&)[2])
{
    __trap();
}
#else
template <class T>
__device__ __forceinline__ void mma_m16n8k16(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2])
{
    emu_mma_m16n8k16<T>(d, a, b);
}
#endif

constexpr int MMA_BK = 32;      // K slice staged per step (two k16 steps)
constexpr int MMA_PAD = 8;      // padding elements per shared-memory row

// Two consecutive 16-bit elements of a shared-memory row, as one 32-bit fragment register.
template <class T>
__device__ __forceinline__ unsigned mma_pair(const T* row, int k)
{
    return *reinterpret_cast<const unsigned*>(row + k);
}

// acc += As_buf Bs_buf over one staged slice, for warp (wm, wn) of the block.
template <class T, int BM, int BN, int WM, int WN>
__device__ __forceinline__ void mma_slice(const T (&As_buf)[BM][MMA_BK + MMA_PAD], const T (&Bs_buf)[BN][MMA_BK + MMA_PAD],
                                          float (&acc)[WM / 16][WN / 8][4], int wm, int wn, int lane)
{
    const int g = lane >> 2;
    const int t = lane & 3;
#pragma unroll
    for (int ks = 0; ks < MMA_BK; ks += 16) {
        unsigned a[WM / 16][4];
        unsigned b[WN / 8][2];
#pragma unroll
        for (int i = 0; i < WM / 16; ++i) {
            const T* r0 = As_buf[wm * WM + i * 16 + g];
            const T* r8 = As_buf[wm * WM + i * 16 + g + 8];
            a[i][0] = mma_pair(r0, ks + 2 * t);
            a[i][1] = mma_pair(r8, ks + 2 * t);
            a[i][2] = mma_pair(r0, ks + 2 * t + 8);
            a[i][3] = mma_pair(r8, ks + 2 * t + 8);
        }
#pragma unroll
        for (int j = 0; j < WN / 8; ++j) {
            const T* col = Bs_buf[wn * WN + j * 8 + g];
            b[j][0] = mma_pair(col, ks + 2 * t);
            b[j][1] = mma_pair(col, ks + 2 * t + 8);
        }
#pragma unroll
        for (int i = 0; i < WM / 16; ++i)
#pragma unroll
            for (int j = 0; j < WN / 8; ++j) mma_m16n8k16<T>(acc[i][j], a[i], b[j]);
    }
}

// The whole main loop: acc = A B over K, slices of MMA_BK.
//   load_slice(k0): global -> registers, the slice starting at k0 (zeros past K);
//   store_slice(buf): registers -> As[buf], Bs[buf].
// Buffer buf ^ 1 is stored only after the barrier that ends its last read.
template <class T, int BM, int BN, int WM, int WN, class LoadSlice, class StoreSlice>
__device__ __forceinline__ void mma_tile_mainloop(const T (&As)[2][BM][MMA_BK + MMA_PAD], const T (&Bs)[2][BN][MMA_BK + MMA_PAD],
                                                  float (&acc)[WM / 16][WN / 8][4], int K, int wm, int wn, int lane,
                                                  LoadSlice&& load_slice, StoreSlice&& store_slice)
{
#pragma unroll
    for (int i = 0; i < WM / 16; ++i)
#pragma unroll
        for (int j = 0; j < WN / 8; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

    const int slices = (K + MMA_BK - 1) / MMA_BK;
    load_slice(0);
    store_slice(0);
    __syncthreads();
    for (int s = 0; s < slices; ++s) {
        const int buf = s & 1;
        const bool more = s + 1 < slices;
        if (more) load_slice((s + 1) * MMA_BK);
        mma_slice<T, BM, BN, WM, WN>(As[buf], Bs[buf], acc, wm, wn, lane);
        if (more) store_slice(buf ^ 1);
        __syncthreads();
    }
}

#endif  // ALEXNET_AA_MMA_TILE_CUH
