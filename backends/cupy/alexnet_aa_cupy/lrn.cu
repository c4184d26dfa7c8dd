// lrn.cu — local response normalisation across channels, one pass, and its gradient.
//
// Conventions:
//   math         b_c = a_c / (k + (alpha/size) * sum_{c' in window(c)} a_{c'}^2)^beta,
//                window(c) = c - (size-1)/2 .. c + size/2 (integer division:
//                floor((size-1)/2) below, ceil((size-1)/2) above), clipped at
//                the channel edges — the ONNX/Caffe/PyTorch convention
//                (alexnet_aa.reference.lrn). The launch wrapper passes
//                alpha_over_size = alpha/size, computed in float64.
//   layout       NCHW in (x_nchw) and out (y_nchw), contiguous.
//   index types  long long for flat indices and image bases; HW as long long.
//   accumulator  float32: the window sum has at most `size` terms, summed
//                directly (no running sum, so no cancellation over channels).
//   threads      one per output element, grid-stride loop; consecutive threads
//                take consecutive pixels of one channel plane (coalesced); the
//                `size` reads of neighbouring planes hit L1/L2.
//   storage      the forward for float, float16 and bfloat16 (precision.cuh): read, widened to
//                float32, computed in float32, rounded once when stored; the gradient in float32.
//   entry points extern "C": lrn_forward (float), lrn_forward_float16, lrn_forward_bfloat16,
//                lrn_backward; no system headers (NVRTC).

#include "precision.cuh"

// s_c = k + (alpha/size) * sum_{c' in window(c)} a_{c'}^2 at one pixel (pixel points at channel 0 of
// it; channel c' lies at pixel[c' * HW]): the window clipped at the channel edges, summed in channel order.
template <class T>
__device__ __forceinline__ float lrn_base(const T* __restrict__ pixel, int c, int C, long long HW,
                                          int size, float alpha_over_size, float k)
{
    const int lo = c - (size - 1) / 2 > 0 ? c - (size - 1) / 2 : 0;
    const int hi = c + size / 2 < C - 1 ? c + size / 2 : C - 1;
    float sum = 0.0f;
    for (int cc = lo; cc <= hi; ++cc) {
        const float v = load_float(pixel[cc * HW]);
        sum = fmaf(v, v, sum);
    }
    return k + alpha_over_size * sum;
}

template <class T>
__device__ __forceinline__ void lrn_forward_impl(const T* __restrict__ x_nchw, T* __restrict__ y_nchw,
                                                 long long N, int C, long long HW, int size,
                                                 float alpha_over_size, float beta, float k)
{
    const long long total = N * C * HW;
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += step) {
        const long long p = idx % HW;
        const long long t = idx / HW;
        const int c = (int)(t % C);
        const long long n = t / C;
        const T* __restrict__ pixel = x_nchw + n * C * HW + p;   // + c' * HW
        const float y = load_float(x_nchw[idx]) * powf(lrn_base(pixel, c, C, HW, size, alpha_over_size, k), -beta);
        y_nchw[idx] = store_float<T>(y);
    }
}

#define LRN_FORWARD_ENTRY(name, T)                                                                      \
    extern "C" __global__ void __launch_bounds__(256)                                                   \
    name(const T* __restrict__ x_nchw, T* __restrict__ y_nchw, long long N, int C, long long HW, int size, \
         float alpha_over_size, float beta, float k)                                                    \
    {                                                                                                   \
        lrn_forward_impl<T>(x_nchw, y_nchw, N, C, HW, size, alpha_over_size, beta, k);                  \
    }
LRN_FORWARD_ENTRY(lrn_forward, float)
LRN_FORWARD_ENTRY(lrn_forward_float16, half_t)
LRN_FORWARD_ENTRY(lrn_forward_bfloat16, bf16_t)
#undef LRN_FORWARD_ENTRY

// The gradient of lrn_forward with respect to x, one pass, one thread per element:
//   dx_c = dy_c * s_c^-beta - 2 * (alpha/size) * beta * x_c * sum_{j in T(c)} dy_j * y_j / s_j,
//   s_j = k + (alpha/size) * sum_{c' in window(j)} x_{c'}^2,
// over the transposed window T(c) = {j : c in window(j)} = c - size/2 .. c + (size-1)/2 (one channel
// further down than up for even sizes; alexnet_aa.reference.lrn_backward), clipped at the edges.
// Each s_j is recomputed from x (size reads each, from L1/L2): size^2 + size reads per element.
extern "C" __global__ void __launch_bounds__(256)
lrn_backward(const float* __restrict__ x_nchw, const float* __restrict__ y_nchw,
             const float* __restrict__ dy_nchw, float* __restrict__ dx_nchw,
             long long N, int C, long long HW, int size, float alpha_over_size, float beta, float k)
{
    const long long total = N * C * HW;
    const long long step = (long long)gridDim.x * blockDim.x;
    const int below = (size - 1) / 2;
    const int above = size / 2;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += step) {
        const long long p = idx % HW;
        const long long t = idx / HW;
        const int c = (int)(t % C);
        const long long n = t / C;
        const long long pixel = n * C * HW + p;   // + c' * HW
        const float* __restrict__ x_pixel = x_nchw + pixel;
        const int tlo = c - above > 0 ? c - above : 0;
        const int thi = c + below < C - 1 ? c + below : C - 1;
        float acc = 0.0f;
        for (int j = tlo; j <= thi; ++j) {
            const long long at = pixel + j * HW;
            acc = fmaf(dy_nchw[at], y_nchw[at] / lrn_base(x_pixel, j, C, HW, size, alpha_over_size, k), acc);
        }
        dx_nchw[idx] = dy_nchw[idx] * powf(lrn_base(x_pixel, c, C, HW, size, alpha_over_size, k), -beta)
                       - 2.0f * alpha_over_size * beta * x_nchw[idx] * acc;
    }
}
