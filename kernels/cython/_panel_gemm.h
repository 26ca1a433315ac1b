/* C = A @ P for a small batch of rows A and a weight matrix P packed once per sequence.

   Why: a recurrent step multiplies only B (~32) rows by the whole recurrent weight matrix.
   BLAS repacks that matrix into its internal panel layout on every call, and at these shapes
   the repacking costs about as much as the arithmetic (perf: sgemm_itcopy ~ sgemm_kernel).
   The recurrence kernels therefore pack their share of W_hh into this layout once per call
   and multiply by it T times.

   Layout: P holds `panels` panels of W columns; panel q is K rows of W contiguous values (row
   k of panel q = columns q*W .. q*W+W-1 of row k of the matrix); columns past the real ones
   are zero.  C rows are `ldc` apart and receive all panels*W columns.

   The inner loop keeps a block of up to R rows x W columns of C in vector registers (GCC/Clang
   vector extensions) and streams the panel through them: per k, 2 vector loads (the panel row,
   W = two vectors) and one broadcast per row feed two FMAs per row, enough independent sums to
   cover the FMA latency.  Two tiles:
     - narrow: 32-byte vectors (W = 16 floats or 8 doubles), R = 6 rows, 12 sums in AVX's 16
       registers.  ~90 GFLOP/s on one Zen 4 core in float32, about twice what the same loop
       reaches when GCC folds the weight loads into the FMAs;
     - wide, in builds for AVX-512 (x86-64-v4): 64-byte vectors (W = 32 floats or 16 doubles),
       R = 8 rows, 16 sums among its 32 registers.  An Intel core with two 512-bit FMA units
       does twice the work per instruction.  Zen 4 executes a 512-bit FMA as two 256-bit halves,
       yet the recurrence kernels ran 4-8% faster with it there (fewer instructions, and B = 32
       rows split evenly into 8-row blocks).  Other builds have no wide tile: it is the narrow one.
   A wide panel pads a narrow matrix more (9 columns: 32 instead of 16), so the caller picks the
   tile per matrix (tgs_panel_lanes).
   The rows are split into as few blocks as possible of as equal a size as possible (32 rows,
   narrow: 6, 6, 5, 5, 5, 5), each block compiled for its exact row count: padding the last
   block instead (6 x 5 + 2) spent 11% of the arithmetic on rows never stored, and a 32-row
   product ran ~12% slower. */
#ifndef TGS_PANEL_GEMM_H
#define TGS_PANEL_GEMM_H

#include <stddef.h>
#include <string.h>

typedef float tgs_v8f __attribute__((vector_size(32)));
typedef double tgs_v4d __attribute__((vector_size(32)));

/* Keeps a loaded vector in a register: otherwise GCC folds the load into every FMA's memory
   operand, re-reading each weight once per row, and the loop becomes load-bound.  "v" is any
   of AVX-512's 32 vector registers, "x" one of AVX's 16. */
#if defined(__AVX__)
#define TGS_IN_REGISTER(x) __asm__("" : "+x"(x))
#else   /* SSE only (the x86-64-v2 build) or not x86: a 32-byte vector fits no one register */
#define TGS_IN_REGISTER(x) ((void)0)
#endif
#if defined(__AVX512F__)
#define TGS_IN_WIDE_REGISTER(x) __asm__("" : "+v"(x))
#endif

/* One block of R (<= ROWS, a compile-time constant after inlining) rows of C for one panel of
   WIDTH columns, two vectors V. */
#define TGS_DEFINE_PANEL_BLOCK(NAME, T, V, WIDTH, ROWS, IN_REGISTER)                           \
static inline __attribute__((always_inline)) void NAME(                                        \
    const int R, ptrdiff_t K, const T* a, ptrdiff_t lda, const T* panel, T* c, ptrdiff_t ldc)  \
{                                                                                              \
    V s[ROWS][2], w0, w1;                                                                      \
    for (int i = 0; i < R; ++i)                                                                \
        s[i][0] = s[i][1] = (V){0};                                                            \
    for (ptrdiff_t k = 0; k < K; ++k) {                                                        \
        memcpy(&w0, panel + k * WIDTH, sizeof w0);                                             \
        memcpy(&w1, panel + k * WIDTH + WIDTH / 2, sizeof w1);                                 \
        IN_REGISTER(w0);                                                                       \
        IN_REGISTER(w1);                                                                       \
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

/* The whole product.  Blocks have n <= ROWS rows, so a 6-row tile never takes the 7- and 8-row
   cases; they compile to a 1-row block there rather than to sums past its array. */
#define TGS_DEFINE_PANEL_GEMM(NAME, BLOCK, T, WIDTH, ROWS)                                     \
static void NAME(ptrdiff_t rows, ptrdiff_t K, ptrdiff_t panels, const T* a, ptrdiff_t lda,     \
                 const T* p, T* c, ptrdiff_t ldc)                                              \
{                                                                                              \
    const ptrdiff_t blocks = (rows + ROWS - 1) / ROWS;                                         \
    for (ptrdiff_t q = 0; q < panels; ++q) {                                                   \
        const T* panel = p + q * K * WIDTH;                                                    \
        ptrdiff_t r = 0;                                                                       \
        for (ptrdiff_t b = 0; b < blocks; ++b) {                                               \
            const ptrdiff_t left = blocks - b, n = (rows - r + left - 1) / left;               \
            const T* ar = a + r * lda;                                                         \
            T* cr = c + r * ldc + q * WIDTH;                                                   \
            switch (n) {                                                                       \
            case 8: BLOCK(ROWS > 6 ? 8 : 1, K, ar, lda, panel, cr, ldc); break;                \
            case 7: BLOCK(ROWS > 6 ? 7 : 1, K, ar, lda, panel, cr, ldc); break;                \
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

/* One tile: its float32 and float64 blocks and products, named PREFIX##gemm_f and _d. */
#define TGS_DEFINE_PANEL_TILE(PREFIX, VF, VD, WIDTH_F, WIDTH_D, ROWS, IN_REGISTER)             \
TGS_DEFINE_PANEL_BLOCK(PREFIX##block_f, float, VF, WIDTH_F, ROWS, IN_REGISTER)                 \
TGS_DEFINE_PANEL_BLOCK(PREFIX##block_d, double, VD, WIDTH_D, ROWS, IN_REGISTER)                \
TGS_DEFINE_PANEL_GEMM(PREFIX##gemm_f, PREFIX##block_f, float, WIDTH_F, ROWS)                   \
TGS_DEFINE_PANEL_GEMM(PREFIX##gemm_d, PREFIX##block_d, double, WIDTH_D, ROWS)

#define TGS_PANEL_F 16
#define TGS_PANEL_D 8
TGS_DEFINE_PANEL_TILE(tgs_panel_, tgs_v8f, tgs_v4d, TGS_PANEL_F, TGS_PANEL_D, 6, TGS_IN_REGISTER)

#if defined(__AVX512F__)
typedef float tgs_v16f __attribute__((vector_size(64)));
typedef double tgs_v8d __attribute__((vector_size(64)));
#define TGS_WIDE_PANEL_F 32
#define TGS_WIDE_PANEL_D 16
TGS_DEFINE_PANEL_TILE(tgs_wide_panel_, tgs_v16f, tgs_v8d, TGS_WIDE_PANEL_F, TGS_WIDE_PANEL_D, 8,
                      TGS_IN_WIDE_REGISTER)
#else
#define TGS_WIDE_PANEL_F TGS_PANEL_F
#define TGS_WIDE_PANEL_D TGS_PANEL_D
#define tgs_wide_panel_gemm_f tgs_panel_gemm_f
#define tgs_wide_panel_gemm_d tgs_panel_gemm_d
#endif

/* Columns per panel for a matrix of `cols` columns whose elements are `size` bytes: the wide
   tile unless its padding makes the panels over 10% wider than the narrow tile's (conv's
   9- or 144-column weight gradients: 32 or 160 columns instead of 16 or 144). */
static inline ptrdiff_t tgs_panel_lanes(ptrdiff_t cols, ptrdiff_t size)
{
    const ptrdiff_t narrow = size == 4 ? TGS_PANEL_F : TGS_PANEL_D;
    const ptrdiff_t wide = size == 4 ? TGS_WIDE_PANEL_F : TGS_WIDE_PANEL_D;
    const ptrdiff_t padded_narrow = (cols + narrow - 1) / narrow * narrow;
    const ptrdiff_t padded_wide = (cols + wide - 1) / wide * wide;
    return 10 * padded_wide <= 11 * padded_narrow ? wide : narrow;
}

#endif
