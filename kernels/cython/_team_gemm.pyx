# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Matrix products on the kernels' OpenMP team: each thread calls a single-threaded BLAS GEMM
on its share (a block of the batch, of C's rows, or of C's columns).

Why not NumPy's matmul: NumPy's OpenBLAS runs its own thread pool, whose idle threads spin for
~0.1 s after every call unless OPENBLAS_THREAD_TIMEOUT was set before NumPy loaded.  The
recurrent, conv and attention kernels run on an OpenMP team between those GEMMs, and on a
2-core machine the spinning threads took the cores from it (lstm_lm ~1.7x slower when a script
imported numpy first).  With every product of the engine on this one team, NumPy's pool is
never woken, whatever was imported first; the caller (matmul.py) holds the BLAS libraries at
one thread for the duration of each call so that the team's threads do not wake theirs.

Operands are strided batches of matrices in which one of the last two axes has unit stride
(C order, or a transposed view: no copy), passed as pointer, batch stride, leading dimension
and whether each matrix is stored transposed.
"""
from cpython.pycapsule cimport PyCapsule_GetName, PyCapsule_GetPointer
from cython cimport floating
from cython.parallel cimport parallel, threadid
cimport numpy as cnp

cnp.import_array()

# BLAS's Fortran GEMMs: SciPy's (from its cython_blas, as `cimport` would, but without needing
# SciPy's .pxd files at build time: pip builds in an isolated environment that has only NumPy and
# Cython), or another library's handed over by use_blas: matmul.py hands over NumPy's own
# OpenBLAS, whose 64-bit-integer ("ILP64") GEMMs take int64 sizes.
ctypedef void (*sgemm_t)(char *, char *, int *, int *, int *, float *, float *, int *, float *, int *,
                         float *, float *, int *) noexcept nogil
ctypedef void (*dgemm_t)(char *, char *, int *, int *, int *, double *, double *, int *, double *, int *,
                         double *, double *, int *) noexcept nogil
ctypedef void (*sgemm64_t)(char *, char *, long long *, long long *, long long *, float *, float *,
                           long long *, float *, long long *, float *, float *, long long *) noexcept nogil
ctypedef void (*dgemm64_t)(char *, char *, long long *, long long *, long long *, double *, double *,
                           long long *, double *, long long *, double *, double *, long long *) noexcept nogil
cdef sgemm_t sgemm
cdef dgemm_t dgemm
cdef sgemm64_t sgemm64 = NULL
cdef dgemm64_t dgemm64 = NULL


def _load_blas():
    global sgemm, dgemm
    from scipy.linalg import cython_blas
    capsules = cython_blas.__pyx_capi__
    sgemm = <sgemm_t> PyCapsule_GetPointer(capsules["sgemm"], PyCapsule_GetName(capsules["sgemm"]))
    dgemm = <dgemm_t> PyCapsule_GetPointer(capsules["dgemm"], PyCapsule_GetName(capsules["dgemm"]))


_load_blas()


def use_blas(size_t sgemm_address, size_t dgemm_address):
    """Run the team's GEMMs on the ILP64 Fortran sgemm and dgemm at these addresses (both
    non-zero), or back on SciPy's (both zero)."""
    global sgemm64, dgemm64
    if (sgemm_address == 0) != (dgemm_address == 0):
        raise ValueError("use_blas: give both GEMMs' addresses, or neither")
    sgemm64 = <sgemm64_t> sgemm_address
    dgemm64 = <dgemm64_t> dgemm_address


cdef inline void gemm_block(char ta, char tb, int m, int n, int k, floating *x, int ldx,
                            floating *y, int ldy, floating *c, int ldc) noexcept nogil:
    # column-major: C^T (m x n) = op(x) (m x k) op(y) (k x n)
    cdef floating one = 1, zero = 0
    cdef long long m64 = m, n64 = n, k64 = k, ldx64 = ldx, ldy64 = ldy, ldc64 = ldc
    if floating is float:
        if sgemm64 != NULL:
            sgemm64(&ta, &tb, &m64, &n64, &k64, &one, x, &ldx64, y, &ldy64, &zero, c, &ldc64)
        else:
            sgemm(&ta, &tb, &m, &n, &k, &one, x, &ldx, y, &ldy, &zero, c, &ldc)
    else:
        if dgemm64 != NULL:
            dgemm64(&ta, &tb, &m64, &n64, &k64, &one, x, &ldx64, y, &ldy64, &zero, c, &ldc64)
        else:
            dgemm(&ta, &tb, &m, &n, &k, &one, x, &ldx, y, &ldy, &zero, c, &ldc)


cdef void team_gemm(floating *a, floating *b, floating *c, Py_ssize_t batch, int M, int N, int K,
                    Py_ssize_t a_batch, int lda, bint a_trans, Py_ssize_t b_batch, int ldb,
                    bint b_trans, int threads) noexcept nogil:
    """c[i] = a[i] @ b[i] (row-major, c C-contiguous) for i < batch.

    In BLAS's column-major terms C^T = B^T A^T: B is the left operand, stored as B^T
    ('N', ld N) when C-ordered, as B ('T') when a transposed view; likewise A on the right."""
    cdef char tb = b'T' if b_trans else b'N'
    cdef char ta = b'T' if a_trans else b'N'
    cdef int tid, rows, cols, i0, i1, j0, j1, chunk
    cdef Py_ssize_t i, first, last
    with parallel(num_threads=threads):
        tid = threadid()
        if batch >= threads:        # whole matrices per thread
            first = batch * tid // threads
            last = batch * (tid + 1) // threads
            for i in range(first, last):
                gemm_block(tb, ta, N, M, K, b + i * b_batch, ldb, a + i * a_batch, lda,
                           c + i * M * N, N)
        elif M >= N:                # each thread a block of C's rows (aligned to 8)
            chunk = ((M + threads - 1) // threads + 7) // 8 * 8
            i0 = min(M, tid * chunk)
            i1 = min(M, i0 + chunk)
            if i1 > i0:
                for i in range(batch):
                    gemm_block(tb, ta, N, i1 - i0, K, b + i * b_batch, ldb,
                               a + i * a_batch + (i0 if a_trans else i0 * lda), lda,
                               c + i * M * N + i0 * N, N)
        else:                       # each thread a block of C's columns
            chunk = ((N + threads - 1) // threads + 15) // 16 * 16
            j0 = min(N, tid * chunk)
            j1 = min(N, j0 + chunk)
            if j1 > j0:
                for i in range(batch):
                    gemm_block(tb, ta, j1 - j0, M, K, b + i * b_batch + (j0 * ldb if b_trans else j0), ldb,
                               a + i * a_batch, lda, c + i * M * N + j0, N)


cdef tuple layout(cnp.ndarray x):
    """(batch stride, leading dimension, stored transposed) of a 3-D array whose matrices have
    one unit-stride axis, in elements; None when neither last axis has unit stride."""
    cdef Py_ssize_t size = x.itemsize
    cdef Py_ssize_t s0 = x.strides[0] // size, s1 = x.strides[1] // size, s2 = x.strides[2] // size
    if s2 == 1 or x.shape[2] == 1:
        return s0, max(s1, x.shape[2], 1), False
    if s1 == 1 or x.shape[1] == 1:
        return s0, max(s2, x.shape[1], 1), True
    return None


def matmul3(cnp.ndarray a, cnp.ndarray b, cnp.ndarray out, int threads):
    """out[i] = a[i] @ b[i] for 3-D a (n, M, K), b (n, K, N) of one float dtype and C-contiguous
    out (n, M, N); returns False (nothing done) when an operand's layout needs a copy."""
    la, lb = layout(a), layout(b)
    if la is None or lb is None:
        return False
    cdef Py_ssize_t a_batch = la[0], b_batch = lb[0], batch = a.shape[0]
    cdef int lda = la[1], ldb = lb[1], M = a.shape[1], K = a.shape[2], N = b.shape[2]
    cdef bint a_trans = la[2], b_trans = lb[2]
    if a.dtype.num == cnp.NPY_FLOAT32:
        with nogil:
            team_gemm(<float *> cnp.PyArray_DATA(a), <float *> cnp.PyArray_DATA(b),
                      <float *> cnp.PyArray_DATA(out), batch, M, N, K, a_batch, lda, a_trans,
                      b_batch, ldb, b_trans, threads)
    else:
        with nogil:
            team_gemm(<double *> cnp.PyArray_DATA(a), <double *> cnp.PyArray_DATA(b),
                      <double *> cnp.PyArray_DATA(out), batch, M, N, K, a_batch, lda, a_trans,
                      b_batch, ldb, b_trans, threads)
    return True
