/* Undo the bit shuffle of one block, written so that the compiler vectorizes the inner loop
   (plain byte arithmetic over consecutive groups); see bitshuffle_lz4.pyx for the layout. */
#include <stdint.h>

static void xr_bitunshuffle(const uint8_t *restrict src, uint8_t *restrict dst, int64_t n,
                            int64_t size, uint8_t *restrict tmp)
{
    const int64_t row = n / 8;
    for (int64_t j = 0; j < size; j++) {
        const uint8_t *restrict r = src + j * 8 * row;
        for (int m = 0; m < 8; m++) {
            uint8_t *restrict t = tmp + m * row;
            for (int64_t g = 0; g < row; g++) {
                unsigned o = 0;
                for (int k = 0; k < 8; k++)
                    o |= ((unsigned)(r[k * row + g] >> m) & 1u) << k;
                t[g] = (uint8_t)o;
            }
        }
        for (int64_t g = 0; g < row; g++)
            for (int m = 0; m < 8; m++)
                dst[(g * 8 + m) * size + j] = tmp[m * row + g];
    }
}
