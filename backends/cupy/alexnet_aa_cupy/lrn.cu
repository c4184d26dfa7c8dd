// lrn.cu — local response normalisation across channels, one pass.
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
//   entry points extern "C"; no system headers (NVRTC).

extern "C" __global__ void __launch_bounds__(256)
lrn_forward(const float* __restrict__ x_nchw, float* __restrict__ y_nchw,
            long long N, int C, long long HW, int size,
            float alpha_over_size, float beta, float k)
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
        const int lo = c - below > 0 ? c - below : 0;
        const int hi = c + above < C - 1 ? c + above : C - 1;
        const float* __restrict__ pixel = x_nchw + n * C * HW + p;   // + c' * HW
        float sum = 0.0f;
        for (int cc = lo; cc <= hi; ++cc) {
            const float v = pixel[cc * HW];
            sum = fmaf(v, v, sum);
        }
        y_nchw[idx] = x_nchw[idx] * powf(k + alpha_over_size * sum, -beta);
    }
}
