/* One row of layer normalisation, forward and backward (contract: kernels/reference/normalization.py),
   for _normalization.pyx, in float32 and float64.

   The row's sums are accumulated in double whatever T is (a float32 row of n = 128 then
   matches the reference's pairwise float32 sums to about an ulp), in `omp simd` reductions:
   without -ffast-math GCC keeps a loop's additions one at a time, in source order, and the
   loop stays scalar; the pragma allows partial sums per SIMD lane, a change of rounding only,
   so NaN and inf still reach the sums (a NaN or inf in x makes mean or var NaN, and the whole
   row NaN, as in the reference).  The mean and variance take two passes over the row (the row
   is in L1 by then) rather than E[x^2] - mean^2, which cancels when the mean is large.
   Then the element-wise passes run in T, on the mean and rstd rounded to T as the reference's
   are, and vectorise without any pragma. */
#ifndef TGS_NORMALIZATION_H
#define TGS_NORMALIZATION_H

#include <math.h>
#include <stddef.h>

#define TGS_DEFINE_LAYER_NORM(SUFFIX, T)                                                       \
/* y = (x - mean) * rstd * w + b over one row of n; w and b may be NULL */                    \
static inline void tgs_layer_norm_row##SUFFIX(const T* x, const T* w, const T* b, double eps,  \
                                              ptrdiff_t n, T* y, T* mean_out, T* rstd_out)     \
{                                                                                              \
    double s = 0, q = 0;                                                                       \
    _Pragma("omp simd reduction(+:s)")                                                         \
    for (ptrdiff_t j = 0; j < n; ++j)                                                          \
        s += (double)x[j];                                                                     \
    const double mu = s / (double)n;                                                           \
    _Pragma("omp simd reduction(+:q)")                                                         \
    for (ptrdiff_t j = 0; j < n; ++j) {                                                        \
        const double d = (double)x[j] - mu;                                                    \
        q += d * d;                                                                            \
    }                                                                                          \
    const T m = (T)mu, r = (T)(1.0 / sqrt(q / (double)n + eps));                               \
    *mean_out = m;                                                                             \
    *rstd_out = r;                                                                             \
    if (w != NULL && b != NULL)                                                                \
        for (ptrdiff_t j = 0; j < n; ++j) y[j] = (x[j] - m) * r * w[j] + b[j];                 \
    else if (w != NULL)                                                                        \
        for (ptrdiff_t j = 0; j < n; ++j) y[j] = (x[j] - m) * r * w[j];                        \
    else if (b != NULL)                                                                        \
        for (ptrdiff_t j = 0; j < n; ++j) y[j] = (x[j] - m) * r + b[j];                        \
    else                                                                                       \
        for (ptrdiff_t j = 0; j < n; ++j) y[j] = (x[j] - m) * r;                               \
}                                                                                              \
                                                                                               \
/* dx = rstd (g - mean(g) - xhat mean(g xhat)), g = dy w (dy when w is NULL), over one row;    \
   when dw is not NULL, dw[j] += dy xhat and db[j] += dy (this thread's float64 partials) */   \
static inline void tgs_layer_norm_row_backward##SUFFIX(const T* dy, const T* x, const T* w,    \
                                                       T m, T r, ptrdiff_t n, T* dx,           \
                                                       double* dw, double* db)                 \
{                                                                                              \
    double sg = 0, sgx = 0;                                                                    \
    if (w != NULL) {                                                                           \
        _Pragma("omp simd reduction(+:sg,sgx)")                                                \
        for (ptrdiff_t j = 0; j < n; ++j) {                                                    \
            const T g = dy[j] * w[j], xhat = (x[j] - m) * r;                                   \
            sg += (double)g;                                                                   \
            sgx += (double)(g * xhat);                                                         \
        }                                                                                      \
    } else {                                                                                   \
        _Pragma("omp simd reduction(+:sg,sgx)")                                                \
        for (ptrdiff_t j = 0; j < n; ++j) {                                                    \
            const T xhat = (x[j] - m) * r;                                                     \
            sg += (double)dy[j];                                                               \
            sgx += (double)(dy[j] * xhat);                                                     \
        }                                                                                      \
    }                                                                                          \
    const T mean_g = (T)(sg / (double)n), mean_gx = (T)(sgx / (double)n);                      \
    /* dx, and dw/db in the same pass: dy and x are read once more, not twice */               \
    if (dw != NULL && w != NULL)                                                               \
        for (ptrdiff_t j = 0; j < n; ++j) {                                                    \
            const T xhat = (x[j] - m) * r;                                                     \
            dx[j] = r * (dy[j] * w[j] - mean_g - xhat * mean_gx);                              \
            dw[j] += (double)(dy[j] * xhat);                                                   \
            db[j] += (double)dy[j];                                                            \
        }                                                                                      \
    else if (dw != NULL)                                                                       \
        for (ptrdiff_t j = 0; j < n; ++j) {                                                    \
            const T xhat = (x[j] - m) * r;                                                     \
            dx[j] = r * (dy[j] - mean_g - xhat * mean_gx);                                     \
            dw[j] += (double)(dy[j] * xhat);                                                   \
            db[j] += (double)dy[j];                                                            \
        }                                                                                      \
    else if (w != NULL)                                                                        \
        for (ptrdiff_t j = 0; j < n; ++j) {                                                    \
            const T xhat = (x[j] - m) * r;                                                     \
            dx[j] = r * (dy[j] * w[j] - mean_g - xhat * mean_gx);                              \
        }                                                                                      \
    else                                                                                       \
        for (ptrdiff_t j = 0; j < n; ++j) {                                                    \
            const T xhat = (x[j] - m) * r;                                                     \
            dx[j] = r * (dy[j] - mean_g - xhat * mean_gx);                                     \
        }                                                                                      \
}

TGS_DEFINE_LAYER_NORM(f, float)
TGS_DEFINE_LAYER_NORM(d, double)

#endif
