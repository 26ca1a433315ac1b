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

   The inner loop keeps a 6-row x W-column block of C in twelve 32-byte vector registers
   (GCC/Clang vector extensions, one AVX register each) and streams the panel through them:
   per k, 2 vector loads and 6 broadcasts feed 12 FMAs, enough independent sums to cover the
   FMA latency.  Measured on this project's CPU (AVX2): ~90 GFLOP/s on one core in float32,
   about twice what the same loop reaches when GCC folds the weight loads into the FMAs.
   When rows is not a multiple of 6 the last block repeats its last row (computed, not stored)
   so it still runs the full-speed loop. */
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
#define TGS_IN_REGISTER(x) __asm__("" : "+x"(x))

#define TGS_DEFINE_PANEL_GEMM(NAME, T, V, WIDTH)                                               \
static void NAME(ptrdiff_t rows, ptrdiff_t K, ptrdiff_t panels, const T* a, ptrdiff_t lda,     \
                 const T* p, T* c, ptrdiff_t ldc)                                              \
{                                                                                              \
    const ptrdiff_t half = WIDTH / 2;                                                          \
    for (ptrdiff_t q = 0; q < panels; ++q) {                                                   \
        const T* panel = p + q * K * WIDTH;                                                    \
        for (ptrdiff_t r = 0; r < rows; r += 6) {                                              \
            const T* x[6];                                                                     \
            for (int i = 0; i < 6; ++i)                                                        \
                x[i] = a + (r + i < rows ? r + i : rows - 1) * lda;                            \
            const T *a0 = x[0], *a1 = x[1], *a2 = x[2], *a3 = x[3], *a4 = x[4], *a5 = x[5];    \
            V s00 = {0}, s01 = {0}, s10 = {0}, s11 = {0}, s20 = {0}, s21 = {0};                \
            V s30 = {0}, s31 = {0}, s40 = {0}, s41 = {0}, s50 = {0}, s51 = {0}, w0, w1;        \
            for (ptrdiff_t k = 0; k < K; ++k) {                                                \
                memcpy(&w0, panel + k * WIDTH, sizeof w0);                                     \
                memcpy(&w1, panel + k * WIDTH + half, sizeof w1);                              \
                TGS_IN_REGISTER(w0);                                                           \
                TGS_IN_REGISTER(w1);                                                           \
                s00 += a0[k] * w0; s01 += a0[k] * w1;                                          \
                s10 += a1[k] * w0; s11 += a1[k] * w1;                                          \
                s20 += a2[k] * w0; s21 += a2[k] * w1;                                          \
                s30 += a3[k] * w0; s31 += a3[k] * w1;                                          \
                s40 += a4[k] * w0; s41 += a4[k] * w1;                                          \
                s50 += a5[k] * w0; s51 += a5[k] * w1;                                          \
            }                                                                                  \
            V sums[6][2] = {{s00, s01}, {s10, s11}, {s20, s21},                                \
                            {s30, s31}, {s40, s41}, {s50, s51}};                               \
            for (int i = 0; i < 6 && r + i < rows; ++i) {                                      \
                T* out = c + (r + i) * ldc + q * WIDTH;                                        \
                memcpy(out, &sums[i][0], sizeof w0);                                           \
                memcpy(out + half, &sums[i][1], sizeof w1);                                    \
            }                                                                                  \
        }                                                                                      \
    }                                                                                          \
}

TGS_DEFINE_PANEL_GEMM(tgs_panel_gemm_f, float, tgs_v8f, TGS_PANEL_F)
TGS_DEFINE_PANEL_GEMM(tgs_panel_gemm_d, double, tgs_v4d, TGS_PANEL_D)

#endif
