"""Adam's (and AdamW's) update of one parameter in one pass (contract: reference/optim.py).

Each element's p, g, m, v (and v_max) are read once and written back once, where the array
code makes about eight passes with temporaries.  The arithmetic is the reference's, in its
order and in the parameter's float type, with the scalars it computes (adam_scalars); sqrt is
libm's, which GCC turns into the vector square root instruction (-fno-math-errno).  Nothing
assumes finite values: a NaN or inf in the gradient spreads as in the reference.

With `on_team` the parameter is split over the OpenMP team (one region per call, each thread a
slice of whole SIMD registers: team_share); otherwise the calling thread does it alone (which
sizes pay for waking the team is optim.py's choice).
"""
include "_common.pxi"

from cython.parallel cimport parallel
from libc.math cimport sqrt, sqrtf

cdef inline floating sqrt_(floating x) noexcept nogil:
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)


cdef inline floating larger(floating a, floating b) noexcept nogil:
    """max(a, b), NaN if either is NaN (np.maximum); `|`, not `or`, so the loop has no branch
    and vectorises."""
    return b if ((b > a) | (b != b)) else a


cdef void adam_slice(floating* p, const floating* g, floating* m, floating* v, floating* v_max,
                     Py_ssize_t n, const floating* s) noexcept nogil:
    """The update of n elements; s holds the scalars in ADAM_SCALARS order."""
    cdef floating decay = s[0], coupled = s[1], beta1 = s[2], one_minus_beta1 = s[3]
    cdef floating beta2 = s[4], one_minus_beta2 = s[5], step_size = s[6], bias_correction2_sqrt = s[7]
    cdef floating eps = s[8], pj, gj, mj, vj
    cdef bint with_coupled = coupled != 0
    cdef Py_ssize_t j
    for j in range(n):
        pj = p[j] * decay     # exact when decay is 1 (Adam), NaN and inf included
        gj = g[j]
        if with_coupled:
            gj = gj + coupled * pj
        mj = m[j] * beta1 + one_minus_beta1 * gj
        vj = v[j] * beta2 + one_minus_beta2 * gj * gj
        m[j] = mj
        v[j] = vj
        if v_max != NULL:
            vj = larger(v_max[j], vj)
            v_max[j] = vj
        p[j] = pj - step_size * mj / (sqrt_(vj) / bias_correction2_sqrt + eps)


cdef void adam_share(floating* p, const floating* g, floating* m, floating* v, floating* v_max,
                     Py_ssize_t n, const floating* s) noexcept nogil:
    """This thread's slice of the update, inside a parallel region."""
    cdef Py_ssize_t start, count
    team_share(n, &start, &count)
    if count > 0:
        adam_slice(p + start, g + start, m + start, v + start, NULL if v_max == NULL else v_max + start,
                   count, s)


def adam_update(floating[::1] param, const floating[::1] grad, floating[::1] exp_avg,
                floating[::1] exp_avg_sq, floating[::1] max_exp_avg_sq, bint amsgrad, tuple scalars,
                bint on_team):
    """In place on the 1-D contiguous arrays; max_exp_avg_sq is read and written only with amsgrad
    (pass any array of the dtype otherwise); scalars: reference/optim.py's adam_scalars."""
    cdef Py_ssize_t n = param.shape[0], k
    if n == 0:
        return
    cdef floating s[9]
    for k in range(9):
        s[k] = <floating>scalars[k]
    cdef floating* p = &param[0]
    cdef const floating* g = &grad[0]
    cdef floating* m = &exp_avg[0]
    cdef floating* v = &exp_avg_sq[0]
    cdef floating* v_max = &max_exp_avg_sq[0] if amsgrad else NULL
    if not on_team or _threads == 1:
        with nogil:
            adam_slice(p, g, m, v, v_max, n, s)
        return
    with nogil, parallel(num_threads=_threads):
        adam_share(p, g, m, v, v_max, n, s)
