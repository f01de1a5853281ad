# Shared by csr_integrate.pyx and histogram.pyx (included, not compiled alone): the raw pixel
# dtypes the kernels read without a conversion copy, and the rule for invalid values.
from libc.math cimport isnan, isinf, fabs

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


cdef inline bint _invalid(raw_t v, bint has_dummy, double dummy, double delta_dummy) noexcept nogil:
    """True when a raw value must be masked: NaN and +-inf (floats), negative values (signed
    integers), the dtype's largest value (integers: how Dectris marks dead or overflowing
    pixels) and ``dummy`` (within ``delta_dummy``) when asked."""
    if raw_t is cnp.float32_t or raw_t is cnp.float64_t:
        if isnan(v) or isinf(v):
            return True
    elif raw_t is cnp.uint8_t:
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
        if v < 0 or v == 0x7F:
            return True
    elif raw_t is cnp.int16_t:
        if v < 0 or v == 0x7FFF:
            return True
    elif raw_t is cnp.int32_t:
        if v < 0 or v == 0x7FFFFFFF:
            return True
    elif raw_t is cnp.int64_t:
        if v < 0 or v == 0x7FFFFFFFFFFFFFFFLL:
            return True
    if has_dummy:
        if delta_dummy > 0.0:
            return fabs(<double> v - dummy) <= delta_dummy
        return <double> v == dummy
    return False
