// evt_core.cuh: element types, conversions and scalar math with the CPU backend's semantics
// (evtdsl/backends/cpu/semantics.py is the NumPy twin of everything here).
//
// - bf16/f16 values are computed in float and rounded to nearest even after every op (cvt<T>).
// - float -> int conversions truncate toward zero.
// - integer floordiv/mod round toward -inf like Python, and give 0 for a zero divisor like NumPy.
// - maximum/minimum propagate NaN like np.maximum/np.minimum.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace evt {

// A view of global memory: the pointer, and shape and strides in elements.
template <class T, int ND>
struct Tensor {
  T* ptr;
  long long shape[ND];
  long long stride[ND];
};

// -- conversions ---------------------------------------------------------------------------------

__device__ __forceinline__ float widen(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float widen(__half x) { return __half2float(x); }
template <class T>
__device__ __forceinline__ T widen(T x) { return x; }

template <class To>
struct Cvt {
  template <class F>
  static __device__ __forceinline__ To run(F x) { return static_cast<To>(widen(x)); }
};
template <>
struct Cvt<bool> {
  template <class F>
  static __device__ __forceinline__ bool run(F x) { return widen(x) != 0; }
};
template <>
struct Cvt<__nv_bfloat16> {
  template <class F>
  static __device__ __forceinline__ __nv_bfloat16 run(F x) { return __float2bfloat16_rn(static_cast<float>(widen(x))); }
  static __device__ __forceinline__ __nv_bfloat16 run(__nv_bfloat16 x) { return x; }
};
template <>
struct Cvt<__half> {
  template <class F>
  static __device__ __forceinline__ __half run(F x) { return __float2half_rn(static_cast<float>(widen(x))); }
  static __device__ __forceinline__ __half run(__half x) { return x; }
};

// cvt<To>(x): the value x as a To, rounded like NumPy's astype (via float for bf16/f16).
template <class To, class F>
__device__ __forceinline__ To cvt(F x) { return Cvt<To>::run(x); }

__device__ __forceinline__ __nv_bfloat16 bf16_bits(unsigned short b) { return __ushort_as_bfloat16(b); }
__device__ __forceinline__ __half f16_bits(unsigned short b) { return __ushort_as_half(b); }

// -- integer arithmetic ----------------------------------------------------------------------------

template <class T>
__device__ __forceinline__ T floordiv(T a, T b) {
  if (b == 0) return T(0);
  T q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

template <class T>
__device__ __forceinline__ T pymod(T a, T b) {
  if (b == 0) return T(0);
  T r = a % b;
  if (r != 0 && ((r < 0) != (b < 0))) r += b;
  return r;
}

template <class T>
__device__ __forceinline__ T cdiv(T a, T b) { return -floordiv<T>(-a, b); }

template <class T>
__device__ __forceinline__ T ipow(T a, T b) {
  if (b < 0) return T(0);
  T r = 1;
  while (b) {
    if (b & 1) r *= a;
    a *= a;
    b >>= 1;
  }
  return r;
}

// -- float and mixed arithmetic ----------------------------------------------------------------------

template <class T>
__device__ __forceinline__ T maximum(T a, T b) { return (a > b || a != a) ? a : b; }
template <class T>
__device__ __forceinline__ T minimum(T a, T b) { return (a < b || a != a) ? a : b; }

__device__ __forceinline__ float fpow(float a, float b) { return powf(a, b); }
__device__ __forceinline__ double fpow(double a, double b) { return pow(a, b); }

template <class T>
__device__ __forceinline__ T abs_(T x) { return x < T(0) ? T(-x) : x; }
__device__ __forceinline__ float abs_(float x) { return fabsf(x); }
__device__ __forceinline__ double abs_(double x) { return fabs(x); }

template <class T>
__device__ __forceinline__ T floor_(T x) { return x; }
__device__ __forceinline__ float floor_(float x) { return floorf(x); }
__device__ __forceinline__ double floor_(double x) { return ::floor(x); }

// Accurate forms (f32/f64 results); rsqrt is 1/sqrt with both steps correctly rounded, as NumPy computes it.
__device__ __forceinline__ float exp_(float x) { return expf(x); }
__device__ __forceinline__ float log_(float x) { return logf(x); }
__device__ __forceinline__ float sqrt_(float x) { return sqrtf(x); }
__device__ __forceinline__ float rsqrt_(float x) { return 1.0f / sqrtf(x); }
__device__ __forceinline__ float sigmoid_(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ __forceinline__ float silu_(float x) { return x / (1.0f + expf(-x)); }
__device__ __forceinline__ float sin_(float x) { return sinf(x); }
__device__ __forceinline__ float cos_(float x) { return cosf(x); }
__device__ __forceinline__ float tanh_(float x) { return tanhf(x); }
__device__ __forceinline__ float erf_(float x) { return erff(x); }
__device__ __forceinline__ double exp_(double x) { return ::exp(x); }
__device__ __forceinline__ double log_(double x) { return ::log(x); }
__device__ __forceinline__ double sqrt_(double x) { return ::sqrt(x); }
__device__ __forceinline__ double rsqrt_(double x) { return 1.0 / ::sqrt(x); }
__device__ __forceinline__ double sigmoid_(double x) { return 1.0 / (1.0 + ::exp(-x)); }
__device__ __forceinline__ double silu_(double x) { return x / (1.0 + ::exp(-x)); }
__device__ __forceinline__ double sin_(double x) { return ::sin(x); }
__device__ __forceinline__ double cos_(double x) { return ::cos(x); }
__device__ __forceinline__ double tanh_(double x) { return ::tanh(x); }
__device__ __forceinline__ double erf_(double x) { return ::erf(x); }

// Fast forms, used where the result is rounded to bf16/f16 anyway (their error is far below half an ulp
// of the 16-bit result): hardware exp2 and reciprocal.
__device__ __forceinline__ float fast_exp(float x) { return __expf(x); }
__device__ __forceinline__ float fast_sigmoid(float x) { return __frcp_rn(1.0f + __expf(-x)); }
__device__ __forceinline__ float fast_silu(float x) { return x * __frcp_rn(1.0f + __expf(-x)); }
__device__ __forceinline__ float fast_rsqrt(float x) { return rsqrtf(x); }

template <class T> __device__ __forceinline__ T lowest();
template <> __device__ __forceinline__ float lowest<float>() { return __int_as_float(0xff800000); }
template <> __device__ __forceinline__ double lowest<double>() { return __longlong_as_double(0xfff0000000000000ULL); }
template <> __device__ __forceinline__ int lowest<int>() { return -2147483647 - 1; }
template <> __device__ __forceinline__ long long lowest<long long>() { return -9223372036854775807LL - 1; }
template <class T> __device__ __forceinline__ T highest();
template <> __device__ __forceinline__ float highest<float>() { return __int_as_float(0x7f800000); }
template <> __device__ __forceinline__ double highest<double>() { return __longlong_as_double(0x7ff0000000000000ULL); }
template <> __device__ __forceinline__ int highest<int>() { return 2147483647; }
template <> __device__ __forceinline__ long long highest<long long>() { return 9223372036854775807LL; }

// 0 <= i < n, for a signed index: one unsigned compare.
__device__ __forceinline__ bool inb(long long i, long long n) {
  return static_cast<unsigned long long>(i) < static_cast<unsigned long long>(n);
}

}  // namespace evt
