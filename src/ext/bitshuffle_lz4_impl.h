/* The two steps of decompressing a bitshuffle-LZ4 block, for bitshuffle_lz4.pyx: LZ4
   decoding into a scratch block, then undoing the bit shuffle from there straight into the
   output (doc/stack.md, "Direct chunk reads"). Written from the LZ4 block format and the
   layout described there, not from another project's code. */
#include <stdint.h>
#include <string.h>

/* ---- LZ4 blocks (the format of lz4's doc/lz4_Block_format.md, written from that spec) ----
   A block is a series of sequences: a token (high nibble: literal count, low nibble: match
   length - 4; 15 means the count goes on in the next bytes), the literals, a 2-byte
   little-endian offset back into the output, and the match copied from there (it may overlap
   what it writes). The last sequence has literals only. Every read and write is checked. */

/* A literal count or match length of 15 goes on in the next bytes, each added, until one
   below 255: the total, with *ip moved past them, or -1 when the block ends first. */
static inline int64_t xr_lz4_length(const uint8_t *src, int64_t n_src, int64_t *ip,
                                    int64_t length)
{
    for (;;) {
        if (*ip >= n_src)
            return -1;
        const uint8_t extra = src[(*ip)++];
        length += extra;
        if (extra != 255)
            return length;
    }
}

/* Whether the n bytes from p are all equal. */
static inline int xr_uniform(const uint8_t *p, int64_t n)
{
    for (int64_t k = 1; k < n; k++)
        if (p[k] != p[0])
            return 0;
    return 1;
}

/* Decode one LZ4 block of n_src bytes into dst (room for n_dst bytes): the number of bytes
   written, or -1 for a malformed block. Short literal runs and matches (most of them in
   bit-shuffled counts) are copied 16 bytes at once where both buffers have room: the bytes
   past the run are overwritten by the next sequences or lie beyond the block's end. */
static int64_t xr_lz4_block(const uint8_t *restrict src, int64_t n_src, uint8_t *dst,
                            int64_t n_dst)
{
    int64_t ip = 0, op = 0;
    while (ip < n_src) {
        const unsigned token = src[ip++];
        int64_t length = token >> 4;
        if (length == 15 && (length = xr_lz4_length(src, n_src, &ip, length)) < 0)
            return -1;
        if (length > n_src - ip || length > n_dst - op)
            return -1;
        if (length <= 16 && n_src - ip >= 16 && n_dst - op >= 16)
            memcpy(dst + op, src + ip, 16);
        else
            memcpy(dst + op, src + ip, (size_t)length);
        ip += length;
        op += length;
        if (ip >= n_src)  /* the last sequence has literals only */
            break;
        if (n_src - ip < 2)
            return -1;
        const int64_t offset = src[ip] | ((int64_t)src[ip + 1] << 8);
        ip += 2;
        if (offset == 0 || offset > op)
            return -1;
        length = token & 15;
        if (length == 15 && (length = xr_lz4_length(src, n_src, &ip, length)) < 0)
            return -1;
        length += 4;
        if (length > n_dst - op)
            return -1;
        uint8_t *d = dst + op;
        const uint8_t *from = d - offset;
        if (offset >= 16 && length <= 16 && n_dst - op >= 16) {
            memcpy(d, from, 16);  /* no overlap: the source ends before d */
        } else if (offset == 1) {  /* a run of one byte (zero bit planes) */
            memset(d, from[0], (size_t)length);
        } else if (offset < 16 && n_dst - op >= length + 8) {
            /* A short period (most matches of bit-shuffled counts), in 8-byte words, up to 7
               bytes past the match (rewritten later). d[k] = from[k % offset]: the first word
               from the period's bytes, then each word from `step` bytes back, a multiple of
               the period >= 8, so that it reads only bytes already final. */
            static const uint8_t lead[8][8] = {
                {0}, {0, 0, 0, 0, 0, 0, 0, 0}, {0, 1, 0, 1, 0, 1, 0, 1},
                {0, 1, 2, 0, 1, 2, 0, 1}, {0, 1, 2, 3, 0, 1, 2, 3}, {0, 1, 2, 3, 4, 0, 1, 2},
                {0, 1, 2, 3, 4, 5, 0, 1}, {0, 1, 2, 3, 4, 5, 6, 0}};
            static const uint8_t steps[8] = {0, 8, 8, 9, 8, 10, 12, 14};
            uint64_t word;
            int64_t step = offset;
            if (offset < 8) {
                uint8_t first[8];
                for (int k = 0; k < 8; k++)
                    first[k] = from[lead[offset][k]];
                memcpy(d, first, 8);
                step = steps[offset];
            } else {
                memcpy(&word, from, 8);
                memcpy(d, &word, 8);
            }
            for (int64_t i = 8; i < length; i += 8) {
                memcpy(&word, d + i - step, 8);
                memcpy(d + i, &word, 8);
            }
        } else if (offset >= length) {
            memcpy(d, from, (size_t)length);
        } else if (length <= 32) {  /* a short repeated pattern, byte by byte */
            for (int64_t i = 0; i < length; i++)
                d[i] = from[i];
        } else if (offset < 16 && xr_uniform(from, offset)) {
            /* a long run of one byte in a short period, at the end of a block (the zero bit
               planes of counts: period 2, ~7 kB, the last sequence of most blocks) */
            memset(d, from[0], (size_t)length);
        } else {  /* a long repeated pattern: whole periods, doubling what is available */
            int64_t i = 0;
            while (i < length) {
                const int64_t step = offset + i < length - i ? offset + i : length - i;
                memcpy(d + i, from, (size_t)step);
                i += step;
            }
        }
        op += length;
    }
    return op;
}

/* ---- bit un-shuffling (layout: bitshuffle_lz4.pyx, doc/stack.md "Direct chunk reads") ----

   For byte j of the elements and a group g of 8 elements, the 8 bytes x_k = row (8 j + k)[g]
   form an 8x8 bit matrix (bit m of x_k = bit k of byte j of element 8 g + m). Put x_0..x_7
   in the bytes of one 64-bit word (byte k = x_k, bit 8 k + m) and transpose the bit matrix
   (bit 8 k + m <-> bit 8 m + k, by swapping 1x1, then 2x2, then 4x4 blocks): byte m is then
   byte j of element 8 g + m.

   x86-64 (SSE2 is part of its baseline, no dispatch): 16 groups (128 elements) at a time. The
   8 rows' 16 bytes are interleaved by three stages of unpacks into 8 vectors of two 64-bit
   words (groups 2p and 2p + 1), transposed by 64-bit shifts, and the byte planes are
   interleaved into elements by unpacks in registers. A byte plane whose 8 rows are zero there
   (the high bytes of small counts) is not transposed: it is a vector of zeros. Elsewhere, and
   for the last groups of a block, one group at a time in a 64-bit word; where the CPU has AVX2
   or AVX-512 with VBMI and GFNI (checked at run time), 32 or 64 groups at a time first. */

#if defined(__SSE2__) || defined(_M_X64)
#include <emmintrin.h>
#define XR_HAVE_SSE2 1
#endif

/* The 8x8 bit transpose of a 64-bit word (bit 8 k + m <-> bit 8 m + k). */
static inline uint64_t xr_transpose8(uint64_t x)
{
    uint64_t t;
    t = (x ^ (x >> 7)) & 0x00AA00AA00AA00AAULL;
    x ^= t ^ (t << 7);
    t = (x ^ (x >> 14)) & 0x0000CCCC0000CCCCULL;
    x ^= t ^ (t << 14);
    t = (x ^ (x >> 28)) & 0x00000000F0F0F0F0ULL;
    x ^= t ^ (t << 28);
    return x;
}

/* Groups g0 .. g1 - 1 of a block (rows of `row` bytes, elements of `size` bytes), one group
   at a time: the portable path, and the last groups of the SSE2 path. */
static void xr_unshuffle_groups(const uint8_t *restrict src, uint8_t *restrict dst,
                                int64_t row, int64_t size, int64_t g0, int64_t g1)
{
    for (int64_t j = 0; j < size; j++) {
        const uint8_t *restrict r = src + j * 8 * row;
        for (int64_t g = g0; g < g1; g++) {
            uint64_t x = 0;
            for (int k = 0; k < 8; k++)
                x |= (uint64_t)r[k * row + g] << (8 * k);
            x = xr_transpose8(x);
            uint8_t *restrict out = dst + g * 8 * size + j;
            for (int m = 0; m < 8; m++)
                out[m * size] = (uint8_t)(x >> (8 * m));
        }
    }
}

#ifdef XR_HAVE_SSE2
/* One stage of the transpose on the two 64-bit words of a vector. */
#define XR_STAGE(x, shift, mask)                                              \
    do {                                                                      \
        __m128i t_ = _mm_and_si128(_mm_xor_si128(x, _mm_srli_epi64(x, shift)), mask); \
        x = _mm_xor_si128(x, _mm_xor_si128(t_, _mm_slli_epi64(t_, shift)));   \
    } while (0)

/* Byte j of the 128 elements of groups g .. g + 15: out[p] holds elements 16 p .. 16 p + 15.
   Returns 0 (out untouched) when the 8 rows are zero there. */
static inline int xr_plane16(const uint8_t *restrict r, int64_t row, int64_t g, __m128i out[8])
{
    __m128i x0 = _mm_loadu_si128((const __m128i *)(r + g));
    __m128i x1 = _mm_loadu_si128((const __m128i *)(r + row + g));
    __m128i x2 = _mm_loadu_si128((const __m128i *)(r + 2 * row + g));
    __m128i x3 = _mm_loadu_si128((const __m128i *)(r + 3 * row + g));
    __m128i x4 = _mm_loadu_si128((const __m128i *)(r + 4 * row + g));
    __m128i x5 = _mm_loadu_si128((const __m128i *)(r + 5 * row + g));
    __m128i x6 = _mm_loadu_si128((const __m128i *)(r + 6 * row + g));
    __m128i x7 = _mm_loadu_si128((const __m128i *)(r + 7 * row + g));
    __m128i any = _mm_or_si128(_mm_or_si128(_mm_or_si128(x0, x1), _mm_or_si128(x2, x3)),
                               _mm_or_si128(_mm_or_si128(x4, x5), _mm_or_si128(x6, x7)));
    if (_mm_movemask_epi8(_mm_cmpeq_epi8(any, _mm_setzero_si128())) == 0xFFFF)
        return 0;
    /* bytes k of group g: x0[g] x1[g] ... x7[g], two groups a vector */
    __m128i a0 = _mm_unpacklo_epi8(x0, x1), a1 = _mm_unpackhi_epi8(x0, x1);
    __m128i a2 = _mm_unpacklo_epi8(x2, x3), a3 = _mm_unpackhi_epi8(x2, x3);
    __m128i a4 = _mm_unpacklo_epi8(x4, x5), a5 = _mm_unpackhi_epi8(x4, x5);
    __m128i a6 = _mm_unpacklo_epi8(x6, x7), a7 = _mm_unpackhi_epi8(x6, x7);
    __m128i b0 = _mm_unpacklo_epi16(a0, a2), b1 = _mm_unpackhi_epi16(a0, a2); /* groups 0-3, 4-7 */
    __m128i b2 = _mm_unpacklo_epi16(a1, a3), b3 = _mm_unpackhi_epi16(a1, a3); /* 8-11, 12-15 */
    __m128i b4 = _mm_unpacklo_epi16(a4, a6), b5 = _mm_unpackhi_epi16(a4, a6);
    __m128i b6 = _mm_unpacklo_epi16(a5, a7), b7 = _mm_unpackhi_epi16(a5, a7);
    out[0] = _mm_unpacklo_epi32(b0, b4); out[1] = _mm_unpackhi_epi32(b0, b4);
    out[2] = _mm_unpacklo_epi32(b1, b5); out[3] = _mm_unpackhi_epi32(b1, b5);
    out[4] = _mm_unpacklo_epi32(b2, b6); out[5] = _mm_unpackhi_epi32(b2, b6);
    out[6] = _mm_unpacklo_epi32(b3, b7); out[7] = _mm_unpackhi_epi32(b3, b7);
    const __m128i m1 = _mm_set1_epi64x(0x00AA00AA00AA00AALL);
    const __m128i m2 = _mm_set1_epi64x(0x0000CCCC0000CCCCLL);
    const __m128i m4 = _mm_set1_epi64x(0x00000000F0F0F0F0LL);
    for (int p = 0; p < 8; p++) {
        __m128i x = out[p];
        XR_STAGE(x, 7, m1);
        XR_STAGE(x, 14, m2);
        XR_STAGE(x, 28, m4);
        out[p] = x;
    }
    return 1;
}

/* Elements 8 g0 .. 8 g0 + 127 from their byte planes (plane[j] valid when live[j], zeros
   otherwise), for 1, 2 and 4 byte elements; other sizes go through a small buffer. */
static inline void xr_store16(uint8_t *restrict dst, int64_t size, __m128i plane[][8],
                              const int *live)
{
    const __m128i zero = _mm_setzero_si128();
    if (size == 1) {
        for (int p = 0; p < 8; p++)
            _mm_storeu_si128((__m128i *)(dst + 16 * p), live[0] ? plane[0][p] : zero);
    } else if (size == 2) {
        for (int p = 0; p < 8; p++) {
            __m128i lo = live[0] ? plane[0][p] : zero, hi = live[1] ? plane[1][p] : zero;
            _mm_storeu_si128((__m128i *)(dst + 32 * p), _mm_unpacklo_epi8(lo, hi));
            _mm_storeu_si128((__m128i *)(dst + 32 * p + 16), _mm_unpackhi_epi8(lo, hi));
        }
    } else if (size == 4) {
        for (int p = 0; p < 8; p++) {
            __m128i y0 = live[0] ? plane[0][p] : zero, y1 = live[1] ? plane[1][p] : zero;
            __m128i y2 = live[2] ? plane[2][p] : zero, y3 = live[3] ? plane[3][p] : zero;
            __m128i lo01 = _mm_unpacklo_epi8(y0, y1), hi01 = _mm_unpackhi_epi8(y0, y1);
            __m128i lo23 = _mm_unpacklo_epi8(y2, y3), hi23 = _mm_unpackhi_epi8(y2, y3);
            uint8_t *o = dst + 64 * p;
            _mm_storeu_si128((__m128i *)o, _mm_unpacklo_epi16(lo01, lo23));
            _mm_storeu_si128((__m128i *)(o + 16), _mm_unpackhi_epi16(lo01, lo23));
            _mm_storeu_si128((__m128i *)(o + 32), _mm_unpacklo_epi16(hi01, hi23));
            _mm_storeu_si128((__m128i *)(o + 48), _mm_unpackhi_epi16(hi01, hi23));
        }
    }
}
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define XR_HAVE_AVX2_DISPATCH 1

/* The instruction sets of the un-shuffle, chosen at run time: the best the CPU has, up to
   xr_simd_allowed (lowered by bitshuffle_lz4.simd() in the tests, which compare them). */
#define XR_SIMD_SSE2 1
#define XR_SIMD_AVX2 2
#define XR_SIMD_AVX512 3
static int xr_simd_allowed = XR_SIMD_AVX512;

static int xr_cpu_simd(void)
{
    static int known = -1;
    if (known < 0) {
        __builtin_cpu_init();
        known = XR_SIMD_SSE2;
        if (__builtin_cpu_supports("avx2"))
            known = XR_SIMD_AVX2;
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
            && __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("gfni"))
            known = XR_SIMD_AVX512;
    }
    return known;
}

static int xr_simd(void)
{
    const int cpu = xr_cpu_simd();
    return cpu < xr_simd_allowed ? cpu : xr_simd_allowed;
}

/* AVX2: the SSE2 steps on 32 groups (256 elements) at a time. The unpacks work inside each
   128-bit lane, so a vector's low lane holds elements of the first 128 and its high lane the
   same elements of the next 128; the stores put the lanes back in order. */
#define XR_STAGE256(x, shift, mask)                                                    \
    do {                                                                               \
        __m256i t_ = _mm256_and_si256(_mm256_xor_si256(x, _mm256_srli_epi64(x, shift)), mask); \
        x = _mm256_xor_si256(x, _mm256_xor_si256(t_, _mm256_slli_epi64(t_, shift)));  \
    } while (0)

__attribute__((target("avx2")))
static inline int xr_plane32(const uint8_t *restrict r, int64_t row, int64_t g, __m256i out[8])
{
    __m256i x0 = _mm256_loadu_si256((const __m256i *)(r + g));
    __m256i x1 = _mm256_loadu_si256((const __m256i *)(r + row + g));
    __m256i x2 = _mm256_loadu_si256((const __m256i *)(r + 2 * row + g));
    __m256i x3 = _mm256_loadu_si256((const __m256i *)(r + 3 * row + g));
    __m256i x4 = _mm256_loadu_si256((const __m256i *)(r + 4 * row + g));
    __m256i x5 = _mm256_loadu_si256((const __m256i *)(r + 5 * row + g));
    __m256i x6 = _mm256_loadu_si256((const __m256i *)(r + 6 * row + g));
    __m256i x7 = _mm256_loadu_si256((const __m256i *)(r + 7 * row + g));
    __m256i any = _mm256_or_si256(
        _mm256_or_si256(_mm256_or_si256(x0, x1), _mm256_or_si256(x2, x3)),
        _mm256_or_si256(_mm256_or_si256(x4, x5), _mm256_or_si256(x6, x7)));
    if (_mm256_testz_si256(any, any))
        return 0;
    __m256i a0 = _mm256_unpacklo_epi8(x0, x1), a1 = _mm256_unpackhi_epi8(x0, x1);
    __m256i a2 = _mm256_unpacklo_epi8(x2, x3), a3 = _mm256_unpackhi_epi8(x2, x3);
    __m256i a4 = _mm256_unpacklo_epi8(x4, x5), a5 = _mm256_unpackhi_epi8(x4, x5);
    __m256i a6 = _mm256_unpacklo_epi8(x6, x7), a7 = _mm256_unpackhi_epi8(x6, x7);
    __m256i b0 = _mm256_unpacklo_epi16(a0, a2), b1 = _mm256_unpackhi_epi16(a0, a2);
    __m256i b2 = _mm256_unpacklo_epi16(a1, a3), b3 = _mm256_unpackhi_epi16(a1, a3);
    __m256i b4 = _mm256_unpacklo_epi16(a4, a6), b5 = _mm256_unpackhi_epi16(a4, a6);
    __m256i b6 = _mm256_unpacklo_epi16(a5, a7), b7 = _mm256_unpackhi_epi16(a5, a7);
    out[0] = _mm256_unpacklo_epi32(b0, b4); out[1] = _mm256_unpackhi_epi32(b0, b4);
    out[2] = _mm256_unpacklo_epi32(b1, b5); out[3] = _mm256_unpackhi_epi32(b1, b5);
    out[4] = _mm256_unpacklo_epi32(b2, b6); out[5] = _mm256_unpackhi_epi32(b2, b6);
    out[6] = _mm256_unpacklo_epi32(b3, b7); out[7] = _mm256_unpackhi_epi32(b3, b7);
    const __m256i m1 = _mm256_set1_epi64x(0x00AA00AA00AA00AALL);
    const __m256i m2 = _mm256_set1_epi64x(0x0000CCCC0000CCCCLL);
    const __m256i m4 = _mm256_set1_epi64x(0x00000000F0F0F0F0LL);
    for (int p = 0; p < 8; p++) {
        __m256i x = out[p];
        XR_STAGE256(x, 7, m1);
        XR_STAGE256(x, 14, m2);
        XR_STAGE256(x, 28, m4);
        out[p] = x;
    }
    return 1;
}

/* Groups g .. of a block of 1, 2 or 4 byte elements, 32 at a time: the first group left. */
__attribute__((target("avx2")))
static int64_t xr_unshuffle_avx2(const uint8_t *restrict src, uint8_t *restrict dst,
                                 int64_t row, int64_t size, int64_t g)
{
    __m256i plane[4][8];
    int live[4];
    const __m256i zero = _mm256_setzero_si256();
    for (; g + 32 <= row; g += 32) {
        for (int64_t j = 0; j < size; j++)
            live[j] = xr_plane32(src + j * 8 * row, row, g, plane[j]);
        uint8_t *out = dst + g * 8 * size;
        for (int p = 0; p < 8; p++) {
            __m256i y0 = live[0] ? plane[0][p] : zero;
            if (size == 1) {
                _mm_storeu_si128((__m128i *)(out + 16 * p), _mm256_castsi256_si128(y0));
                _mm_storeu_si128((__m128i *)(out + 128 + 16 * p),
                                 _mm256_extracti128_si256(y0, 1));
                continue;
            }
            __m256i y1 = live[1] ? plane[1][p] : zero;
            __m256i lo01 = _mm256_unpacklo_epi8(y0, y1), hi01 = _mm256_unpackhi_epi8(y0, y1);
            if (size == 2) {
                _mm256_storeu_si256((__m256i *)(out + 32 * p),
                                    _mm256_permute2x128_si256(lo01, hi01, 0x20));
                _mm256_storeu_si256((__m256i *)(out + 256 + 32 * p),
                                    _mm256_permute2x128_si256(lo01, hi01, 0x31));
                continue;
            }
            __m256i y2 = live[2] ? plane[2][p] : zero, y3 = live[3] ? plane[3][p] : zero;
            __m256i lo23 = _mm256_unpacklo_epi8(y2, y3), hi23 = _mm256_unpackhi_epi8(y2, y3);
            __m256i w0 = _mm256_unpacklo_epi16(lo01, lo23), w1 = _mm256_unpackhi_epi16(lo01, lo23);
            __m256i w2 = _mm256_unpacklo_epi16(hi01, hi23), w3 = _mm256_unpackhi_epi16(hi01, hi23);
            uint8_t *o = out + 64 * p;
            _mm256_storeu_si256((__m256i *)o, _mm256_permute2x128_si256(w0, w1, 0x20));
            _mm256_storeu_si256((__m256i *)(o + 32), _mm256_permute2x128_si256(w2, w3, 0x20));
            _mm256_storeu_si256((__m256i *)(o + 512), _mm256_permute2x128_si256(w0, w1, 0x31));
            _mm256_storeu_si256((__m256i *)(o + 544), _mm256_permute2x128_si256(w2, w3, 0x31));
        }
    }
    return g;
}

/* AVX-512 with VBMI and GFNI (run-time check): 64 groups (512 elements) at a time, fewer
   steps. The 8 rows' 64 bytes are transposed as 8x8 64-bit words (unpacks, then 128-bit lane
   shuffles), the 8 bytes of each group gathered into one word by a byte permutation, and each
   word's 8x8 bit matrix transposed by one affine instruction (GF2P8AFFINEQB) whose matrix is
   the word itself and whose input bytes are the single bits 1, 2, .., 128: output byte m,
   bit b is then bit m of the matrix's byte 7 - b, so the permutation puts the rows in
   reverse. Byte planes are interleaved into elements as the AVX2 path does, in four lanes. */
#define XR_AVX512 __attribute__((target("avx512f,avx512bw,avx512vbmi,gfni")))

/* Byte j of the 512 elements of groups g .. g + 63: out[p] holds elements 64 p .. 64 p + 63.
   Returns 0 (out untouched) when the 8 rows are zero there. */
XR_AVX512
static inline int xr_plane64(const uint8_t *restrict r, int64_t row, int64_t g, __m512i out[8])
{
    __m512i x[8];
    for (int k = 0; k < 8; k++)
        x[k] = _mm512_loadu_si512((const void *)(r + k * row + g));
    __m512i any = _mm512_or_si512(_mm512_or_si512(_mm512_or_si512(x[0], x[1]),
                                                  _mm512_or_si512(x[2], x[3])),
                                  _mm512_or_si512(_mm512_or_si512(x[4], x[5]),
                                                  _mm512_or_si512(x[6], x[7])));
    if (_mm512_test_epi64_mask(any, any) == 0)
        return 0;
    /* 8x8 transpose of 64-bit words: z[p] word k = x[k] word p (bytes 8 p .. 8 p + 7 of
       row k: groups 8 p .. 8 p + 7) */
    __m512i a[8], b[8];
    for (int k = 0; k < 8; k += 2) {
        a[k] = _mm512_unpacklo_epi64(x[k], x[k + 1]);
        a[k + 1] = _mm512_unpackhi_epi64(x[k], x[k + 1]);
    }
    for (int k = 0; k < 8; k += 4) {
        b[k] = _mm512_shuffle_i64x2(a[k], a[k + 2], 0x88);
        b[k + 1] = _mm512_shuffle_i64x2(a[k], a[k + 2], 0xDD);
        b[k + 2] = _mm512_shuffle_i64x2(a[k + 1], a[k + 3], 0x88);
        b[k + 3] = _mm512_shuffle_i64x2(a[k + 1], a[k + 3], 0xDD);
    }
    __m512i z[8];
    z[0] = _mm512_shuffle_i64x2(b[0], b[4], 0x88); z[4] = _mm512_shuffle_i64x2(b[0], b[4], 0xDD);
    z[2] = _mm512_shuffle_i64x2(b[1], b[5], 0x88); z[6] = _mm512_shuffle_i64x2(b[1], b[5], 0xDD);
    z[1] = _mm512_shuffle_i64x2(b[2], b[6], 0x88); z[5] = _mm512_shuffle_i64x2(b[2], b[6], 0xDD);
    z[3] = _mm512_shuffle_i64x2(b[3], b[7], 0x88); z[7] = _mm512_shuffle_i64x2(b[3], b[7], 0xDD);
    /* in each z: word t gets byte t of words 7 .. 0 (group 8 p + t, rows in reverse), then
       the bit matrix of each word is transposed by an affine transform whose matrix is that
       word: output byte m, bit b = bit m of row b = byte j of element 8 (8 p + t) + m */
    static const uint8_t order[64] = {
        56, 48, 40, 32, 24, 16, 8, 0, 57, 49, 41, 33, 25, 17, 9, 1,
        58, 50, 42, 34, 26, 18, 10, 2, 59, 51, 43, 35, 27, 19, 11, 3,
        60, 52, 44, 36, 28, 20, 12, 4, 61, 53, 45, 37, 29, 21, 13, 5,
        62, 54, 46, 38, 30, 22, 14, 6, 63, 55, 47, 39, 31, 23, 15, 7};
    const __m512i index = _mm512_loadu_si512((const void *)order);
    const __m512i bits = _mm512_set1_epi64(0x8040201008040201LL);
    for (int p = 0; p < 8; p++)
        out[p] = _mm512_gf2p8affine_epi64_epi8(bits, _mm512_permutexvar_epi8(index, z[p]), 0);
    return 1;
}

/* A 64-byte store; with `stream`, a non-temporal one (p 64-byte aligned): it goes to memory
   without first reading the line into the cache. */
XR_AVX512
static inline void xr_store64(uint8_t *p, __m512i v, int stream)
{
    if (stream)
        _mm512_stream_si512((void *)p, v);
    else
        _mm512_storeu_si512((void *)p, v);
}

/* Groups g .. of a block of 1, 2 or 4 byte elements, 64 at a time: the first group left.
   `stream` (dst 64-byte aligned): non-temporal stores, fenced before returning. */
XR_AVX512
static int64_t xr_unshuffle_avx512(const uint8_t *restrict src, uint8_t *restrict dst,
                                   int64_t row, int64_t size, int64_t g, int stream)
{
    __m512i plane[4][8];
    int live[4];
    const __m512i zero = _mm512_setzero_si512();
    for (; g + 64 <= row; g += 64) {
        for (int64_t j = 0; j < size; j++)
            live[j] = xr_plane64(src + j * 8 * row, row, g, plane[j]);
        uint8_t *out = dst + g * 8 * size;
        if (size == 4 && !live[1] && !live[2] && !live[3]) {  /* counts below 256 */
            for (int p = 0; p < 8; p++) {
                __m512i y = live[0] ? plane[0][p] : zero;
                uint8_t *o = out + 256 * p;
                xr_store64(o, _mm512_cvtepu8_epi32(_mm512_castsi512_si128(y)), stream);
                xr_store64(o + 64, _mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(y, 1)),
                           stream);
                xr_store64(o + 128, _mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(y, 2)),
                           stream);
                xr_store64(o + 192, _mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(y, 3)),
                           stream);
            }
            continue;
        }
        for (int p = 0; p < 8; p++) {
            __m512i y0 = live[0] ? plane[0][p] : zero;
            if (size == 1) {
                xr_store64(out + 64 * p, y0, stream);
                continue;
            }
            __m512i y1 = live[1] ? plane[1][p] : zero;
            /* within each 128-bit lane l: lo = elements 16 l .. 16 l + 7, hi = the next 8 */
            __m512i lo01 = _mm512_unpacklo_epi8(y0, y1), hi01 = _mm512_unpackhi_epi8(y0, y1);
            if (size == 2) {
                __m512i s0 = _mm512_shuffle_i64x2(lo01, hi01, 0x44);
                __m512i s1 = _mm512_shuffle_i64x2(lo01, hi01, 0xEE);
                xr_store64(out + 128 * p, _mm512_shuffle_i64x2(s0, s0, 0xD8), stream);
                xr_store64(out + 128 * p + 64, _mm512_shuffle_i64x2(s1, s1, 0xD8), stream);
                continue;
            }
            __m512i y2 = live[2] ? plane[2][p] : zero, y3 = live[3] ? plane[3][p] : zero;
            __m512i lo23 = _mm512_unpacklo_epi8(y2, y3), hi23 = _mm512_unpackhi_epi8(y2, y3);
            /* lane l of w0 .. w3: elements 16 l + 0..3, 4..7, 8..11, 12..15 */
            __m512i w0 = _mm512_unpacklo_epi16(lo01, lo23), w1 = _mm512_unpackhi_epi16(lo01, lo23);
            __m512i w2 = _mm512_unpacklo_epi16(hi01, hi23), w3 = _mm512_unpackhi_epi16(hi01, hi23);
            __m512i t0 = _mm512_shuffle_i64x2(w0, w1, 0x44), t1 = _mm512_shuffle_i64x2(w0, w1, 0xEE);
            __m512i t2 = _mm512_shuffle_i64x2(w2, w3, 0x44), t3 = _mm512_shuffle_i64x2(w2, w3, 0xEE);
            uint8_t *o = out + 256 * p;
            xr_store64(o, _mm512_shuffle_i64x2(t0, t2, 0x88), stream);
            xr_store64(o + 64, _mm512_shuffle_i64x2(t0, t2, 0xDD), stream);
            xr_store64(o + 128, _mm512_shuffle_i64x2(t1, t3, 0x88), stream);
            xr_store64(o + 192, _mm512_shuffle_i64x2(t1, t3, 0xDD), stream);
        }
    }
    if (stream)
        _mm_sfence();  /* the streamed lines visible before the output is used */
    return g;
}
#else
#define XR_SIMD_SSE2 1
#define XR_SIMD_AVX2 2
#define XR_SIMD_AVX512 3
static int xr_simd_allowed = XR_SIMD_SSE2;
static int xr_simd(void) { return XR_SIMD_SSE2; }
#endif

/* Hints the cache to fetch the lines 1 and 2 kB past p for reading (the scan of a chunk's
   block headers, ~0.9 kB apart, then does not wait on each header's line in turn). */
static inline void xr_prefetch_ahead(const uint8_t *p)
{
#if defined(__GNUC__) || defined(__clang__)
    __builtin_prefetch(p + 1024, 0, 3);
    __builtin_prefetch(p + 2048, 0, 3);
#else
    (void)p;
#endif
}

/* Hints the cache to fetch the n bytes from p for writing (no-op where not supported): a
   block's output lines requested before its LZ4 decoding, so that its un-shuffle does not
   wait on each line's read for ownership. */
static inline void xr_prefetch_write(uint8_t *p, int64_t n)
{
#if defined(__GNUC__) || defined(__clang__)
    for (int64_t i = 0; i < n; i += 64)
        __builtin_prefetch(p + i, 1, 3);
#else
    (void)p;
    (void)n;
#endif
}

/* Un-shuffle a block of n elements of `size` bytes from src into dst; `stream`: the AVX-512
   path writes dst with non-temporal stores where dst is 64-byte aligned. */
static void xr_bitunshuffle(const uint8_t *restrict src, uint8_t *restrict dst, int64_t n,
                            int64_t size, int stream)
{
    const int64_t row = n / 8;
    int64_t g = 0;
#ifdef XR_HAVE_AVX2_DISPATCH
    const int simd = xr_simd();
    if ((size == 1 || size == 2 || size == 4) && simd >= XR_SIMD_AVX512)
        g = xr_unshuffle_avx512(src, dst, row, size, g, stream && ((uintptr_t)dst & 63) == 0);
    if ((size == 1 || size == 2 || size == 4) && simd >= XR_SIMD_AVX2)
        g = xr_unshuffle_avx2(src, dst, row, size, g);
#endif
#ifdef XR_HAVE_SSE2
    if (size == 1 || size == 2 || size == 4) {
        __m128i plane[4][8];
        int live[4];
        for (; g + 16 <= row; g += 16) {
            for (int64_t j = 0; j < size; j++)
                live[j] = xr_plane16(src + j * 8 * row, row, g, plane[j]);
            xr_store16(dst + g * 8 * size, size, plane, live);
        }
    } else {  /* 8-byte (and other) elements: one plane at a time, bytes put in place */
        __m128i plane[8];
        uint8_t bytes[128];
        for (; g + 16 <= row; g += 16) {
            uint8_t *out = dst + g * 8 * size;
            for (int64_t j = 0; j < size; j++) {
                if (xr_plane16(src + j * 8 * row, row, g, plane)) {
                    for (int p = 0; p < 8; p++)
                        _mm_storeu_si128((__m128i *)(bytes + 16 * p), plane[p]);
                } else {
                    memset(bytes, 0, sizeof(bytes));
                }
                for (int e = 0; e < 128; e++)
                    out[e * size + j] = bytes[e];
            }
        }
    }
#endif
    xr_unshuffle_groups(src, dst, row, size, g, row);
}
