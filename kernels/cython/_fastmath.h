/* float32 exp, sigmoid and tanh as inline arithmetic that GCC vectorises, for the recurrence
   kernels' gate loops.

   Why: GCC turns tanhf in a loop into calls to glibc's libmvec (declared below), 8 values per
   call, but every call spills the loop's live registers and the LSTM forward gate loop makes
   five of them per 8 units; perf had the calls and their spills at a third of the whole
   forward kernel.  Written inline, the same functions cost a few FMAs and one division.

   The algorithm is the one of the Numba kernels (kernels/numba_cpu/_fastmath.py, which
   derives it): exp(x) = 2^n p(r) with n = round(x / ln 2), r = x - n ln 2 (ln 2 in two parts so
   that n ln 2 is exact) and Cephes' degree-7 polynomial p, 2^n built from its IEEE bits;
   tanh(x) = x + x^3 q(x^2) for |x| < 0.625, else sign(x) (1 - 2 / (e^{2|x|} + 1));
   sigmoid(x) = 1 / (1 + e^-x).  Results are within a few ulp of the exact values
   (tests/test_kernels_cython_build.py checks them through the kernels).  Arguments are clamped
   to |x| <= 87, where float32 exp neither overflows nor reaches the ~100x slower denormals;
   sigmoid and tanh are already exactly 0, 1 or -1 to float32's absolute precision there
   (so tgs_expf, their helper, is no general exp: below -87 it gives e^-87, not 0).

   IEEE semantics (the modules are built without -ffast-math, see setup.py): a NaN argument
   gives NaN and +-inf gives the limits (tanh +-1, sigmoid 0 or 1 to float32's absolute
   precision).  The clamps are written so that NaN passes through them, and 2^n is built from
   the clamped, never-NaN n (converting a NaN to an integer is undefined in C).

   The second half announces glibc's vector math (libmvec) to GCC, which -ffast-math used to
   do, so loops calling exp/expf, erf/erff or tanh/tanhf still vectorise. */
#ifndef TGS_FASTMATH_H
#define TGS_FASTMATH_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define TGS_ALWAYS_INLINE static inline __attribute__((always_inline))

TGS_ALWAYS_INLINE float tgs_expf(float x)
{
    x = x < -87.0f ? -87.0f : (x > 87.0f ? 87.0f : x);   /* NaN fails both tests: stays NaN */
    const float n_or_nan = floorf(x * 1.44269504088896341f + 0.5f);
    const float n = n_or_nan == n_or_nan ? n_or_nan : 0.0f;
    const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;   /* NaN for a NaN x */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    const int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

TGS_ALWAYS_INLINE float tgs_sigmoidf(float x)
{
    /* exactly 0 below -87 (e^-x would be clamped there), as the reference's float32 sigmoid:
       a gate at -inf must be 0, so that 0 * inf downstream is NaN there as well */
    return x < -87.0f ? 0.0f : 1.0f / (1.0f + tgs_expf(-x));
}

TGS_ALWAYS_INLINE float tgs_tanhf(float x)
{
    const float ax = fabsf(x), z = x * x;
    float q = -5.70498872745e-3f;
    q = q * z + 2.06390887954e-2f;
    q = q * z + -5.37397155531e-2f;
    q = q * z + 1.33314422036e-1f;
    q = q * z + -3.33332819422e-1f;
    const float small = x + x * z * q;
    const float large = 1.0f - 2.0f / (tgs_expf(2.0f * ax) + 1.0f);
    return ax < 0.625f ? small : (x < 0.0f ? -large : large);
}

/* Sums, dot products and maxima of a row, vectorised.  Without -ffast-math (-fassociative-math)
   GCC keeps a loop's additions in source order, one at a time, so a reduction loop stays scalar
   and latency-bound; `omp simd reduction` (OpenMP 4, enabled by -fopenmp) allows the partial
   sums per SIMD lane, a change of rounding only (NaN and inf still propagate).  The max treats
   entries where `excluded` (may be NULL) is non-zero as -inf; a NaN entry may or may not win,
   which the softmax does not mind (exp(NaN - m) makes its row NaN either way). */
#define TGS_DEFINE_ROW_REDUCTIONS(SUFFIX, T)                                                   \
static inline T tgs_sum##SUFFIX(const T* a, ptrdiff_t n)                                       \
{                                                                                              \
    T s = 0;                                                                                   \
    _Pragma("omp simd reduction(+:s)")                                                         \
    for (ptrdiff_t j = 0; j < n; ++j)                                                          \
        s += a[j];                                                                             \
    return s;                                                                                  \
}                                                                                              \
static inline T tgs_dot##SUFFIX(const T* a, const T* b, ptrdiff_t n)                           \
{                                                                                              \
    T s = 0;                                                                                   \
    _Pragma("omp simd reduction(+:s)")                                                         \
    for (ptrdiff_t j = 0; j < n; ++j)                                                          \
        s += a[j] * b[j];                                                                      \
    return s;                                                                                  \
}                                                                                              \
static inline T tgs_max##SUFFIX(const T* a, const unsigned char* excluded, ptrdiff_t n)        \
{                                                                                              \
    T m = -INFINITY;                                                                           \
    if (excluded == NULL) {                                                                    \
        _Pragma("omp simd reduction(max:m)")                                                   \
        for (ptrdiff_t j = 0; j < n; ++j)                                                      \
            m = a[j] > m ? a[j] : m;                                                           \
    } else {                                                                                   \
        _Pragma("omp simd reduction(max:m)")                                                   \
        for (ptrdiff_t j = 0; j < n; ++j) {                                                    \
            const T v = excluded[j] ? (T)-INFINITY : a[j];                                     \
            m = v > m ? v : m;                                                                 \
        }                                                                                      \
    }                                                                                          \
    return m;                                                                                  \
}

TGS_DEFINE_ROW_REDUCTIONS(f, float)
TGS_DEFINE_ROW_REDUCTIONS(d, double)

/* glibc's libmvec: `declare simd` tells GCC that vector versions of these exist under the
   x86-64 vector ABI names (_ZGVdN8v_expf, ...), as <math.h> does itself under -ffast-math.
   exp/expf since glibc 2.22, erf/tanh since 2.35 (vectors within 4 ulp, NaN and inf handled).
   Needs OpenMP's `declare simd` (-fopenmp); without it the loops simply call libm. */
#if defined(__GNUC__) && defined(__x86_64__) && defined(_OPENMP) && !defined(__FAST_MATH__) \
    && defined(__GLIBC__) && defined(__GLIBC_PREREQ)
#if __GLIBC_PREREQ(2, 22)
#pragma omp declare simd notinbranch
extern float expf(float);
#pragma omp declare simd notinbranch
extern double exp(double);
#endif
#if __GLIBC_PREREQ(2, 35)
#pragma omp declare simd notinbranch
extern float erff(float);
#pragma omp declare simd notinbranch
extern double erf(double);
#pragma omp declare simd notinbranch
extern float tanhf(float);
#pragma omp declare simd notinbranch
extern double tanh(double);
#endif
#endif

/* sum_j exp(a[j] - shift) over a row, vectorised as the reductions above (after the libmvec
   declarations, so that float64's exp vectorises): log-softmax's normaliser, where shift is the
   row's max.  float32 uses tgs_expf, inline and within a few ulp; its clamp below -87 costs
   nothing here, since the max's own term is exp(0) = 1 and a clamped term (e^-87, for a -inf
   too) vanishes beside it.  NaN propagates (a NaN entry, or inf - inf). */
#define TGS_DEFINE_SUM_EXP(SUFFIX, T, EXP)                                                      \
static inline T tgs_sum_exp##SUFFIX(const T* a, T shift, ptrdiff_t n)                          \
{                                                                                              \
    T s = 0;                                                                                   \
    _Pragma("omp simd reduction(+:s)")                                                         \
    for (ptrdiff_t j = 0; j < n; ++j)                                                          \
        s += EXP(a[j] - shift);                                                                \
    return s;                                                                                  \
}
TGS_DEFINE_SUM_EXP(f, float, tgs_expf)
TGS_DEFINE_SUM_EXP(d, double, exp)

#endif
