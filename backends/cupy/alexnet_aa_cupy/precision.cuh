// precision.cuh — the storage types of the half-precision kernels and their conversions to and from float.
//
// Conventions:
//   storage      half_t (IEEE binary16) and bf16_t (bfloat16: the upper 16 bits of a float32) are
//                16-bit bit patterns; CuPy hands their arrays over as float16 / ml_dtypes.bfloat16.
//                float is its own storage type, so every templated kernel also instantiates for it.
//   arithmetic   always in float32: load_float() widens (exactly), store_float() rounds to nearest
//                even. NaN stays NaN (bfloat16: a quiet NaN of the same sign), ±inf stays ±inf,
//                float16 overflow rounds to ±inf as cvt.rn does.
//   devices      with __CUDA_ARCH__ (NVRTC, nvcc) the float16 conversions are the PTX instructions
//                cvt.f32.f16 / cvt.rn.f16.f32; without it (g++, the CPU emulation of
//                backends/cupy/tests) a portable bit-exact version, checked against NumPy's float16
//                for every one of the 65,536 bit patterns (tests/test_cuda_kernels.py).
//   no system headers (NVRTC).
#ifndef ALEXNET_AA_PRECISION_CUH
#define ALEXNET_AA_PRECISION_CUH

struct half_t { unsigned short bits; };
struct bf16_t { unsigned short bits; };

__device__ __forceinline__ unsigned float_bits(float f)
{
    union { float f; unsigned u; } v;
    v.f = f;
    return v.u;
}

__device__ __forceinline__ float bits_float(unsigned u)
{
    union { unsigned u; float f; } v;
    v.u = u;
    return v.f;
}

__device__ __forceinline__ float load_float(float v) { return v; }

__device__ __forceinline__ float load_float(bf16_t v) { return bits_float((unsigned)v.bits << 16); }

__device__ __forceinline__ float load_float(half_t v)
{
#ifdef __CUDA_ARCH__
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.bits));
    return f;
#else
    const unsigned sign = (unsigned)(v.bits & 0x8000u) << 16;
    const unsigned exp = (v.bits >> 10) & 0x1fu;
    unsigned mant = v.bits & 0x3ffu;
    if (exp == 0x1fu) return bits_float(sign | 0x7f800000u | (mant << 13));   // inf, NaN (payload kept)
    if (exp != 0) return bits_float(sign | ((exp + 112u) << 23) | (mant << 13));
    if (mant == 0) return bits_float(sign);                                     // ±0
    int e = 113;                                                                // subnormal: normalise
    while (!(mant & 0x400u)) { mant <<= 1; --e; }
    return bits_float(sign | ((unsigned)e << 23) | ((mant & 0x3ffu) << 13));
#endif
}

template <class T> __device__ __forceinline__ T store_float(float f);

template <> __device__ __forceinline__ float store_float<float>(float f) { return f; }

template <> __device__ __forceinline__ bf16_t store_float<bf16_t>(float f)
{
    const unsigned u = float_bits(f);
    bf16_t r;
    if ((u & 0x7fffffffu) > 0x7f800000u) {                 // NaN: quiet, same sign
        r.bits = (unsigned short)((u >> 16) | 0x40u);
        return r;
    }
    r.bits = (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);   // round to nearest even
    return r;
}

template <> __device__ __forceinline__ half_t store_float<half_t>(float f)
{
    half_t r;
#ifdef __CUDA_ARCH__
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r.bits) : "f"(f));
#else
    const unsigned u = float_bits(f);
    const unsigned sign = (u >> 16) & 0x8000u;
    const unsigned a = u & 0x7fffffffu;
    if (a > 0x7f800000u) { r.bits = (unsigned short)(sign | 0x7e00u | ((a >> 13) & 0x3ffu)); return r; }  // NaN
    if (a >= 0x477ff000u) { r.bits = (unsigned short)(sign | 0x7c00u); return r; }   // >= 65520: ±inf
    if (a < 0x38800000u) {                                 // below 2^-14: subnormal or zero
        if (a < 0x33000000u) { r.bits = (unsigned short)sign; return r; }   // below 2^-25: rounds to 0
        const unsigned e = a >> 23;
        const unsigned m = (a & 0x7fffffu) | 0x800000u;
        const unsigned shift = 126u - e;                   // 14..24: value = m * 2^(e-150) -> units of 2^-24
        const unsigned q = m >> shift;
        const unsigned rem = m & ((1u << shift) - 1u);
        const unsigned half = 1u << (shift - 1u);
        r.bits = (unsigned short)(sign | (q + (rem > half || (rem == half && (q & 1u)))));
        return r;
    }
    const unsigned q = a - 0x38000000u;                    // rebias the exponent: 127 -> 15
    const unsigned rem = q & 0x1fffu;
    unsigned h = q >> 13;
    h += rem > 0x1000u || (rem == 0x1000u && (h & 1u));   // round to nearest even (may carry into inf)
    r.bits = (unsigned short)(sign | h);
#endif
    return r;
}

#endif  // ALEXNET_AA_PRECISION_CUH
