/* Gathers of a CSR row from a 32-bit integer frame with AVX2 (runtime dispatch), for
 * csr_integrate.pyx. Entry j+k of each block of 8 (the last block may be partial) goes to
 * lane k of sig[8] / var[8]; products are rounded then added (no FMA), in the same order as
 * the portable 8-lane loop of csr_integrate.pyx, so both give identical results. */
#ifndef XR_CSR_GATHER_H
#define XR_CSR_GATHER_H

#include <stddef.h>
#include <stdint.h>

#define XR_PREFETCH(p) __builtin_prefetch((const void*)(p), 0, 1)

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

static int xr_has_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
}

/* Lanes k of a block: sig += c*x and, when poisson, var += c*c*max(x, 1); x from the 8
 * int32 values r, c the 8 coefficients, or all ones when c is NULL (no multiplications). */
__attribute__((target("avx2")))
static inline void xr_add8(const __m256 *c, __m256i r, int poisson, __m256d *s0, __m256d *s1,
                           __m256d *v0, __m256d *v1) {
    const __m256d one = _mm256_set1_pd(1.0);
    __m256d x0 = _mm256_cvtepi32_pd(_mm256_castsi256_si128(r));
    __m256d x1 = _mm256_cvtepi32_pd(_mm256_extracti128_si256(r, 1));
    __m256d p0 = _mm256_max_pd(x0, one), p1 = _mm256_max_pd(x1, one);
    if (c) {
        __m256d c0 = _mm256_cvtps_pd(_mm256_castps256_ps128(*c));
        __m256d c1 = _mm256_cvtps_pd(_mm256_extractf128_ps(*c, 1));
        x0 = _mm256_mul_pd(c0, x0);
        x1 = _mm256_mul_pd(c1, x1);
        p0 = _mm256_mul_pd(_mm256_mul_pd(c0, c0), p0);
        p1 = _mm256_mul_pd(_mm256_mul_pd(c1, c1), p1);
    }
    *s0 = _mm256_add_pd(*s0, x0);
    *s1 = _mm256_add_pd(*s1, x1);
    if (poisson) {
        *v0 = _mm256_add_pd(*v0, p0);
        *v1 = _mm256_add_pd(*v1, p1);
    }
}

/* Entries j..stop of a row (blocks of 8, then a partial block): sig[k] += c*x and, when
 * poisson, var[k] += c*c*max(x, 1) (coef NULL: c = 1). Stops before the first block holding
 * a value with the sign bit set (negative int32, uint32 >= 2^31 including the 0xFFFFFFFF mark) or, when is_signed,
 * equal to 0x7FFFFFFF: the caller's exact loop handles those. Returns the first entry not
 * consumed. Pixels `ahead` entries on are prefetched. */
__attribute__((target("avx2")))
static ptrdiff_t xr_row_i32_avx2(const int32_t *frame, const int32_t *indices,
                                 const float *coef, ptrdiff_t j, ptrdiff_t stop,
                                 ptrdiff_t nnz, ptrdiff_t ahead, int is_signed, int poisson,
                                 double *sig, double *var) {
    __m256d s0 = _mm256_loadu_pd(sig), s1 = _mm256_loadu_pd(sig + 4);
    __m256d v0 = _mm256_loadu_pd(var), v1 = _mm256_loadu_pd(var + 4);
    const __m256i top = _mm256_set1_epi32(0x7FFFFFFF);
    for (; j + 8 <= stop; j += 8) {
        if (j + ahead + 8 <= nnz) {
            for (int k = 0; k < 8; k++)
                XR_PREFETCH(frame + indices[j + ahead + k]);
        }
        __m256i idx = _mm256_loadu_si256((const __m256i *)(indices + j));
        __m256i r = _mm256_i32gather_epi32((const int *)frame, idx, 4);
        __m256i bad = is_signed ? _mm256_or_si256(r, _mm256_cmpeq_epi32(r, top)) : r;
        if (_mm256_movemask_ps(_mm256_castsi256_ps(bad)))
            break;
        __m256 c = coef ? _mm256_loadu_ps(coef + j) : _mm256_setzero_ps();
        xr_add8(coef ? &c : NULL, r, poisson, &s0, &s1, &v0, &v1);
    }
    if (j < stop && j + 8 > stop) {
        /* The last, partial block: lanes at or beyond stop read nothing and add zeros
         * (c = 0), as the portable loop leaves them untouched. */
        const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        __m256i live = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(stop - j)), lane);
        __m256i idx = _mm256_maskload_epi32(indices + j, live);
        __m256i r = _mm256_mask_i32gather_epi32(_mm256_setzero_si256(), (const int *)frame,
                                                idx, live, 4);
        __m256i bad = is_signed ? _mm256_or_si256(r, _mm256_cmpeq_epi32(r, top)) : r;
        if (!_mm256_movemask_ps(_mm256_castsi256_ps(bad))) {
            __m256 c = coef ? _mm256_maskload_ps(coef + j, live)
                            : _mm256_and_ps(_mm256_castsi256_ps(live), _mm256_set1_ps(1.0f));
            xr_add8(&c, r, poisson, &s0, &s1, &v0, &v1);   /* zeros beyond stop */
            j = stop;
        }
    }
    _mm256_storeu_pd(sig, s0);
    _mm256_storeu_pd(sig + 4, s1);
    _mm256_storeu_pd(var, v0);
    _mm256_storeu_pd(var + 4, v1);
    return j;
}
/* Two frames over the same entries j..stop (whole blocks of 8 only): the index, coefficient
 * and prefetch work is shared, and each frame's lanes get exactly the additions
 * xr_row_i32_avx2 would make, so the sums are identical to two separate passes. Stops before
 * the first block holding an invalid value in either frame; the caller finishes each frame
 * from there on its own lanes. */
__attribute__((target("avx2")))
static ptrdiff_t xr_row2_i32_avx2(const int32_t *fa, const int32_t *fb, const int32_t *indices,
                                  const float *coef, ptrdiff_t j, ptrdiff_t stop,
                                  ptrdiff_t nnz, ptrdiff_t ahead, int is_signed, int poisson,
                                  double *sig_a, double *var_a, double *sig_b, double *var_b) {
    __m256d sa0 = _mm256_loadu_pd(sig_a), sa1 = _mm256_loadu_pd(sig_a + 4);
    __m256d va0 = _mm256_loadu_pd(var_a), va1 = _mm256_loadu_pd(var_a + 4);
    __m256d sb0 = _mm256_loadu_pd(sig_b), sb1 = _mm256_loadu_pd(sig_b + 4);
    __m256d vb0 = _mm256_loadu_pd(var_b), vb1 = _mm256_loadu_pd(var_b + 4);
    const __m256i top = _mm256_set1_epi32(0x7FFFFFFF);
    for (; j + 8 <= stop; j += 8) {
        if (j + ahead + 8 <= nnz) {
            for (int k = 0; k < 8; k++) {
                XR_PREFETCH(fa + indices[j + ahead + k]);
                XR_PREFETCH(fb + indices[j + ahead + k]);
            }
        }
        __m256i idx = _mm256_loadu_si256((const __m256i *)(indices + j));
        __m256i ra = _mm256_i32gather_epi32((const int *)fa, idx, 4);
        __m256i rb = _mm256_i32gather_epi32((const int *)fb, idx, 4);
        __m256i bad = _mm256_or_si256(ra, rb);
        if (is_signed)
            bad = _mm256_or_si256(bad, _mm256_or_si256(_mm256_cmpeq_epi32(ra, top),
                                                       _mm256_cmpeq_epi32(rb, top)));
        if (_mm256_movemask_ps(_mm256_castsi256_ps(bad)))
            break;
        __m256 c = coef ? _mm256_loadu_ps(coef + j) : _mm256_setzero_ps();
        xr_add8(coef ? &c : NULL, ra, poisson, &sa0, &sa1, &va0, &va1);
        xr_add8(coef ? &c : NULL, rb, poisson, &sb0, &sb1, &vb0, &vb1);
    }
    _mm256_storeu_pd(sig_a, sa0); _mm256_storeu_pd(sig_a + 4, sa1);
    _mm256_storeu_pd(var_a, va0); _mm256_storeu_pd(var_a + 4, va1);
    _mm256_storeu_pd(sig_b, sb0); _mm256_storeu_pd(sig_b + 4, sb1);
    _mm256_storeu_pd(var_b, vb0); _mm256_storeu_pd(var_b + 4, vb1);
    return j;
}
#else
static int xr_has_avx2(void) { return 0; }

static ptrdiff_t xr_row_i32_avx2(const int32_t *frame, const int32_t *indices,
                                 const float *coef, ptrdiff_t j, ptrdiff_t stop,
                                 ptrdiff_t nnz, ptrdiff_t ahead, int is_signed, int poisson,
                                 double *sig, double *var) {
    return j; /* never called: xr_has_avx2() is 0 */
}

static ptrdiff_t xr_row2_i32_avx2(const int32_t *fa, const int32_t *fb, const int32_t *indices,
                                  const float *coef, ptrdiff_t j, ptrdiff_t stop,
                                  ptrdiff_t nnz, ptrdiff_t ahead, int is_signed, int poisson,
                                  double *sig_a, double *var_a, double *sig_b, double *var_b) {
    return j; /* never called: xr_has_avx2() is 0 */
}
#endif

#endif
