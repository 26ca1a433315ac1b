/* C = A @ P for a small batch of rows A and a weight matrix P packed once per sequence.

   Why: a recurrent step multiplies only B (~32) rows by the whole recurrent weight matrix.
   BLAS repacks that matrix into its internal panel layout on every call, and at these shapes
   the repacking costs about as much as the arithmetic (perf: sgemm_itcopy ~ sgemm_kernel).
   The recurrence kernels therefore pack their share of W_hh into this layout once per call
   and multiply by it T times.

   Layout: P holds `panels` panels of W columns (W = TGS_PANEL_F for float32, TGS_PANEL_D for
   float64: 64 bytes, two 32-byte vectors); panel q is K rows of W contiguous values (row k of
   panel q = columns q*W .. q*W+W-1 of row k of the matrix); columns past the real ones are
   zero.  C rows are `ldc` apart and receive all panels*W columns.

   The inner loop keeps a block of up to 6 rows x W columns of C in twelve 32-byte vector
   registers (GCC/Clang vector extensions, one AVX register each) and streams the panel
   through them: per k, 2 vector loads and 6 broadcasts feed 12 FMAs, enough independent sums
   to cover the FMA latency.  Measured on this project's CPU (AVX2): ~90 GFLOP/s on one core in
   float32, about twice what the same loop reaches when GCC folds the weight loads into the
   FMAs.  The rows are split into as few blocks as possible of as equal a size as possible
   (32 rows: 6, 6, 5, 5, 5, 5), each block compiled for its exact row count: padding the last
   block to 6 rows instead (6 x 5 + 2) spent 11% of the arithmetic on rows never stored, and
   a 32-row product ran ~12% slower. */
#ifndef TGS_PANEL_GEMM_H
#define TGS_PANEL_GEMM_H

#include <stddef.h>
#include <string.h>

#define TGS_PANEL_F 16
#define TGS_PANEL_D 8

typedef float tgs_v8f __attribute__((vector_size(32)));
typedef double tgs_v4d __attribute__((vector_size(32)));

/* Keeps a loaded vector in a register: otherwise GCC folds the load into every FMA's memory
   operand, re-reading each weight once per row, and the loop becomes load-bound. */
#if defined(__AVX__)
#define TGS_IN_REGISTER(x) __asm__("" : "+x"(x))
#else   /* SSE only (the x86-64-v2 build) or not x86: a 32-byte vector fits no one register */
#define TGS_IN_REGISTER(x) ((void)0)
#endif

/* One block of R (<= 6, a compile-time constant after inlining) rows of C for one panel. */
#define TGS_DEFINE_PANEL_BLOCK(NAME, T, V, WIDTH)                                              \
static inline __attribute__((always_inline)) void NAME(                                        \
    const int R, ptrdiff_t K, const T* a, ptrdiff_t lda, const T* panel, T* c, ptrdiff_t ldc)  \
{                                                                                              \
    V s[6][2], w0, w1;                                                                         \
    for (int i = 0; i < R; ++i)                                                                \
        s[i][0] = s[i][1] = (V){0};                                                            \
    for (ptrdiff_t k = 0; k < K; ++k) {                                                        \
        memcpy(&w0, panel + k * WIDTH, sizeof w0);                                             \
        memcpy(&w1, panel + k * WIDTH + WIDTH / 2, sizeof w1);                                 \
        TGS_IN_REGISTER(w0);                                                                   \
        TGS_IN_REGISTER(w1);                                                                   \
        for (int i = 0; i < R; ++i) {                                                          \
            s[i][0] += a[i * lda + k] * w0;                                                    \
            s[i][1] += a[i * lda + k] * w1;                                                    \
        }                                                                                      \
    }                                                                                          \
    for (int i = 0; i < R; ++i) {                                                              \
        memcpy(c + i * ldc, &s[i][0], sizeof w0);                                              \
        memcpy(c + i * ldc + WIDTH / 2, &s[i][1], sizeof w1);                                  \
    }                                                                                          \
}

#define TGS_DEFINE_PANEL_GEMM(NAME, BLOCK, T, WIDTH)                                           \
static void NAME(ptrdiff_t rows, ptrdiff_t K, ptrdiff_t panels, const T* a, ptrdiff_t lda,     \
                 const T* p, T* c, ptrdiff_t ldc)                                              \
{                                                                                              \
    const ptrdiff_t blocks = (rows + 5) / 6;                                                   \
    for (ptrdiff_t q = 0; q < panels; ++q) {                                                   \
        const T* panel = p + q * K * WIDTH;                                                    \
        ptrdiff_t r = 0;                                                                       \
        for (ptrdiff_t b = 0; b < blocks; ++b) {                                               \
            const ptrdiff_t left = blocks - b, n = (rows - r + left - 1) / left;               \
            const T* ar = a + r * lda;                                                         \
            T* cr = c + r * ldc + q * WIDTH;                                                   \
            switch (n) {                                                                       \
            case 6: BLOCK(6, K, ar, lda, panel, cr, ldc); break;                               \
            case 5: BLOCK(5, K, ar, lda, panel, cr, ldc); break;                               \
            case 4: BLOCK(4, K, ar, lda, panel, cr, ldc); break;                               \
            case 3: BLOCK(3, K, ar, lda, panel, cr, ldc); break;                               \
            case 2: BLOCK(2, K, ar, lda, panel, cr, ldc); break;                               \
            default: BLOCK(1, K, ar, lda, panel, cr, ldc); break;                              \
            }                                                                                  \
            r += n;                                                                            \
        }                                                                                      \
    }                                                                                          \
}

TGS_DEFINE_PANEL_BLOCK(tgs_panel_block_f, float, tgs_v8f, TGS_PANEL_F)
TGS_DEFINE_PANEL_BLOCK(tgs_panel_block_d, double, tgs_v4d, TGS_PANEL_D)
TGS_DEFINE_PANEL_GEMM(tgs_panel_gemm_f, tgs_panel_block_f, float, TGS_PANEL_F)
TGS_DEFINE_PANEL_GEMM(tgs_panel_gemm_d, tgs_panel_block_d, double, TGS_PANEL_D)

#endif
