/* Row kernels of xreduce.ext.geometry_kernels: radial quantity and chi along one detector row.
 *
 * atan2 is our own, free of branches (argument reduction to |u| <= tan(pi/16), then a degree-7
 * polynomial in u^2 fitted at Chebyshev nodes; max error 1 ulp on the reduced range, 3 ulp
 * overall against NumPy's arctan2 in the tests), and sin(theta) for q comes from the half-angle identity, without a library call.
 * The row function exists twice: portable scalar C, and AVX2 intrinsics (4 pixels at a time,
 * same operations in the same order, so both give bit-identical results), picked at run time
 * with __builtin_cpu_supports.
 */
#ifndef XREDUCE_GEOMETRY_KERNELS_IMPL_H
#define XREDUCE_GEOMETRY_KERNELS_IMPL_H

#include <math.h>
#include <stddef.h>
#if defined(__GNUC__) && defined(__x86_64__)
#define XR_HAVE_AVX2_PATH 1
#include <immintrin.h>
#endif

#define XR_PI 3.14159265358979323846
#define XR_TAN_PI_16 0.19891236737965800691
#define XR_TAN_3PI_16 0.66817863791929891999
#define XR_TAN_PI_8 0.41421356237309504880

/* atan2(y, x) in [-pi, pi] with atan2's signs and special zeros; no branches. */
static inline double xr_atan2(double y, double x)
{
    /* Every operation is done unconditionally and results are selected afterwards: the
     * compiler may not speculate floating-point operations, so this keeps the loop
     * branch-free and vectorizable. */
    double ay = fabs(y), ax = fabs(x);
    int steep = ay > ax;
    double hi = steep ? ay : ax;
    double lo = steep ? ax : ay;
    /* lo / hi = tan(a), a in [0, pi/4]; reduce: u = tan(a - c) = (lo - t hi) / (hi + t lo)
     * with t = tan(c), c = 0, pi/8 or pi/4, so that |u| <= tan(pi/16): one division. */
    int mid = lo > XR_TAN_PI_16 * hi, top = lo > XR_TAN_3PI_16 * hi;
    double t = top ? 1.0 : (mid ? XR_TAN_PI_8 : 0.0);
    double c = top ? 0.25 * XR_PI : (mid ? 0.125 * XR_PI : 0.0);
    double den = hi + t * lo;
    double safe_den = den > 0.0 ? den : 1.0;              /* hi = lo = 0: u = 0 */
    double u = (lo - t * hi) / safe_den;
    double z = u * u;
    double p = 0.05115745967981171;
    p = p * z - 0.06618732486766733;
    p = p * z + 0.07690724472468718;
    p = p * z - 0.0909087995193466;
    p = p * z + 0.11111110818998077;
    p = p * z - 0.1428571428427355;
    p = p * z + 0.1999999999999729;
    p = p * z - 0.3333333333333333;
    double r = c + (u + u * (z * p));
    double r_steep = 0.5 * XR_PI - r;
    r = steep ? r_steep : r;
    double r_back = XR_PI - r;
    r = signbit(x) ? r_back : r;
    return copysign(r, y);
}

/* chi = atan2(t1, t2) in (-pi, pi] */
static inline double xr_chi(double t1, double t2)
{
    double c = xr_atan2(t1, t2);
    return c == -XR_PI ? XR_PI : c;
}

/* sin(2theta / 2) = sqrt((1 - cos 2theta) / 2) from t, without cancellation on either side
 * of 90 degrees: (norm - t3) / (2 norm), written rho^2 / (2 norm (norm + t3)) when t3 >= 0. */
static inline double xr_sin_theta(double t1, double t2, double t3)
{
    double rho2 = t1 * t1 + t2 * t2;
    double norm = sqrt(rho2 + t3 * t3);
    double two_norm = 2.0 * norm;
    int forward = t3 >= 0.0;
    double forward_den = two_norm * (norm + t3);
    double backward_num = norm - t3;
    double num = forward ? rho2 : backward_num;
    double den = forward ? forward_den : two_norm;
    return sqrt(num / den);
}

/* One row: t = u + d2[j] * a2 for j < n. quantity 0 2theta, 1 q, 2 r, 3 d*^2 (see the .pyx).
 * radial or chi may be NULL. */
#define XR_DEFINE_ROW(NAME, ATTRIBUTES)                                                        \
ATTRIBUTES static void NAME(ptrdiff_t n, const double *d2, double u1, double u2, double u3,  \
                            double a12, double a22, double a32, int quantity, double scale,  \
                            double qfactor, double *radial, double *chi)                     \
{                                                                                            \
    ptrdiff_t j;                                                                             \
    if (radial != NULL) {                                                                    \
        if (quantity == 0) {                                                                 \
            for (j = 0; j < n; j++) {                                                        \
                double t1 = u1 + d2[j] * a12, t2 = u2 + d2[j] * a22, t3 = u3 + d2[j] * a32;  \
                radial[j] = scale * xr_atan2(sqrt(t1 * t1 + t2 * t2), t3);                   \
            }                                                                                \
        } else if (quantity == 2) {                                                          \
            for (j = 0; j < n; j++) {                                                        \
                double t1 = u1 + d2[j] * a12, t2 = u2 + d2[j] * a22;                         \
                radial[j] = scale * sqrt(t1 * t1 + t2 * t2);                                 \
            }                                                                                \
        } else {                                                                             \
            double square = quantity == 3 ? 1.0 : 0.0;                                       \
            double dfactor = 0.25 / (XR_PI * XR_PI);                                         \
            for (j = 0; j < n; j++) {                                                        \
                double t1 = u1 + d2[j] * a12, t2 = u2 + d2[j] * a22, t3 = u3 + d2[j] * a32;  \
                double q = qfactor * xr_sin_theta(t1, t2, t3);                               \
                radial[j] = scale * (square > 0.0 ? dfactor * q * q : q);                    \
            }                                                                                \
        }                                                                                    \
    }                                                                                        \
    if (chi != NULL) {                                                                       \
        for (j = 0; j < n; j++) {                                                            \
            double t1 = u1 + d2[j] * a12, t2 = u2 + d2[j] * a22;                             \
            chi[j] = xr_chi(t1, t2);                                                         \
        }                                                                                    \
    }                                                                                        \
}

XR_DEFINE_ROW(xr_row_baseline, )

#ifdef XR_HAVE_AVX2_PATH
#define XR_AVX2 __attribute__((target("avx2"))) static inline
#define XR_SET(x) _mm256_set1_pd(x)

/* xr_atan2 on 4 lanes, operation for operation. */
XR_AVX2 __m256d xr_atan2_avx2(__m256d y, __m256d x)
{
    const __m256d sign = XR_SET(-0.0), zero = _mm256_setzero_pd(), one = XR_SET(1.0);
    __m256d ay = _mm256_andnot_pd(sign, y), ax = _mm256_andnot_pd(sign, x);
    __m256d steep = _mm256_cmp_pd(ay, ax, _CMP_GT_OQ);
    __m256d hi = _mm256_blendv_pd(ax, ay, steep);
    __m256d lo = _mm256_blendv_pd(ay, ax, steep);
    __m256d mid = _mm256_cmp_pd(lo, _mm256_mul_pd(XR_SET(XR_TAN_PI_16), hi), _CMP_GT_OQ);
    __m256d top = _mm256_cmp_pd(lo, _mm256_mul_pd(XR_SET(XR_TAN_3PI_16), hi), _CMP_GT_OQ);
    __m256d t = _mm256_blendv_pd(_mm256_blendv_pd(zero, XR_SET(XR_TAN_PI_8), mid), one, top);
    __m256d c = _mm256_blendv_pd(_mm256_blendv_pd(zero, XR_SET(0.125 * XR_PI), mid),
                                 XR_SET(0.25 * XR_PI), top);
    __m256d den = _mm256_add_pd(hi, _mm256_mul_pd(t, lo));
    __m256d safe_den = _mm256_blendv_pd(one, den, _mm256_cmp_pd(den, zero, _CMP_GT_OQ));
    __m256d u = _mm256_div_pd(_mm256_sub_pd(lo, _mm256_mul_pd(t, hi)), safe_den);
    __m256d z = _mm256_mul_pd(u, u);
    __m256d p = XR_SET(0.05115745967981171);
    p = _mm256_sub_pd(_mm256_mul_pd(p, z), XR_SET(0.06618732486766733));
    p = _mm256_add_pd(_mm256_mul_pd(p, z), XR_SET(0.07690724472468718));
    p = _mm256_sub_pd(_mm256_mul_pd(p, z), XR_SET(0.0909087995193466));
    p = _mm256_add_pd(_mm256_mul_pd(p, z), XR_SET(0.11111110818998077));
    p = _mm256_sub_pd(_mm256_mul_pd(p, z), XR_SET(0.1428571428427355));
    p = _mm256_add_pd(_mm256_mul_pd(p, z), XR_SET(0.1999999999999729));
    p = _mm256_sub_pd(_mm256_mul_pd(p, z), XR_SET(0.3333333333333333));
    __m256d r = _mm256_add_pd(c, _mm256_add_pd(u, _mm256_mul_pd(u, _mm256_mul_pd(z, p))));
    r = _mm256_blendv_pd(r, _mm256_sub_pd(XR_SET(0.5 * XR_PI), r), steep);
    r = _mm256_blendv_pd(r, _mm256_sub_pd(XR_SET(XR_PI), r), x);      /* by the sign bit of x */
    return _mm256_or_pd(_mm256_andnot_pd(sign, r), _mm256_and_pd(sign, y));
}

XR_AVX2 __m256d xr_sin_theta_avx2(__m256d t1, __m256d t2, __m256d t3)
{
    __m256d rho2 = _mm256_add_pd(_mm256_mul_pd(t1, t1), _mm256_mul_pd(t2, t2));
    __m256d norm = _mm256_sqrt_pd(_mm256_add_pd(rho2, _mm256_mul_pd(t3, t3)));
    __m256d two_norm = _mm256_mul_pd(XR_SET(2.0), norm);
    __m256d forward = _mm256_cmp_pd(t3, _mm256_setzero_pd(), _CMP_GE_OQ);
    __m256d forward_den = _mm256_mul_pd(two_norm, _mm256_add_pd(norm, t3));
    __m256d num = _mm256_blendv_pd(_mm256_sub_pd(norm, t3), rho2, forward);
    __m256d den = _mm256_blendv_pd(two_norm, forward_den, forward);
    return _mm256_sqrt_pd(_mm256_div_pd(num, den));
}

__attribute__((target("avx2"))) static void xr_row_avx2(
    ptrdiff_t n, const double *d2, double u1, double u2, double u3, double a12, double a22,
    double a32, int quantity, double scale, double qfactor, double *radial, double *chi)
{
    ptrdiff_t j, n4 = n - n % 4;
    const __m256d vu1 = XR_SET(u1), vu2 = XR_SET(u2), vu3 = XR_SET(u3);
    const __m256d va12 = XR_SET(a12), va22 = XR_SET(a22), va32 = XR_SET(a32);
    const __m256d vscale = XR_SET(scale), vq = XR_SET(qfactor), vpi = XR_SET(XR_PI);
    const __m256d vd = XR_SET(0.25 / (XR_PI * XR_PI));
    for (j = 0; j < n4; j += 4) {
        __m256d d = _mm256_loadu_pd(d2 + j);
        __m256d t1 = _mm256_add_pd(vu1, _mm256_mul_pd(d, va12));
        __m256d t2 = _mm256_add_pd(vu2, _mm256_mul_pd(d, va22));
        __m256d t3 = _mm256_add_pd(vu3, _mm256_mul_pd(d, va32));
        if (radial != NULL) {
            __m256d value;
            if (quantity == 0) {
                __m256d rho = _mm256_sqrt_pd(_mm256_add_pd(_mm256_mul_pd(t1, t1), _mm256_mul_pd(t2, t2)));
                value = _mm256_mul_pd(vscale, xr_atan2_avx2(rho, t3));
            } else if (quantity == 2) {
                value = _mm256_mul_pd(vscale, _mm256_sqrt_pd(
                    _mm256_add_pd(_mm256_mul_pd(t1, t1), _mm256_mul_pd(t2, t2))));
            } else {
                __m256d q = _mm256_mul_pd(vq, xr_sin_theta_avx2(t1, t2, t3));
                if (quantity == 3)
                    q = _mm256_mul_pd(_mm256_mul_pd(vd, q), q);
                value = _mm256_mul_pd(vscale, q);
            }
            _mm256_storeu_pd(radial + j, value);
        }
        if (chi != NULL) {
            __m256d c = xr_atan2_avx2(t1, t2);
            c = _mm256_blendv_pd(c, vpi, _mm256_cmp_pd(c, _mm256_sub_pd(_mm256_setzero_pd(), vpi), _CMP_EQ_OQ));
            _mm256_storeu_pd(chi + j, c);
        }
    }
    if (n4 < n)
        xr_row_baseline(n - n4, d2 + n4, u1, u2, u3, a12, a22, a32, quantity, scale, qfactor,
                        radial == NULL ? NULL : radial + n4, chi == NULL ? NULL : chi + n4);
}
#endif

typedef void (*xr_row_function)(ptrdiff_t, const double *, double, double, double, double,
                                double, double, int, double, double, double *, double *);

/* The row kernel for this CPU (AVX2 when available and allowed). Call outside parallel regions. */
static xr_row_function xr_select_row(int allow_simd)
{
#ifdef XR_HAVE_AVX2_PATH
    __builtin_cpu_init();
    if (allow_simd && __builtin_cpu_supports("avx2"))
        return xr_row_avx2;
#endif
    return xr_row_baseline;
}

/* Scalar versions for the explicit-corner path. */
static double xr_atan2_scalar(double y, double x) { return xr_atan2(y, x); }
static double xr_chi_scalar(double t1, double t2) { return xr_chi(t1, t2); }
static double xr_sin_theta_scalar(double t1, double t2, double t3) { return xr_sin_theta(t1, t2, t3); }


#endif
