# The register-blocked GEMM of _panel_gemm.h, for a module that multiplies by a matrix it
# packed once and uses many times (recurrence: W_hh at every time step; conv: one image's
# columns by every filter), and the per-thread scratch its team kernels allocate.

from libc.stdlib cimport malloc

cdef extern from "_panel_gemm.h":
    Py_ssize_t PANEL_F "TGS_PANEL_F"
    Py_ssize_t PANEL_D "TGS_PANEL_D"
    Py_ssize_t panel_lanes "tgs_panel_lanes"(Py_ssize_t cols, Py_ssize_t size) noexcept nogil
    void panel_gemm_f "tgs_panel_gemm_f"(Py_ssize_t rows, Py_ssize_t K, Py_ssize_t panels,
                                         const float* a, Py_ssize_t lda, const float* p,
                                         float* c, Py_ssize_t ldc) noexcept nogil
    void panel_gemm_d "tgs_panel_gemm_d"(Py_ssize_t rows, Py_ssize_t K, Py_ssize_t panels,
                                         const double* a, Py_ssize_t lda, const double* p,
                                         double* c, Py_ssize_t ldc) noexcept nogil
    void wide_panel_gemm_f "tgs_wide_panel_gemm_f"(Py_ssize_t rows, Py_ssize_t K, Py_ssize_t panels,
                                                   const float* a, Py_ssize_t lda, const float* p,
                                                   float* c, Py_ssize_t ldc) noexcept nogil
    void wide_panel_gemm_d "tgs_wide_panel_gemm_d"(Py_ssize_t rows, Py_ssize_t K, Py_ssize_t panels,
                                                   const double* a, Py_ssize_t lda, const double* p,
                                                   double* c, Py_ssize_t ldc) noexcept nogil


cdef inline Py_ssize_t panel_width(const floating* like, Py_ssize_t cols) noexcept nogil:
    """Columns per packed panel for a matrix of `cols` columns of like's dtype (`like` only
    selects the dtype): the build's widest tile unless that pads the matrix much more."""
    return panel_lanes(cols, sizeof(floating))


cdef inline void panel_gemm(Py_ssize_t rows, Py_ssize_t K, Py_ssize_t panels, Py_ssize_t lanes,
                            const floating* a, Py_ssize_t lda, const floating* p, floating* c,
                            Py_ssize_t ldc) noexcept nogil:
    """c (rows, panels * lanes) = a (rows, K) @ the packed matrix p, whose panels are `lanes`
    columns wide (panel_width)."""
    if floating is float:
        if lanes == PANEL_F:
            panel_gemm_f(rows, K, panels, a, lda, p, c, ldc)
        else:
            wide_panel_gemm_f(rows, K, panels, a, lda, p, c, ldc)
    else:
        if lanes == PANEL_D:
            panel_gemm_d(rows, K, panels, a, lda, p, c, ldc)
        else:
            wide_panel_gemm_d(rows, K, panels, a, lda, p, c, ldc)


cdef inline floating* scratch(const floating* like, Py_ssize_t size, int* failed) noexcept nogil:
    """`size` malloc'd elements of like's dtype (at least one); sets *failed when there is no
    memory.  (64-byte-aligned scratch, so that no wide-tile load straddles two cache lines, was
    measured slower: conv2 forward 1.04 -> 1.4 ms, its backward 2.1 -> 2.9 ms.)"""
    cdef floating* p = <floating*> malloc(max(<Py_ssize_t>1, size) * sizeof(floating))
    if p == NULL:
        failed[0] = 1
    return p


cdef inline void pack_panels_of(const floating* src, Py_ssize_t rows, Py_ssize_t cols,
                                Py_ssize_t row_stride, Py_ssize_t col_stride, floating* packed,
                                Py_ssize_t lanes) noexcept nogil:
    cdef Py_ssize_t q, k, j, c
    cdef floating* dst = packed
    for q in range((cols + lanes - 1) // lanes):
        for k in range(rows):
            for j in range(lanes):
                c = q * lanes + j
                dst[j] = src[k * row_stride + c * col_stride] if c < cols else 0
            dst += lanes


cdef void pack_panels(const floating* src, Py_ssize_t rows, Py_ssize_t cols,
                      Py_ssize_t row_stride, Py_ssize_t col_stride, floating* packed,
                      Py_ssize_t lanes) noexcept nogil:
    """The (rows, cols) matrix whose element [k, c] is src[k*row_stride + c*col_stride], in
    panels of `lanes` columns (the last one zero-padded): the layout panel_gemm reads.
    Each width the tiles use is passed on as a constant, for which GCC vectorises the row copy:
    with the width only known at run time the copy stayed scalar and took half the time of
    conv backward."""
    if lanes == 8:
        pack_panels_of(src, rows, cols, row_stride, col_stride, packed, 8)
    elif lanes == 16:
        pack_panels_of(src, rows, cols, row_stride, col_stride, packed, 16)
    elif lanes == 32:
        pack_panels_of(src, rows, cols, row_stride, col_stride, packed, 32)
    else:
        pack_panels_of(src, rows, cols, row_stride, col_stride, packed, lanes)
