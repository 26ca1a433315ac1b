"""Fused scaled dot-product attention, forward and backward: the L x S scores never leave the
kernel, and the blocks the causal mask hides are never computed.

Contract and notation: kernels/API.md and kernels/reference/attention.py; attention.py (the
wrapper) checks the arguments with the reference's messages before calling in here.

Every product is the register-blocked panel GEMM of _panel_gemm.h, by a matrix packed once per
attention matrix: k^T and v for the forward; k^T, v^T and k for the backward.  The queries go
in chunks of at most CHUNK rows, so that a thread's scratch is O(CHUNK x S), whatever L is
(nothing of size L x S is kept between the passes: the backward recomputes p from lse).
Under the causal mask (query i sees keys j <= i) each product skips what is hidden:
  - scores, s = q k^T and dp = dout v^T: a panel of `lanes` keys is computed only for the
    queries that see one of them (visible_scores);
  - out = p v and dq = ds k: a group of GROUP query rows runs over the keys its last row sees
    (visible_rows_product);
  - dk^T = q^T ds and dv^T = dout^T p, summed over the queries: a panel of keys runs over the
    queries that see it (visible_keys_product).  Written transposed, so that p and ds are
    packed row by row (a vectorised copy) instead of transposed; dk and dv are transposed once
    per matrix at the end.
The few hidden pairs inside those blocks enter the products as exact zeros of p and ds.  A zero
times a NaN or inf would be NaN, though, where the reference lets a hidden pair take no part,
so under the causal mask a matrix whose multiplied operands (v forward; q, k, dout backward)
hold a NaN or inf is left to the wrapper, which computes it with the reference (`deferred`).

Threads: forward, the (matrix, query chunk) items are shared out in contiguous runs (a thread
packs k and v again only when its run reaches the next matrix); backward, whole matrices, so
that each thread owns its matrices' dk and dv and no sum is shared.
"""
include "_common.pxi"
include "_panel_gemm.pxi"

import numpy as np
from cython.parallel cimport parallel
from libc.math cimport isfinite, log, logf
from libc.stdlib cimport free
from libc.string cimport memset

# Query rows per chunk: bounds each thread's scratch (a few CHUNK x S arrays).
cdef Py_ssize_t CHUNK = 256
# Query rows per group of visible_rows_product: the rows of a group run over the keys its last
# row sees, so the causal triangle wastes < GROUP/2 keys per row; 12 rows are two 6-row blocks
# of the narrow tile.
cdef Py_ssize_t GROUP = 12
# Below this many multiply-adds a call runs on the calling thread: waking the team costs more.
cdef double TEAM_MIN_WORK = 1 << 18


cdef inline floating log_(floating x) noexcept nogil:
    if floating is float:
        return logf(x)
    else:
        return log(x)


cdef inline Py_ssize_t seen(Py_ssize_t i, Py_ssize_t S, bint causal) noexcept nogil:
    """Keys query i sees: j < i + 1 under the causal mask (top-left aligned), else all S."""
    return min(i + 1, S) if causal else S


cdef inline bint all_finite(const floating* a, Py_ssize_t n) noexcept nogil:
    """Whether a[:n] holds no NaN/inf: their sum is then finite (a sum that overflows says
    False too, which only sends a matrix to the exact path)."""
    return isfinite(row_sum(a, n))


cdef void visible_scores(Py_ssize_t rows, Py_ssize_t K, Py_ssize_t cols, const floating* a,
                         Py_ssize_t lda, const floating* packed, Py_ssize_t lanes, floating* c,
                         Py_ssize_t ldc, bint causal, Py_ssize_t first) noexcept nogil:
    """c[r, :cols] = a[r] @ P (P packed: K rows, `cols` columns in panels of `lanes`), where row r
    is query first + r; causal: a panel only for the rows that see one of its keys (the other
    rows' entries of that panel are left unwritten)."""
    cdef Py_ssize_t q, r0
    for q in range((cols + lanes - 1) // lanes):
        r0 = max(0, q * lanes - first) if causal else 0
        if r0 >= rows:
            break
        panel_gemm(rows - r0, K, 1, lanes, a + r0 * lda, lda, packed + q * K * lanes,
                   c + r0 * ldc + q * lanes, ldc)


cdef void visible_rows_product(Py_ssize_t rows, const floating* a, Py_ssize_t lda,
                               const floating* packed, Py_ssize_t K, Py_ssize_t cols,
                               Py_ssize_t lanes, floating* c, Py_ssize_t ldc, bint causal,
                               Py_ssize_t first) noexcept nogil:
    """c[r] = a[r, :K] @ P (P packed: K rows (keys), `cols` columns), row r being query
    first + r; causal: each GROUP of rows only over the keys its last row sees (a is zero
    beyond each row's own)."""
    cdef Py_ssize_t panels = (cols + lanes - 1) // lanes, r0 = 0, r1, keys, q
    while r0 < rows:
        r1 = min(rows, r0 + GROUP) if causal else rows
        keys = min(K, first + r1) if causal else K
        for q in range(panels):   # one call per panel: the panels are K rows apart, not `keys`
            panel_gemm(r1 - r0, keys, 1, lanes, a + r0 * lda, lda, packed + q * K * lanes,
                       c + r0 * ldc + q * lanes, ldc)
        r0 = r1


cdef Py_ssize_t visible_keys_product(Py_ssize_t rows, const floating* a, Py_ssize_t lda,
                                     const floating* packed, Py_ssize_t K, Py_ssize_t cols,
                                     Py_ssize_t lanes, floating* c, Py_ssize_t ldc, bint causal,
                                     Py_ssize_t first) noexcept nogil:
    """c[:, panel] = a[:, k0:K] @ P[k0:K, panel] for each panel of `lanes` keys, where P's K rows
    are the queries first .. first + K - 1 and k0 the first of them that sees one of the panel's
    keys (0 without the mask).  Returns how many panels were computed: a prefix, since k0 only
    grows; the panels after it have no visible pair in these rows."""
    cdef Py_ssize_t q, k0
    for q in range((cols + lanes - 1) // lanes):
        k0 = max(0, q * lanes - first) if causal else 0
        if k0 >= K:
            return q
        panel_gemm(rows, K - k0, 1, lanes, a + k0, lda, packed + q * K * lanes + k0 * lanes,
                   c + q * lanes, ldc)
    return (cols + lanes - 1) // lanes


cdef void forward_share(const floating* q, const floating* k, const floating* v, floating* out,
                        floating* lse, unsigned char* deferred, Py_ssize_t N, Py_ssize_t L,
                        Py_ssize_t S, Py_ssize_t E, Py_ssize_t Ev, floating scale, bint causal,
                        int* failed) noexcept nogil:
    """This thread's contiguous run of (matrix, query chunk) items."""
    cdef Py_ssize_t chunks = (L + CHUNK - 1) // CHUNK, items = N * chunks
    cdef Py_ssize_t size = team_size(), rank = team_rank()
    cdef Py_ssize_t item = rank * items // size, last = (rank + 1) * items // size
    cdef Py_ssize_t lanes_s = panel_width(q, S), lanes_v = panel_width(q, Ev)
    cdef Py_ssize_t width_s = (S + lanes_s - 1) // lanes_s * lanes_s
    cdef Py_ssize_t width_v = (Ev + lanes_v - 1) // lanes_v * lanes_v
    cdef Py_ssize_t rows_max = min(L, CHUNK), packed_n = -1
    cdef floating* kt_packed = scratch(q, E * width_s, failed)     # k^T: E rows, S columns
    cdef floating* v_packed = scratch(q, S * width_v, failed)      # v: S rows, Ev columns
    cdef floating* p = scratch(q, rows_max * width_s, failed)      # the chunk's scores, then exps
    cdef floating* pv = scratch(q, rows_max * width_v, failed)     # exps @ v
    cdef floating* inv = scratch(q, rows_max, failed)              # 1 / each row's sum of exps
    cdef floating* q_scaled = scratch(q, rows_max * E, failed)     # scale q: scores come scaled
    cdef Py_ssize_t n, c0, rows, r, i, j, e, keys, visible
    cdef floating m, total
    cdef floating* row
    if (kt_packed != NULL and v_packed != NULL and p != NULL and pv != NULL and inv != NULL
            and q_scaled != NULL):
        while item < last:
            n, c0 = item // chunks, (item % chunks) * CHUNK
            item += 1
            if n != packed_n:
                packed_n = n
                if causal and not all_finite(v + n * S * Ev, S * Ev):
                    deferred[n] = 1
                if deferred[n]:
                    continue
                pack_panels(k + n * S * E, E, S, 1, E, kt_packed, lanes_s)
                pack_panels(v + n * S * Ev, S, Ev, Ev, 1, v_packed, lanes_v)
            elif deferred[n]:
                continue
            rows = min(L - c0, CHUNK)
            keys = min(S, c0 + rows) if causal else S     # the keys any row of the chunk sees
            scale_rows(q + (n * L + c0) * E, rows * E, scale, q_scaled)
            visible_scores(rows, E, keys, q_scaled, E, kt_packed, lanes_s, p, width_s, causal, c0)
            for r in range(rows):
                i = c0 + r
                visible = seen(i, S, causal)
                row = p + r * width_s
                m = row_max(row, NULL, visible)
                for j in range(visible):
                    row[j] = exp_(row[j] - m)
                total = row_sum(row, visible)
                lse[n * L + i] = m + log_(total)
                inv[r] = 1 / total
                for j in range(visible, min(keys, visible + GROUP)):   # hidden pairs the product reads
                    row[j] = 0
            visible_rows_product(rows, p, width_s, v_packed, S, Ev, lanes_v, pv, width_v, causal, c0)
            for r in range(rows):
                for e in range(Ev):
                    out[(n * L + c0 + r) * Ev + e] = pv[r * width_v + e] * inv[r]
    free(kt_packed)
    free(v_packed)
    free(p)
    free(pv)
    free(inv)
    free(q_scaled)


cdef inline void scale_rows(const floating* src, Py_ssize_t n, floating scale,
                            floating* dst) noexcept nogil:
    """dst[:n] = scale * src[:n]."""
    cdef Py_ssize_t j
    for j in range(n):
        dst[j] = scale * src[j]


cdef inline void transpose_into(const floating* src, Py_ssize_t rows, Py_ssize_t cols,
                                Py_ssize_t lds, floating* dst, Py_ssize_t ldd) noexcept nogil:
    """dst[c, r] = src[r, c] for the (rows, cols) matrix src."""
    cdef Py_ssize_t r, c
    for c in range(cols):
        for r in range(rows):
            dst[c * ldd + r] = src[r * lds + c]


cdef inline void add_columns(const floating* src, floating* dst, Py_ssize_t rows, Py_ssize_t cols,
                             Py_ssize_t ld) noexcept nogil:
    """dst[r, :cols] += src[r, :cols], both `ld` apart."""
    cdef Py_ssize_t r, c
    for r in range(rows):
        for c in range(cols):
            dst[r * ld + c] += src[r * ld + c]


cdef void backward_share(const floating* dout, const floating* q, const floating* k,
                         const floating* v, const floating* out, const floating* lse,
                         floating* dq, floating* dk, floating* dv, unsigned char* deferred,
                         Py_ssize_t N, Py_ssize_t L, Py_ssize_t S, Py_ssize_t E, Py_ssize_t Ev,
                         floating scale, bint causal, int* failed) noexcept nogil:
    """This thread's contiguous run of whole matrices."""
    cdef Py_ssize_t size = team_size(), rank = team_rank()
    cdef Py_ssize_t n = rank * N // size, last = (rank + 1) * N // size
    cdef Py_ssize_t lanes_s = panel_width(q, S), lanes_e = panel_width(q, E)
    cdef Py_ssize_t width_s = (S + lanes_s - 1) // lanes_s * lanes_s
    cdef Py_ssize_t width_e = (E + lanes_e - 1) // lanes_e * lanes_e
    cdef Py_ssize_t rows_max = min(L, CHUNK), features = max(E, Ev)
    cdef floating* kt_packed = scratch(q, E * width_s, failed)     # k^T: E rows, S columns
    cdef floating* vt_packed = scratch(q, Ev * width_s, failed)    # v^T: Ev rows, S columns
    cdef floating* k_packed = scratch(q, S * width_e, failed)      # k: S rows, E columns
    cdef floating* p = scratch(q, rows_max * width_s, failed)      # scores, then p
    cdef floating* ds = scratch(q, rows_max * width_s, failed)     # dp, then ds
    cdef floating* packed = scratch(q, rows_max * width_s, failed) # p or ds, packed by key panels
    cdef floating* dq_rows = scratch(q, rows_max * width_e, failed)
    cdef floating* q_scaled = scratch(q, rows_max * E, failed)     # the chunk's scale q
    cdef floating* q_t = scratch(q, E * rows_max, failed)          # its transpose, and dout^T
    cdef floating* dout_t = scratch(q, Ev * rows_max, failed)
    cdef floating* part = scratch(q, features * width_s, failed)   # one chunk's dk^T or dv^T
    cdef floating* dk_t = scratch(q, E * width_s, failed)          # sums over the chunks
    cdef floating* dv_t = scratch(q, Ev * width_s, failed)
    cdef Py_ssize_t c0, rows, r, i, j, e, keys, visible, done
    cdef Py_ssize_t zeroed = max(GROUP, lanes_s)   # hidden columns past a row's own that are read
    cdef floating D, l, pij
    cdef floating* prow
    cdef floating* dsrow
    cdef const floating* q_n
    cdef const floating* k_n
    cdef const floating* dout_n
    if (kt_packed != NULL and vt_packed != NULL and k_packed != NULL and p != NULL and ds != NULL
            and packed != NULL and dq_rows != NULL and q_t != NULL and dout_t != NULL
            and part != NULL and dk_t != NULL and dv_t != NULL and q_scaled != NULL):
        while n < last:
            q_n, k_n, dout_n = q + n * L * E, k + n * S * E, dout + n * L * Ev
            if causal and not (all_finite(q_n, L * E) and all_finite(k_n, S * E)
                               and all_finite(dout_n, L * Ev)):
                deferred[n] = 1
                n += 1
                continue
            pack_panels(k_n, E, S, 1, E, kt_packed, lanes_s)
            pack_panels(v + n * S * Ev, Ev, S, 1, Ev, vt_packed, lanes_s)
            pack_panels(k_n, S, E, E, 1, k_packed, lanes_e)
            memset(dk_t, 0, E * width_s * sizeof(floating))
            memset(dv_t, 0, Ev * width_s * sizeof(floating))
            c0 = 0
            while c0 < L:
                rows = min(L - c0, CHUNK)
                keys = min(S, c0 + rows) if causal else S
                scale_rows(q_n + c0 * E, rows * E, scale, q_scaled)
                visible_scores(rows, E, keys, q_scaled, E, kt_packed, lanes_s, p, width_s, causal, c0)
                visible_scores(rows, Ev, keys, dout_n + c0 * Ev, Ev, vt_packed, lanes_s, ds,
                               width_s, causal, c0)
                for r in range(rows):
                    i = c0 + r
                    visible = seen(i, S, causal)
                    prow, dsrow = p + r * width_s, ds + r * width_s
                    D = row_dot(dout_n + i * Ev, out + (n * L + i) * Ev, Ev)
                    l = lse[n * L + i]
                    for j in range(visible):
                        pij = exp_(prow[j] - l)
                        prow[j] = pij
                        dsrow[j] = pij * (dsrow[j] - D)
                    for j in range(visible, min(keys, visible + zeroed)):   # what the products read
                        prow[j] = 0
                        dsrow[j] = 0
                # dq = scale ds k, the chunk's rows
                visible_rows_product(rows, ds, width_s, k_packed, S, E, lanes_e, dq_rows, width_e,
                                     causal, c0)
                for r in range(rows):
                    for e in range(E):
                        dq[(n * L + c0 + r) * E + e] = scale * dq_rows[r * width_e + e]
                # dv^T += dout^T p and dk^T += q^T ds over the chunk's queries
                transpose_into(dout_n + c0 * Ev, rows, Ev, Ev, dout_t, rows)
                transpose_into(q_scaled, rows, E, E, q_t, rows)     # dk^T comes scaled
                pack_panels(p, rows, keys, width_s, 1, packed, lanes_s)
                done = visible_keys_product(Ev, dout_t, rows, packed, rows, keys, lanes_s, part,
                                            width_s, causal, c0)
                add_columns(part, dv_t, Ev, min(keys, done * lanes_s), width_s)
                pack_panels(ds, rows, keys, width_s, 1, packed, lanes_s)
                done = visible_keys_product(E, q_t, rows, packed, rows, keys, lanes_s, part,
                                            width_s, causal, c0)
                add_columns(part, dk_t, E, min(keys, done * lanes_s), width_s)
                c0 += rows
            for j in range(S):
                for e in range(E):
                    dk[(n * S + j) * E + e] = dk_t[e * width_s + j]
                for e in range(Ev):
                    dv[(n * S + j) * Ev + e] = dv_t[e * width_s + j]
            n += 1
    free(kt_packed)
    free(vt_packed)
    free(k_packed)
    free(p)
    free(ds)
    free(packed)
    free(dq_rows)
    free(q_t)
    free(q_scaled)
    free(dout_t)
    free(part)
    free(dk_t)
    free(dv_t)


cdef int team_for(Py_ssize_t N, Py_ssize_t L, Py_ssize_t S, Py_ssize_t E, Py_ssize_t Ev,
                  Py_ssize_t items) noexcept nogil:
    """Threads for a call: the module's team, unless the call is too small to pay for it."""
    if <double> N * L * S * (E + Ev) < TEAM_MIN_WORK:
        return 1
    return max(1, min(_threads, items))


def attention_forward(const floating[:, :, ::1] q, const floating[:, :, ::1] k,
                      const floating[:, :, ::1] v, double scale, bint causal):
    """(out, lse, deferred): deferred[n] = 1 for the matrices left to the caller (see above)."""
    cdef Py_ssize_t N = q.shape[0], L = q.shape[1], E = q.shape[2], S = k.shape[1], Ev = v.shape[2]
    cdef int failed = 0
    cdef int threads = team_for(N, L, S, E, Ev, N * ((L + CHUNK - 1) // CHUNK))
    dtype = np.float32 if floating is float else np.float64
    out_arr = np.empty((N, L, Ev), dtype=dtype)    # every element written (or by the caller:
    lse_arr = np.empty((N, L), dtype=dtype)        # a deferred matrix)
    deferred_arr = np.zeros(N, dtype=np.uint8)
    cdef floating[:, :, ::1] out = out_arr
    cdef floating[:, ::1] lse = lse_arr
    cdef unsigned char[::1] deferred = deferred_arr
    with nogil, parallel(num_threads=threads):
        forward_share(&q[0, 0, 0], &k[0, 0, 0], &v[0, 0, 0], &out[0, 0, 0], &lse[0, 0],
                      &deferred[0], N, L, S, E, Ev, <floating> scale, causal, &failed)
    if failed:
        raise MemoryError("attention_forward: out of memory for a thread's scratch")
    return out_arr, lse_arr, deferred_arr


def attention_backward(const floating[:, :, ::1] dout, const floating[:, :, ::1] q,
                       const floating[:, :, ::1] k, const floating[:, :, ::1] v,
                       const floating[:, :, ::1] out, const floating[:, ::1] lse, double scale,
                       bint causal):
    """(dq, dk, dv, deferred)."""
    cdef Py_ssize_t N = q.shape[0], L = q.shape[1], E = q.shape[2], S = k.shape[1], Ev = v.shape[2]
    cdef int failed = 0
    cdef int threads = team_for(N, L, S, E, Ev, N)
    dtype = np.float32 if floating is float else np.float64
    dq_arr = np.empty((N, L, E), dtype=dtype)
    dk_arr = np.empty((N, S, E), dtype=dtype)
    dv_arr = np.empty((N, S, Ev), dtype=dtype)
    deferred_arr = np.zeros(N, dtype=np.uint8)
    cdef floating[:, :, ::1] dq = dq_arr
    cdef floating[:, :, ::1] dk = dk_arr
    cdef floating[:, :, ::1] dv = dv_arr
    cdef unsigned char[::1] deferred = deferred_arr
    with nogil, parallel(num_threads=threads):
        backward_share(&dout[0, 0, 0], &q[0, 0, 0], &k[0, 0, 0], &v[0, 0, 0], &out[0, 0, 0],
                       &lse[0, 0], &dq[0, 0, 0], &dk[0, 0, 0], &dv[0, 0, 0], &deferred[0],
                       N, L, S, E, Ev, <floating> scale, causal, &failed)
    if failed:
        raise MemoryError("attention_backward: out of memory for a thread's scratch")
    return dq_arr, dk_arr, dv_arr, deferred_arr
