// max_pool2d.cu — max pooling over each channel plane, floor or ceil mode, and its gradient.
//
// Conventions:
//   layout       NCHW in (x_nchw) and out (y_nchw), contiguous, no padding.
//   storage      the forward for float, float16 and bfloat16 (precision.cuh: compared as float;
//                the maximum of rounded values is one of them, so nothing is rounded again);
//                the gradient in float32.
//   geometry     the launch wrapper computes OH, OW (floor or ceil mode, the
//                PyTorch/ONNX rule that the last window starts inside the
//                input); windows are clipped at the bottom/right edge, so
//                elements outside the input act as -inf. Every window holds
//                at least its first element (x[oh*sh, ow*sw]), which seeds
//                the maximum. NaN propagates (as in PyTorch).
//   index types  long long for the flat output index and plane bases, int
//                inside one plane.
//   threads      one per output element, grid-stride loop; consecutive
//                threads take consecutive ow (coalesced stores).
//   entry points extern "C": max_pool2d_forward (float), max_pool2d_forward_float16,
//                max_pool2d_forward_bfloat16, max_pool2d_backward; no system headers (NVRTC).

#include "precision.cuh"

template <class T>
__device__ __forceinline__ void max_pool2d_forward_impl(const T* __restrict__ x_nchw, T* __restrict__ y_nchw,
                                                        long long NC, int H, int W, int OH, int OW,
                                                        int KH, int KW, int SH, int SW)
{
    const long long total = NC * OH * OW;
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += step) {
        const int ow = (int)(idx % OW);
        const long long t = idx / OW;
        const int oh = (int)(t % OH);
        const long long nc = t / OH;
        const int h0 = oh * SH;
        const int w0 = ow * SW;
        const int h1 = h0 + KH < H ? h0 + KH : H;
        const int w1 = w0 + KW < W ? w0 + KW : W;
        const T* __restrict__ plane = x_nchw + nc * H * W;
        T best = plane[h0 * W + w0];
        float m = load_float(best);
        for (int h = h0; h < h1; ++h)
            for (int w = w0; w < w1; ++w) {
                const T e = plane[h * W + w];
                const float v = load_float(e);
                if (v > m || v != v) { m = v; best = e; }
            }
        y_nchw[idx] = best;
    }
}

#define MAX_POOL2D_FORWARD_ENTRY(name, T)                                                                  \
    extern "C" __global__ void __launch_bounds__(256)                                                      \
    name(const T* __restrict__ x_nchw, T* __restrict__ y_nchw, long long NC, int H, int W, int OH, int OW, \
         int KH, int KW, int SH, int SW)                                                                   \
    {                                                                                                      \
        max_pool2d_forward_impl<T>(x_nchw, y_nchw, NC, H, W, OH, OW, KH, KW, SH, SW);                      \
    }
MAX_POOL2D_FORWARD_ENTRY(max_pool2d_forward, float)
MAX_POOL2D_FORWARD_ENTRY(max_pool2d_forward_float16, half_t)
MAX_POOL2D_FORWARD_ENTRY(max_pool2d_forward_bfloat16, bf16_t)
#undef MAX_POOL2D_FORWARD_ENTRY

// The gradient of max_pool2d_forward with respect to x: a gather, one thread per input element.
// Each window's gradient goes to its first maximum in row-major order (the tie rule of
// alexnet_aa.reference.max_pool2d_backward; a NaN counts as the maximum, the first NaN wins, as
// NumPy's argmax): input (h, w) sums dy over the windows (oh, ow) that cover it and whose first
// maximum it is — oh from ceil((h - KH + 1) / SH) to min(OH - 1, h / SH), ow likewise — in that
// order, so the sum is the same on every run (no atomics). Each covering window is rescanned:
// K_h*K_w reads per window, ceil(K_h/S_h)*ceil(K_w/S_w) windows per element (4 for AlexNet's 3x3/2).
extern "C" __global__ void __launch_bounds__(256)
max_pool2d_backward(const float* __restrict__ x_nchw, const float* __restrict__ dy_nchw,
                    float* __restrict__ dx_nchw, long long NC, int H, int W, int OH, int OW,
                    int KH, int KW, int SH, int SW)
{
    const long long total = NC * H * W;
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += step) {
        const int w = (int)(idx % W);
        const long long t = idx / W;
        const int h = (int)(t % H);
        const long long nc = t / H;
        const float* __restrict__ plane = x_nchw + nc * H * W;
        const float* __restrict__ grad = dy_nchw + nc * OH * OW;
        const int oh0 = h - KH + 1 > 0 ? (h - KH + SH) / SH : 0;
        const int ow0 = w - KW + 1 > 0 ? (w - KW + SW) / SW : 0;
        const int oh1 = h / SH < OH - 1 ? h / SH : OH - 1;
        const int ow1 = w / SW < OW - 1 ? w / SW : OW - 1;
        float sum = 0.0f;
        for (int oh = oh0; oh <= oh1; ++oh)
            for (int ow = ow0; ow <= ow1; ++ow) {
                const int h0 = oh * SH;
                const int w0 = ow * SW;
                const int h1 = h0 + KH < H ? h0 + KH : H;
                const int w1 = w0 + KW < W ? w0 + KW : W;
                float best = plane[h0 * W + w0];
                int at = h0 * W + w0;
                for (int hh = h0; hh < h1; ++hh)
                    for (int ww = w0; ww < w1; ++ww) {
                        const float v = plane[hh * W + ww];
                        if (v > best || (v != v && best == best)) {
                            best = v;
                            at = hh * W + ww;
                        }
                    }
                if (at == h * W + w) sum += grad[oh * OW + ow];
            }
        dx_nchw[idx] = sum;
    }
}
