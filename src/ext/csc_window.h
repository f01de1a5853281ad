/* Pixel-major (CSC) accumulation of 1D integration sums through an 8-bin window, for
 * csc_integrate.pyx (how and why: doc/integration.md, "The csc method").
 *
 * Each pixel p holds cnt(p) <= 8 consecutive bins starting at base(p) + shift(p), where
 * base(p) is a multiple of 4 and shift(p) + cnt(p) <= 8; its coefficients follow each other in
 * `coef` (pixel order). Per frame, two 8-lane windows of doubles (signal, variance) hold the
 * sums of the pixels met since the window's base last changed: lane k of pixel p gets
 * c_k * x (signal) and c_k * c_k * y (variance: y = max(raw, 1) for Poisson, or the variance
 * of the pixel), where c_k is the coefficient of bin base + k (0 outside the pixel's bins).
 * When a pixel's base differs from the window's, the 8 lanes are added to the accumulators
 * acc[base .. base + 7] and zeroed. Products are rounded then added (no FMA: the build is
 * ISO C11, where GCC does not contract), so the AVX-512 path (all 8 lanes, zeros included)
 * and the portable one (the pixel's lanes only) give identical sums: adding +-0.0 to a lane
 * changes nothing, a lane never holding -0.0. */
#ifndef XR_CSC_WINDOW_H
#define XR_CSC_WINDOW_H

#include <stddef.h>
#include <stdint.h>

#define XR_CSC_FRAMES 4 /* frames sharing one pass over the pixels' coefficients */

typedef struct {
    double sig[XR_CSC_FRAMES][8];
    double var[XR_CSC_FRAMES][8];
    int64_t base; /* bin of lane 0; -1: nothing held */
} xr_window;

static void xr_window_reset(xr_window *w) {
    for (int f = 0; f < XR_CSC_FRAMES; f++)
        for (int k = 0; k < 8; k++)
            w->sig[f][k] = w->var[f][k] = 0.0;
    w->base = -1;
}

/* Add the windows of frames 0..nf-1 to acc_sig / acc_var (frame f at f * stride) and empty
 * them. */
static void xr_window_flush(xr_window *w, int nf, int with_var, double *acc_sig,
                            double *acc_var, int64_t stride) {
    if (w->base >= 0) {
        for (int f = 0; f < nf; f++) {
            double *s = acc_sig + f * stride + w->base, *v = acc_var + f * stride + w->base;
            for (int k = 0; k < 8; k++) {
                s[k] += w->sig[f][k];
                w->sig[f][k] = 0.0;
                if (with_var) {
                    v[k] += w->var[f][k];
                    w->var[f][k] = 0.0;
                }
            }
        }
    }
    w->base = -1;
}

/* Pixels p0 .. p0 + n - 1 of nf frames. Values from `raw32` (32-bit integers, frame f at
 * raw32 + f * vstride, signed or not; Poisson y = max(x, 1)) when it is not NULL, else from
 * the doubles val / wgt (x and y, frame f at f * vstride; invalid pixels given as 0, 0).
 * *off is the offset in coef of pixel p0's coefficients and is advanced. */
static void xr_csc_portable(const uint16_t *base, const uint8_t *meta, const float *coef,
                            int64_t *off, int64_t p0, int64_t n, int nf, const void *raw32,
                            int is_unsigned, const double *val, const double *wgt,
                            int64_t vstride, int with_var, xr_window *w, double *acc_sig,
                            double *acc_var, int64_t stride) {
    int64_t o = *off;
    for (int64_t k = 0; k < n; k++) {
        int64_t p = p0 + k;
        int cnt = meta[p] & 15, sh = meta[p] >> 4;
        if (!cnt)
            continue;
        if (base[p] != w->base) {
            xr_window_flush(w, nf, with_var, acc_sig, acc_var, stride);
            w->base = base[p];
        }
        const float *c = coef + o;
        o += cnt;
        for (int f = 0; f < nf; f++) {
            double x, y;
            if (raw32) {
                x = is_unsigned ? (double)((const uint32_t *)raw32)[f * vstride + k]
                                : (double)((const int32_t *)raw32)[f * vstride + k];
                y = x > 1.0 ? x : 1.0;
            } else {
                x = val[f * vstride + k];
                y = with_var ? wgt[f * vstride + k] : 0.0;
            }
            for (int j = 0; j < cnt; j++) {
                double cj = (double)c[j];
                w->sig[f][sh + j] += cj * x;
                if (with_var)
                    w->var[f][sh + j] += cj * cj * y;
            }
        }
    }
    *off = o;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

static int xr_csc_has_avx512(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
}

/* xr_csc_portable's sums with AVX-512, the windows in registers; nf, with_var and the source
 * (src: 0 doubles, 1 int32, 2 uint32) are literals at each call below, so the compiler makes
 * one loop per case, its frames unrolled. */
__attribute__((target("avx512f,avx512vl"), always_inline))
static inline void xr_csc_avx512_n(const uint16_t *base, const uint8_t *meta,
                                   const float *coef, int64_t *off, int64_t p0, int64_t n,
                                   const int nf, const void *raw32, const int src,
                                   const double *val, const double *wgt, int64_t vstride,
                                   const int with_var, xr_window *w, double *acc_sig,
                                   double *acc_var, int64_t stride) {
    __m512d ws[XR_CSC_FRAMES], wv[XR_CSC_FRAMES];
    const __m512d one = _mm512_set1_pd(1.0), zero = _mm512_setzero_pd();
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
#pragma GCC unroll 4
    for (int f = 0; f < nf; f++) {
        ws[f] = _mm512_loadu_pd(w->sig[f]);
        wv[f] = _mm512_loadu_pd(w->var[f]);
    }
    int64_t cur = w->base, o = *off;
    for (int64_t k = 0; k < n; k++) {
        int64_t p = p0 + k;
        unsigned m = meta[p], cnt = m & 15u;
        if (!cnt)
            continue;
        if (base[p] != cur) {
            if (cur >= 0) {
#pragma GCC unroll 4
                for (int f = 0; f < nf; f++) {
                    double *s = acc_sig + f * stride + cur;
                    _mm512_storeu_pd(s, _mm512_add_pd(_mm512_loadu_pd(s), ws[f]));
                    ws[f] = zero;
                    if (with_var) {
                        double *v = acc_var + f * stride + cur;
                        _mm512_storeu_pd(v, _mm512_add_pd(_mm512_loadu_pd(v), wv[f]));
                        wv[f] = zero;
                    }
                }
            }
            cur = base[p];
        }
        /* the pixel's cnt coefficients into lanes shift .. shift + cnt - 1, zeros elsewhere
         * (a masked load then a lane rotation: faster than an expanding load on Zen 4) */
        unsigned sh = m >> 4;
        __m256 c8 = _mm256_maskz_loadu_ps((__mmask8)((1u << cnt) - 1u), coef + o);
        c8 = _mm256_permutevar8x32_ps(c8, _mm256_sub_epi32(lane, _mm256_set1_epi32((int)sh)));
        c8 = _mm256_maskz_mov_ps((__mmask8)(((1u << cnt) - 1u) << sh), c8);
        __m512d c = _mm512_cvtps_pd(c8);
        __m512d cc = _mm512_mul_pd(c, c);
        o += cnt;
#pragma GCC unroll 4
        for (int f = 0; f < nf; f++) {
            __m512d x;
            if (src == 1)
                x = _mm512_set1_pd((double)((const int32_t *)raw32)[f * vstride + k]);
            else if (src == 2)
                x = _mm512_set1_pd((double)((const uint32_t *)raw32)[f * vstride + k]);
            else
                x = _mm512_set1_pd(val[f * vstride + k]);
            ws[f] = _mm512_add_pd(ws[f], _mm512_mul_pd(c, x));
            if (with_var) {
                __m512d y = src ? _mm512_max_pd(x, one) : _mm512_set1_pd(wgt[f * vstride + k]);
                wv[f] = _mm512_add_pd(wv[f], _mm512_mul_pd(cc, y));
            }
        }
    }
#pragma GCC unroll 4
    for (int f = 0; f < nf; f++) {
        _mm512_storeu_pd(w->sig[f], ws[f]);
        _mm512_storeu_pd(w->var[f], wv[f]);
    }
    w->base = cur;
    *off = o;
}

#define XR_CSC_CASE(NF, VAR, SRC)                                                          \
    xr_csc_avx512_n(base, meta, coef, off, p0, n, NF, raw32, SRC, val, wgt, vstride, VAR, w,  \
                    acc_sig, acc_var, stride)
#define XR_CSC_FRAMES_CASES(VAR, SRC)                                                        \
    switch (nf) {                                                                            \
    case 1: XR_CSC_CASE(1, VAR, SRC); break;                                                 \
    case 2: XR_CSC_CASE(2, VAR, SRC); break;                                                 \
    case 3: XR_CSC_CASE(3, VAR, SRC); break;                                                 \
    default: XR_CSC_CASE(4, VAR, SRC); break;                                                \
    }

__attribute__((target("avx512f,avx512vl")))
static void xr_csc_avx512(const uint16_t *base, const uint8_t *meta, const float *coef,
                          int64_t *off, int64_t p0, int64_t n, int nf, const void *raw32,
                          int is_unsigned, const double *val, const double *wgt,
                          int64_t vstride, int with_var, xr_window *w, double *acc_sig,
                          double *acc_var, int64_t stride) {
    int src = raw32 == NULL ? 0 : is_unsigned ? 2 : 1;
    if (with_var) {
        if (src == 1) { XR_CSC_FRAMES_CASES(1, 1) }
        else if (src == 2) { XR_CSC_FRAMES_CASES(1, 2) }
        else { XR_CSC_FRAMES_CASES(1, 0) }
    } else {
        if (src == 1) { XR_CSC_FRAMES_CASES(0, 1) }
        else if (src == 2) { XR_CSC_FRAMES_CASES(0, 2) }
        else { XR_CSC_FRAMES_CASES(0, 0) }
    }
}
#undef XR_CSC_FRAMES_CASES
#undef XR_CSC_CASE
#else
static int xr_csc_has_avx512(void) { return 0; }

static void xr_csc_avx512(const uint16_t *base, const uint8_t *meta, const float *coef,
                          int64_t *off, int64_t p0, int64_t n, int nf, const void *raw32,
                          int is_unsigned, const double *val, const double *wgt,
                          int64_t vstride, int with_var, xr_window *w, double *acc_sig,
                          double *acc_var, int64_t stride) {
    xr_csc_portable(base, meta, coef, off, p0, n, nf, raw32, is_unsigned, val, wgt, vstride,
                    with_var, w, acc_sig, acc_var, stride); /* never called */
}
#endif

#endif
