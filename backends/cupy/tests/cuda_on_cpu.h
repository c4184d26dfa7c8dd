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
//   * __syncthreads() is a std::barrier over the block's threads.
#pragma once

#include <barrier>
#include <cmath>
#include <cstring>
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

inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;
inline std::barrier<>* emu_block_barrier = nullptr;

inline void __syncthreads() { emu_block_barrier->arrive_and_wait(); }

// Launch `kernel(args...)` over grid x block: blocks in sequence, threads of a block in parallel.
template <class Kernel, class... Args>
void emu_launch(dim3 grid, dim3 block, Kernel kernel, Args... args) {
    const unsigned nthreads = block.x * block.y * block.z;
    std::barrier<> bar(nthreads);
    emu_block_barrier = &bar;
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
}
