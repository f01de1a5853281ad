# Shared by csr_integrate.pyx and histogram.pyx (included, not compiled alone): the raw pixel
# dtypes the kernels read without a conversion copy, and the invalid-pixel rule of
# doc/integration.md ("What is masked"), written once for both kernels. The OpenCL kernel
# (opencl/csr_integrate.cl, pixel_is_valid) and the NumPy rule
# (xreduce.engines.preprocess.invalid_pixels) state the same rule; the host computes the dummy
# bounds once (xreduce.engines.preprocess.PixelRule) in the frame's own type.
from libc.math cimport isfinite

ctypedef fused raw_t:
    cnp.uint8_t
    cnp.uint16_t
    cnp.uint32_t
    cnp.uint64_t
    cnp.int8_t
    cnp.int16_t
    cnp.int32_t
    cnp.int64_t
    cnp.float32_t
    cnp.float64_t


cdef inline bint _invalid(raw_t v, bint check_max, bint has_dummy, raw_t dummy_a,
                          raw_t dummy_b) noexcept nogil:
    """True when a raw value must be masked: NaN and +-inf (floats), negative values (signed
    integers), the dtype's largest value (integers, when ``check_max``: the Dectris mark of
    dead or overflowing pixels) and the dummy, compared in the frame's own type:
    ``|v - dummy_a| <= dummy_b`` for floats (a = dummy, b = delta_dummy), ``dummy_a <= v <=
    dummy_b`` for integers (the integers within delta_dummy of dummy)."""
    cdef raw_t d
    if raw_t is cnp.float32_t or raw_t is cnp.float64_t:
        if not isfinite(v):
            return True
        if has_dummy:
            d = v - dummy_a  # in the frame's type (float32 arithmetic for float32 frames)
            return -dummy_b <= d <= dummy_b
        return False
    else:
        if raw_t is cnp.int8_t or raw_t is cnp.int16_t or raw_t is cnp.int32_t \
                or raw_t is cnp.int64_t:
            if v < 0:
                return True
        if check_max:
            if raw_t is cnp.uint8_t:
                if v == 0xFF:
                    return True
            elif raw_t is cnp.uint16_t:
                if v == 0xFFFF:
                    return True
            elif raw_t is cnp.uint32_t:
                if v == 0xFFFFFFFFU:
                    return True
            elif raw_t is cnp.uint64_t:
                if v == 0xFFFFFFFFFFFFFFFFULL:
                    return True
            elif raw_t is cnp.int8_t:
                if v == 0x7F:
                    return True
            elif raw_t is cnp.int16_t:
                if v == 0x7FFF:
                    return True
            elif raw_t is cnp.int32_t:
                if v == 0x7FFFFFFF:
                    return True
            elif raw_t is cnp.int64_t:
                if v == 0x7FFFFFFFFFFFFFFFLL:
                    return True
        if has_dummy:
            return dummy_a <= v <= dummy_b
        return False


cdef inline bint _invalid_correction(const cnp.float32_t* dark, const cnp.float32_t* variance,
                                     Py_ssize_t i) noexcept nogil:
    """True when the per-call corrections of pixel ``i`` are unusable: a dark current or a
    variance (pointers NULL when not given) that is NaN or infinite masks the pixel."""
    if dark != NULL and not isfinite(dark[i]):
        return True
    if variance != NULL and not isfinite(variance[i]):
        return True
    return False
