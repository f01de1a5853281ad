/* Moving median along frames: sorted windows of many adjacent pixels updated in SIMD lanes.
 *
 * Data are frames-major, (n_frames, npix). Pixels are processed in tiles of TL adjacent
 * pixels (TL lanes); each tile keeps, for every lane, its window of frames sorted:
 *     S[j * TL + l]   j = 0 .. w-1 (rank), l = lane;   S[w * TL + l] = sentinel (+inf)
 * Going from one frame to the next removes the outgoing value x_out and inserts the incoming
 * value x_in in one branch-free pass over the ranks (every lane at once):
 *     c_j = (a_j < x_out) ? a_j : a_{j+1}        the array without x_out
 *     b_j = max(c_{j-1}, min(c_j, x_in))         the array with x_in, c_{-1} = -inf
 * so the compiler turns the lane loop into compare/blend/min/max vector instructions. The
 * state of a tile (w + 1 rows of TL values) stays in L1/L2 while all frames stream through.
 *
 * Optionally the output is minuend - median instead of the median (``sub``: a frame of the
 * stack per sample, e.g. the frame itself: background subtraction in the same pass).
 *
 * NaNs: counted per lane and stored as +inf (so they sort last and are removed consistently);
 * an output whose window holds one is NaN. Missing frames ("shrink" edges) are +inf sentinels
 * (INT32_MAX for int32), which sort last and never reach the ranks asked for.
 *
 * One build runs on any x86-64: each kernel is compiled for AVX-512, AVX2 and SSE2 (the
 * baseline) with target attributes and the widest one the CPU supports is picked at run time
 * (__builtin_cpu_supports). OpenMP distributes tiles over threads.
 */
#ifndef XREDUCE_MOVING_MEDIAN_IMPL_H
#define XREDUCE_MOVING_MEDIAN_IMPL_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>

#if defined(__x86_64__) || defined(__i386__)
#define MM_X86 1
#define MM_ATTR_AVX512 __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma,prefer-vector-width=512")))
#define MM_ATTR_AVX2 __attribute__((target("avx2,fma")))
#else
#define MM_X86 0
#define MM_ATTR_AVX512
#define MM_ATTR_AVX2
#endif
#define MM_ATTR_BASE

/* Instruction sets: 0 baseline (SSE2 on x86-64), 1 AVX2, 2 AVX-512. */
static int mm_best_isa(void)
{
#if MM_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")
        && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw"))
        return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return 1;
#endif
    return 0;
}

/* Lanes per tile: four vector registers of the instruction set. */
#define MM_TILE_BYTES_2 256
#define MM_TILE_BYTES_1 128
#define MM_TILE_BYTES_0 64
#define MM_PREFETCH_AHEAD 8 /* frames */
#define MM_WIDE_STATE_BYTES 32768

#define MM_DEFINE_TILE(SUF, T, IS_FLOAT, SENT, LOWEST, ATTR, TILE_BYTES)                      \
    enum { mm_tl_##SUF = (TILE_BYTES) / (int)sizeof(T) };                                      \
                                                                                               \
    /* Load frame f of the tile's lanes into x (sentinels for f < 0 and past the last lane);   \
     * add sign * (is NaN) to the NaN counts. */                                               \
    ATTR static inline void mm_load_##SUF(const T *restrict stack, int64_t npix, int64_t p0,   \
                                          int nl, int f, int sign, T *restrict x,              \
                                          int *restrict nanc)                                  \
    {                                                                                          \
        enum { TL = mm_tl_##SUF };                                                             \
        if (f < 0) {                                                                           \
            for (int l = 0; l < TL; l++)                                                       \
                x[l] = SENT;                                                                   \
            return;                                                                            \
        }                                                                                      \
        const T *restrict row = stack + (int64_t)f * npix + p0;                                \
        if (nl == TL) {                                                                        \
            for (int l = 0; l < TL; l++) {                                                     \
                T v = row[l];                                                                  \
                if (IS_FLOAT) {                                                                \
                    int isn = v != v;                                                          \
                    nanc[l] += sign * isn;                                                     \
                    v = isn ? SENT : v;                                                        \
                }                                                                              \
                x[l] = v;                                                                      \
            }                                                                                  \
        } else {                                                                               \
            for (int l = 0; l < TL; l++) {                                                     \
                T v = l < nl ? row[l] : SENT;                                                  \
                if (IS_FLOAT && v != v) {                                                      \
                    nanc[l] += sign;                                                           \
                    v = SENT;                                                                  \
                }                                                                              \
                x[l] = v;                                                                      \
            }                                                                                  \
        }                                                                                      \
    }                                                                                          \
                                                                                               \
    /* Ask for the tile's lanes of virtual frame v a few frames ahead: each frame row of a  \
     * tile is on its own page, where hardware prefetchers do not reach. */                    \
    ATTR static inline void mm_prefetch_##SUF(const T *stack, int64_t npix, int64_t p0,       \
                                              const int *vmap, int v, int vmap_len)            \
    {                                                                                          \
        if (v >= vmap_len || vmap[v] < 0)                                                      \
            return;                                                                            \
        const char *row = (const char *)(stack + (int64_t)vmap[v] * npix + p0);                \
        for (int b = 0; b < (TILE_BYTES); b += 64)                                             \
            __builtin_prefetch(row + b, 0, 3);                                                 \
    }                                                                                          \
                                                                                               \
    /* Remove x_out and insert x_in in every lane's sorted window S (w ranks + sentinel). */   \
    ATTR static inline void mm_replace_##SUF(T *restrict S, int w, const T *restrict xo,       \
                                             const T *restrict xi)                             \
    {                                                                                          \
        enum { TL = mm_tl_##SUF };                                                             \
        T cp[TL];                                                                              \
        for (int l = 0; l < TL; l++)                                                           \
            cp[l] = LOWEST;                                                                    \
        for (int j = 0; j < w; j++) {                                                          \
            T *restrict a = S + (int64_t)j * TL;                                               \
            const T *restrict a1 = a + TL;                                                     \
            _Pragma("GCC ivdep") for (int l = 0; l < TL; l++)                                  \
            {                                                                                  \
                T aj = a[l], an = a1[l]; /* both loaded: a select, not a branch */         \
                T c = aj < xo[l] ? aj : an;                                                    \
                T m = xi[l] < c ? xi[l] : c;                                                   \
                a[l] = cp[l] < m ? m : cp[l];                                                  \
                cp[l] = c;                                                                     \
            }                                                                                  \
        }                                                                                      \
    }                                                                                          \
                                                                                               \
    /* One tile: lanes p0 .. p0 + nl - 1, every sample frame. S: (w + 1) * TL scratch. */     \
    ATTR static void mm_tile_##SUF(const T *restrict stack, int64_t npix, int64_t p0, int nl,  \
                                   int w, const int *restrict vmap,                            \
                                   const int *restrict samples, const int *restrict rank_lo,   \
                                   const int *restrict rank_hi, int ns,                        \
                                   const int *restrict sub, T *restrict out, T *restrict S)    \
    {                                                                                          \
        enum { TL = mm_tl_##SUF };                                                             \
        T xi[TL], xo[TL];                                                                      \
        int nanc[TL];                                                                          \
        int prev = 0;                                                                          \
        int vmap_len = ns > 0 ? samples[ns - 1] + w : 0;                                       \
        for (int k = 0; k < ns; k++) {                                                         \
            int i = samples[k];                                                                \
            if (k == 0 || i - prev >= w) { /* (re)build the window from scratch */            \
                for (int64_t j = 0; j < (int64_t)(w + 1) * TL; j++)                            \
                    S[j] = SENT;                                                               \
                for (int l = 0; l < TL; l++) {                                                 \
                    nanc[l] = 0;                                                               \
                    xo[l] = SENT;                                                              \
                }                                                                              \
                for (int v = i; v < i + w; v++) {                                              \
                    mm_prefetch_##SUF(stack, npix, p0, vmap, v + MM_PREFETCH_AHEAD, vmap_len); \
                    mm_load_##SUF(stack, npix, p0, nl, vmap[v], 1, xi, nanc);                  \
                    mm_replace_##SUF(S, w, xo, xi);                                            \
                }                                                                              \
            } else { /* slide: frame v - 1 leaves, frame v + w - 1 enters */                  \
                for (int v = prev + 1; v <= i; v++) {                                          \
                    mm_prefetch_##SUF(stack, npix, p0, vmap, v + w - 1 + MM_PREFETCH_AHEAD,    \
                                      vmap_len);                                               \
                    mm_load_##SUF(stack, npix, p0, nl, vmap[v - 1], -1, xo, nanc);             \
                    mm_load_##SUF(stack, npix, p0, nl, vmap[v + w - 1], 1, xi, nanc);          \
                    mm_replace_##SUF(S, w, xo, xi);                                            \
                }                                                                              \
            }                                                                                  \
            prev = i;                                                                          \
            T *restrict o = out + (int64_t)k * npix + p0;                                      \
            const T *restrict lo = S + (int64_t)rank_lo[k] * TL;                               \
            const T *restrict hi = S + (int64_t)rank_hi[k] * TL;                               \
            const T half = (T)0.5;                                                             \
            const T nan_value = IS_FLOAT ? (T)NAN : (T)0;                                      \
            if (sub != NULL) { /* minuend - median, each rounded to T */                     \
                const T *restrict x = stack + (int64_t)sub[k] * npix + p0;                     \
                for (int l = 0; l < nl; l++) {                                                 \
                    T v = rank_lo[k] == rank_hi[k] ? lo[l] : (T)((lo[l] + hi[l]) * half);      \
                    v = (IS_FLOAT && nanc[l] > 0) ? nan_value : v;                             \
                    o[l] = (T)(x[l] - v);                                                      \
                }                                                                              \
            } else if (nl == TL && rank_lo[k] == rank_hi[k]) {                                 \
                for (int l = 0; l < TL; l++)                                                   \
                    o[l] = (IS_FLOAT && nanc[l] > 0) ? nan_value : lo[l];                      \
            } else if (nl == TL) {                                                             \
                for (int l = 0; l < TL; l++) {                                                 \
                    T v = (T)((lo[l] + hi[l]) * half);                                         \
                    o[l] = (IS_FLOAT && nanc[l] > 0) ? nan_value : v;                          \
                }                                                                              \
            } else {                                                                           \
                for (int l = 0; l < nl; l++) {                                                 \
                    T v = rank_lo[k] == rank_hi[k] ? lo[l] : (T)((lo[l] + hi[l]) * half);      \
                    o[l] = (IS_FLOAT && nanc[l] > 0) ? nan_value : v;                          \
                }                                                                              \
            }                                                                                  \
        }                                                                                      \
    }

/* Each instruction set has a narrow tile (4 vector registers) and a wide one (8), used when
 * the sorted windows of the wide tile fit in MM_WIDE_STATE_BYTES: wider tiles read longer
 * runs of each frame row, which hides memory latency better, as long as the state stays in
 * L1. */
#define MM_DEFINE_TYPE(NAME, T, IS_FLOAT, SENT, LOWEST)                                        \
    MM_DEFINE_TILE(NAME##_avx512, T, IS_FLOAT, SENT, LOWEST, MM_ATTR_AVX512, MM_TILE_BYTES_2)  \
    MM_DEFINE_TILE(NAME##_avx2, T, IS_FLOAT, SENT, LOWEST, MM_ATTR_AVX2, MM_TILE_BYTES_1)      \
    MM_DEFINE_TILE(NAME##_base, T, IS_FLOAT, SENT, LOWEST, MM_ATTR_BASE, MM_TILE_BYTES_0)      \
    MM_DEFINE_TILE(NAME##_avx512w, T, IS_FLOAT, SENT, LOWEST, MM_ATTR_AVX512,                  \
                   2 * MM_TILE_BYTES_2)                                                        \
    MM_DEFINE_TILE(NAME##_avx2w, T, IS_FLOAT, SENT, LOWEST, MM_ATTR_AVX2, 2 * MM_TILE_BYTES_1) \
    MM_DEFINE_TILE(NAME##_basew, T, IS_FLOAT, SENT, LOWEST, MM_ATTR_BASE, 2 * MM_TILE_BYTES_0) \
                                                                                               \
    typedef void (*mm_tile_fn_##NAME)(const T *, int64_t, int64_t, int, int, const int *,      \
                                      const int *, const int *, const int *, int, const int *, \
                                      T *, T *);                                               \
                                                                                               \
    /* Moving median of a (n_frames, npix) stack; out is (ns, npix), or with sub != NULL       \
     * stack[sub[k]] - median. isa < 0: best present.                                          \
     * Returns 0, -1 when memory is short, -2 when the asked isa is not supported. */          \
    static int mm_run_##NAME(const T *stack, int64_t npix, int w, const int *vmap,             \
                             const int *samples, const int *rank_lo, const int *rank_hi,       \
                             int ns, const int *sub, T *out, int num_threads, int isa)         \
    {                                                                                          \
        int best = mm_best_isa();                                                              \
        if (isa < 0)                                                                           \
            isa = best;                                                                        \
        if (isa > best)                                                                        \
            return -2;                                                                         \
        int wide_tl = isa == 2 ? mm_tl_##NAME##_avx512w                                        \
                    : isa == 1 ? mm_tl_##NAME##_avx2w                                          \
                               : mm_tl_##NAME##_basew;                                         \
        int wide = (int64_t)(w + 1) * wide_tl * (int64_t)sizeof(T) <= MM_WIDE_STATE_BYTES;     \
        mm_tile_fn_##NAME fn;                                                                  \
        int tl;                                                                                \
        if (isa == 2) {                                                                        \
            fn = wide ? mm_tile_##NAME##_avx512w : mm_tile_##NAME##_avx512;                    \
            tl = wide ? mm_tl_##NAME##_avx512w : mm_tl_##NAME##_avx512;                        \
        } else if (isa == 1) {                                                                 \
            fn = wide ? mm_tile_##NAME##_avx2w : mm_tile_##NAME##_avx2;                        \
            tl = wide ? mm_tl_##NAME##_avx2w : mm_tl_##NAME##_avx2;                            \
        } else {                                                                               \
            fn = wide ? mm_tile_##NAME##_basew : mm_tile_##NAME##_base;                        \
            tl = wide ? mm_tl_##NAME##_basew : mm_tl_##NAME##_base;                            \
        }                                                                                      \
        int64_t ntiles = (npix + tl - 1) / tl;                                                 \
        if (num_threads <= 0)                                                                  \
            num_threads = omp_get_max_threads();                                               \
        if (ntiles < num_threads)                                                              \
            num_threads = ntiles > 0 ? (int)ntiles : 1;                                        \
        int failed = 0;                                                                        \
        size_t bytes = ((size_t)(w + 1) * tl * sizeof(T) + 63) / 64 * 64;                      \
        _Pragma("omp parallel num_threads(num_threads)")                                       \
        {                                                                                      \
            T *S = (T *)aligned_alloc(64, bytes);                                              \
            if (S == NULL) {                                                                   \
                _Pragma("omp atomic write") failed = 1;                                        \
            }                                                                                  \
            _Pragma("omp for schedule(dynamic, 1)")                                            \
            for (int64_t t = 0; t < ntiles; t++) {                                             \
                if (S == NULL)                                                                 \
                    continue;                                                                  \
                int64_t p0 = t * tl;                                                           \
                int nl = (int)(npix - p0 < tl ? npix - p0 : tl);                               \
                fn(stack, npix, p0, nl, w, vmap, samples, rank_lo, rank_hi, ns, sub, out, S);  \
            }                                                                                  \
            free(S);                                                                           \
        }                                                                                      \
        return failed ? -1 : 0;                                                                \
    }

MM_DEFINE_TYPE(f32, float, 1, INFINITY, -INFINITY)
MM_DEFINE_TYPE(f64, double, 1, INFINITY, -INFINITY)
MM_DEFINE_TYPE(i32, int32_t, 0, INT32_MAX, INT32_MIN)

#endif
