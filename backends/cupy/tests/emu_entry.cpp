// emu_entry.cpp — the backend's .cu files compiled for the CPU (cuda_on_cpu.h),
// with one C entry point per kernel: emu_<kernel>(grid xyz, block xyz, kernel args...).
// Built and called (ctypes) by tests/test_cuda_kernels.py with the argument
// tuples that alexnet_aa_cupy.kernels.plan_* produce for the GPU.
// conv2d.cu and conv2d_winograd.cu both include gemm_tile.cuh (found beside them;
// the test also passes -I<alexnet_aa_cupy>): its include guard keeps one copy.
#include "cuda_on_cpu.h"

#include "../alexnet_aa_cupy/conv2d.cu"
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

#define WINOGRAD_TRANSFORM_ENTRIES(R)                                                                      \
    extern "C" void emu_conv2d_winograd_weight_##R##x##R(GRID_BLOCK, const float* w, float* u, int Cg, int O) { \
        emu_launch(dim3(gx, gy, gz), dim3(bx, by, bz), conv2d_winograd_weight_##R##x##R, w, u, Cg, O);        \
    }                                                                                                      \
    extern "C" void emu_conv2d_winograd_input_##R##x##R(GRID_BLOCK, const float* x, float* v, int C, int H,  \
                                                        int W, int TH, int TW, int PH, int PW, long long T,   \
                                                        long long Tp) {                                       \
        emu_launch(dim3(gx, gy, gz), dim3(bx, by, bz), conv2d_winograd_input_##R##x##R, x, v, C, H, W, TH, TW, \
                   PH, PW, T, Tp);                                                                         \
    }                                                                                                      \
    extern "C" void emu_conv2d_winograd_output_##R##x##R(GRID_BLOCK, const float* m, const float* b, float* y, \
                                                         int O, int OH, int OW, int TH, int TW, long long T,  \
                                                         long long Tp, int relu) {                            \
        emu_launch(dim3(gx, gy, gz), dim3(bx, by, bz), conv2d_winograd_output_##R##x##R, m, b, y, O, OH, OW, TH, \
                   TW, T, Tp, relu);                                                                       \
    }
WINOGRAD_TRANSFORM_ENTRIES(3)
WINOGRAD_TRANSFORM_ENTRIES(5)
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

extern "C" void emu_max_pool2d_forward(GRID_BLOCK, const float* x, float* y, long long NC, int H, int W,
                                       int OH, int OW, int KH, int KW, int SH, int SW) {
    emu_launch(dim3(gx, gy, gz), dim3(bx, by, bz), max_pool2d_forward, x, y, NC, H, W, OH, OW, KH, KW, SH, SW);
}

extern "C" void emu_lrn_forward(GRID_BLOCK, const float* x, float* y, long long N, int C, long long HW,
                                int size, float alpha_over_size, float beta, float k) {
    emu_launch(dim3(gx, gy, gz), dim3(bx, by, bz), lrn_forward, x, y, N, C, HW, size, alpha_over_size, beta, k);
}

extern "C" void emu_linear_bias_act_forward(GRID_BLOCK, float* y, const float* b, long long total, int F,
                                            int relu) {
    emu_launch(dim3(gx, gy, gz), dim3(bx, by, bz), linear_bias_act_forward, y, b, total, F, relu);
}
