/* Exact medians in OpenCL: moving median along frames and 2D per-frame median filter.
 *
 * One work-item per pixel; the window lives in private memory as a sorted array. Both kernels
 * follow the same rules as the Cython back end (src/ext/moving_median_impl.h,
 * src/ext/median_filter2d.pyx) so the two give bit-identical results:
 *  - NaN inputs are counted and stored as +inf; an output whose window holds a NaN is NaN;
 *  - a missing frame ("shrink" edges) is a +inf (integers: INT_MAX) sentinel that sorts last;
 *  - the average of two middle values is (a + b) * 0.5 in the element type.
 *
 * Defines: T (float, double or int), IS_FLOAT (1 for floating types), WINDOW_MAX (capacity of
 * the sorted array), for median_filter2d also MODE (0 reflect, 1 nearest, 2 mirror, 3 wrap,
 * 4 constant).
 */
#ifndef T
#define T float
#endif
#ifndef IS_FLOAT
#define IS_FLOAT 1
#endif
#ifndef WINDOW_MAX
#define WINDOW_MAX 128
#endif
#ifndef MODE
#define MODE 0
#endif

#if IS_FLOAT
#if defined(USE_DOUBLE)
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
#endif
#define SENTINEL ((T)INFINITY)
#define LOWEST ((T)(-INFINITY))
#define IS_NAN(x) isnan(x)
#else
#define SENTINEL ((T)INT_MAX)
#define LOWEST ((T)INT_MIN)
#define IS_NAN(x) 0
#endif

#define MIN_T(a, b) ((b) < (a) ? (b) : (a))
#define MAX_T(a, b) ((a) < (b) ? (b) : (a))

/* Remove one copy of x_out from the sorted array s[0..w-1] (s[w] is a sentinel) and insert
 * x_in, branch-free: c_j is the array without x_out, b_j the array with x_in added. */
inline void replace_sorted(T *s, int w, T x_out, T x_in)
{
    T c_prev = LOWEST;
    for (int j = 0; j < w; j++) {
        T a = s[j];
        T c = (a < x_out) ? a : s[j + 1];
        T m = MIN_T(c, x_in);
        s[j] = MAX_T(c_prev, m);
        c_prev = c;
    }
}

/* Load a frame value; NaNs are counted (delta = +1 or -1 by the caller) and stored as +inf. */
inline T load_value(__global const T *stack, int frame, long npix, long p, int *is_nan)
{
    if (frame < 0) {
        *is_nan = 0;
        return SENTINEL;
    }
    T x = stack[(long)frame * npix + p];
    *is_nan = IS_NAN(x) ? 1 : 0;
    return *is_nan ? SENTINEL : x;
}

/* stack: (n_frames, npix) frames-major. vmap[k] is the real frame of virtual index k
 * (the window of output frame i is vmap[i .. i + w - 1]; -1: no frame). One output row per
 * sample frame samples[s], value = ranks rank_lo[s] and rank_hi[s] of the sorted window. */
__kernel void moving_median(__global const T *stack, const long npix, const int window,
                            __global const int *vmap, __global const int *samples,
                            __global const int *rank_lo, __global const int *rank_hi,
                            const int n_samples, __global T *out)
{
    long p = get_global_id(0);
    if (p >= npix)
        return;
    T s[WINDOW_MAX + 1];
    int nan_count = 0;
    int prev = 0;
    for (int k = 0; k < n_samples; k++) {
        int i = samples[k];
        if (k == 0 || i - prev >= window) {
            for (int j = 0; j <= window; j++)
                s[j] = SENTINEL;
            nan_count = 0;
            for (int v = i; v < i + window; v++) {
                int isn;
                T x = load_value(stack, vmap[v], npix, p, &isn);
                nan_count += isn;
                replace_sorted(s, window, SENTINEL, x);
            }
        } else {
            for (int v = prev + 1; v <= i; v++) {
                int isn_out, isn_in;
                T x_out = load_value(stack, vmap[v - 1], npix, p, &isn_out);
                T x_in = load_value(stack, vmap[v + window - 1], npix, p, &isn_in);
                nan_count += isn_in - isn_out;
                replace_sorted(s, window, x_out, x_in);
            }
        }
        prev = i;
        T result;
        int lo = rank_lo[k], hi = rank_hi[k];
#if IS_FLOAT
        if (nan_count > 0)
            result = (T)NAN;
        else
#endif
        if (lo == hi)
            result = s[lo];
        else
            result = (s[lo] + s[hi]) * (T)0.5;
        out[(long)k * npix + p] = result;
    }
}

/* Map an out-of-range index v into [0, n) following scipy.ndimage's modes; -1 = constant. */
inline int map_index(int v, int n)
{
    if (v >= 0 && v < n)
        return v;
#if MODE == 0 /* reflect: d c b a | a b c d | d c b a */
    int period = 2 * n;
    int k = v % period;
    if (k < 0)
        k += period;
    return k < n ? k : period - 1 - k;
#elif MODE == 1 /* nearest */
    return v < 0 ? 0 : n - 1;
#elif MODE == 2 /* mirror: d c b | a b c d | c b a */
    if (n == 1)
        return 0;
    int period = 2 * n - 2;
    int k = v % period;
    if (k < 0)
        k += period;
    return k < n ? k : period - k;
#elif MODE == 3 /* wrap */
    int k = v % n;
    return k < 0 ? k + n : k;
#else /* constant */
    return -1;
#endif
}

/* frames: (n_frames, rows, cols). Output: element of rank `rank` (0-based) of each
 * size_r x size_c window, the window of (r, c) spanning r - size_r/2 .. r + (size_r-1)/2. */
__kernel void median_filter2d(__global const T *frames, const int rows, const int cols,
                              const int size_r, const int size_c, const int rank, const T cval,
                              __global T *out)
{
    int c = get_global_id(0);
    int r = get_global_id(1);
    long f = get_global_id(2);
    if (c >= cols || r >= rows)
        return;
    __global const T *frame = frames + f * rows * cols;
    T s[WINDOW_MAX + 1];
    for (int j = 0; j <= rank; j++)
        s[j] = SENTINEL;
    int nan_count = 0;
    for (int dr = 0; dr < size_r; dr++) {
        int rr = map_index(r - size_r / 2 + dr, rows);
        for (int dc = 0; dc < size_c; dc++) {
            int cc = map_index(c - size_c / 2 + dc, cols);
            T x = (rr < 0 || cc < 0) ? cval : frame[(long)rr * cols + cc];
            if (IS_NAN(x)) {
                nan_count++;
                x = SENTINEL;
            }
            /* insert x into the sorted s[0..rank], dropping the largest */
            T prev = LOWEST;
            for (int j = 0; j <= rank; j++) {
                T a = s[j];
                s[j] = MAX_T(prev, MIN_T(a, x));
                prev = a;
            }
        }
    }
#if IS_FLOAT
    out[(f * rows + r) * cols + c] = nan_count > 0 ? (T)NAN : s[rank];
#else
    out[(f * rows + r) * cols + c] = s[rank];
#endif
}
