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
cimport openmp

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


def use_blas(size_t sgemm_address, size_t dgemm_address, size_t set_callback_address=0,
             size_t callback_variable_address=0):
    """Run the team's GEMMs on the ILP64 Fortran sgemm and dgemm at these addresses (both
    non-zero), or back on SciPy's (both zero).  With the addresses of that OpenBLAS's
    openblas_set_threads_callback_function and of the variable it sets, whole products can run
    on OpenBLAS's own threaded GEMM with its threads' work done by the team (matmul3's
    `blas_threads`)."""
    global sgemm64, dgemm64, set_threads_callback, threads_callback_now
    if (sgemm_address == 0) != (dgemm_address == 0):
        raise ValueError("use_blas: give both GEMMs' addresses, or neither")
    if (set_callback_address == 0) != (callback_variable_address == 0) or (set_callback_address and not sgemm_address):
        raise ValueError("use_blas: give the callback setter and its variable together, with the GEMMs")
    sgemm64 = <sgemm64_t> sgemm_address
    dgemm64 = <dgemm64_t> dgemm_address
    set_threads_callback = <set_threads_callback_t> set_callback_address
    threads_callback_now = <threads_callback_t*> callback_variable_address


def runs_blas_threads_on_team(int threads):
    """Whether matmul3 can run OpenBLAS's threaded GEMM on `threads` team threads: the callback
    is known, and OpenMP will start that many threads at once (a team cut short by
    OMP_THREAD_LIMIT or OMP_DYNAMIC would leave a job that the others wait for unrun)."""
    return (set_threads_callback != NULL and not openmp.omp_get_dynamic()
            and openmp.omp_get_thread_limit() >= threads and not openmp.omp_in_parallel())


# OpenBLAS (0.3.27 and later) lets its caller run the work of its threads: instead of waking its
# own pthreads, its threaded GEMM calls `callback(sync, dojob, numjobs, size, jobs, data)`, which
# must run dojob(i, jobs + i * size, data) for every i < numjobs, all at once (the jobs wait on
# each other's packed panels), and return when all are done.
ctypedef void (*dojob_t)(int, void *, int) noexcept nogil
ctypedef void (*threads_callback_t)(int, dojob_t, int, size_t, void *, int) noexcept nogil
ctypedef void (*set_threads_callback_t)(threads_callback_t) noexcept nogil
cdef set_threads_callback_t set_threads_callback = NULL
cdef threads_callback_t* threads_callback_now = NULL


cdef void run_jobs_on_team(int sync, dojob_t dojob, int numjobs, size_t size, void *jobs,
                           int data) noexcept nogil:
    """OpenBLAS's threads' jobs, job i on team thread i."""
    cdef int tid
    with parallel(num_threads=numjobs):
        tid = threadid()
        dojob(tid, <char *> jobs + tid * size, data)


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


cdef void blas_threaded_gemm(floating *a, floating *b, floating *c, Py_ssize_t batch, int M, int N,
                             int K, Py_ssize_t a_batch, int lda, bint a_trans, Py_ssize_t b_batch,
                             int ldb, bint b_trans) noexcept nogil:
    """c[i] = a[i] @ b[i], each product one call of OpenBLAS's own threaded GEMM, whose threads'
    work the team does (run_jobs_on_team) while the callback is installed; the value it had
    before (none, unless someone else set one) is put back."""
    cdef char tb = b'T' if b_trans else b'N'
    cdef char ta = b'T' if a_trans else b'N'
    cdef threads_callback_t before = threads_callback_now[0]
    cdef Py_ssize_t i
    set_threads_callback(run_jobs_on_team)
    for i in range(batch):
        gemm_block(tb, ta, N, M, K, b + i * b_batch, ldb, a + i * a_batch, lda, c + i * M * N, N)
    set_threads_callback(before)


def matmul3(cnp.ndarray a, cnp.ndarray b, cnp.ndarray out, int threads, bint blas_threads=False):
    """out[i] = a[i] @ b[i] for 3-D a (n, M, K), b (n, K, N) of one float dtype and C-contiguous
    out (n, M, N); returns False (nothing done) when an operand's layout needs a copy.

    Each team thread runs a single-threaded GEMM on its share; with `blas_threads` (when
    runs_blas_threads_on_team(), and the BLAS held at `threads` threads by the caller) each
    product is instead one call of OpenBLAS's threaded GEMM, its threads' jobs run by the team."""
    la, lb = layout(a), layout(b)
    if la is None or lb is None:
        return False
    cdef Py_ssize_t a_batch = la[0], b_batch = lb[0], batch = a.shape[0]
    cdef int lda = la[1], ldb = lb[1], M = a.shape[1], K = a.shape[2], N = b.shape[2]
    cdef bint a_trans = la[2], b_trans = lb[2]
    if blas_threads and set_threads_callback != NULL:
        if a.dtype.num == cnp.NPY_FLOAT32:
            with nogil:
                blas_threaded_gemm(<float *> cnp.PyArray_DATA(a), <float *> cnp.PyArray_DATA(b),
                                   <float *> cnp.PyArray_DATA(out), batch, M, N, K, a_batch, lda,
                                   a_trans, b_batch, ldb, b_trans)
        else:
            with nogil:
                blas_threaded_gemm(<double *> cnp.PyArray_DATA(a), <double *> cnp.PyArray_DATA(b),
                                   <double *> cnp.PyArray_DATA(out), batch, M, N, K, a_batch, lda,
                                   a_trans, b_batch, ldb, b_trans)
        return True
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
