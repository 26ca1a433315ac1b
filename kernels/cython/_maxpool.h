/* One output row of the 2x2, stride-2, unpadded max pool (the usual one, and the cnn
   workload's), written so that GCC vectorises the loop over the row at every x86-64 level.

   Semantics are the reference's (kernels/reference/conv.py): the window's taps are scanned in
   (i, j) order, the first maximum wins on ties, and a NaN wins over every number, the first
   NaN over later ones (numpy's argmax; PyTorch agrees), so NaNs propagate.  arg receives the
   flat index h*W + w of the winner in the input plane.

   Why a C header and this shape: the natural running-maximum test, "v > m, or v is the first
   NaN" as one boolean chained through the window, defeats GCC 12's if-conversion ("no vectype
   for stmt"), and the scalar loop made the pool cost more than the convolution before it.
   Split into a plain "v > m" maximum followed by the NaN taps in reverse order, every step is
   a select that vectorises (stride-2 loads become permutes).  `restrict` tells GCC the rows,
   the outputs and the indices never overlap.

   A row is cut into blocks of exactly 8 (or 4) outputs, the last block shifted back to end at
   the row's end (overlapping the one before it and writing the same values again): a loop of a
   fixed count has no scalar remainder, which on rows of 14 or 7 outputs would be most of the
   work.  Rows of fewer than 4 outputs run the plain loop.  One thread, loaded 2-core Zen 4,
   against the previous Cython loop: 1.48 -> 0.22 ms for 64x16x28x28, 1.53 -> 0.18 ms for
   64x32x14x14 (BENCHMARKS.md). */
#ifndef TGS_MAXPOOL_H
#define TGS_MAXPOOL_H

#include <stddef.h>
#include <stdint.h>

#define TGS_MAXPOOL_2X2(SUFFIX, T)                                                                  \
    static inline void tgs_maxpool_2x2_block_##SUFFIX(const T* restrict top, const T* restrict bottom, \
            T* restrict y, int64_t* restrict arg, ptrdiff_t start, ptrdiff_t count, int64_t W, int64_t first) { \
        for (ptrdiff_t wo = start; wo < start + count; wo++) {                                      \
            T a = top[2 * wo], b = top[2 * wo + 1], c = bottom[2 * wo], d = bottom[2 * wo + 1];     \
            T m = a;                                                                                \
            int64_t at = 0;                                                                         \
            at = b > m ? 1 : at;          m = b > m ? b : m;                                        \
            at = c > m ? W : at;          m = c > m ? c : m;                                        \
            at = d > m ? W + 1 : at;      m = d > m ? d : m;                                        \
            at = d != d ? W + 1 : at;     m = d != d ? d : m;                                       \
            at = c != c ? W : at;         m = c != c ? c : m;                                       \
            at = b != b ? 1 : at;         m = b != b ? b : m;                                       \
            at = a != a ? 0 : at;         m = a != a ? a : m;                                       \
            y[wo] = m;                                                                              \
            arg[wo] = first + 2 * wo + at;                                                          \
        }                                                                                           \
    }                                                                                               \
    static inline void tgs_maxpool_row_2x2_##SUFFIX(const T* top, const T* bottom, T* y, int64_t* arg, \
            ptrdiff_t Wo, int64_t W, int64_t first) {                                               \
        ptrdiff_t s;                                                                                \
        if (Wo >= 8) {                                                                              \
            for (s = 0; s < Wo; s += 8)                                                             \
                tgs_maxpool_2x2_block_##SUFFIX(top, bottom, y, arg, s + 8 <= Wo ? s : Wo - 8, 8, W, first); \
        } else if (Wo >= 4) {                                                                       \
            for (s = 0; s < Wo; s += 4)                                                             \
                tgs_maxpool_2x2_block_##SUFFIX(top, bottom, y, arg, s + 4 <= Wo ? s : Wo - 4, 4, W, first); \
        } else {                                                                                    \
            tgs_maxpool_2x2_block_##SUFFIX(top, bottom, y, arg, 0, Wo, W, first);                   \
        }                                                                                           \
    }

TGS_MAXPOOL_2X2(f, float)
TGS_MAXPOOL_2X2(d, double)

#endif
