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

Layouts: each operand is a stack of N matrices anywhere in memory (a `Layout`: where each
matrix starts and the distance between its rows), so that the engine's views (the head views
(N, h, L, d) of a packed (N, L, 3E) projection, a transposed dout) are read, and out, dq, dk,
dv written, where they lie; only a row must be contiguous.  What is read across its rows or
more than once (k and v, packed key by key; the chunk's dout) is first copied row by row into
the thread's scratch when its rows lie apart (rows_together), as q is scaled into it anyway.

Threads: forward, the (matrix, query chunk) items are shared out in contiguous runs (a thread
packs k and v again only when its run reaches the next matrix); backward, whole matrices, so
that each thread owns its matrices' dk and dv and no sum is shared.
"""
include "_common.pxi"
include "_panel_gemm.pxi"

import numpy as np
cimport numpy as cnp
from cython.parallel cimport parallel
from libc.math cimport isfinite, log, logf
from libc.stdlib cimport free
from libc.string cimport memset

cnp.import_array()


cdef struct Layout:
    # Where a stack of N matrices (..., R, C) lies, in elements after its first element: row r of
    # matrix n starts at starts[n] + r * ld, and a row's C entries are adjacent.  So a head view
    # (N, h, L, d) of a packed (N, L, 3E) projection is read, and an output written, in place.
    const Py_ssize_t* starts
    Py_ssize_t ld

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


cdef inline bint all_finite(const floating* a, Py_ssize_t rows, Py_ssize_t cols,
                            Py_ssize_t ld) noexcept nogil:
    """Whether the (rows, cols) matrix at a, rows ld apart, holds no NaN/inf: its sum is then
    finite (a sum that overflows says False too, which only sends a matrix to the exact path).
    Rows apart are added column-wise into `lanes` first (a vectorised loop), then summed once:
    a row_sum per row of a head (32 entries) cost ~6% of the causal backward on head views."""
    cdef floating lanes[64]
    cdef floating total = 0
    cdef Py_ssize_t r, j, c0, width
    if ld == cols:
        return isfinite(row_sum(a, rows * cols))
    for c0 in range(0, cols, 64):
        width = min(64, cols - c0)
        for j in range(width):
            lanes[j] = 0
        for r in range(rows):
            for j in range(width):
                lanes[j] += a[r * ld + c0 + j]
        total += row_sum(lanes, width)
    return isfinite(total)


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


cdef void forward_share(const floating* q, Layout ql, const floating* k, Layout kl,
                        const floating* v, Layout vl, floating* out, Layout ol, floating* lse,
                        unsigned char* deferred, Py_ssize_t N, Py_ssize_t L, Py_ssize_t S,
                        Py_ssize_t E, Py_ssize_t Ev, floating scale, bint causal,
                        int* failed) noexcept nogil:
    """This thread's contiguous run of (matrix, query chunk) items; lse (N, L) contiguous."""
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
    cdef floating* k_rows = scratch(q, S * E, failed)              # k's rows together
    cdef Py_ssize_t n, c0, rows, r, i, j, e, keys, visible
    cdef floating m, total
    cdef floating* row
    cdef const floating* q_n
    cdef const floating* k_n
    cdef const floating* v_n
    cdef floating* out_n
    if (kt_packed != NULL and v_packed != NULL and p != NULL and pv != NULL and inv != NULL
            and q_scaled != NULL and k_rows != NULL):
        while item < last:
            n, c0 = item // chunks, (item % chunks) * CHUNK
            item += 1
            q_n, k_n, v_n, out_n = q + ql.starts[n], k + kl.starts[n], v + vl.starts[n], out + ol.starts[n]
            if n != packed_n:
                packed_n = n
                if causal and not all_finite(v_n, S, Ev, vl.ld):
                    deferred[n] = 1
                if deferred[n]:
                    continue
                pack_panels(rows_together(k_n, S, E, kl.ld, k_rows), E, S, 1, E, kt_packed, lanes_s)
                pack_panels(v_n, S, Ev, vl.ld, 1, v_packed, lanes_v)
            elif deferred[n]:
                continue
            rows = min(L - c0, CHUNK)
            keys = min(S, c0 + rows) if causal else S     # the keys any row of the chunk sees
            scale_rows(q_n + c0 * ql.ld, rows, E, ql.ld, scale, q_scaled)
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
                    out_n[(c0 + r) * ol.ld + e] = pv[r * width_v + e] * inv[r]
    free(kt_packed)
    free(v_packed)
    free(p)
    free(pv)
    free(inv)
    free(q_scaled)
    free(k_rows)


cdef inline const floating* rows_together(const floating* src, Py_ssize_t rows, Py_ssize_t cols,
                                          Py_ssize_t ld, floating* dst) noexcept nogil:
    """The (rows, cols) matrix at src, rows ld apart, with its rows adjacent: src itself when they
    are, else copied row by row into dst.  For what is read across the rows (k^T, v^T packed
    key by key) or more than once (dout, by every panel of keys): rows far apart (a head view's
    are 3E apart) fall on few sets of the L1 cache, where such reads miss.  (The transformer's
    attention, 64 matrices of 128 x 32: backward on head views within ~5% of contiguous ones.)"""
    cdef Py_ssize_t r, j
    if ld == cols:
        return src
    for r in range(rows):
        for j in range(cols):
            dst[r * cols + j] = src[r * ld + j]
    return dst


cdef inline void scale_rows(const floating* src, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t lds,
                            floating scale, floating* dst) noexcept nogil:
    """dst (rows, cols), contiguous = scale * the (rows, cols) matrix at src, rows lds apart."""
    cdef Py_ssize_t r, j
    for r in range(rows):
        for j in range(cols):
            dst[r * cols + j] = scale * src[r * lds + j]


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


cdef void backward_share(const floating* dout, Layout dol, const floating* q, Layout ql,
                         const floating* k, Layout kl, const floating* v, Layout vl,
                         const floating* out, Layout ol, const floating* lse, floating* dq,
                         Layout dql, floating* dk, Layout dkl, floating* dv, Layout dvl,
                         unsigned char* deferred, Py_ssize_t N, Py_ssize_t L, Py_ssize_t S,
                         Py_ssize_t E, Py_ssize_t Ev, floating scale, bint causal,
                         int* failed) noexcept nogil:
    """This thread's contiguous run of whole matrices; lse (N, L) contiguous."""
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
    cdef floating* k_rows = scratch(q, S * E, failed)              # k's, v's and the chunk's
    cdef floating* v_rows = scratch(q, S * Ev, failed)             # dout's rows together
    cdef floating* dout_rows = scratch(q, rows_max * Ev, failed)
    cdef const floating* k_m
    cdef const floating* v_m
    cdef const floating* dout_c
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
    cdef const floating* v_n
    cdef const floating* dout_n
    cdef const floating* out_n
    cdef floating* dq_n
    cdef floating* dk_n
    cdef floating* dv_n
    if (kt_packed != NULL and vt_packed != NULL and k_packed != NULL and p != NULL and ds != NULL
            and packed != NULL and dq_rows != NULL and q_t != NULL and dout_t != NULL
            and part != NULL and dk_t != NULL and dv_t != NULL and q_scaled != NULL
            and k_rows != NULL and v_rows != NULL and dout_rows != NULL):
        while n < last:
            q_n, k_n, v_n = q + ql.starts[n], k + kl.starts[n], v + vl.starts[n]
            dout_n, out_n = dout + dol.starts[n], out + ol.starts[n]
            dq_n, dk_n, dv_n = dq + dql.starts[n], dk + dkl.starts[n], dv + dvl.starts[n]
            if causal and not (all_finite(q_n, L, E, ql.ld) and all_finite(k_n, S, E, kl.ld)
                               and all_finite(dout_n, L, Ev, dol.ld)):
                deferred[n] = 1
                n += 1
                continue
            k_m, v_m = rows_together(k_n, S, E, kl.ld, k_rows), rows_together(v_n, S, Ev, vl.ld, v_rows)
            pack_panels(k_m, E, S, 1, E, kt_packed, lanes_s)
            pack_panels(v_m, Ev, S, 1, Ev, vt_packed, lanes_s)
            pack_panels(k_m, S, E, E, 1, k_packed, lanes_e)
            memset(dk_t, 0, E * width_s * sizeof(floating))
            memset(dv_t, 0, Ev * width_s * sizeof(floating))
            c0 = 0
            while c0 < L:
                rows = min(L - c0, CHUNK)
                keys = min(S, c0 + rows) if causal else S
                scale_rows(q_n + c0 * ql.ld, rows, E, ql.ld, scale, q_scaled)
                visible_scores(rows, E, keys, q_scaled, E, kt_packed, lanes_s, p, width_s, causal, c0)
                dout_c = rows_together(dout_n + c0 * dol.ld, rows, Ev, dol.ld, dout_rows)
                visible_scores(rows, Ev, keys, dout_c, Ev, vt_packed, lanes_s, ds, width_s, causal, c0)
                for r in range(rows):
                    i = c0 + r
                    visible = seen(i, S, causal)
                    prow, dsrow = p + r * width_s, ds + r * width_s
                    D = row_dot(dout_c + r * Ev, out_n + i * ol.ld, Ev)
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
                        dq_n[(c0 + r) * dql.ld + e] = scale * dq_rows[r * width_e + e]
                # dv^T += dout^T p and dk^T += q^T ds over the chunk's queries
                transpose_into(dout_c, rows, Ev, Ev, dout_t, rows)
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
                    dk_n[j * dkl.ld + e] = dk_t[e * width_s + j]
                for e in range(Ev):
                    dv_n[j * dvl.ld + e] = dv_t[e * width_s + j]
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
    free(k_rows)
    free(v_rows)
    free(dout_rows)


cdef int team_for(Py_ssize_t N, Py_ssize_t L, Py_ssize_t S, Py_ssize_t E, Py_ssize_t Ev,
                  Py_ssize_t items) noexcept nogil:
    """Threads for a call: the module's team, unless the call is too small to pay for it."""
    if <double> N * L * S * (E + Ev) < TEAM_MIN_WORK:
        return 1
    return max(1, min(_threads, items))


cdef object matrix_starts(cnp.ndarray a):
    """(N,) intp: where each matrix of a (..., R, C) starts, in elements after a's first element
    (the leading axes taken in C order)."""
    cdef int lead = a.ndim - 2, axis
    cdef Py_ssize_t N = 1, n, rest, offset
    for axis in range(lead):
        N *= a.shape[axis]
    starts_arr = np.empty(N, dtype=np.intp)
    cdef Py_ssize_t[::1] starts = starts_arr
    for n in range(N):
        rest, offset = n, 0
        for axis in range(lead - 1, -1, -1):
            offset += rest % a.shape[axis] * (a.strides[axis] // a.itemsize)
            rest //= a.shape[axis]
        starts[n] = offset
    return starts_arr


cdef Layout layout(cnp.ndarray a, Py_ssize_t[::1] starts):
    """a's Layout (the caller keeps `starts`, matrix_starts(a), alive while it is used)."""
    cdef Layout found
    found.starts = &starts[0]
    found.ld = a.strides[a.ndim - 2] // a.itemsize
    return found


cdef inline floating* data(const floating* like, cnp.ndarray a):
    """a's first element, as like's dtype."""
    return <floating*> cnp.PyArray_DATA(a)


cdef object forward_team(const floating* like, cnp.ndarray q, cnp.ndarray k, cnp.ndarray v,
                         cnp.ndarray out, cnp.ndarray lse, double scale, bint causal):
    cdef Py_ssize_t L = q.shape[q.ndim - 2], E = q.shape[q.ndim - 1]
    cdef Py_ssize_t S = k.shape[k.ndim - 2], Ev = v.shape[v.ndim - 1]
    at = [matrix_starts(a) for a in (q, k, v, out)]
    cdef Py_ssize_t N = len(at[0])
    cdef Layout ql = layout(q, at[0]), kl = layout(k, at[1]), vl = layout(v, at[2]), ol = layout(out, at[3])
    cdef const floating* q_data = data(like, q)
    cdef const floating* k_data = data(like, k)
    cdef const floating* v_data = data(like, v)
    cdef floating* out_data = data(like, out)
    cdef floating* lse_data = data(like, lse)
    cdef int failed = 0
    cdef int threads = team_for(N, L, S, E, Ev, N * ((L + CHUNK - 1) // CHUNK))
    deferred_arr = np.zeros(N, dtype=np.uint8)
    cdef unsigned char[::1] deferred = deferred_arr
    with nogil, parallel(num_threads=threads):
        forward_share(q_data, ql, k_data, kl, v_data, vl, out_data, ol, lse_data, &deferred[0],
                      N, L, S, E, Ev, <floating> scale, causal, &failed)
    if failed:
        raise MemoryError("attention_forward: out of memory for a thread's scratch")
    return deferred_arr


cdef object backward_team(const floating* like, cnp.ndarray dout, cnp.ndarray q, cnp.ndarray k,
                          cnp.ndarray v, cnp.ndarray out, cnp.ndarray lse, cnp.ndarray dq,
                          cnp.ndarray dk, cnp.ndarray dv, double scale, bint causal):
    cdef Py_ssize_t L = q.shape[q.ndim - 2], E = q.shape[q.ndim - 1]
    cdef Py_ssize_t S = k.shape[k.ndim - 2], Ev = v.shape[v.ndim - 1]
    at = [matrix_starts(a) for a in (dout, q, k, v, out, dq, dk, dv)]
    cdef Py_ssize_t N = len(at[0])
    cdef Layout dol = layout(dout, at[0]), ql = layout(q, at[1]), kl = layout(k, at[2])
    cdef Layout vl = layout(v, at[3]), ol = layout(out, at[4]), dql = layout(dq, at[5])
    cdef Layout dkl = layout(dk, at[6]), dvl = layout(dv, at[7])
    cdef const floating* dout_data = data(like, dout)
    cdef const floating* q_data = data(like, q)
    cdef const floating* k_data = data(like, k)
    cdef const floating* v_data = data(like, v)
    cdef const floating* out_data = data(like, out)
    cdef const floating* lse_data = data(like, lse)
    cdef floating* dq_data = data(like, dq)
    cdef floating* dk_data = data(like, dk)
    cdef floating* dv_data = data(like, dv)
    cdef int failed = 0
    cdef int threads = team_for(N, L, S, E, Ev, N)
    deferred_arr = np.zeros(N, dtype=np.uint8)
    cdef unsigned char[::1] deferred = deferred_arr
    with nogil, parallel(num_threads=threads):
        backward_share(dout_data, dol, q_data, ql, k_data, kl, v_data, vl, out_data, ol, lse_data,
                       dq_data, dql, dk_data, dkl, dv_data, dvl, &deferred[0], N, L, S, E, Ev,
                       <floating> scale, causal, &failed)
    if failed:
        raise MemoryError("attention_backward: out of memory for a thread's scratch")
    return deferred_arr


def attention_forward(cnp.ndarray q, cnp.ndarray k, cnp.ndarray v, cnp.ndarray out,
                      cnp.ndarray lse, double scale, bint causal):
    """Fills out (..., L, Ev) (any Layout) and lse (..., L) (C-contiguous) from q (..., L, E),
    k (..., S, E), v (..., S, Ev) (any Layouts) of one float dtype (checked by the caller,
    attention.py); returns deferred (N,) uint8: 1 for the matrices left to the caller (see above)."""
    if q.dtype.num == cnp.NPY_FLOAT32:
        return forward_team(<float*> NULL, q, k, v, out, lse, scale, causal)
    return forward_team(<double*> NULL, q, k, v, out, lse, scale, causal)


def attention_backward(cnp.ndarray dout, cnp.ndarray q, cnp.ndarray k, cnp.ndarray v,
                       cnp.ndarray out, cnp.ndarray lse, cnp.ndarray dq, cnp.ndarray dk,
                       cnp.ndarray dv, double scale, bint causal):
    """Fills dq, dk, dv; returns deferred, as attention_forward does."""
    if q.dtype.num == cnp.NPY_FLOAT32:
        return backward_team(<float*> NULL, dout, q, k, v, out, lse, dq, dk, dv, scale, causal)
    return backward_team(<double*> NULL, dout, q, k, v, out, lse, dq, dk, dv, scale, causal)
