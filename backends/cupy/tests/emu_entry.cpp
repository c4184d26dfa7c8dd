// emu_entry.cpp — the backend's .cu files compiled for the CPU (cuda_on_cpu.h),
// with one C entry point per kernel: emu_<kernel>(grid xyz, block xyz, kernel args...).
// Built and called (ctypes) by tests/test_cuda_kernels.py with the argument
// tuples that alexnet_aa_cupy.kernels.plan_* produce for the GPU.
// The .cu files include gemm_tile.cuh, mma_tile.cuh and precision.cuh (found beside them;
// the test also passes -I<alexnet_aa_cupy>): their include guards keep one copy each.
// Half-precision arrays arrive as void* (NumPy float16, or bfloat16 bit patterns as uint16).
#include "cuda_on_cpu.h"

#include "../alexnet_aa_cupy/conv2d.cu"
#include "../alexnet_aa_cupy/conv2d_mma.cu"
#include "../alexnet_aa_cupy/conv2d_winograd.cu"
#include "../alexnet_aa_cupy/conv2d_backward.cu"
#include "../alexnet_aa_cupy/max_pool2d.cu"
#include "../alexnet_aa_cupy/lrn.cu"
#include "../alexnet_aa_cupy/linear.cu"

#define GRID_BLOCK unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz
#define CONV_ENTRY(name)                                                                          \
    extern "C" void emu_##name(GRID_BLOCK, const float* x, const float* w, const float* b, float* y, \
                               int N, int C, int H, int W, int O, int OH, int OW, int KH, int KW,  \
                               int SH, int SW, int PH, int PW, int G, int relu) {                  \
        emu_launch(dim3(gx, gy, gz), dim3(bx, by, bz), name, x, w, b, y, N, C, H, W, O, OH, OW, KH, \
                   KW, SH, SW, PH, PW, G, relu);                                                   \
    }
CONV_ENTRY(conv2d_forward_128x128)
CONV_ENTRY(conv2d_forward_64x128)
CONV_ENTRY(conv2d_forward_64x64)

// NAME: the entry points' suffix, 3x3 and 5x5 for F(2x2, R), 4x4_5x5 for F(4x4, 5x5).
#define WINOGRAD_TRANSFORM_ENTRIES(NAME)                                                                      \
    extern "C" void emu_conv2d_winograd_weight_##NAME(GRID_BLOCK, const float* w, float* u, int Cg, int O) { \
        emu_launch(dim3(gx, gy, gz), dim3(bx, by, bz), conv2d_winograd_weight_##NAME, w, u, Cg, O);          \
    }                                                                                                         \
    extern "C" void emu_conv2d_winograd_input_##NAME(GRID_BLOCK, const float* x, float* v, int C, int H,      \
                                                     int W, int TH, int TW, int PH, int PW, long long T,      \
                                                     long long Tp) {                                          \
        emu_launch(dim3(gx, gy, gz), dim3(bx, by, bz), conv2d_winograd_input_##NAME, x, v, C, H, W, TH, TW,   \
                   PH, PW, T, Tp);                                                                            \
    }                                                                                                         \
    extern "C" void emu_conv2d_winograd_output_##NAME(GRID_BLOCK, const float* m, const float* b, float* y,   \
                                                      int O, int OH, int OW, int TH, int TW, long long T,     \
                                                      long long Tp, int relu) {                               \
        emu_launch(dim3(gx, gy, gz), dim3(bx, by, bz), conv2d_winograd_output_##NAME, m, b, y, O, OH, OW, TH, \
                   TW, T, Tp, relu);                                                                          \
    }
WINOGRAD_TRANSFORM_ENTRIES(3x3)
WINOGRAD_TRANSFORM_ENTRIES(5x5)
WINOGRAD_TRANSFORM_ENTRIES(4x4_5x5)
#define WINOGRAD_GEMM_ENTRY(name)                                                                    \
    extern "C" void emu_##name(GRID_BLOCK, const float* u, const float* v, float* m, int K, int O, int G, \
                               int Tp) {                                                             \
        emu_launch(dim3(gx, gy, gz), dim3(bx, by, bz), name, u, v, m, K, O, G, Tp);                  \
    }
WINOGRAD_GEMM_ENTRY(conv2d_winograd_gemm_128x128)
WINOGRAD_GEMM_ENTRY(conv2d_winograd_gemm_64x128)
WINOGRAD_GEMM_ENTRY(conv2d_winograd_gemm_64x64)
WINOGRAD_GEMM_ENTRY(conv2d_winograd_gemm_64x64_scalar)

#define WEIGHT_GRAD_ENTRY(name)                                                                     \
    extern "C" void emu_##name(GRID_BLOCK, const float* x, const float* g, float* partial, int N, int C, int H, \
                               int W, int O, int OH, int OW, int KH, int KW, int SH, int SW, int PH, int PW,     \
                               int G, long long chunk) {                                                    \
        emu_launch(dim3(gx, gy, gz), dim3(bx, by, bz), name, x, g, partial, N, C, H, W, O, OH, OW, KH, KW, SH, \
                   SW, PH, PW, G, chunk);                                                                   \
    }
WEIGHT_GRAD_ENTRY(conv2d_backward_weight_128x128)
WEIGHT_GRAD_ENTRY(conv2d_backward_weight_64x64)

extern "C" void emu_conv2d_backward_weight_reduce(GRID_BLOCK, const float* partial, float* dw, long long KO,
                                                  int splits) {
    emu_launch(dim3(gx, gy, gz), dim3(bx, by, bz), conv2d_backward_weight_reduce, partial, dw, KO, splits);
}

extern "C" void emu_max_pool2d_backward(GRID_BLOCK, const float* x, const float* dy, float* dx, long long NC,
                                        int H, int W, int OH, int OW, int KH, int KW, int SH, int SW) {
    emu_launch(dim3(gx, gy, gz), dim3(bx, by, bz), max_pool2d_backward, x, dy, dx, NC, H, W, OH, OW, KH, KW, SH, SW);
}

extern "C" void emu_lrn_backward(GRID_BLOCK, const float* x, const float* y, const float* dy, float* dx,
                                 long long N, int C, long long HW, int size, float alpha_over_size, float beta,
                                 float k) {
    emu_launch(dim3(gx, gy, gz), dim3(bx, by, bz), lrn_backward, x, y, dy, dx, N, C, HW, size, alpha_over_size,
               beta, k);
}

#define POOL_ENTRY(name, T)                                                                              \
    extern "C" void emu_##name(GRID_BLOCK, const void* x, void* y, long long NC, int H, int W, int OH, int OW, \
                               int KH, int KW, int SH, int SW) {                                          \
        emu_launch(dim3(gx, gy, gz), dim3(bx, by, bz), name, static_cast<const T*>(x), static_cast<T*>(y), NC, \
                   H, W, OH, OW, KH, KW, SH, SW);                                                          \
    }
POOL_ENTRY(max_pool2d_forward, float)
POOL_ENTRY(max_pool2d_forward_float16, half_t)
POOL_ENTRY(max_pool2d_forward_bfloat16, bf16_t)

#define LRN_ENTRY(name, T)                                                                               \
    extern "C" void emu_##name(GRID_BLOCK, const void* x, void* y, long long N, int C, long long HW, int size, \
                               float alpha_over_size, float beta, float k) {                              \
        emu_launch(dim3(gx, gy, gz), dim3(bx, by, bz), name, static_cast<const T*>(x), static_cast<T*>(y), N, C, \
                   HW, size, alpha_over_size, beta, k);                                                    \
    }
LRN_ENTRY(lrn_forward, float)
LRN_ENTRY(lrn_forward_float16, half_t)
LRN_ENTRY(lrn_forward_bfloat16, bf16_t)

#define CONV_MMA_ENTRY(name, T)                                                                         \
    extern "C" void emu_##name(GRID_BLOCK, const void* x, const void* w, const void* b, void* y, int N, int C, \
                               int H, int W, int O, int OH, int OW, int KH, int KW, int SH, int SW, int PH,  \
                               int PW, int G, int relu, int vec_a) {                                     \
        emu_launch(dim3(gx, gy, gz), dim3(bx, by, bz), name, static_cast<const T*>(x), static_cast<const T*>(w), \
                   static_cast<const T*>(b), static_cast<T*>(y), N, C, H, W, O, OH, OW, KH, KW, SH, SW, PH, PW, G, \
                   relu, vec_a);                                                                         \
    }
CONV_MMA_ENTRY(conv2d_mma_forward_128x128_float16, half_t)
CONV_MMA_ENTRY(conv2d_mma_forward_128x128_bfloat16, bf16_t)
CONV_MMA_ENTRY(conv2d_mma_forward_64x64_float16, half_t)
CONV_MMA_ENTRY(conv2d_mma_forward_64x64_bfloat16, bf16_t)

#define LINEAR_PARTIAL_ENTRY(name, T)                                                                   \
    extern "C" void emu_##name(GRID_BLOCK, const void* x, const void* w, float* p, int N, int I, int O) {   \
        emu_launch(dim3(gx, gy, gz), dim3(bx, by, bz), name, static_cast<const T*>(x), static_cast<const T*>(w), \
                   p, N, I, O);                                                                          \
    }
LINEAR_PARTIAL_ENTRY(linear_gemv_forward_1, float)
LINEAR_PARTIAL_ENTRY(linear_gemv_forward_2, float)
LINEAR_PARTIAL_ENTRY(linear_gemv_forward_4, float)
LINEAR_PARTIAL_ENTRY(linear_gemv_forward_8, float)
LINEAR_PARTIAL_ENTRY(linear_gemm_forward_128x128, float)
LINEAR_PARTIAL_ENTRY(linear_gemm_forward_64x64, float)

#define LINEAR_MMA_ENTRY(name, T)                                                                       \
    extern "C" void emu_##name(GRID_BLOCK, const void* x, const void* w, float* p, int N, int I, int O, int vec) { \
        emu_launch(dim3(gx, gy, gz), dim3(bx, by, bz), name, static_cast<const T*>(x), static_cast<const T*>(w), \
                   p, N, I, O, vec);                                                                     \
    }
LINEAR_MMA_ENTRY(linear_mma_forward_128x8_float16, half_t)
LINEAR_MMA_ENTRY(linear_mma_forward_128x8_bfloat16, bf16_t)
LINEAR_MMA_ENTRY(linear_mma_forward_128x128_float16, half_t)
LINEAR_MMA_ENTRY(linear_mma_forward_128x128_bfloat16, bf16_t)

#define LINEAR_REDUCE_EMU_ENTRY(name, T)                                                                \
    extern "C" void emu_##name(GRID_BLOCK, const float* p, const void* b, void* y, long long NO, int O, int chunks, \
                               int relu) {                                                               \
        emu_launch(dim3(gx, gy, gz), dim3(bx, by, bz), name, p, static_cast<const T*>(b), static_cast<T*>(y), NO, O, \
                   chunks, relu);                                                                        \
    }
LINEAR_REDUCE_EMU_ENTRY(linear_reduce_forward, float)
LINEAR_REDUCE_EMU_ENTRY(linear_reduce_forward_float16, half_t)
LINEAR_REDUCE_EMU_ENTRY(linear_reduce_forward_bfloat16, bf16_t)

extern "C" void emu_linear_bias_act_forward(GRID_BLOCK, float* y, const float* b, long long total, int F,
                                            int relu) {
    emu_launch(dim3(gx, gy, gz), dim3(bx, by, bz), linear_bias_act_forward, y, b, total, F, relu);
}

// The conversions of precision.cuh, element by element (checked against NumPy's float16 and bfloat16 rounding).
extern "C" void emu_float16_to_float(const unsigned short* h, float* f, long long n) {
    for (long long i = 0; i < n; ++i) f[i] = load_float(half_t{h[i]});
}
extern "C" void emu_float_to_float16(const float* f, unsigned short* h, long long n) {
    for (long long i = 0; i < n; ++i) h[i] = store_float<half_t>(f[i]).bits;
}
extern "C" void emu_float_to_bfloat16(const float* f, unsigned short* h, long long n) {
    for (long long i = 0; i < n; ++i) h[i] = store_float<bf16_t>(f[i]).bits;
}
