// max_pool2d.cu — max pooling over each channel plane, floor or ceil mode.
//
// Conventions:
//   layout       NCHW in (x_nchw) and out (y_nchw), contiguous, no padding.
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
//   entry points extern "C"; no system headers (NVRTC).

extern "C" __global__ void __launch_bounds__(256)
max_pool2d_forward(const float* __restrict__ x_nchw, float* __restrict__ y_nchw,
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
        const float* __restrict__ plane = x_nchw + nc * H * W;
        float m = plane[h0 * W + w0];
        for (int h = h0; h < h1; ++h)
            for (int w = w0; w < w1; ++w) {
                const float v = plane[h * W + w];
                if (v > m || v != v) m = v;
            }
        y_nchw[idx] = m;
    }
}
