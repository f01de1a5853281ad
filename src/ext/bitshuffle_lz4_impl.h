/* Undo the bit shuffle of one block (layout: bitshuffle_lz4.pyx). For each byte j of the
   elements and each group g of 8 elements, the 8 bytes x_k = row (8 j + k)[g] form an 8x8
   bit matrix (bit m of x_k = bit k of byte j of element 8 g + m); its transpose, by three
   stages of bit-block swaps, gives byte j of the 8 elements. Eight groups are handled at
   once in 64-bit words (the masks keep every swap inside its byte). ``planes`` is scratch of
   n * size bytes. */
#include <stdint.h>
#include <string.h>

#define XR_SWAP(a, b, shift, mask)                      \
    do {                                                \
        uint64_t t_ = (((a) >> (shift)) ^ (b)) & (mask); \
        (b) ^= t_;                                      \
        (a) ^= t_ << (shift);                           \
    } while (0)

static inline uint64_t xr_load8(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline void xr_store8(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

static void xr_bitunshuffle(const uint8_t *restrict src, uint8_t *restrict dst, int64_t n,
                            int64_t size, uint8_t *restrict planes)
{
    const int64_t row = n / 8;
    const uint64_t m1 = 0x5555555555555555ULL, m2 = 0x3333333333333333ULL,
                   m4 = 0x0F0F0F0F0F0F0F0FULL;
    for (int64_t j = 0; j < size; j++) {
        const uint8_t *restrict r = src + j * 8 * row;
        uint8_t *restrict tmp = planes + j * n;
        int64_t g = 0;
        for (; g + 8 <= row; g += 8) {
            uint64_t x0 = xr_load8(r + g), x1 = xr_load8(r + row + g);
            uint64_t x2 = xr_load8(r + 2 * row + g), x3 = xr_load8(r + 3 * row + g);
            uint64_t x4 = xr_load8(r + 4 * row + g), x5 = xr_load8(r + 5 * row + g);
            uint64_t x6 = xr_load8(r + 6 * row + g), x7 = xr_load8(r + 7 * row + g);
            XR_SWAP(x0, x1, 1, m1); XR_SWAP(x2, x3, 1, m1);
            XR_SWAP(x4, x5, 1, m1); XR_SWAP(x6, x7, 1, m1);
            XR_SWAP(x0, x2, 2, m2); XR_SWAP(x1, x3, 2, m2);
            XR_SWAP(x4, x6, 2, m2); XR_SWAP(x5, x7, 2, m2);
            XR_SWAP(x0, x4, 4, m4); XR_SWAP(x1, x5, 4, m4);
            XR_SWAP(x2, x6, 4, m4); XR_SWAP(x3, x7, 4, m4);
            xr_store8(tmp + g, x0); xr_store8(tmp + row + g, x1);
            xr_store8(tmp + 2 * row + g, x2); xr_store8(tmp + 3 * row + g, x3);
            xr_store8(tmp + 4 * row + g, x4); xr_store8(tmp + 5 * row + g, x5);
            xr_store8(tmp + 6 * row + g, x6); xr_store8(tmp + 7 * row + g, x7);
        }
        for (; g < row; g++) {  /* the last groups, one at a time */
            uint64_t x[8];
            for (int k = 0; k < 8; k++) x[k] = r[k * row + g];
            XR_SWAP(x[0], x[1], 1, m1); XR_SWAP(x[2], x[3], 1, m1);
            XR_SWAP(x[4], x[5], 1, m1); XR_SWAP(x[6], x[7], 1, m1);
            XR_SWAP(x[0], x[2], 2, m2); XR_SWAP(x[1], x[3], 2, m2);
            XR_SWAP(x[4], x[6], 2, m2); XR_SWAP(x[5], x[7], 2, m2);
            XR_SWAP(x[0], x[4], 4, m4); XR_SWAP(x[1], x[5], 4, m4);
            XR_SWAP(x[2], x[6], 4, m4); XR_SWAP(x[3], x[7], 4, m4);
            for (int m = 0; m < 8; m++) tmp[m * row + g] = (uint8_t)x[m];
        }
    }
    /* planes[j * n + m * row + g] is byte j of element 8 g + m: put the bytes together */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (size == 4) {
        const uint8_t *p0 = planes, *p1 = planes + n, *p2 = planes + 2 * n, *p3 = planes + 3 * n;
        for (int m = 0; m < 8; m++)
            for (int64_t g = 0; g < row; g++) {
                const int64_t i = m * row + g;
                const uint32_t v = (uint32_t)p0[i] | ((uint32_t)p1[i] << 8) |
                                   ((uint32_t)p2[i] << 16) | ((uint32_t)p3[i] << 24);
                memcpy(dst + (g * 8 + m) * 4, &v, 4);
            }
        return;
    }
    if (size == 2) {
        const uint8_t *p0 = planes, *p1 = planes + n;
        for (int m = 0; m < 8; m++)
            for (int64_t g = 0; g < row; g++) {
                const int64_t i = m * row + g;
                const uint16_t v = (uint16_t)(p0[i] | (p1[i] << 8));
                memcpy(dst + (g * 8 + m) * 2, &v, 2);
            }
        return;
    }
#endif
    for (int64_t j = 0; j < size; j++)
        for (int m = 0; m < 8; m++)
            for (int64_t g = 0; g < row; g++)
                dst[(g * 8 + m) * size + j] = planes[j * n + m * row + g];
}
