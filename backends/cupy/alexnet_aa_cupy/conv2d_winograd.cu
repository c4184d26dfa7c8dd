// conv2d_winograd.cu — 3x3 and 5x5, stride-1 grouped convolution + bias (+ ReLU) by Winograd
// F(2x2, 3x3), F(2x2, 5x5) and F(4x4, 5x5).
//
// Conventions (every kernel in this file):
//   layout       activations NCHW (x_nchw, y_nchw), row-major, contiguous;
//                w_ihwo: (in/groups, R, R, out), as for conv2d.cu; bias b_o: (out,).
//   algorithm    Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks"
//                (2016), F(MxM, RxR), ALPHA = M + R - 1: each MxM output tile Y of a
//                (channel, image) plane comes from the ALPHA x ALPHA input tile d whose
//                top-left corner is (M*th - ph, M*tw - pw) (0 outside the image: zero padding):
//                  U = G g G^T        (per weight (o, c): R x R -> ALPHA x ALPHA)
//                  V = B^T d B        (per input tile (c, t): ALPHA x ALPHA)
//                  M[xi] = sum_c U[xi][c, o] V[xi][c, t]   (ALPHA^2 GEMMs per group, xi = ALPHA*i + j)
//                  Y = A^T M A        (per output tile (o, t): ALPHA x ALPHA -> M x M)
//                G is stored as diag(1/f) G' with G' integer: U = (G' g G'^T)[i][j] / (f_i f_j),
//                one correctly rounded division per element: in float32 for F(2x2, R) (exact
//                for R = 3, f = 1|2), in float64 for F(4x4, 5x5) (then rounded once to float32;
//                its G' holds only 0, +-1 and powers of two, so every product is exact and
//                U is within 0.5 ulp + 2^-50 relative of G g G^T; the transform runs once per
//                weight, at prepare time).
//   F(2x2, 3x3)  points 0, 1, -1, inf; ALPHA = 4, 16 matrices (f = 1, 2, 2, 1):
//                  B^T = [ 1  0 -1  0 ]    G = [  1    0    0  ]    A^T = [ 1  1  1  0 ]
//                        [ 0  1  1  0 ]        [ 1/2  1/2  1/2 ]          [ 0  1 -1 -1 ]
//                        [ 0 -1  1  0 ]        [ 1/2 -1/2  1/2 ]
//                        [ 0  1  0 -1 ]        [  0    0    1  ]
//   F(2x2, 5x5)  points 0, 1, -1, 2, -2, inf; ALPHA = 6, 36 matrices (f = 4, -6, -6, 24, 24, 1):
//                  B^T = [ 4  0 -5  0  1  0 ]    G = [  1/4    0     0     0     0  ]
//                        [ 0 -4 -4  1  1  0 ]        [ -1/6  -1/6  -1/6  -1/6  -1/6 ]
//                        [ 0  4 -4 -1  1  0 ]        [ -1/6   1/6  -1/6   1/6  -1/6 ]
//                        [ 0 -2 -1  2  1  0 ]        [ 1/24  1/12   1/6   1/3   2/3 ]
//                        [ 0  2 -1 -2  1  0 ]        [ 1/24 -1/12   1/6  -1/3   2/3 ]
//                        [ 0  4  0 -5  0  1 ]        [   0     0     0     0     1  ]
//                  A^T = [ 1  1  1  1  1  0 ]
//                        [ 0  1 -1  2 -2  1 ]
//                (B^T is the F(4, 3) one: same six points. The symmetric points keep B^T
//                integer with paired rows; their fp32 error is a little above the
//                asymmetric 0, 1, -1, 1/2, -2 set's, see tests/test_cuda_kernels.py.)
//   F(4x4, 5x5)  points 0, 1, -1, 2, -2, 1/2, -1/2, inf; ALPHA = 8, 64 matrices
//                (f = 4, 18, 18, 360, 360, 360, 360, 4; G = diag(1/f) G'):
//                  B^T = [ 4  0 -21   0  21   0 -4  0 ]    G' = [  1  0  0  0  0 ]
//                        [ 0 -4  -4  17  17  -4 -4  0 ]         [  1  1  1  1  1 ]
//                        [ 0  4  -4 -17  17   4 -4  0 ]         [  1 -1  1 -1  1 ]
//                        [ 0  2   1 -10  -5   8  4  0 ]         [  1  2  4  8 16 ]
//                        [ 0 -2   1  10  -5  -8  4  0 ]         [  1 -2  4 -8 16 ]
//                        [ 0  4   8  -5 -10   1  2  0 ]         [ 16  8  4  2  1 ]
//                        [ 0 -4   8   5 -10  -1  2  0 ]         [ 16 -8  4 -2  1 ]
//                        [ 0 -4   0  21   0 -21  0  4 ]         [  0  0  0  0  1 ]
//                  A^T = [ 1  1  1  1  1  8  8  0 ]
//                        [ 0  1 -1  2 -2  4 -4  0 ]
//                        [ 0  1  1  4  4  2  2  0 ]
//                        [ 0  1 -1  8 -8  1 -1  1 ]
//                (Toom-Cook on these points, rows of B^T and columns of A^T scaled to coprime
//                integers, every other factor in G. Of the sets 0, inf and three +-pairs from
//                1, 2, 3, 4, 1/2, 1/3, 1/4, 3/2, 2/3, 3/4, 4/3, 5/4, 4/5, 5/2, 2/5, these give the
//                least fp32 error, about 1.6x F(2x2, 5x5)'s on AlexNet's conv2; {0, +-1, +-2,
//                +-3, inf} and {0, +-1, +-1/2, +-1/4, inf} are 40-70x worse.)
//   buffers      u_xco: (ALPHA^2, in/groups, out)   U, columns of group g at [g*out/G, (g+1)*out/G)
//                v_xct: (ALPHA^2, in, Tp)           V, channel c = g*Cg + c_in_group
//                m_xot: (ALPHA^2, out, Tp)          M
//                t = (image, th, tw) flattened, T = N * ceil(OH/M) * ceil(OW/M) tiles,
//                padded to Tp = T rounded up to a multiple of 4 (V is zero there), so
//                every row of V and M starts 16-byte aligned and is read as float4.
//   GEMM         per (xi, g): M_g[m, n] = sum_k A[k, m] * B[k, n], A = U (rows along
//                m, ld = out), B = V (rows along n, ld = Tp); one block per BM x BN
//                tile, blockIdx.z = xi*G + g; K (= in/groups) walked in BK slices,
//                double-buffered shared memory, float4 global loads (A as scalars
//                in the *_scalar entry point, for out/groups not a multiple of 4),
//                TM x TN register micro-tile, float4 shared reads and global stores.
//                The GEMM does not depend on ALPHA or M (one set of entry points for all
//                three transforms). The k order of every sum is fixed (0, 1, ..., K-1), so
//                the result does not depend on the tile, the grid or the batch size.
//   index types  long long for element indices of the transforms and the per-(xi, g)
//                base pointers of the GEMM; int for offsets inside one (xi, g) matrix
//                (the launch wrapper checks in/groups*out, in*Tp and out*Tp < 2^31).
//   accumulator  float32 everywhere (fused multiply-add in the GEMM); transforms in
//                float32 with the operation order written below (fmaf where a product
//                by a constant other than a power of two is added, so the CPU emulation
//                rounds as the GPU does), except F(4x4, 5x5)'s weight transform (float64,
//                above); bias added and ReLU applied in the output transform
//                (v < 0 ? 0 : v: NaN stays NaN).
//   non-finite   Every transform adds only the nonzero entries of its matrix (no
//                zero-coefficient products), so input d_q of a tile reaches exactly the
//                outputs y_p with (|A^T| |B^T|)[p][q] != 0, per axis, and a NaN input makes
//                NaN exactly at the outputs of the tiles whose input tile holds it that
//                it reaches (2-D: the product of the row and column sets).
//                F(2x2, R): d_0 reaches only y_0, d_{ALPHA-1} only y_1, every other d_q
//                both: that is the direct window, so NaN is exact (the reference's NaN).
//                F(4x4, 5x5): d_0 reaches only y_0, d_7 only y_3, but d_1 .. d_6 all four
//                outputs, where the direct windows hold d_1 in y_0..y_1, d_2 in y_0..y_2,
//                d_5 in y_1..y_3 and d_6 in y_2..y_3. Per axis, a NaN at padded position
//                p = i + pad with p % 4 == 0 or 3 is exact; with p % 4 == 1 or 2 it
//                makes NaN at the 8 outputs 4*(p/4) - 4 .. 4*(p/4) + 3 (those in the map)
//                instead of the 5 of its window, p - 4 .. p: NaN spreads to at most the
//                2 x 2 output tiles around it (an 8x8 block instead of the 5x5 window).
//                An infinite input does NOT conform in any of the three: the transforms
//                subtract (d0 - d2, m1 - m2 - m3, ...), so inf - inf makes NaN at outputs
//                where the direct convolution gives +-inf, on the same reach as NaN (the
//                window for F(2x2), up to the 8x8 block for F(4x4)); see backend.py's
//                module docstring and tests/test_cuda_kernels.py.
//   entry points extern "C", one per transform and size: conv2d_winograd_{weight,input,
//                output}_{3x3,5x5} for F(2x2, 3x3) and F(2x2, 5x5), and
//                conv2d_winograd_{weight,input,output}_4x4_5x5 for F(4x4, 5x5); one per
//                GEMM tile (names listed in kernels.py: NAME_EXPRESSIONS); no system headers
//                (NVRTC). The GEMM's main loop and micro-kernel are gemm_tile.cuh's, shared
//                with conv2d.cu.

#include "gemm_tile.cuh"

// The 1-D pieces of F(M, R); the kernels below apply each along columns, then rows.
//   filter: u = G' g (u_i = f_i (G g)_i), in weight_t;  input: v = B^T d;  output: y = A^T m.
template <int M, int R> struct Winograd;

template <> struct Winograd<2, 3> {
    static constexpr int ALPHA = 4;
    using weight_t = float;
    static __device__ __forceinline__ float f(int i) { return (i == 1 || i == 2) ? 2.0f : 1.0f; }
    static __device__ __forceinline__ void filter(const float (&g)[3], float (&u)[4])
    {
        u[0] = g[0];
        u[1] = g[0] + g[1] + g[2];
        u[2] = g[0] - g[1] + g[2];
        u[3] = g[2];
    }
    static __device__ __forceinline__ void input(const float (&d)[4], float (&v)[4])
    {
        v[0] = d[0] - d[2];
        v[1] = d[1] + d[2];
        v[2] = d[2] - d[1];
        v[3] = d[1] - d[3];
    }
    static __device__ __forceinline__ void output(const float (&m)[4], float (&y)[2])
    {
        y[0] = m[0] + m[1] + m[2];
        y[1] = m[1] - m[2] - m[3];
    }
};

template <> struct Winograd<2, 5> {
    static constexpr int ALPHA = 6;
    using weight_t = float;
    static __device__ __forceinline__ float f(int i) { return i == 0 ? 4.0f : i <= 2 ? -6.0f : i <= 4 ? 24.0f : 1.0f; }
    static __device__ __forceinline__ void filter(const float (&g)[5], float (&u)[6])
    {
        const float e1 = g[0] + g[2] + g[4];                               // even part at +-1
        const float o1 = g[1] + g[3];                                      // odd part at +-1
        const float e2 = fmaf(16.0f, g[4], fmaf(4.0f, g[2], g[0]));        // even part at +-2
        const float o2 = 2.0f * fmaf(4.0f, g[3], g[1]);                    // odd part at +-2
        u[0] = g[0];
        u[1] = e1 + o1;
        u[2] = e1 - o1;
        u[3] = e2 + o2;
        u[4] = e2 - o2;
        u[5] = g[4];
    }
    static __device__ __forceinline__ void input(const float (&d)[6], float (&v)[6])
    {
        const float p = fmaf(-4.0f, d[2], d[4]);                           // d4 - 4 d2
        const float q = fmaf(-4.0f, d[1], d[3]);                           // d3 - 4 d1
        const float r = d[4] - d[2];
        const float s = 2.0f * (d[3] - d[1]);
        v[0] = fmaf(4.0f, d[0], fmaf(-5.0f, d[2], d[4]));
        v[1] = p + q;
        v[2] = p - q;
        v[3] = r + s;
        v[4] = r - s;
        v[5] = fmaf(4.0f, d[1], fmaf(-5.0f, d[3], d[5]));
    }
    static __device__ __forceinline__ void output(const float (&m)[6], float (&y)[2])
    {
        y[0] = m[0] + (m[1] + m[2]) + (m[3] + m[4]);
        y[1] = fmaf(2.0f, m[3] - m[4], (m[1] - m[2]) + m[5]);
    }
};

template <> struct Winograd<4, 5> {
    static constexpr int ALPHA = 8;
    using weight_t = double;                  // G' g G'^T exact (all of G' is 0, +-1, +-2^k), one division, one rounding
    static __device__ __forceinline__ double f(int i) { return i == 0 || i == 7 ? 4.0 : i <= 2 ? 18.0 : 360.0; }
    static __device__ __forceinline__ void filter(const double (&g)[5], double (&u)[8])
    {
        const double e1 = g[0] + g[2] + g[4];                              // even part at +-1
        const double o1 = g[1] + g[3];                                     // odd part at +-1
        const double e2 = g[0] + 4.0 * g[2] + 16.0 * g[4];                 // even part at +-2
        const double o2 = 2.0 * g[1] + 8.0 * g[3];                         // odd part at +-2
        const double eh = 16.0 * g[0] + 4.0 * g[2] + g[4];                 // even part at +-1/2, times 16
        const double oh = 8.0 * g[1] + 2.0 * g[3];                         // odd part at +-1/2, times 16
        u[0] = g[0];
        u[1] = e1 + o1;
        u[2] = e1 - o1;
        u[3] = e2 + o2;
        u[4] = e2 - o2;
        u[5] = eh + oh;
        u[6] = eh - oh;
        u[7] = g[4];
    }
    static __device__ __forceinline__ void input(const float (&d)[8], float (&v)[8])
    {
        const float e1 = fmaf(17.0f, d[4], -4.0f * (d[2] + d[6]));         // -4 d2 + 17 d4 - 4 d6
        const float o1 = fmaf(17.0f, d[3], -4.0f * (d[1] + d[5]));         // -4 d1 + 17 d3 - 4 d5
        const float e2 = fmaf(-5.0f, d[4], fmaf(4.0f, d[6], d[2]));        // d2 - 5 d4 + 4 d6
        const float o2 = 2.0f * fmaf(-5.0f, d[3], fmaf(4.0f, d[5], d[1])); // 2 d1 - 10 d3 + 8 d5
        const float eh = 2.0f * fmaf(-5.0f, d[4], fmaf(4.0f, d[2], d[6])); // 8 d2 - 10 d4 + 2 d6
        const float oh = fmaf(-5.0f, d[3], fmaf(4.0f, d[1], d[5]));        // 4 d1 - 5 d3 + d5
        v[0] = fmaf(21.0f, d[4] - d[2], 4.0f * (d[0] - d[6]));
        v[1] = e1 + o1;
        v[2] = e1 - o1;
        v[3] = e2 + o2;
        v[4] = e2 - o2;
        v[5] = eh + oh;
        v[6] = eh - oh;
        v[7] = fmaf(21.0f, d[3] - d[5], 4.0f * (d[7] - d[1]));
    }
    static __device__ __forceinline__ void output(const float (&m)[8], float (&y)[4])
    {
        const float s1 = m[1] + m[2], d1 = m[1] - m[2];                    // the pairs at +-1, +-2, +-1/2
        const float s2 = m[3] + m[4], d2 = m[3] - m[4];
        const float s3 = m[5] + m[6], d3 = m[5] - m[6];
        y[0] = fmaf(8.0f, s3, (m[0] + s1) + s2);
        y[1] = fmaf(4.0f, d3, fmaf(2.0f, d2, d1));
        y[2] = fmaf(2.0f, s3, fmaf(4.0f, s2, s1));
        y[3] = fmaf(8.0f, d2, d1 + d3) + m[7];
    }
};

// U = G g G^T for every (c, o): w_ihwo (Cg, R, R, O) -> u_xco (ALPHA^2, Cg, O), in W::weight_t.
template <int M, int R>
__device__ __forceinline__ void conv2d_winograd_weight_body(const float* __restrict__ w_ihwo, float* __restrict__ u_xco,
                                                            int Cg, int O)
{
    using W = Winograd<M, R>;
    using T = typename W::weight_t;
    constexpr int A = W::ALPHA;
    const long long CgO = (long long)Cg * O;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < CgO;
         e += (long long)gridDim.x * blockDim.x) {
        const long long c = e / O;
        const int o = (int)(e - c * O);
        const float* __restrict__ src = w_ihwo + c * R * R * O + o;   // g[r][s] = src[(R*r + s) * O]
        T t[A][R];                            // G' g: columns
#pragma unroll
        for (int s = 0; s < R; ++s) {
            T col[R], out[A];
#pragma unroll
            for (int r = 0; r < R; ++r) col[r] = (T)src[(R * r + s) * O];
            W::filter(col, out);
#pragma unroll
            for (int i = 0; i < A; ++i) t[i][s] = out[i];
        }
#pragma unroll
        for (int i = 0; i < A; ++i) {         // (G' g) G'^T: rows, then / (f_i f_j)
            T out[A];
            W::filter(t[i], out);
#pragma unroll
            for (int j = 0; j < A; ++j) u_xco[(A * i + j) * CgO + e] = (float)(out[j] / (W::f(i) * W::f(j)));
        }
    }
}

// V = B^T d B for every (channel c, tile t < Tp): x_nchw (N, C, H, W) -> v_xct (ALPHA^2, C, Tp);
// tiles t >= T (the padding up to Tp) are written as zeros.
template <int M, int R>
__device__ __forceinline__ void conv2d_winograd_input_body(const float* __restrict__ x_nchw, float* __restrict__ v_xct,
                                                           int C, int H, int W, int TH, int TW, int PH, int PW,
                                                           long long T, long long Tp)
{
    using WG = Winograd<M, R>;
    constexpr int A = WG::ALPHA;
    const long long CT = (long long)C * Tp;
    const int TT = TH * TW;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < CT;
         e += (long long)gridDim.x * blockDim.x) {
        const long long c = e / Tp;
        const long long t = e - c * Tp;
        float d[A][A];
        if (t < T) {
            const long long img = t / TT;
            const int p = (int)(t - img * TT);
            const int th = p / TW;
            const int ih0 = M * th - PH;
            const int iw0 = M * (p - th * TW) - PW;
            const float* __restrict__ plane = x_nchw + (img * C + c) * H * W;
#pragma unroll
            for (int i = 0; i < A; ++i) {
                const int ih = ih0 + i;
#pragma unroll
                for (int j = 0; j < A; ++j) {
                    const int iw = iw0 + j;
                    d[i][j] = ((unsigned)ih < (unsigned)H && (unsigned)iw < (unsigned)W) ? plane[ih * W + iw] : 0.0f;
                }
            }
        } else {
#pragma unroll
            for (int i = 0; i < A; ++i)
#pragma unroll
                for (int j = 0; j < A; ++j) d[i][j] = 0.0f;
        }
        float b[A][A];                        // B^T d: columns
#pragma unroll
        for (int j = 0; j < A; ++j) {
            float col[A], out[A];
#pragma unroll
            for (int i = 0; i < A; ++i) col[i] = d[i][j];
            WG::input(col, out);
#pragma unroll
            for (int i = 0; i < A; ++i) b[i][j] = out[i];
        }
#pragma unroll
        for (int i = 0; i < A; ++i) {         // (B^T d) B: rows
            float out[A];
            WG::input(b[i], out);
#pragma unroll
            for (int j = 0; j < A; ++j) v_xct[(A * i + j) * CT + e] = out[j];
        }
    }
}

// Y = A^T M A + bias (+ ReLU) for every (output channel o, tile t < T): m_xot (ALPHA^2, O, Tp) -> y_nchw.
template <int M, int R>
__device__ __forceinline__ void conv2d_winograd_output_body(const float* __restrict__ m_xot, const float* __restrict__ b_o,
                                                            float* __restrict__ y_nchw, int O, int OH, int OW,
                                                            int TH, int TW, long long T, long long Tp, int relu)
{
    using W = Winograd<M, R>;
    constexpr int A = W::ALPHA;
    const long long OT = (long long)O * T;
    const long long OTp = (long long)O * Tp;
    const int TT = TH * TW;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < OT;
         e += (long long)gridDim.x * blockDim.x) {
        const long long o = e / T;
        const long long t = e - o * T;
        const float* __restrict__ src = m_xot + o * Tp + t;
        float m[A][A];
#pragma unroll
        for (int xi = 0; xi < A * A; ++xi) m[xi / A][xi % A] = src[xi * OTp];
        float a[M][A];                        // A^T M: columns
#pragma unroll
        for (int j = 0; j < A; ++j) {
            float col[A], out[M];
#pragma unroll
            for (int i = 0; i < A; ++i) col[i] = m[i][j];
            W::output(col, out);
#pragma unroll
            for (int i = 0; i < M; ++i) a[i][j] = out[i];
        }
        const float bias = b_o[o];
        float yv[M][M];                       // (A^T M) A: rows
#pragma unroll
        for (int i = 0; i < M; ++i) {
            float out[M];
            W::output(a[i], out);
#pragma unroll
            for (int j = 0; j < M; ++j) yv[i][j] = out[j] + bias;
        }
        const long long img = t / TT;
        const int p = (int)(t - img * TT);
        const int th = p / TW;
        const int oh0 = M * th;
        const int ow0 = M * (p - th * TW);
        float* __restrict__ plane = y_nchw + (img * O + o) * OH * OW;
#pragma unroll
        for (int i = 0; i < M; ++i)
#pragma unroll
            for (int j = 0; j < M; ++j) {
                float v = yv[i][j];
                if (relu) v = v < 0.0f ? 0.0f : v;  // NaN stays NaN (as maximum(v, 0))
                if (oh0 + i < OH && ow0 + j < OW) plane[(oh0 + i) * OW + ow0 + j] = v;
            }
    }
}

// The transforms' entry points: F(2x2, 3x3), F(2x2, 5x5) (named by the kernel size alone), then F(4x4, 5x5).
extern "C" __global__ void __launch_bounds__(256)
conv2d_winograd_weight_3x3(const float* __restrict__ w_ihwo, float* __restrict__ u_xco, int Cg, int O)
{
    conv2d_winograd_weight_body<2, 3>(w_ihwo, u_xco, Cg, O);
}

extern "C" __global__ void __launch_bounds__(256)
conv2d_winograd_input_3x3(const float* __restrict__ x_nchw, float* __restrict__ v_xct, int C, int H, int W,
                          int TH, int TW, int PH, int PW, long long T, long long Tp)
{
    conv2d_winograd_input_body<2, 3>(x_nchw, v_xct, C, H, W, TH, TW, PH, PW, T, Tp);
}

extern "C" __global__ void __launch_bounds__(256)
conv2d_winograd_output_3x3(const float* __restrict__ m_xot, const float* __restrict__ b_o, float* __restrict__ y_nchw,
                           int O, int OH, int OW, int TH, int TW, long long T, long long Tp, int relu)
{
    conv2d_winograd_output_body<2, 3>(m_xot, b_o, y_nchw, O, OH, OW, TH, TW, T, Tp, relu);
}

extern "C" __global__ void __launch_bounds__(256)
conv2d_winograd_weight_5x5(const float* __restrict__ w_ihwo, float* __restrict__ u_xco, int Cg, int O)
{
    conv2d_winograd_weight_body<2, 5>(w_ihwo, u_xco, Cg, O);
}

extern "C" __global__ void __launch_bounds__(256)
conv2d_winograd_input_5x5(const float* __restrict__ x_nchw, float* __restrict__ v_xct, int C, int H, int W,
                          int TH, int TW, int PH, int PW, long long T, long long Tp)
{
    conv2d_winograd_input_body<2, 5>(x_nchw, v_xct, C, H, W, TH, TW, PH, PW, T, Tp);
}

extern "C" __global__ void __launch_bounds__(256)
conv2d_winograd_output_5x5(const float* __restrict__ m_xot, const float* __restrict__ b_o, float* __restrict__ y_nchw,
                           int O, int OH, int OW, int TH, int TW, long long T, long long Tp, int relu)
{
    conv2d_winograd_output_body<2, 5>(m_xot, b_o, y_nchw, O, OH, OW, TH, TW, T, Tp, relu);
}

extern "C" __global__ void __launch_bounds__(256)
conv2d_winograd_weight_4x4_5x5(const float* __restrict__ w_ihwo, float* __restrict__ u_xco, int Cg, int O)
{
    conv2d_winograd_weight_body<4, 5>(w_ihwo, u_xco, Cg, O);
}

extern "C" __global__ void __launch_bounds__(256)
conv2d_winograd_input_4x4_5x5(const float* __restrict__ x_nchw, float* __restrict__ v_xct, int C, int H, int W,
                              int TH, int TW, int PH, int PW, long long T, long long Tp)
{
    conv2d_winograd_input_body<4, 5>(x_nchw, v_xct, C, H, W, TH, TW, PH, PW, T, Tp);
}

extern "C" __global__ void __launch_bounds__(256)
conv2d_winograd_output_4x4_5x5(const float* __restrict__ m_xot, const float* __restrict__ b_o, float* __restrict__ y_nchw,
                               int O, int OH, int OW, int TH, int TW, long long T, long long Tp, int relu)
{
    conv2d_winograd_output_body<4, 5>(m_xot, b_o, y_nchw, O, OH, OW, TH, TW, T, Tp, relu);
}

// The ALPHA^2 * G GEMMs M[xi]_g = U[xi]_g^T V[xi]_g (see "GEMM" above).
template <int BM, int BN, int BK, int TM, int TN, bool VEC_A>
__device__ __forceinline__ void conv2d_winograd_gemm_tile(
    const float* __restrict__ u_xco, const float* __restrict__ v_xct, float* __restrict__ m_xot,
    int K, int O, int G, int Tp)
{
    constexpr int THREADS = (BM / TM) * (BN / TN);
    constexpr int A_F4 = BK * BM / 4;                 // float4 groups per A slice
    constexpr int B_F4 = BK * BN / 4;
    constexpr int A_PER = (A_F4 + THREADS - 1) / THREADS;
    constexpr int B_PER = (B_F4 + THREADS - 1) / THREADS;
    constexpr int MSTEP = (BM / TM) * 4;
    constexpr int NSTEP = (BN / TN) * 4;
    static_assert(TM % 4 == 0 && TN % 4 == 0, "micro-tile must be float4 groups");
    static_assert(THREADS % 32 == 0, "whole warps");

    __shared__ __align__(16) float As[2][BK][BM];
    __shared__ __align__(16) float Bs[2][BK][BN];

    const int M = O / G;
    const int z = blockIdx.z;
    const int xi = z / G;
    const int g = z - xi * G;
    const int m0 = blockIdx.y * BM;
    const int n0 = blockIdx.x * BN;
    const int tid = threadIdx.x;
    const int tx = tid % (BN / TN);
    const int ty = tid / (BN / TN);

    const float* __restrict__ a_blk = u_xco + (long long)xi * K * O + g * M;            // + k*O + m
    const float* __restrict__ b_blk = v_xct + ((long long)xi * G + g) * K * Tp;        // + k*Tp + n
    float* __restrict__ c_blk = m_xot + ((long long)xi * O + g * M) * Tp;              // + m*Tp + n

    float4 a_stage[A_PER];
    float4 b_stage[B_PER];
    const float4 zero4 = {0.0f, 0.0f, 0.0f, 0.0f};

    auto load_slice = [&](int k0) {
#pragma unroll
        for (int i = 0; i < A_PER; ++i) {
            const int idx = tid + i * THREADS;
            const int kk = idx / (BM / 4);
            const int mm = (idx - kk * (BM / 4)) * 4;
            const int k = k0 + kk, m = m0 + mm;
            float4 v = zero4;
            if ((A_F4 % THREADS == 0 || idx < A_F4) && k < K) {
                const float* src = a_blk + k * O + m;
                if (VEC_A) {
                    if (m < M) v = *reinterpret_cast<const float4*>(src);   // M % 4 == 0: all four in range
                } else {
                    if (m + 0 < M) v.x = src[0];
                    if (m + 1 < M) v.y = src[1];
                    if (m + 2 < M) v.z = src[2];
                    if (m + 3 < M) v.w = src[3];
                }
            }
            a_stage[i] = v;
        }
#pragma unroll
        for (int i = 0; i < B_PER; ++i) {
            const int idx = tid + i * THREADS;
            const int kk = idx / (BN / 4);
            const int nn = (idx - kk * (BN / 4)) * 4;
            const int k = k0 + kk, n = n0 + nn;
            b_stage[i] = ((B_F4 % THREADS == 0 || idx < B_F4) && k < K && n < Tp)
                             ? *reinterpret_cast<const float4*>(b_blk + k * Tp + n) : zero4;
        }
    };
    auto store_slice = [&](int buf) {
#pragma unroll
        for (int i = 0; i < A_PER; ++i) {
            const int idx = tid + i * THREADS;
            if (A_F4 % THREADS == 0 || idx < A_F4) {
                const int kk = idx / (BM / 4);
                *reinterpret_cast<float4*>(&As[buf][kk][(idx - kk * (BM / 4)) * 4]) = a_stage[i];
            }
        }
#pragma unroll
        for (int i = 0; i < B_PER; ++i) {
            const int idx = tid + i * THREADS;
            if (B_F4 % THREADS == 0 || idx < B_F4) {
                const int kk = idx / (BN / 4);
                *reinterpret_cast<float4*>(&Bs[buf][kk][(idx - kk * (BN / 4)) * 4]) = b_stage[i];
            }
        }
    };

    float acc[TM][TN];
    gemm_tile_mainloop(As, Bs, acc, K, tx, ty, load_slice, store_slice);

    // Epilogue: float4 stores along n (Tp % 4 == 0, so a group is all in or all out).
#pragma unroll
    for (int q = 0; q < TM / 4; ++q)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int m = m0 + q * MSTEP + ty * 4 + i;
            if (m >= M) continue;
#pragma unroll
            for (int p = 0; p < TN / 4; ++p) {
                const int n = n0 + p * NSTEP + tx * 4;
                if (n >= Tp) continue;
                float4 v;
                v.x = acc[4 * q + i][4 * p + 0]; v.y = acc[4 * q + i][4 * p + 1];
                v.z = acc[4 * q + i][4 * p + 2]; v.w = acc[4 * q + i][4 * p + 3];
                *reinterpret_cast<float4*>(c_blk + m * Tp + n) = v;
            }
        }
}

#define WINOGRAD_GEMM_ARGS                                                                \
    const float* __restrict__ u_xco, const float* __restrict__ v_xct, float* __restrict__ m_xot, \
    int K, int O, int G, int Tp
#define WINOGRAD_GEMM_PASS u_xco, v_xct, m_xot, K, O, G, Tp

// 128 x 128 tile, 8 x 8 per thread, 256 threads, K slices of 16.
extern "C" __global__ void __launch_bounds__(256, 2)
conv2d_winograd_gemm_128x128(WINOGRAD_GEMM_ARGS)
{
    conv2d_winograd_gemm_tile<128, 128, 16, 8, 8, true>(WINOGRAD_GEMM_PASS);
}

// 64 x 128 tile, 8 x 8 per thread, 128 threads, K slices of 16.
extern "C" __global__ void __launch_bounds__(128, 4)
conv2d_winograd_gemm_64x128(WINOGRAD_GEMM_ARGS)
{
    conv2d_winograd_gemm_tile<64, 128, 16, 8, 8, true>(WINOGRAD_GEMM_PASS);
}

// 64 x 64 tile, 4 x 4 per thread, 256 threads, K slices of 16: small problems (batch 1).
extern "C" __global__ void __launch_bounds__(256, 2)
conv2d_winograd_gemm_64x64(WINOGRAD_GEMM_ARGS)
{
    conv2d_winograd_gemm_tile<64, 64, 16, 4, 4, true>(WINOGRAD_GEMM_PASS);
}

// 64 x 64 tile with scalar loads of U: out/groups not a multiple of 4 (never in AlexNet).
extern "C" __global__ void __launch_bounds__(256, 2)
conv2d_winograd_gemm_64x64_scalar(WINOGRAD_GEMM_ARGS)
{
    conv2d_winograd_gemm_tile<64, 64, 16, 4, 4, false>(WINOGRAD_GEMM_PASS);
}

#undef WINOGRAD_GEMM_ARGS
#undef WINOGRAD_GEMM_PASS
