// cuda_on_cpu.h — run this backend's CUDA kernels on the CPU, to test their index math.
//
// Not a simulator: it checks indexing, tiling, tails and padding, not races,
// memory-model subtleties or speed. Compile with g++ -std=c++20 -pthread.
//
//   * __global__ / __device__ / __launch_bounds__ are defined away;
//   * threadIdx / blockIdx are thread_local, blockDim / gridDim global;
//   * one std::thread per thread of a block; the blocks of a grid run one
//     after another, so a __shared__ array (a function-local static here) is
//     private to the running block;
//   * __syncthreads() is a std::barrier over the block's threads;
//   * the tensor-core instruction mma.sync.m16n8k16 (mma_tile.cuh, which calls
//     emu_mma_m16n8k16<T> where __CUDA_ARCH__ is undefined) exchanges the 32 lanes'
//     fragments through per-warp memory between two per-warp barriers; products are
//     exact, each element's 16 products and its accumulator summed in float64, then
//     rounded to float (the hardware's internal order and rounding are its own: tests
//     compare against tolerances, and bitwise only emulation against emulation).
#pragma once

#include <barrier>
#include <cmath>
#include <cstring>
#include <deque>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
    dim3() = default;
    dim3(unsigned x_, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct __attribute__((aligned(16))) float4 { float x, y, z, w; };
struct __attribute__((aligned(16))) uint4 { unsigned x, y, z, w; };

inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;
inline std::barrier<>* emu_block_barrier = nullptr;

inline void __syncthreads() { emu_block_barrier->arrive_and_wait(); }

// One warp's mma fragments in flight: A as 16 x 16, B as 16 x 8 (k x n), in float.
struct EmuWarp {
    std::barrier<>* bar;
    double a[16][16];
    double b[16][8];
};
inline std::vector<EmuWarp>* emu_warps = nullptr;

// d += A B for the warp of the calling thread (fragment layout: mma_tile.cuh). T converts with load_float.
template <class T>
void emu_mma_m16n8k16(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
    const unsigned lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    EmuWarp& w = (*emu_warps)[threadIdx.x / 32];
    auto lo = [](unsigned r) { T v; v.bits = (unsigned short)(r & 0xffffu); return (double)load_float(v); };
    auto hi = [](unsigned r) { T v; v.bits = (unsigned short)(r >> 16); return (double)load_float(v); };
    const unsigned rows[4] = {g, g + 8, g, g + 8}, cols[4] = {2 * t, 2 * t, 2 * t + 8, 2 * t + 8};
    for (int r = 0; r < 4; ++r) {
        w.a[rows[r]][cols[r]] = lo(a[r]);
        w.a[rows[r]][cols[r] + 1] = hi(a[r]);
    }
    for (int r = 0; r < 2; ++r) {
        w.b[2 * t + 8 * r][g] = lo(b[r]);
        w.b[2 * t + 8 * r + 1][g] = hi(b[r]);
    }
    w.bar->arrive_and_wait();  // every lane's fragments are in
    for (int e = 0; e < 4; ++e) {
        const unsigned row = g + 8 * (e / 2), col = 2 * t + (e % 2);
        double s = d[e];
        for (int k = 0; k < 16; ++k) s += w.a[row][k] * w.b[k][col];
        d[e] = (float)s;
    }
    w.bar->arrive_and_wait();  // every lane has read them before any lane writes the next
}

// Launch `kernel(args...)` over grid x block: blocks in sequence, threads of a block in parallel.
template <class Kernel, class... Args>
void emu_launch(dim3 grid, dim3 block, Kernel kernel, Args... args) {
    const unsigned nthreads = block.x * block.y * block.z;
    std::barrier<> bar(nthreads);
    emu_block_barrier = &bar;
    const unsigned nwarps = (nthreads + 31) / 32;
    std::deque<std::barrier<>> warp_bars;  // barriers cannot move: a deque grows in place
    for (unsigned i = 0; i < nwarps; ++i) warp_bars.emplace_back(i + 1 < nwarps || nthreads % 32 == 0 ? 32 : nthreads % 32);
    std::vector<EmuWarp> warps(nwarps);
    for (unsigned i = 0; i < nwarps; ++i) warps[i].bar = &warp_bars[i];
    emu_warps = &warps;
    gridDim = grid;
    blockDim = block;
    std::vector<std::thread> pool;
    pool.reserve(nthreads);
    for (unsigned t = 0; t < nthreads; ++t) {
        pool.emplace_back([=, &bar] {
            threadIdx = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
            for (unsigned bz = 0; bz < grid.z; ++bz)
                for (unsigned by = 0; by < grid.y; ++by)
                    for (unsigned bx = 0; bx < grid.x; ++bx) {
                        blockIdx = dim3(bx, by, bz);
                        kernel(args...);
                        bar.arrive_and_wait();  // the next block reuses the __shared__ statics
                    }
        });
    }
    for (auto& th : pool) th.join();
    emu_block_barrier = nullptr;
    emu_warps = nullptr;
}
