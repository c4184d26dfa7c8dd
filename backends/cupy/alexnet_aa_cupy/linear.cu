// linear.cu — the epilogue of the fully connected layers: + bias (+ ReLU).
//
// Conventions:
//   the product y_nf = x_ni @ w_oi.T is computed by cuBLAS (cupy.matmul, true
//   float32: TF32 only with CupyBackend(tf32=True), which requires CUPY_TF32=1);
//   this kernel then adds the bias and applies ReLU in place.
//   ReLU         v < 0 ? 0 : v, i.e. maximum(v, 0): NaN stays NaN, -inf -> 0.
//   layout       y_nf: (batch, features) row-major, contiguous; b_f: (features,).
//   index types  long long for the flat index.
//   threads      one per element, grid-stride loop.
//   entry points extern "C"; no system headers (NVRTC).

extern "C" __global__ void __launch_bounds__(256)
linear_bias_act_forward(float* __restrict__ y_nf, const float* __restrict__ b_f,
                        long long total, int F, int relu)
{
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += step) {
        float v = y_nf[idx] + b_f[idx % F];
        if (relu) v = v < 0.0f ? 0.0f : v;  // NaN stays NaN (as maximum(v, 0))
        y_nf[idx] = v;
    }
}
