"""The vectorized fixed-point primitives against a direct transcription of the C code."""
from hypothesis import given, settings
from hypothesis import strategies as st

from nupes_edge.intref.fixedpoint import (INT32_MAX, INT32_MIN, multiply_by_quantized_multiplier,
                                          quantize_multiplier, rounding_divide_by_pot,
                                          saturating_rounding_doubling_high_mul)

i32 = st.integers(INT32_MIN, INT32_MAX)


def c_div(a: int, b: int) -> int:  # C division truncates toward zero
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def c_srdhm(a: int, b: int) -> int:
    if a == b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    return c_div(ab + nudge, 1 << 31)


def c_rdbpot(x: int, e: int) -> int:
    mask = (1 << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if remainder > threshold else 0)


@settings(max_examples=300, deadline=None)
@given(a=i32, b=i32)
def test_srdhm_matches_c(a, b):
    assert int(saturating_rounding_doubling_high_mul(a, b)) == c_srdhm(a, b)


@settings(max_examples=300, deadline=None)
@given(x=i32, e=st.integers(0, 31))
def test_rounding_divide_by_pot_matches_c(x, e):
    assert int(rounding_divide_by_pot(x, e)) == c_rdbpot(x, e)


def test_srdhm_saturates_the_single_overflow_case():
    assert int(saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MIN)) == INT32_MAX


@settings(max_examples=300, deadline=None)
@given(real=st.floats(1e-9, 0.999, allow_nan=False))
def test_quantize_multiplier_is_accurate_to_31_bits(real):
    m, shift = quantize_multiplier(real)
    assert (1 << 30) <= m < (1 << 31)
    assert abs(m * 2.0 ** (shift - 31) - real) <= real * 2.0 ** -30


@settings(max_examples=300, deadline=None)
@given(acc=st.integers(-(1 << 24), 1 << 24), real=st.floats(1e-6, 0.99))
def test_requantization_is_within_one_of_the_real_product(acc, real):
    m, shift = quantize_multiplier(real)
    out = int(multiply_by_quantized_multiplier(acc, m, shift))
    assert out == c_rdbpot(c_srdhm(acc, m), -shift)
    assert abs(out - acc * real) <= 1.0 + abs(acc * real) * 2.0 ** -29
