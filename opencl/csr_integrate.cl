/*
 * xreduce: CSR azimuthal integration of one raw frame, fused with the frame-invariant
 * normalisation, with optional iterative sigma clipping.
 *
 * One work-group of WG work-items per CSR row (= one bin). The work-items stride over the
 * row's entries, read each raw pixel in its own detector type, convert it in registers, and
 * accumulate per bin:
 *
 *     sum_signal   = sum c (raw - dark)          over valid, kept pixels
 *     sum_variance = sum c^2 v                   v from the error model
 *     sum_norm     = sum c n                     precomputed over all pixels of the row, minus
 *     sum_norm2    = sum (c n)^2                 the contributions of the pixels that are
 *     count        = sum c                       invalid in this frame (or clipped away)
 *
 * A pixel is invalid by the rule of pixel_is_valid and corrections_are_valid below (the one
 * rule of doc/integration.md, shared with the Cython engine): NaN/inf, negative values of
 * signed integers, the integer type's largest value when check_max, the dummy, and a NaN or
 * infinite dark or variance.
 *
 * Error models (ERROR_MODEL): 0 none (variance 0), 1 Poisson (v = max(raw, 1)),
 * 2 variance array given per pixel, 3 azimuthal: the weighted spread of the corrected values
 * x = s / n around the bin mean I = sum_signal / sum_norm, weights c n, as
 * sum_variance = [sum c n (x - I)^2 / sum c n] * sum (c n)^2 (as the Cython engine; a second
 * pass over the row, independent of summation order).
 *
 * Sigma clipping (max_iter > 0): at each iteration, an entry whose corrected value s / n lies
 * further than clip_thres * std from the bin mean (std = sqrt(sum_variance / sum_norm2)) is
 * flagged in `flags` and left out from then on; stops after max_iter iterations or when no
 * entry of the row was removed. A bin with a single kept entry is not clipped further.
 *
 * Compile-time constants (-D): FRAME_T (type of the raw frame), FRAME_IS_FLOAT (0/1),
 * FRAME_IS_SIGNED (0/1), FRAME_IS_DOUBLE (0/1), FRAME_MAX (the integer type's maximum, e.g. USHRT_MAX),
 * WG (work-group size, a power of two), HAS_COEF (0: every coefficient is 1), HAS_DARK,
 * ERROR_MODEL, USE_DOUBLE (1: accumulate in double; 0: compensated float32, double-word; the
 * azimuthal model's deviations from the bin mean are then formed in double-word too).
 *
 * Output: out[q * nbins + bin] for q = 0..4 (signal, variance, norm, norm2, count) as acc_t,
 * then the number of valid kept pixels as an int in nvalid[bin].
 */
#pragma OPENCL FP_CONTRACT OFF

#if USE_DOUBLE || FRAME_IS_DOUBLE
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
#endif

#if USE_DOUBLE
typedef double acc_t;
typedef double real_t;
#define ACC_ZERO 0.0
#define ACC_ADD(a, x) ((a) + (real_t)(x))
#define ACC_SUM(a, b) ((a) + (b))
#define ACC_NEG(a) (-(a))
#define ACC_VALUE(a) (a)
#else
/* Double-word arithmetic: a value is hi + lo with |lo| <= ulp(hi) / 2 (about 48 bits). */
typedef struct { float hi, lo; } acc_t;
typedef float real_t;
#define ACC_ZERO (make_acc(0.0f, 0.0f))

inline acc_t make_acc(float hi, float lo) {
    acc_t r;
    r.hi = hi;
    r.lo = lo;
    return r;
}

/* Knuth's TwoSum: s + e == a + b exactly. */
inline acc_t two_sum(float a, float b) {
    float s = a + b;
    float bb = s - a;
    float e = (a - (s - bb)) + (b - bb);
    return make_acc(s, e);
}

/* Double-word plus float. */
inline acc_t dw_add_f(acc_t a, float b) {
    acc_t t = two_sum(a.hi, b);
    float e = t.lo + a.lo;
    float hi = t.hi + e;
    return make_acc(hi, e - (hi - t.hi));
}

/* Double-word plus double-word. */
inline acc_t dw_add(acc_t a, acc_t b) {
    acc_t t = two_sum(a.hi, b.hi);
    float e = t.lo + (a.lo + b.lo);
    float hi = t.hi + e;
    return make_acc(hi, e - (hi - t.hi));
}
inline acc_t acc_neg(acc_t a) { return make_acc(-a.hi, -a.lo); }

/* Double-word times float: the product of the high parts exact through fma. */
inline acc_t dw_mul_f(acc_t a, float b) {
    const float p = a.hi * b;
    const float e = fma(a.hi, b, -p) + a.lo * b;
    const float hi = p + e;
    return make_acc(hi, e - (hi - p));
}

/* Double-word times double-word (cross terms in float: about 44 bits). */
inline acc_t dw_mul(acc_t a, acc_t b) {
    const float p = a.hi * b.hi;
    const float e = fma(a.hi, b.hi, -p) + (a.hi * b.lo + a.lo * b.hi);
    const float hi = p + e;
    return make_acc(hi, e - (hi - p));
}

/* Double-word quotient: the float quotient plus one correction from the exact remainder. */
inline acc_t dw_div(acc_t a, acc_t b) {
    const float q = a.hi / b.hi;
    const acc_t r = dw_add(a, acc_neg(dw_mul_f(b, q)));
    const float q2 = (r.hi + r.lo) / b.hi;
    const float hi = q + q2;
    return make_acc(hi, q2 - (hi - q));
}

/* A raw value as a double-word: exact for every integer type up to 48 bits and for float. */
inline acc_t raw_to_dw(FRAME_T v) {
    const float hi = (float)v;
#if FRAME_IS_DOUBLE
    return make_acc(hi, (float)(v - (double)hi));
#elif FRAME_IS_FLOAT
    return make_acc(hi, 0.0f);
#else
    return make_acc(hi, (float)(long)(v - (FRAME_T)hi));
#endif
}
#define ACC_ADD(a, x) dw_add_f((a), (x))
#define ACC_SUM(a, b) dw_add((a), (b))
#define ACC_NEG(a) acc_neg(a)
#define ACC_VALUE(a) ((a).hi + (a).lo)
#endif

/* Sum of v over the work-group, returned to every work-item. */
inline acc_t group_sum(acc_t v, local acc_t *scratch) {
#if WG == 1
    return v;
#else
    int lid = get_local_id(0);
    barrier(CLK_LOCAL_MEM_FENCE);
    scratch[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int step = WG / 2; step > 0; step >>= 1) {
        if (lid < step)
            scratch[lid] = ACC_SUM(scratch[lid], scratch[lid + step]);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    return scratch[0];
#endif
}

inline int group_sum_int(int v, local int *scratch) {
#if WG == 1
    return v;
#else
    int lid = get_local_id(0);
    barrier(CLK_LOCAL_MEM_FENCE);
    scratch[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int step = WG / 2; step > 0; step >>= 1) {
        if (lid < step)
            scratch[lid] += scratch[lid + step];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    return scratch[0];
#endif
}

/* The invalid-pixel rule of doc/integration.md ("What is masked"), as raw_values.pxi states it
 * for the Cython kernels: NaN/inf (floats), negative values (signed integers), the type's
 * largest value when check_max (the detector's max_value_invalid: Dectris marks dead or
 * overflowing pixels so), and the dummy, compared in the frame's own type: |v - a| <= b for
 * floats (a = dummy, b = delta_dummy), a <= v <= b for integers (the host computes a and b). */
inline int pixel_is_valid(FRAME_T v, int check_max, int check_dummy, FRAME_T dummy_a,
                          FRAME_T dummy_b) {
#if FRAME_IS_FLOAT
    if (!isfinite(v))
        return 0;
    if (check_dummy) {
        const FRAME_T d = v - dummy_a;
        return !(d >= -dummy_b && d <= dummy_b);
    }
#else
#if FRAME_IS_SIGNED
    if (v < 0)
        return 0;
#endif
    if (check_max && v == FRAME_MAX)
        return 0;
    if (check_dummy)
        return !(v >= dummy_a && v <= dummy_b);
#endif
    return 1;
}

/* A pixel whose dark current or variance (when used) is NaN or infinite is masked too. */
inline int corrections_are_valid(global const float *dark, global const float *variance,
                                 int idx) {
    int ok = 1;
#if HAS_DARK
    ok = ok && isfinite(dark[idx]);
#endif
#if ERROR_MODEL == 2
    ok = ok && isfinite(variance[idx]);
#endif
    return ok;
}

kernel void csr_integrate(
    global const FRAME_T *frame,      /* raw frame(s), read from frame_offset on */
    const ulong frame_offset,
    global const float *dark,         /* per pixel, read when HAS_DARK */
    global const float *variance,     /* per pixel, read when ERROR_MODEL == 2 */
    global const real_t *norm,        /* per pixel normalisation (flat*solid angle*...) */
    global const float *norm_lo,      /* float32 mode, ERROR_MODEL 3: norm's rounding error */
    global const int *indptr,
    global const int *indices,
    global const float *coefs,        /* read when HAS_COEF */
    global const acc_t *presums,      /* 3 x nbins: sum c n, sum (c n)^2, sum c (all pixels) */
    const int nbins,
    const int check_max,              /* the type's largest value is invalid */
    const int check_dummy,
    const FRAME_T dummy_a,            /* dummy bounds in the frame's type (pixel_is_valid) */
    const FRAME_T dummy_b,
    const int max_iter,               /* sigma clipping iterations, 0 for plain integration */
    const float clip_thres,
    global uchar *flags,              /* one per CSR entry, 1 = clipped; used when max_iter > 0 */
    global acc_t *out,                /* 5 x nbins */
    global int *nvalid)               /* nbins */
{
    local acc_t scratch[WG];
    local int iscratch[WG];
    const int bin = get_group_id(0);
    const int lid = get_local_id(0);
    if (bin >= nbins)
        return;
    const int start = indptr[bin];
    const int stop = indptr[bin + 1];
    global const FRAME_T *img = frame + frame_offset;
    /* mean and std of the previous iteration, used for clipping */
    real_t mean = (real_t)0, std = (real_t)0;
    acc_t sig, var, rm_norm, rm_norm2, rm_count;
    int n_ok;

    if (max_iter > 0) {
        for (int j = start + lid; j < stop; j += WG)
            flags[j] = 0;
    }
    n_ok = 0;
    for (int iter = 0; iter <= max_iter; iter++) {
        /* a bin left with a single entry has no spread to clip against */
        const int clip_now = iter > 0 && n_ok > 1;
        sig = ACC_ZERO; var = ACC_ZERO;
        rm_norm = ACC_ZERO; rm_norm2 = ACC_ZERO; rm_count = ACC_ZERO;
        n_ok = 0;
        int n_clipped = 0;
        for (int j = start + lid; j < stop; j += WG) {
            const int idx = indices[j];
#if HAS_COEF
            const real_t c = (real_t)coefs[j];
#else
            const real_t c = (real_t)1;
#endif
            const FRAME_T v = img[idx];
            const real_t raw = (real_t)v;
            int ok = pixel_is_valid(v, check_max, check_dummy, dummy_a, dummy_b)
                     && corrections_are_valid(dark, variance, idx);
#if HAS_DARK
            const real_t s = raw - (real_t)dark[idx];
#else
            const real_t s = raw;
#endif
            if (ok && max_iter > 0) {
                if (flags[j]) {
                    ok = 0;
                } else if (clip_now) {
                    const real_t n = (real_t)norm[idx];
                    if (fabs(s / n - mean) > (real_t)clip_thres * std) {
                        flags[j] = 1;
                        ok = 0;
                        n_clipped++;
                    }
                }
            }
            if (ok) {
                sig = ACC_ADD(sig, c * s);
#if ERROR_MODEL == 1
                var = ACC_ADD(var, c * c * fmax(raw, (real_t)1));
#elif ERROR_MODEL == 2
                var = ACC_ADD(var, c * c * (real_t)variance[idx]);
#endif
                n_ok++;
            } else {
                const real_t cn = c * (real_t)norm[idx];
                rm_norm = ACC_ADD(rm_norm, cn);
                rm_norm2 = ACC_ADD(rm_norm2, cn * cn);
                rm_count = ACC_ADD(rm_count, c);
            }
        }
        sig = group_sum(sig, scratch);
        var = group_sum(var, scratch);
        rm_norm = group_sum(rm_norm, scratch);
        rm_norm2 = group_sum(rm_norm2, scratch);
        rm_count = group_sum(rm_count, scratch);
        n_ok = group_sum_int(n_ok, iscratch);
        if (max_iter > 0 && iter > 0)
            n_clipped = group_sum_int(n_clipped, iscratch);
        const acc_t sum_norm = ACC_SUM(presums[bin], ACC_NEG(rm_norm));
        const acc_t sum_norm2 = ACC_SUM(presums[nbins + bin], ACC_NEG(rm_norm2));
        const real_t norm_total = ACC_VALUE(sum_norm);
        mean = (n_ok > 0 && norm_total != (real_t)0) ? ACC_VALUE(sig) / norm_total : (real_t)0;
#if ERROR_MODEL == 3
        /* second pass: spread of the corrected values around the bin mean */
#if !USE_DOUBLE
        const acc_t mean_dw = (n_ok > 0 && norm_total != (real_t)0) ? dw_div(sig, sum_norm)
                                                                     : ACC_ZERO;
#endif
        var = ACC_ZERO;
        for (int j = start + lid; j < stop; j += WG) {
            const int idx = indices[j];
            const FRAME_T v = img[idx];
            const real_t raw = (real_t)v;
            int ok = pixel_is_valid(v, check_max, check_dummy, dummy_a, dummy_b)
                     && corrections_are_valid(dark, variance, idx);
            if (ok && max_iter > 0 && flags[j])
                ok = 0;
            if (ok) {
#if HAS_COEF
                const real_t c = (real_t)coefs[j];
#else
                const real_t c = (real_t)1;
#endif
#if HAS_DARK
                const real_t s = raw - (real_t)dark[idx];
#else
                const real_t s = raw;
#endif
                /* c n (s / n - mean)^2, written without the division by n squared */
                const real_t n = (real_t)norm[idx];
#if USE_DOUBLE
                const real_t d = s - n * mean;
#else
                /* the deviation s - n * mean cancels most of s: formed in double-word (raw,
                   dark, norm and mean to ~44 bits) it keeps float32's 1e-7 relative, where a
                   float32 difference would lose digits in proportion to mean / spread */
#if HAS_DARK
                const acc_t s_dw = dw_add_f(raw_to_dw(v), -dark[idx]);
#else
                const acc_t s_dw = raw_to_dw(v);
#endif
                const acc_t d_dw = dw_add(s_dw, acc_neg(dw_mul(make_acc(n, norm_lo[idx]),
                                                               mean_dw)));
                const real_t d = d_dw.hi + d_dw.lo;
#endif
                var = ACC_ADD(var, c * d * d / n);
            }
        }
        var = group_sum(var, scratch);
        /* weighted spread^2 = M2 / sum c n, scaled by sum (c n)^2 so that sem and std keep
           their usual formulas: sum_variance = spread^2 * sum_norm2 */
        {
            /* a single value has no spread: exact zero rather than a rounding residue */
            const int has_spread = n_ok > 1 && norm_total != (real_t)0;
#if USE_DOUBLE
            var = has_spread ? var * (sum_norm2 / norm_total) : 0.0;
#else
            var = has_spread ? dw_mul(var, dw_div(sum_norm2, sum_norm)) : ACC_ZERO;
#endif
        }
#endif
        const real_t norm2_total = ACC_VALUE(sum_norm2);
        std = (n_ok > 0 && norm2_total > (real_t)0) ? sqrt(ACC_VALUE(var) / norm2_total)
                                                    : (real_t)0;
        if (iter > 0 && n_clipped == 0)
            break;
    }

    if (lid == 0) {
        if (n_ok > 0) {
            out[bin] = sig;
            out[nbins + bin] = var;
            out[2 * nbins + bin] = ACC_SUM(presums[bin], ACC_NEG(rm_norm));
            out[3 * nbins + bin] = ACC_SUM(presums[nbins + bin], ACC_NEG(rm_norm2));
            out[4 * nbins + bin] = ACC_SUM(presums[2 * nbins + bin], ACC_NEG(rm_count));
        } else {
            /* no valid pixel: exact zeros rather than the residue of a subtraction */
            for (int q = 0; q < 5; q++)
                out[q * nbins + bin] = ACC_ZERO;
        }
        nvalid[bin] = n_ok;
    }
}
