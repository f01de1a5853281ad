# cython: language_level=3
"""Sparse (CSR) pixel-splitting matrix builder, the kernel behind ``xreduce.sparse.build_csr``.

Rows are bins (1D radial, or 2D azimuth-major ``bin = i_azim * nr + i_rad``), columns are pixels
of the flattened frame, coefficients are the fraction of a pixel that falls in a bin.

How it runs (OpenMP, deterministic):

0. Where a pixel's entries depend on little, that little is computed once, in parallel, so that
   the passes below read it instead of the pixel positions: split "no" keeps each pixel's bin
   (4 bytes), 1D bbox over the full circle each pixel's radial (min, max) (16 bytes instead of
   the 64 of its corners; :func:`radial_bounds`, which gives the default radial range too).
1. The pixels are cut into contiguous chunks. In parallel, each chunk computes its pixels'
   (bin, coefficient) lists and counts its entries per bin (``counts[chunk, bin]``); except for
   the cheapest cases (no split, 1D bbox) it also keeps the entries in its own buffer, in pixel
   order.
2. Prefix sums give ``indptr`` and, for every (chunk, bin), the position where that chunk writes
   its first entry of that bin.
3. In parallel, each chunk writes its entries in place: it scatters its buffer (a transpose), or,
   in the cheapest cases, recomputes them, which then costs less than a buffer's memory
   traffic. Chunks are in pixel order, so the pixel indices inside a row come out sorted,
   whatever the number of threads.

Each splitting scheme is one function that produces a pixel's (bin, coefficient) list through
``emit``, shared by both passes. A pixel is the polygon of its k corners (4 for square pixels,
6 for hexagonal ones, up to MAX_CORNERS; doc/detectors.md); the polygon code serves every k.

Chi (azimuth, radians) lives on a circle. Corners are first mapped into the period
``[chi_lo, chi_lo + 2 pi)``; a pixel whose corners span more than pi straddles the
discontinuity and is unwrapped (its low corners get + 2 pi). Its part beyond the period then
belongs to the bins at the start: every azimuthal bin receives the overlap of the pixel and of its
copy shifted by - 2 pi.
"""
import numpy as np
from cython.parallel cimport prange
from libc.math cimport sqrt, isfinite, INFINITY, NAN, M_PI
from libc.stdint cimport int32_t, int64_t, uint8_t
from libc.stdlib cimport malloc, calloc, realloc, free
cimport openmp

cdef enum:
    MAX_CORNERS = 8       # pixels are polygons of 3-8 corners (4: square pixels, 6: hexagonal)
    MAX_VERTICES = 64     # room for a pixel polygon clipped by 4 lines, degenerate cases included
    SPLIT_NO = 0
    SPLIT_BBOX = 1
    SPLIT_PSEUDO = 2
    SPLIT_FULL = 3
    MODE_COUNT = 0        # pass 1, when pass 3 recomputes: count entries per bin
    MODE_BUFFER = 1       # pass 1, when pass 3 scatters: count and keep the entries
    MODE_FILL = 2         # pass 3 recomputing: write entries in place

SPLIT_CODES = {"no": SPLIT_NO, "bbox": SPLIT_BBOX, "pseudo": SPLIT_PSEUDO, "full": SPLIT_FULL}
# The most corners a pixel polygon may have (xreduce.detectors.Detector checks it too).
MAX_CORNERS_PER_PIXEL = MAX_CORNERS

cdef double TWO_PI = 2.0 * M_PI
# Coefficients at or below this are rounding slivers (a pixel corner lying on a bin edge): dropped.
cdef double MIN_COEF = 1e-12


ctypedef struct Bins:
    int nr                 # radial bins, uniform from r0, width dr
    double r0
    double dr
    double inv_dr          # 1 / dr
    int na                 # azimuthal bins, uniform from a0, width da (radians)
    double a0
    double da
    double inv_da          # 1 / da
    bint azim_clip         # False: 1D over the full circle, chi plays no part
    double chi_lo          # start of the chi period: -pi or 0


ctypedef struct Entry:
    int32_t bin
    int32_t pixel
    double coef


ctypedef struct Emitter:
    int mode               # MODE_COUNT, MODE_BUFFER or MODE_FILL
    int32_t pixel          # the pixel being split
    int32_t* counts        # count / buffer: entries per bin of this chunk
    Entry* entries         # buffer: this chunk's entries, in pixel order (grown by realloc)
    int64_t size
    int64_t capacity
    bint failed            # out of memory
    int64_t* cursor        # fill: next write position per bin of this chunk
    int32_t* indices
    float* data32          # at most one of data32 / data64 is set (none: compact matrix)
    double* data64


ctypedef struct AzimSpan:
    int a_first            # bins touched by the pixel's chi interval ...
    int a_last             # ... (a_last < a_first: none)
    int b_first            # bins touched by its copy one period (2 pi) lower
    int b_last


# ------------------------------------------------------------------------------------------
# Small helpers
# ------------------------------------------------------------------------------------------

cdef inline void write_entry(int64_t* cursor, int32_t* indices, float* data32, double* data64,
                             int b, int32_t pixel, double coef) noexcept nogil:
    """Store (pixel, coef) at the next free place of row b."""
    cdef int64_t k = cursor[b]
    cursor[b] = k + 1
    indices[k] = pixel
    if data32 != NULL:
        data32[k] = <float>coef
    elif data64 != NULL:
        data64[k] = coef


cdef inline void emit(Emitter* e, int b, double coef) noexcept nogil:
    """Record that the current pixel puts `coef` of itself in bin `b`, unless `coef` is tiny."""
    if coef > MIN_COEF:
        emit_entry(e, b, coef)


cdef inline void emit_entry(Emitter* e, int b, double coef) noexcept nogil:
    """Record that the current pixel puts `coef` of itself in bin `b`."""
    cdef Entry* grown
    if e.failed:
        return
    if e.mode == MODE_FILL:
        write_entry(e.cursor, e.indices, e.data32, e.data64, b, e.pixel, coef)
        return
    e.counts[b] += 1
    if e.mode == MODE_COUNT:
        return
    if e.size == e.capacity:
        grown = <Entry*>realloc(e.entries, 2 * e.capacity * sizeof(Entry))
        if grown == NULL:
            e.failed = True
            return
        e.entries = grown
        e.capacity *= 2
    e.entries[e.size].bin = b
    e.entries[e.size].pixel = e.pixel
    e.entries[e.size].coef = coef
    e.size += 1


cdef inline bint bin_span(double lo, double hi, double x0, double inv_width, int n,
                          int* first, int* last) noexcept nogil:
    """Bins of the uniform axis (n bins of width 1 / inv_width from x0) that [lo, hi] touches;
    False if none."""
    cdef double f = (lo - x0) * inv_width
    cdef double l = (hi - x0) * inv_width
    if l < 0 or f >= n:
        return False
    first[0] = <int>f if f > 0 else 0       # truncation is floor for f >= 0
    last[0] = <int>l if l < n - 1 else n - 1
    return True


cdef inline double axis_fraction(double lo, double hi, double inv_width, double blo,
                                 double bhi) noexcept nogil:
    """Fraction of [lo, hi] inside the bin [blo, bhi); `inv_width` is 1 / (hi - lo), or 0 for a
    zero-width interval, which is then a point."""
    cdef double a, b
    if inv_width == 0.0:
        return 1.0 if (blo <= lo and lo < bhi) else 0.0
    if lo >= blo and hi <= bhi:
        return 1.0
    a = lo if lo > blo else blo
    b = hi if hi < bhi else bhi
    return (b - a) * inv_width if b > a else 0.0


cdef inline double inverse_width(double lo, double hi) noexcept nogil:
    return 1.0 / (hi - lo) if hi > lo else 0.0


cdef inline double wrap_chi(const Bins* g, double chi) noexcept nogil:
    """Map chi (radians) into the period [chi_lo, chi_lo + 2 pi)."""
    if chi < g.chi_lo:
        return chi + TWO_PI
    if chi >= g.chi_lo + TWO_PI:
        return chi - TWO_PI
    return chi


cdef inline void azim_span(const Bins* g, double clo, double chi, AzimSpan* s) noexcept nogil:
    """Azimuthal bins touched by [clo, chi] and by its copy 2 pi lower."""
    if not bin_span(clo, chi, g.a0, g.inv_da, g.na, &s.a_first, &s.a_last):
        s.a_first = 0
        s.a_last = -1
    if not bin_span(clo - TWO_PI, chi - TWO_PI, g.a0, g.inv_da, g.na, &s.b_first, &s.b_last):
        s.b_first = 0
        s.b_last = -1


cdef inline int span_size(const AzimSpan* s) noexcept nogil:
    return (s.a_last - s.a_first + 1) + (s.b_last - s.b_first + 1)


cdef inline int span_bin(const AzimSpan* s, int k) noexcept nogil:
    """The k-th azimuthal bin of the span, or -1 when it was already visited (both copies)."""
    cdef int na = s.a_last - s.a_first + 1
    cdef int j
    if k < na:
        return s.a_first + k
    j = s.b_first + (k - na)
    if s.a_first <= j <= s.a_last:
        return -1
    return j


# ------------------------------------------------------------------------------------------
# Polygons (vertices as x0, y0, x1, y1, ...; x = radial, y = chi, in pixel-local coordinates)
# ------------------------------------------------------------------------------------------

cdef int clip_halfplane(const double* src, int n, double* dst, int axis, double bound,
                        double side) noexcept nogil:
    """Sutherland-Hodgman step: keep the part of polygon `src` where side*(coord - bound) >= 0."""
    cdef int k, m = 0, other = 1 - axis
    cdef double dp, dc, t
    cdef const double* p
    cdef const double* c
    if n == 0:
        return 0
    p = src + 2 * (n - 1)
    dp = side * (p[axis] - bound)
    for k in range(n):
        c = src + 2 * k
        dc = side * (c[axis] - bound)
        if (dc >= 0) != (dp >= 0):          # the edge p -> c crosses the line
            t = dp / (dp - dc)
            dst[2 * m + axis] = bound
            dst[2 * m + other] = p[other] + t * (c[other] - p[other])
            m += 1
        if dc >= 0:
            dst[2 * m] = c[0]
            dst[2 * m + 1] = c[1]
            m += 1
        p = c
        dp = dc
    return m


cdef int clip_slab(const double* src, int n, double* dst, int axis, double lo,
                   double hi) noexcept nogil:
    """Part of polygon `src` with lo <= coord <= hi, into `dst`; returns its vertex count."""
    cdef double tmp[2 * MAX_VERTICES]
    cdef double vmin = src[axis], vmax = src[axis]
    cdef int k
    for k in range(1, n):
        vmin = src[2 * k + axis] if src[2 * k + axis] < vmin else vmin
        vmax = src[2 * k + axis] if src[2 * k + axis] > vmax else vmax
    if vmax <= lo or vmin >= hi:
        return 0
    if vmin >= lo and vmax <= hi:
        for k in range(2 * n):
            dst[k] = src[k]
        return n
    n = clip_halfplane(src, n, tmp, axis, lo, 1.0)
    return clip_halfplane(tmp, n, dst, axis, hi, -1.0)


cdef double polygon_area(const double* v, int n) noexcept nogil:
    """Signed area (shoelace), positive for counter-clockwise vertices."""
    cdef double s = 0.0
    cdef int k, l
    for k in range(n):
        l = k + 1 if k + 1 < n else 0
        s += v[2 * k] * v[2 * l + 1] - v[2 * l] * v[2 * k + 1]
    return 0.5 * s


cdef double slab_area(const double* v, int n, int axis, double lo, double hi) noexcept nogil:
    """Signed area of the part of polygon v with lo <= coord <= hi."""
    cdef double part[2 * MAX_VERTICES]
    cdef int m = clip_slab(v, n, part, axis, lo, hi)
    return polygon_area(part, m) if m >= 3 else 0.0


cdef inline double cross3(const double* a, const double* b, const double* c) noexcept nogil:
    """z of (b - a) x (c - a): > 0 when a, b, c turn left."""
    return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])


cdef bint edges_cross(const double* a, const double* b, const double* c,
                      const double* d) noexcept nogil:
    """Segments ab and cd cross at a point inside both (a proper crossing)."""
    cdef double d1 = cross3(a, b, c), d2 = cross3(a, b, d)
    cdef double d3 = cross3(c, d, a), d4 = cross3(c, d, b)
    return ((d1 > 0) != (d2 > 0)) and d1 != 0 and d2 != 0 and \
        ((d3 > 0) != (d4 > 0)) and d3 != 0 and d4 != 0


cdef bint is_tangled(const double* v, int n) noexcept nogil:
    """The pixel polygon crosses itself (a quadrilateral: the bow-tie test below; more
    corners: two edges that are not neighbours cross)."""
    cdef int i, j
    if n == 4:
        return is_bow_tie(v)
    for i in range(n):
        for j in range(i + 2, n):
            if i == 0 and j == n - 1:       # neighbours through the closing edge
                continue
            if edges_cross(v + 2 * i, v + 2 * (i + 1), v + 2 * j,
                           v + 2 * ((j + 1) % n)):
                return True
    return False


cdef bint is_bow_tie(const double* q) noexcept nogil:
    """A self-intersecting quadrilateral turns two times left and two times right."""
    cdef int k, a, c, left = 0, right = 0
    cdef double cross
    for k in range(4):
        a = (k + 3) % 4
        c = (k + 1) % 4
        cross = ((q[2 * k] - q[2 * a]) * (q[2 * c + 1] - q[2 * k + 1])
                 - (q[2 * k + 1] - q[2 * a + 1]) * (q[2 * c] - q[2 * k]))
        if cross > 0:
            left += 1
        elif cross < 0:
            right += 1
    return left == 2 and right == 2


# ------------------------------------------------------------------------------------------
# Splitting schemes: one function each, producing the pixel's (bin, coefficient) list
# ------------------------------------------------------------------------------------------

cdef inline bint radial_box_bins(const Bins* g, double rlo, double rhi, int* first,
                                 int* last) noexcept nogil:
    """Bins first..last that get a share > MIN_COEF of the radial box [rlo, rhi] (1D bbox over
    the full circle); first = last + 1 when none does. False when the box misses the range, or
    is NaN (a left-out pixel). Only the two end bins can get a tiny share, so the test needs no
    loop and no branch; the count, fill and buffered passes all use it, so they agree."""
    cdef double f = (rlo - g.r0) * g.inv_dr
    cdef double l = (rhi - g.r0) * g.inv_dr
    cdef double width, tiny, blo, bhi, share_first, share_last
    cdef int i0, i1
    if not (l >= 0 and f < g.nr):
        return False
    i0 = <int>f if f > 0 else 0         # truncation is floor for f >= 0
    i1 = <int>l if l < g.nr - 1 else g.nr - 1
    width = rhi - rlo
    tiny = MIN_COEF * width
    blo = g.r0 + i0 * g.dr
    bhi = g.r0 + (i0 + 1) * g.dr
    share_first = (rhi if rhi < bhi else bhi) - (rlo if rlo > blo else blo)
    blo = g.r0 + i1 * g.dr
    bhi = g.r0 + (i1 + 1) * g.dr
    share_last = (rhi if rhi < bhi else bhi) - (rlo if rlo > blo else blo)
    first[0] = i0 + <int>((share_first <= tiny) & (width > 0))
    last[0] = i1 - <int>((i1 > i0) & (share_last <= tiny))
    return True


cdef inline double radial_box_share(const Bins* g, double rlo, double rhi, double inv_width,
                                    int i) noexcept nogil:
    """Fraction of the radial box [rlo, rhi] in bin i (1.0 exactly when the box is inside)."""
    cdef double blo = g.r0 + i * g.dr
    cdef double bhi = g.r0 + (i + 1) * g.dr
    if rlo >= blo and rhi <= bhi:
        return 1.0
    return ((rhi if rhi < bhi else bhi) - (rlo if rlo > blo else blo)) * inv_width


cdef void split_radial_box(const Bins* g, double rlo, double rhi, Emitter* e) noexcept nogil:
    """1D bbox over the full circle: [rlo, rhi] spread uniformly over the radial bins."""
    cdef int i, first, last
    cdef double inv_r
    if not radial_box_bins(g, rlo, rhi, &first, &last):
        return
    inv_r = inverse_width(rlo, rhi)
    for i in range(first, last + 1):
        emit_entry(e, i, radial_box_share(g, rlo, rhi, inv_r, i))


cdef void split_box(const Bins* g, double rlo, double rhi, double clo, double chi,
                    Emitter* e) noexcept nogil:
    """The box [rlo, rhi] x [clo, chi] spread uniformly: coefficient = product of the overlap
    fractions along radial and chi (bbox, and pseudo with a shrunken box)."""
    cdef int i0, i1, i, j, k
    cdef double fa, blo
    cdef double inv_r = inverse_width(rlo, rhi), inv_c = inverse_width(clo, chi)
    cdef AzimSpan s
    if not g.azim_clip:
        split_radial_box(g, rlo, rhi, e)
        return
    if not bin_span(rlo, rhi, g.r0, g.inv_dr, g.nr, &i0, &i1):
        return
    azim_span(g, clo, chi, &s)
    for k in range(span_size(&s)):
        j = span_bin(&s, k)
        if j < 0:
            continue
        blo = g.a0 + j * g.da
        fa = (axis_fraction(clo, chi, inv_c, blo, blo + g.da)
              + axis_fraction(clo - TWO_PI, chi - TWO_PI, inv_c, blo, blo + g.da))
        if fa <= 0.0:
            continue
        for i in range(i0, i1 + 1):
            emit(e, j * g.nr + i,
                 fa * axis_fraction(rlo, rhi, inv_r, g.r0 + i * g.dr, g.r0 + (i + 1) * g.dr))


cdef inline double area_left_of(const double* quad, int nc, double rlo, double rhi,
                                double area, double x) noexcept nogil:
    """Signed area of the pixel polygon (nc corners, radial extent [rlo, rhi]) where
    radial <= x."""
    cdef double part[2 * MAX_VERTICES]
    cdef int n
    if x <= rlo:
        return 0.0
    if x >= rhi:
        return area
    n = clip_halfplane(quad, nc, part, 0, x, -1.0)
    return polygon_area(part, n) if n >= 3 else 0.0


cdef void split_full(const Bins* g, const double* quad, int nc, double rref, double cref,
                     double area, Emitter* e) noexcept nogil:
    """Exact area split: clip the pixel polygon (nc corners, local coordinates, origin
    (rref, cref), signed area `area` != 0) against each bin; coefficient = clipped area / pixel
    area."""
    cdef double slab[2 * MAX_VERTICES]
    cdef double rlo = quad[0], rhi = quad[0], clo = quad[1], chi = quad[1]
    cdef double elo, alo, part, left, right
    cdef int i0, i1, i, j, k, n
    cdef bint wraps
    cdef AzimSpan s
    for k in range(1, nc):
        rlo = quad[2 * k] if quad[2 * k] < rlo else rlo
        rhi = quad[2 * k] if quad[2 * k] > rhi else rhi
        clo = quad[2 * k + 1] if quad[2 * k + 1] < clo else clo
        chi = quad[2 * k + 1] if quad[2 * k + 1] > chi else chi
    if not bin_span(rlo + rref, rhi + rref, g.r0, g.inv_dr, g.nr, &i0, &i1):
        return
    if not g.azim_clip:
        # 1D over the full circle: slab areas as differences of the area left of each edge
        left = area_left_of(quad, nc, rlo, rhi, area, (g.r0 - rref) + i0 * g.dr)
        for i in range(i0, i1 + 1):
            right = area_left_of(quad, nc, rlo, rhi, area, (g.r0 - rref) + (i + 1) * g.dr)
            emit(e, i, (right - left) / area)
            left = right
        return
    azim_span(g, clo + cref, chi + cref, &s)
    wraps = chi + cref > g.chi_lo + TWO_PI  # part of it lies past the period: its copy counts
    for i in range(i0, i1 + 1):
        elo = (g.r0 - rref) + i * g.dr
        n = clip_slab(quad, nc, slab, 0, elo, elo + g.dr)
        if n < 3:
            continue
        for k in range(span_size(&s)):
            j = span_bin(&s, k)
            if j < 0:
                continue
            alo = (g.a0 - cref) + j * g.da
            part = slab_area(slab, n, 1, alo, alo + g.da)
            if wraps:
                part += slab_area(slab, n, 1, alo + TWO_PI, alo + TWO_PI + g.da)
            emit(e, j * g.nr + i, part / area)


cdef void process_pixel(const Bins* g, int split, const double* corner, int nc,
                        Emitter* e) noexcept nogil:
    """Split one pixel of nc corners. Square pixels (4 corners, nearly all of them) take a
    copy of the code where the corner count is a constant, which the compiler unrolls."""
    if nc == 4:
        process_polygon(g, split, corner, 4, e)
    else:
        process_polygon(g, split, corner, nc, e)


cdef inline void process_polygon(const Bins* g, int split, const double* corner, int nc,
                                 Emitter* e) noexcept nogil:
    """Unwrap the pixel's nc corners and hand it to its splitting scheme (bbox, pseudo,
    full)."""
    cdef double quad[2 * MAX_CORNERS]
    cdef double rlo, rhi, clo, chi, area, scale, half_r, half_c, mid_r, mid_c, total = 0.0
    cdef int k
    for k in range(2 * nc):
        total += corner[k]
    if total - total != 0.0:                # some corner value is infinite or NaN
        return
    rlo = rhi = corner[0]
    for k in range(1, nc):
        rlo = corner[2 * k] if corner[2 * k] < rlo else rlo
        rhi = corner[2 * k] if corner[2 * k] > rhi else rhi
    for k in range(nc):
        quad[2 * k] = corner[2 * k]
        quad[2 * k + 1] = wrap_chi(g, corner[2 * k + 1])
    clo = chi = quad[1]
    for k in range(1, nc):
        clo = quad[2 * k + 1] if quad[2 * k + 1] < clo else clo
        chi = quad[2 * k + 1] if quad[2 * k + 1] > chi else chi
    if chi - clo > M_PI:                    # straddles the discontinuity: unwrap
        for k in range(nc):
            if quad[2 * k + 1] < g.chi_lo + M_PI:
                quad[2 * k + 1] += TWO_PI
        clo = chi = quad[1]
        for k in range(1, nc):
            clo = quad[2 * k + 1] if quad[2 * k + 1] < clo else clo
            chi = quad[2 * k + 1] if quad[2 * k + 1] > chi else chi
    if split == SPLIT_BBOX:
        split_box(g, rlo, rhi, clo, chi, e)
        return
    for k in range(nc):                      # local coordinates keep the areas precise
        quad[2 * k] -= rlo
        quad[2 * k + 1] -= clo
    area = polygon_area(quad, nc)
    if split == SPLIT_PSEUDO:
        scale = 1.0
        if (rhi - rlo) * (chi - clo) > 0.0:
            scale = sqrt((area if area > 0 else -area) / ((rhi - rlo) * (chi - clo)))
        half_r = 0.5 * (rhi - rlo) * scale
        half_c = 0.5 * (chi - clo) * scale
        mid_r = 0.5 * (rlo + rhi)
        mid_c = 0.5 * (clo + chi)
        split_box(g, mid_r - half_r, mid_r + half_r, mid_c - half_c, mid_c + half_c, e)
    elif area == 0.0 or is_tangled(quad, nc):  # no proper polygon: fall back to its bounding box
        split_box(g, rlo, rhi, clo, chi, e)
    else:
        split_full(g, quad, nc, rlo, clo, area, e)


# ------------------------------------------------------------------------------------------
# The parallel driver
# ------------------------------------------------------------------------------------------

ctypedef struct Positions:
    const int32_t* pixel_bin        # split "no": each pixel's bin, -1 for none (else NULL)
    const double* bounds            # 1D bbox over the full circle: (npix, 2) radial (min, max),
                                    # NaN for a left-out pixel (else NULL)
    const double* corners           # (npix, ncorners, 2) C-contiguous, or NULL for split "no"
    int ncorners                    # corners per pixel, 3..MAX_CORNERS (4: square pixels)
    const double* center_radial     # pixel centres (split "no"), strided
    const double* center_chi
    int64_t radial_stride           # in doubles
    int64_t chi_stride
    const uint8_t* mask             # or NULL


cdef void count_radial_boxes(const Bins* g, const double* bounds, const uint8_t* mask,
                             int64_t start, int64_t stop, Emitter* e) noexcept nogil:
    """Count pass of 1D bbox: each pixel adds +1 at its first bin and -1 after its last to a
    difference array, whose running sum is then the count of each bin (no branch per bin)."""
    cdef int64_t p
    cdef int i, first, last, running = 0
    cdef int32_t* diff = <int32_t*>calloc(g.nr + 1, sizeof(int32_t))
    if diff == NULL:
        e.failed = True
        return
    for p in range(start, stop):
        if mask != NULL and mask[p]:
            continue
        if radial_box_bins(g, bounds[2 * p], bounds[2 * p + 1], &first, &last):
            diff[first] += 1
            diff[last + 1] -= 1
    for i in range(g.nr):
        running = running + diff[i]
        e.counts[i] += running
    free(diff)


cdef void fill_radial_boxes(const Bins* g, const double* bounds, const uint8_t* mask,
                            int64_t start, int64_t stop, const Emitter* e) noexcept nogil:
    """Fill pass of 1D bbox: the entries that count_radial_boxes counted."""
    cdef int64_t p
    cdef double rlo, rhi, inv_r
    cdef int i, first, last
    for p in range(start, stop):
        if mask != NULL and mask[p]:
            continue
        rlo = bounds[2 * p]
        rhi = bounds[2 * p + 1]
        if not radial_box_bins(g, rlo, rhi, &first, &last):
            continue
        inv_r = inverse_width(rlo, rhi)
        for i in range(first, last + 1):
            write_entry(e.cursor, e.indices, e.data32, e.data64, i, <int32_t>p,
                        radial_box_share(g, rlo, rhi, inv_r, i))


cdef void split_chunk(const Bins* g, int split, const Positions* pos, int64_t start,
                      int64_t stop, Emitter* e) noexcept nogil:
    """Split the pixels start..stop-1 into the chunk's emitter."""
    cdef int64_t p
    cdef int32_t b
    if e.mode == MODE_BUFFER:
        e.capacity = 2 * (stop - start) + 16
        e.entries = <Entry*>malloc(e.capacity * sizeof(Entry))
        if e.entries == NULL:
            e.failed = True
            return
    if pos.pixel_bin != NULL and e.mode == MODE_COUNT:      # split "no", bins already known
        for p in range(start, stop):
            b = pos.pixel_bin[p]
            if b >= 0:
                e.counts[b] += 1
        return
    if pos.pixel_bin != NULL and e.mode == MODE_FILL:
        for p in range(start, stop):
            b = pos.pixel_bin[p]
            if b >= 0:
                write_entry(e.cursor, e.indices, e.data32, e.data64, b, <int32_t>p, 1.0)
        return
    if pos.pixel_bin != NULL:
        for p in range(start, stop):
            if pos.pixel_bin[p] >= 0:
                e.pixel = <int32_t>p
                emit(e, pos.pixel_bin[p], 1.0)
        return
    if pos.bounds != NULL:                  # 1D bbox, radial extents already known
        if e.mode == MODE_COUNT:
            count_radial_boxes(g, pos.bounds, pos.mask, start, stop, e)
            return
        if e.mode == MODE_FILL:
            fill_radial_boxes(g, pos.bounds, pos.mask, start, stop, e)
            return
        for p in range(start, stop):
            if pos.mask != NULL and pos.mask[p]:
                continue
            if pos.bounds[2 * p] == pos.bounds[2 * p]:      # not NaN: a valid pixel
                e.pixel = <int32_t>p
                split_radial_box(g, pos.bounds[2 * p], pos.bounds[2 * p + 1], e)
        return
    for p in range(start, stop):
        if pos.mask != NULL and pos.mask[p]:
            continue
        e.pixel = <int32_t>p
        process_pixel(g, split, pos.corners + 2 * pos.ncorners * p, pos.ncorners, e)


cdef void scatter_chunk(const Emitter* e, int64_t* cursor, int32_t* indices, float* data32,
                        double* data64) noexcept nogil:
    """Write the chunk's buffered entries at their rows' write positions."""
    cdef int64_t n
    for n in range(e.size):
        write_entry(cursor, indices, data32, data64, e.entries[n].bin, e.entries[n].pixel,
                    e.entries[n].coef)


cdef void bins_no_split(const Bins* g, const Positions* pos, int64_t npix, int32_t* out,
                        int nthreads) noexcept nogil:
    """Split "no": each pixel's bin (-1: masked, invalid or outside), in parallel. The count and
    fill passes then read 4 bytes per pixel instead of its centre."""
    cdef int64_t p
    cdef double r, chi, fi, fj
    for p in prange(npix, schedule="static", num_threads=nthreads):
        out[p] = -1
        if pos.mask != NULL and pos.mask[p]:
            continue
        r = pos.center_radial[p * pos.radial_stride]
        chi = pos.center_chi[p * pos.chi_stride]
        if not (isfinite(r) and isfinite(chi)):
            continue
        fi = (r - g.r0) * g.inv_dr
        if fi < 0 or fi >= g.nr:
            continue
        fj = 0.0
        if g.azim_clip:
            fj = (wrap_chi(g, chi) - g.a0) * g.inv_da
            if fj < 0 or fj >= g.na:
                continue
        out[p] = <int32_t>(<int>fj * g.nr + <int>fi)    # truncation is floor: both are >= 0


def check_corner_shape(corners):
    """ValueError unless `corners` has the shape (npix, k, 2) with 3 <= k <= MAX_CORNERS."""
    shape = np.shape(corners)
    if len(shape) != 3 or shape[2] != 2 or not 3 <= shape[1] <= MAX_CORNERS:
        raise ValueError(f"corners must have shape (npix, k, 2) with 3 <= k <= {MAX_CORNERS} "
                         f"corners per pixel, got {shape}")


def radial_bounds(corners, mask, int num_threads=0):
    """Each pixel's radial (min, max) over its corners, and their extent, in one parallel pass.

    Parameters
    ----------
    corners : ndarray (npix, k, 2) float64, C-contiguous
        Radial value and chi at the k corners of each pixel (3 <= k <= 8; 4: square pixels).
    mask : ndarray (npix,) uint8 or None
        Non-zero: the pixel is left out.
    num_threads : int
        OpenMP threads; 0 for the OpenMP default.

    Returns
    -------
    bounds : ndarray (npix, 2) float64
        Radial (min, max) per pixel; NaN for a left-out pixel (masked, or some corner value,
        radial or chi, not finite).
    lo, hi : float
        Smallest and largest radial value over the valid pixels.
    nvalid : int
        Number of valid pixels.

    Examples
    --------
    >>> c = np.array([[[1.0, 0.0], [2.0, 0.0], [2.0, 0.1], [1.0, 0.1]]])
    >>> radial_bounds(c, None)[1:]
    (1.0, 2.0, 1)
    """
    cdef const double[:, :, ::1] cv = corners
    cdef const uint8_t[::1] mask_view
    cdef const uint8_t* mp = NULL
    cdef int64_t npix = cv.shape[0], p, start, stop, chunk
    cdef int nthreads = num_threads if num_threads > 0 else openmp.omp_get_max_threads()
    cdef int t, k, nc = <int>cv.shape[1]
    cdef double[::1] lows = np.full(nthreads, np.inf)
    cdef double[::1] highs = np.full(nthreads, -np.inf)
    cdef int64_t[::1] valid = np.zeros(nthreads, dtype=np.int64)
    cdef double total, lo, hi, rlo, rhi
    cdef int64_t count
    cdef const double* q
    bounds_arr = np.empty((npix, 2), dtype=np.float64)
    cdef double[:, ::1] out = bounds_arr
    check_corner_shape(corners)
    if mask is not None:
        mask_view = mask
        if mask_view.shape[0] != npix:
            raise ValueError(f"mask: expected {npix} elements, got {mask_view.shape[0]}")
        mp = &mask_view[0] if npix > 0 else NULL
    if npix == 0:
        return bounds_arr, np.inf, -np.inf, 0
    chunk = (npix + nthreads - 1) // nthreads
    with nogil:
        for t in prange(nthreads, schedule="static", num_threads=nthreads):
            start = t * chunk
            stop = min(start + chunk, npix)
            lo = INFINITY
            hi = -INFINITY
            count = 0                           # a local: no cache line shared by threads
            for p in range(start, stop):
                q = &cv[p, 0, 0]
                total = 0.0
                for k in range(2 * nc):
                    total = total + q[k]
                if (mp != NULL and mp[p]) or total - total != 0.0:  # masked, or not finite
                    out[p, 0] = out[p, 1] = NAN
                    continue
                count = count + 1
                rlo = rhi = q[0]
                for k in range(1, nc):
                    rlo = q[2 * k] if q[2 * k] < rlo else rlo
                    rhi = q[2 * k] if q[2 * k] > rhi else rhi
                out[p, 0] = rlo
                out[p, 1] = rhi
                lo = rlo if rlo < lo else lo
                hi = rhi if rhi > hi else hi
            lows[t] = lo
            highs[t] = hi
            valid[t] = count
    return bounds_arr, float(np.min(lows)), float(np.max(highs)), int(np.sum(valid))


def build(corners, centers, mask, str split, int nr, double r0, double r1, int na, double a0,
          double a1, bint azim_clip, double chi_lo, data_dtype, int num_threads=0,
          buffered=None, bounds=None):
    """Build the CSR arrays (indptr, indices, data) of a pixel-splitting matrix.

    Parameters
    ----------
    corners : ndarray (npix, k, 2) float64, C-contiguous, or None (only for split "no")
        Radial value and chi (radians) at the k corners (3 <= k <= 8), going round each pixel.
    centers : pair of ndarrays (npix,) float64 (any stride), or None (needed for split "no")
        Radial value and chi (radians) at each pixel centre.
    mask : ndarray (npix,) uint8 or None
        Non-zero: the pixel is left out.
    split : {"no", "bbox", "pseudo", "full"}
    nr, r0, r1 : radial bins, uniform over [r0, r1).
    na, a0, a1 : azimuthal bins (radians), uniform over [a0, a1); 1 for a 1D matrix.
    azim_clip : bool
        False for a 1D matrix over the full circle (chi plays no part).
    chi_lo : float
        Start of the chi period, -pi or 0; [a0, a1] must lie inside [chi_lo, chi_lo + 2 pi].
    data_dtype : numpy dtype float32 or float64, or None for no coefficients (split "no").
    num_threads : int
        OpenMP threads; 0 for the OpenMP default.
    buffered : bool or None
        True: pass 1 keeps every entry and pass 3 scatters them (geometry done once, a buffer of
        16 bytes per entry); False: pass 3 recomputes the entries (no buffer). None: recompute
        for "no" and for 1D bbox over the full circle (cheapest geometry), buffer otherwise.
    bounds : ndarray (npix, 2) float64 or None
        For 1D bbox over the full circle: each pixel's radial (min, max) over its corners, NaN
        for a pixel left out (:func:`radial_bounds`), if already computed (else computed here
        from `corners`, which may then be None). Both passes read these 16 bytes per pixel
        instead of the 64 of its corners; `mask` still applies.

    Returns
    -------
    indptr, indices : ndarray int32
    data : ndarray of data_dtype, or None
    """
    cdef Bins g
    cdef int split_code = SPLIT_CODES[split]
    cdef const double[:, :, ::1] corner_view
    cdef const double[:] radial_view
    cdef const double[:] chi_view
    cdef Positions pos
    cdef const uint8_t[::1] mask_view
    cdef int64_t npix = 0, nbins, nchunks, chunk, c, b, total
    cdef int nthreads = num_threads if num_threads > 0 else openmp.omp_get_max_threads()
    cdef int32_t[:, ::1] counts
    cdef int64_t[:, ::1] cursor
    cdef int32_t[::1] indptr, indices
    cdef float[::1] data32
    cdef double[::1] data64
    cdef float* d32 = NULL
    cdef double* d64 = NULL
    cdef Emitter* emitters
    cdef bint use_buffer
    cdef const double[:, ::1] bounds_view
    cdef int32_t[::1] bin_view

    needs_corners = split_code != SPLIT_NO and not (split_code == SPLIT_BBOX and not azim_clip
                                                    and bounds is not None)
    if split_code == SPLIT_NO and centers is None or needs_corners and corners is None:
        raise ValueError(f"split {split!r} needs the pixel "
                         f"{'centres' if split_code == SPLIT_NO else 'corners'}, got None")
    pos.corners = pos.center_radial = pos.center_chi = NULL
    pos.radial_stride = pos.chi_stride = 0
    pos.mask = NULL
    pos.ncorners = 4
    if corners is not None:
        check_corner_shape(corners)
        corner_view = corners
        npix = corner_view.shape[0]
        pos.ncorners = <int>corner_view.shape[1]
        pos.corners = &corner_view[0, 0, 0] if npix > 0 else NULL
    if centers is not None:
        radial_view, chi_view = centers
        npix = radial_view.shape[0]
        if chi_view.shape[0] != npix:
            raise ValueError(f"centers: radial and chi must have the same length, got {npix} "
                             f"and {chi_view.shape[0]}")
        if npix > 0:
            pos.center_radial = &radial_view[0]
            pos.center_chi = &chi_view[0]
            pos.radial_stride = radial_view.strides[0] // sizeof(double)
            pos.chi_stride = chi_view.strides[0] // sizeof(double)
    if not needs_corners and split_code == SPLIT_BBOX:
        npix = bounds.shape[0]
    if mask is not None:
        mask_view = mask
        if mask_view.shape[0] != npix:
            raise ValueError(f"mask: expected {npix} elements, got {mask_view.shape[0]}")
        pos.mask = &mask_view[0] if npix > 0 else NULL
    g.nr = nr
    g.r0 = r0
    g.dr = (r1 - r0) / nr
    g.inv_dr = nr / (r1 - r0)
    g.na = na
    g.a0 = a0
    g.da = (a1 - a0) / na
    g.inv_da = na / (a1 - a0)
    g.azim_clip = azim_clip
    g.chi_lo = chi_lo
    nbins = <int64_t>nr * na
    pos.pixel_bin = NULL
    pos.bounds = NULL
    if split_code == SPLIT_BBOX and not azim_clip and npix > 0:
        if bounds is None:
            bounds = radial_bounds(corners, mask, nthreads)[0]
        bounds_view = bounds
        if bounds_view.shape[0] != npix or bounds_view.shape[1] != 2:
            raise ValueError(f"bounds: expected shape ({npix}, 2), got {bounds.shape}")
        pos.bounds = &bounds_view[0, 0]
    elif split_code == SPLIT_NO and npix > 0:
        bin_view = np.empty(npix, dtype=np.int32)
        bins_no_split(&g, &pos, npix, &bin_view[0], nthreads)
        pos.pixel_bin = &bin_view[0]
    if buffered is None:  # measured: recomputing pays only where the geometry is cheapest
        buffered = not (split_code == SPLIT_NO or (split_code == SPLIT_BBOX and not azim_clip))
    use_buffer = buffered

    # Chunks: several per thread for balance, but counts[nchunks, nbins] stays small.
    nchunks = min(max(1, npix // 4096), 8 * nthreads, max(nthreads, (1 << 22) // nbins))
    nchunks = max(1, nchunks)
    chunk = (npix + nchunks - 1) // nchunks if npix > 0 else 1
    counts = np.zeros((nchunks, nbins), dtype=np.int32)
    cursor = np.empty((nchunks, nbins), dtype=np.int64)
    emitters = <Emitter*>calloc(nchunks, sizeof(Emitter))
    if emitters == NULL:
        raise MemoryError("no memory for the chunk buffers")
    try:
        with nogil:
            for c in prange(nchunks, schedule="dynamic", num_threads=nthreads):
                emitters[c].mode = MODE_BUFFER if use_buffer else MODE_COUNT
                emitters[c].counts = &counts[c, 0]
                split_chunk(&g, split_code, &pos, c * chunk, min((c + 1) * chunk, npix),
                            &emitters[c])
        for c in range(nchunks):
            if emitters[c].failed:
                raise MemoryError("no memory for the matrix entries")

        # Row totals, then the write position of each (chunk, bin).
        totals = np.asarray(counts).sum(axis=0, dtype=np.int64)
        total = int(totals.sum())
        if total > np.iinfo(np.int32).max:
            raise ValueError(f"the matrix would hold {total} entries, more than int32 allows")
        indptr_arr = np.zeros(nbins + 1, dtype=np.int32)
        np.cumsum(totals, out=indptr_arr[1:])
        indptr = indptr_arr
        with nogil:
            for b in prange(nbins, schedule="static", num_threads=nthreads):
                cursor[0, b] = indptr[b]
                for c in range(1, nchunks):
                    cursor[c, b] = cursor[c - 1, b] + counts[c - 1, b]

        indices_arr = np.empty(total, dtype=np.int32)
        indices = indices_arr
        data_arr = None
        if data_dtype is not None:
            data_arr = np.empty(total, dtype=data_dtype)
            if data_arr.dtype == np.float32:
                data32 = data_arr
                d32 = &data32[0] if total > 0 else NULL
            else:
                data64 = data_arr
                d64 = &data64[0] if total > 0 else NULL
        if total > 0:
            with nogil:
                for c in prange(nchunks, schedule="dynamic", num_threads=nthreads):
                    if use_buffer:
                        scatter_chunk(&emitters[c], &cursor[c, 0], &indices[0], d32, d64)
                    else:
                        emitters[c].mode = MODE_FILL
                        emitters[c].cursor = &cursor[c, 0]
                        emitters[c].indices = &indices[0]
                        emitters[c].data32 = d32
                        emitters[c].data64 = d64
                        split_chunk(&g, split_code, &pos, c * chunk,
                                    min((c + 1) * chunk, npix), &emitters[c])
    finally:
        for c in range(nchunks):
            free(emitters[c].entries)
        free(emitters)
    return indptr_arr, indices_arr, data_arr


def valid_extent(radial, chi, mask, int num_threads=0):
    """Smallest and largest radial value over the valid pixels, in parallel.

    Parameters
    ----------
    radial, chi : ndarray (npix, k) float64, any strides
        Radial values and chi of each pixel's k points (4 corners, or 1 centre). A pixel is
        valid when it is not masked and all its values are finite (the pixels the builder uses).
    mask : ndarray (npix,) uint8 or None
    num_threads : int
        OpenMP threads; 0 for the OpenMP default.

    Returns
    -------
    (float, float, int) : minimum, maximum, number of valid pixels.
    """
    cdef const double[:, :] rad = radial
    cdef const double[:, :] azi = chi
    cdef const uint8_t[::1] mask_view
    cdef const uint8_t* mp = NULL
    cdef int64_t npix = rad.shape[0], p, start, stop, chunk
    cdef int k = <int>rad.shape[1], j, t
    cdef int nthreads = num_threads if num_threads > 0 else openmp.omp_get_max_threads()
    cdef double[::1] lows = np.full(nthreads, np.inf)
    cdef double[::1] highs = np.full(nthreads, -np.inf)
    cdef int64_t[::1] valid = np.zeros(nthreads, dtype=np.int64)
    cdef double total, lo, hi, v
    cdef int64_t count
    if azi.shape[0] != npix or azi.shape[1] != k:
        raise ValueError("radial and chi must have the same shape")
    if mask is not None:
        mask_view = mask
        mp = &mask_view[0] if mask_view.shape[0] > 0 else NULL
    if npix == 0:
        return np.inf, -np.inf, 0
    chunk = (npix + nthreads - 1) // nthreads
    with nogil:
        for t in prange(nthreads, schedule="static", num_threads=nthreads):
            start = t * chunk
            stop = min(start + chunk, npix)
            lo = INFINITY
            hi = -INFINITY
            count = 0                           # a local: no cache line shared by threads
            for p in range(start, stop):
                if mp != NULL and mp[p]:
                    continue
                total = 0.0
                for j in range(k):
                    total = total + rad[p, j] + azi[p, j]
                if total - total != 0.0:       # some value is infinite or NaN
                    continue
                count = count + 1
                for j in range(k):
                    v = rad[p, j]
                    lo = v if v < lo else lo
                    hi = v if v > hi else hi
            lows[t] = lo
            highs[t] = hi
            valid[t] = count
    return float(np.min(lows)), float(np.max(highs)), int(np.sum(valid))


def bounds_extent(bounds, mask, int num_threads=0):
    """Smallest lower and largest upper radial bound over the valid pixels, in parallel.

    Parameters
    ----------
    bounds : ndarray (npix, 2) float64, C-contiguous
        Radial (min, max) per pixel, NaN for a pixel left out (see :func:`radial_bounds`).
    mask : ndarray (npix,) uint8 or None
        Non-zero: the pixel is left out.
    num_threads : int
        OpenMP threads; 0 for the OpenMP default.

    Returns
    -------
    (float, float, int) : minimum, maximum, number of valid pixels.
    """
    cdef const double[:, ::1] b = bounds
    cdef const uint8_t[::1] mask_view
    cdef const uint8_t* mp = NULL
    cdef int64_t npix = b.shape[0], p, start, stop, chunk
    cdef int nthreads = num_threads if num_threads > 0 else openmp.omp_get_max_threads()
    cdef int t
    cdef double[::1] lows = np.full(nthreads, np.inf)
    cdef double[::1] highs = np.full(nthreads, -np.inf)
    cdef int64_t[::1] valid = np.zeros(nthreads, dtype=np.int64)
    cdef double lo, hi, rlo, rhi
    cdef int64_t count
    if b.shape[1] != 2:
        raise ValueError(f"bounds must have shape (npix, 2), got {bounds.shape}")
    if mask is not None:
        mask_view = mask
        if mask_view.shape[0] != npix:
            raise ValueError(f"mask: expected {npix} elements, got {mask_view.shape[0]}")
        mp = &mask_view[0] if npix > 0 else NULL
    if npix == 0:
        return np.inf, -np.inf, 0
    chunk = (npix + nthreads - 1) // nthreads
    with nogil:
        for t in prange(nthreads, schedule="static", num_threads=nthreads):
            start = t * chunk
            stop = min(start + chunk, npix)
            lo = INFINITY
            hi = -INFINITY
            count = 0
            for p in range(start, stop):
                rlo = b[p, 0]
                rhi = b[p, 1]
                if (mp != NULL and mp[p]) or rlo != rlo:    # masked, or NaN: left out
                    continue
                count = count + 1
                lo = rlo if rlo < lo else lo
                hi = rhi if rhi > hi else hi
            lows[t] = lo
            highs[t] = hi
            valid[t] = count
    return float(np.min(lows)), float(np.max(highs)), int(np.sum(valid))
