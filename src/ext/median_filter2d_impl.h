/* Exact 2D median filter of a stack of frames, vectorised along rows.
 *
 * Every output row reads size_r padded input rows (edges already resolved by the mode) kept in
 * a ring buffer, so each input row is padded once per band of output rows. NaNs are stored as
 * +inf in the padded rows; rows that held a NaN are fixed up afterwards (NaN wherever the
 * window holds one), so NaN-free data pay nothing for the NaN policy.
 *
 * 3x3: each padded column is sorted (lo, mid, hi) with a 3-element min/max network; the median
 * of the 9 values is med3(max of the 3 lo, med3 of the 3 mid, min of the 3 hi).
 * 5x5: see mf_row5x5 (sorted columns and rank levels, median of 13 candidates).
 * Other sizes: for each block of LB adjacent outputs (SIMD lanes), the smallest rank + 1
 * values of the window are kept sorted by branch-free insertion
 *     s_j <- max(s_{j-1, old}, min(s_j, x));
 * the answer is s_rank. Both are exact and select the element of rank (size_r*size_c)//2, as
 * scipy.ndimage.median_filter does.
 *
 * Runtime dispatch AVX-512 / AVX2 / SSE2 as in moving_median_impl.h; OpenMP over
 * (frame, band of rows) tasks.
 */
#ifndef XREDUCE_MEDIAN_FILTER2D_IMPL_H
#define XREDUCE_MEDIAN_FILTER2D_IMPL_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>

#include "moving_median_impl.h" /* mm_best_isa and the MM_ATTR_* target attributes */

#define MF_MODE_REFLECT 0
#define MF_MODE_NEAREST 1
#define MF_MODE_MIRROR 2
#define MF_MODE_WRAP 3
#define MF_MODE_CONSTANT 4
#define MF_BAND_ROWS 16

/* Source index of virtual index v in [0, n) for a mode, -1 for "constant" outside. */
static int mf_map_index(int64_t v, int64_t n, int mode)
{
    if (v >= 0 && v < n)
        return (int)v;
    int64_t k;
    switch (mode) {
    case MF_MODE_REFLECT:
        k = v % (2 * n);
        if (k < 0)
            k += 2 * n;
        return (int)(k < n ? k : 2 * n - 1 - k);
    case MF_MODE_NEAREST:
        return v < 0 ? 0 : (int)(n - 1);
    case MF_MODE_MIRROR:
        if (n == 1)
            return 0;
        k = v % (2 * n - 2);
        if (k < 0)
            k += 2 * n - 2;
        return (int)(k < n ? k : 2 * n - 2 - k);
    case MF_MODE_WRAP:
        k = v % n;
        return (int)(k < 0 ? k + n : k);
    default:
        return -1;
    }
}

#define MF_MIN(a, b) ((b) < (a) ? (b) : (a))
#define MF_MAX(a, b) ((a) < (b) ? (b) : (a))
/* Compare-exchange and the 9-comparator sorting network of 5 values (ascending). */
#define MF_CE(T, a, b)                                                                         \
    do {                                                                                       \
        T lo_ = MF_MIN(a, b);                                                                  \
        b = MF_MAX(a, b);                                                                      \
        a = lo_;                                                                               \
    } while (0)
#define MF_SORT5(T, v0, v1, v2, v3, v4)                                                        \
    do {                                                                                       \
        MF_CE(T, v0, v1);                                                                      \
        MF_CE(T, v3, v4);                                                                      \
        MF_CE(T, v2, v4);                                                                      \
        MF_CE(T, v2, v3);                                                                      \
        MF_CE(T, v1, v4);                                                                      \
        MF_CE(T, v0, v3);                                                                      \
        MF_CE(T, v0, v2);                                                                      \
        MF_CE(T, v1, v3);                                                                      \
        MF_CE(T, v1, v2);                                                                      \
    } while (0)

#define MF_DEFINE(SUF, T, IS_FLOAT, SENT, LOWEST, ATTR, LANE_BYTES)                            \
    enum { mf_lb_##SUF = (LANE_BYTES) / (int)sizeof(T) };                                      \
                                                                                               \
    /* Pad source row sr (-1: all cval) into row/mask; return 1 if a NaN was seen. */          \
    ATTR static int mf_pad_row_##SUF(const T *restrict frame, int cols, int sr,                \
                                     const int *restrict cmap, int width, T cval,              \
                                     T *restrict row, uint8_t *restrict mask)                  \
    {                                                                                          \
        int any = 0;                                                                           \
        int off = (width - cols) / 2 + ((width - cols) & 1); /* = size_c / 2 */              \
        const T *src = sr >= 0 ? frame + (int64_t)sr * cols : NULL;                            \
        for (int x = 0; x < width; x++) { /* edges (and constant rows) through the map */     \
            if (src != NULL && x == off) {                                                     \
                x = off + cols - 1;                                                            \
                continue;                                                                      \
            }                                                                                  \
            int sc = cmap[x];                                                                  \
            T v = (src != NULL && sc >= 0) ? src[sc] : cval;                                   \
            int isn = IS_FLOAT ? (v != v) : 0;                                                 \
            mask[x] = (uint8_t)isn;                                                            \
            any |= isn;                                                                        \
            row[x] = isn ? SENT : v;                                                           \
        }                                                                                      \
        if (src != NULL) { /* interior: a contiguous, vectorised copy */                      \
            T *restrict dst = row + off;                                                       \
            uint8_t *restrict dmask = mask + off;                                              \
            if (IS_FLOAT) {                                                                    \
                int cnt = 0;                                                                   \
                for (int x = 0; x < cols; x++) {                                               \
                    T v = src[x];                                                              \
                    int isn = v != v;                                                          \
                    cnt += isn;                                                                \
                    dst[x] = isn ? SENT : v;                                                   \
                }                                                                              \
                if (cnt) {                                                                     \
                    for (int x = 0; x < cols; x++)                                             \
                        dmask[x] = (uint8_t)(src[x] != src[x]);                                \
                    any = 1;                                                                   \
                } else {                                                                       \
                    memset(dmask, 0, (size_t)cols);                                            \
                }                                                                              \
            } else {                                                                           \
                memcpy(dst, src, sizeof(T) * (size_t)cols);                                    \
            }                                                                                  \
        }                                                                                      \
        return any;                                                                            \
    }                                                                                          \
                                                                                               \
    /* 3x3: rows[0..2] padded (width cols + 2); out: cols values. tmp: 3 * (cols + 2). */      \
    ATTR static void mf_row3x3_##SUF(T *const *rows, int cols, T *restrict out,                \
                                     T *restrict tmp)                                          \
    {                                                                                          \
        const T *restrict p0 = rows[0], *restrict p1 = rows[1], *restrict p2 = rows[2];        \
        T *restrict lo = tmp, *restrict mid = tmp + cols + 2, *restrict hi = tmp + 2 * (cols + 2); \
        for (int x = 0; x < cols + 2; x++) {                                                   \
            T a = p0[x], b = p1[x], c = p2[x];                                                 \
            T l1 = MF_MIN(a, b), h1 = MF_MAX(a, b);                                            \
            T m2 = MF_MIN(h1, c);                                                              \
            hi[x] = MF_MAX(h1, c);                                                             \
            lo[x] = MF_MIN(l1, m2);                                                            \
            mid[x] = MF_MAX(l1, m2);                                                           \
        }                                                                                      \
        for (int x = 0; x < cols; x++) {                                                       \
            T lmax = MF_MAX(MF_MAX(lo[x], lo[x + 1]), lo[x + 2]);                              \
            T hmin = MF_MIN(MF_MIN(hi[x], hi[x + 1]), hi[x + 2]);                              \
            T a = mid[x], b = mid[x + 1], c = mid[x + 2];                                      \
            T mmed = MF_MAX(MF_MIN(a, b), MF_MIN(MF_MAX(a, b), c));                            \
            out[x] = MF_MAX(MF_MIN(lmax, mmed), MF_MIN(MF_MAX(lmax, mmed), hmin));             \
        }                                                                                      \
    }                                                                                          \
                                                                                               \
    /* 5x5: rows[0..4] padded (width cols + 4); tmp: 5 * (cols + 4). Each padded column is     \
     * sorted once (shared by 5 outputs); per output, the 5 rank levels of its 5 sorted        \
     * columns are sorted too, which orders the 5x5 matrix both ways: the median of the 25 is  \
     * then the median of the 13 entries (i, j) with (i+1)(j+1) <= 13 and (5-i)(5-j) <= 13,  \
     * found by keeping the 7 smallest of them sorted. Unused network outputs are dropped by  \
     * the compiler. */                                                                        \
    ATTR static void mf_row5x5_##SUF(T *const *rows, int cols, T *restrict out,                \
                                     T *restrict tmp)                                          \
    {                                                                                          \
        int width = cols + 4 + mf_lb_##SUF; /* room for the last lane block */                \
        T *restrict s0 = tmp, *restrict s1 = tmp + width, *restrict s2 = tmp + 2 * width;      \
        T *restrict s3 = tmp + 3 * width, *restrict s4 = tmp + 4 * width;                      \
        const T *restrict p0 = rows[0], *restrict p1 = rows[1], *restrict p2 = rows[2];        \
        const T *restrict p3 = rows[3], *restrict p4 = rows[4];                                \
        for (int x = 0; x < width; x++) {                                                      \
            T v0 = p0[x], v1 = p1[x], v2 = p2[x], v3 = p3[x], v4 = p4[x];                      \
            MF_SORT5(T, v0, v1, v2, v3, v4);                                                   \
            s0[x] = v0;                                                                        \
            s1[x] = v1;                                                                        \
            s2[x] = v2;                                                                        \
            s3[x] = v3;                                                                        \
            s4[x] = v4;                                                                        \
        }                                                                                      \
        enum { LB = mf_lb_##SUF };                                                             \
        const T *levels[5] = {s0, s1, s2, s3, s4};                                             \
        for (int c0 = 0; c0 < cols; c0 += LB) {                                                \
            T m[5][5][LB]; /* [rank level][column][lane] */                                    \
            for (int k = 0; k < 5; k++) {                                                      \
                for (int j = 0; j < 5; j++) {                                                  \
                    const T *restrict src = levels[k] + c0 + j;                                \
                    for (int l = 0; l < LB; l++)                                               \
                        m[k][j][l] = src[l];                                                   \
                }                                                                              \
                for (int l = 0; l < LB; l++)                                                   \
                    MF_SORT5(T, m[k][0][l], m[k][1][l], m[k][2][l], m[k][3][l], m[k][4][l]);   \
            }                                                                                  \
            static const unsigned char ck[13] = {0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4};       \
            static const unsigned char cj[13] = {3, 4, 2, 3, 4, 1, 2, 3, 0, 1, 2, 0, 1};       \
            T keep[7][LB];                                                                     \
            for (int j = 0; j < 7; j++)                                                        \
                for (int l = 0; l < LB; l++)                                                   \
                    keep[j][l] = SENT;                                                         \
            for (int q = 0; q < 13; q++) {                                                     \
                const T *restrict v = m[ck[q]][cj[q]];                                         \
                T prev[LB];                                                                    \
                for (int l = 0; l < LB; l++)                                                   \
                    prev[l] = LOWEST;                                                          \
                for (int j = 0; j < 7; j++) {                                                  \
                    for (int l = 0; l < LB; l++) {                                             \
                        T a = keep[j][l];                                                      \
                        keep[j][l] = MF_MAX(prev[l], MF_MIN(a, v[l]));                         \
                        prev[l] = a;                                                           \
                    }                                                                          \
                }                                                                              \
            }                                                                                  \
            int n = cols - c0 < LB ? cols - c0 : LB;                                           \
            for (int l = 0; l < n; l++)                                                        \
                out[c0 + l] = keep[6][l];                                                      \
        }                                                                                      \
    }                                                                                          \
                                                                                               \
    /* Any size: rows[0..size_r-1] padded (width cols + size_c - 1 + LB), state: (rank+1)*LB. */\
    ATTR static void mf_row_generic_##SUF(T *const *rows, int cols, int size_r, int size_c,    \
                                          int rank, T *restrict out, T *restrict state)        \
    {                                                                                          \
        enum { LB = mf_lb_##SUF };                                                             \
        for (int c0 = 0; c0 < cols; c0 += LB) {                                                \
            for (int j = 0; j <= rank; j++)                                                    \
                for (int l = 0; l < LB; l++)                                                   \
                    state[j * LB + l] = SENT;                                                  \
            for (int dr = 0; dr < size_r; dr++) {                                              \
                for (int dc = 0; dc < size_c; dc++) {                                          \
                    const T *restrict x = rows[dr] + c0 + dc;                                  \
                    T prev[LB];                                                                \
                    for (int l = 0; l < LB; l++)                                               \
                        prev[l] = LOWEST;                                                      \
                    for (int j = 0; j <= rank; j++) {                                          \
                        T *restrict s = state + j * LB;                                        \
                        for (int l = 0; l < LB; l++) {                                         \
                            T a = s[l];                                                        \
                            T m = MF_MIN(a, x[l]);                                             \
                            s[l] = MF_MAX(prev[l], m);                                         \
                            prev[l] = a;                                                       \
                        }                                                                      \
                    }                                                                          \
                }                                                                              \
            }                                                                                  \
            int n = cols - c0 < LB ? cols - c0 : LB;                                           \
            const T *res = state + rank * LB;                                                  \
            for (int l = 0; l < n; l++)                                                        \
                out[c0 + l] = res[l];                                                          \
        }                                                                                      \
    }                                                                                          \
                                                                                               \
    /* Output rows r0 .. r1-1 of one frame. Scratch sized by mf_scratch_bytes. */             \
    ATTR static void mf_band_##SUF(const T *restrict frame, int rows_n, int cols, int size_r,  \
                                   int size_c, int mode, T cval, const int *restrict cmap,     \
                                   int r0, int r1, T *restrict outf, T *restrict ring,         \
                                   uint8_t *restrict mring, int *restrict ring_nan,            \
                                   T *restrict work, T **rowp)                                 \
    {                                                                                          \
        enum { LB = mf_lb_##SUF };                                                             \
        int width = cols + size_c - 1;                                                         \
        int stride = width + LB;                                                               \
        int rank = (size_r * size_c) / 2;                                                      \
        int before = size_r / 2;                                                               \
        for (int r = r0; r < r1; r++) {                                                        \
            int any_nan = 0;                                                                   \
            for (int dr = 0; dr < size_r; dr++) {                                              \
                int v = r - before + dr; /* virtual input row; ring slot v mod size_r */       \
                int slot = ((v % size_r) + size_r) % size_r;                                   \
                T *row = ring + (int64_t)slot * stride;                                        \
                if (r == r0 || dr == size_r - 1) {                                             \
                    int sr = mf_map_index(v, rows_n, mode);                                    \
                    ring_nan[slot] = mf_pad_row_##SUF(frame, cols, sr, cmap, width, cval, row, \
                                                      mring + (int64_t)slot * stride);         \
                }                                                                              \
                any_nan |= ring_nan[slot];                                                     \
                rowp[dr] = row;                                                                \
            }                                                                                  \
            T *o = outf + (int64_t)r * cols;                                                   \
            if (size_r == 3 && size_c == 3)                                                    \
                mf_row3x3_##SUF(rowp, cols, o, work);                                          \
            else if (size_r == 5 && size_c == 5)                                               \
                mf_row5x5_##SUF(rowp, cols, o, work);                                          \
            else                                                                               \
                mf_row_generic_##SUF(rowp, cols, size_r, size_c, rank, o, work);               \
            if (IS_FLOAT && any_nan) {                                                         \
                for (int c = 0; c < cols; c++) {                                               \
                    int found = 0;                                                             \
                    for (int dr = 0; dr < size_r && !found; dr++) {                            \
                        const uint8_t *m = mring + (rowp[dr] - ring) + c;                      \
                        for (int dc = 0; dc < size_c; dc++)                                    \
                            found |= m[dc];                                                    \
                    }                                                                          \
                    if (found)                                                                 \
                        o[c] = (T)NAN;                                                         \
                }                                                                              \
            }                                                                                  \
        }                                                                                      \
    }

#define MF_DEFINE_TYPE(NAME, T, IS_FLOAT, SENT, LOWEST)                                        \
    MF_DEFINE(NAME##_avx512, T, IS_FLOAT, SENT, LOWEST, MM_ATTR_AVX512, 256)                   \
    MF_DEFINE(NAME##_avx2, T, IS_FLOAT, SENT, LOWEST, MM_ATTR_AVX2, 128)                       \
    MF_DEFINE(NAME##_base, T, IS_FLOAT, SENT, LOWEST, MM_ATTR_BASE, 128)                       \
                                                                                               \
    typedef void (*mf_band_fn_##NAME)(const T *, int, int, int, int, int, T, const int *, int, \
                                      int, T *, T *, uint8_t *, int *, T *, T **);             \
                                                                                               \
    /* Filter frames (n_frames, rows, cols) into out. Returns 0, -1 (memory), -2 (isa). */     \
    static int mf_run_##NAME(const T *frames, int64_t n_frames, int rows_n, int cols,          \
                             int size_r, int size_c, int mode, T cval, T *out,                 \
                             int num_threads, int isa)                                         \
    {                                                                                          \
        int best = mm_best_isa();                                                              \
        if (isa < 0)                                                                           \
            isa = best;                                                                        \
        if (isa > best)                                                                        \
            return -2;                                                                         \
        mf_band_fn_##NAME fn = isa == 2 ? mf_band_##NAME##_avx512                              \
                             : isa == 1 ? mf_band_##NAME##_avx2                                \
                                        : mf_band_##NAME##_base;                               \
        int lb = isa == 2 ? mf_lb_##NAME##_avx512 : isa == 1 ? mf_lb_##NAME##_avx2             \
                                                             : mf_lb_##NAME##_base;            \
        int width = cols + size_c - 1;                                                         \
        int stride = width + lb;                                                               \
        int rank = (size_r * size_c) / 2;                                                      \
        int *cmap = (int *)malloc(sizeof(int) * (size_t)width);                                \
        if (cmap == NULL)                                                                      \
            return -1;                                                                         \
        for (int x = 0; x < width; x++)                                                        \
            cmap[x] = mf_map_index((int64_t)x - size_c / 2, cols, mode);                       \
        int64_t bands = (rows_n + MF_BAND_ROWS - 1) / MF_BAND_ROWS;                            \
        int64_t tasks = n_frames * bands;                                                      \
        if (num_threads <= 0)                                                                  \
            num_threads = omp_get_max_threads();                                               \
        if (tasks < num_threads)                                                               \
            num_threads = tasks > 0 ? (int)tasks : 1;                                          \
        int failed = 0;                                                                        \
        size_t work_n = (size_t)5 * (cols + 4 + lb);                                           \
        if ((size_t)(rank + 1) * lb > work_n)                                                  \
            work_n = (size_t)(rank + 1) * lb;                                                  \
        _Pragma("omp parallel num_threads(num_threads)")                                       \
        {                                                                                      \
            T *ring = (T *)calloc((size_t)size_r * stride, sizeof(T));                         \
            uint8_t *mring = (uint8_t *)calloc((size_t)size_r * stride, 1);                    \
            int *ring_nan = (int *)calloc((size_t)size_r, sizeof(int));                        \
            T *work = (T *)aligned_alloc(64, (work_n * sizeof(T) + 63) / 64 * 64);             \
            T **rowp = (T **)malloc(sizeof(T *) * (size_t)size_r);                             \
            int ok = ring && mring && ring_nan && work && rowp;                                \
            if (!ok) {                                                                         \
                _Pragma("omp atomic write") failed = 1;                                        \
            }                                                                                  \
            _Pragma("omp for schedule(dynamic, 1)")                                            \
            for (int64_t t = 0; t < tasks; t++) {                                              \
                if (!ok)                                                                       \
                    continue;                                                                  \
                int64_t f = t / bands;                                                         \
                int r0 = (int)(t % bands) * MF_BAND_ROWS;                                      \
                int r1 = r0 + MF_BAND_ROWS < rows_n ? r0 + MF_BAND_ROWS : rows_n;              \
                int64_t fsize = (int64_t)rows_n * cols;                                        \
                fn(frames + f * fsize, rows_n, cols, size_r, size_c, mode, cval, cmap, r0, r1, \
                   out + f * fsize, ring, mring, ring_nan, work, rowp);                        \
            }                                                                                  \
            free(ring);                                                                        \
            free(mring);                                                                       \
            free(ring_nan);                                                                    \
            free(work);                                                                        \
            free(rowp);                                                                        \
        }                                                                                      \
        free(cmap);                                                                            \
        return failed ? -1 : 0;                                                                \
    }

MF_DEFINE_TYPE(f32, float, 1, INFINITY, -INFINITY)
MF_DEFINE_TYPE(f64, double, 1, INFINITY, -INFINITY)
MF_DEFINE_TYPE(i32, int32_t, 0, INT32_MAX, INT32_MIN)
MF_DEFINE_TYPE(u16, uint16_t, 0, UINT16_MAX, 0)

#endif
