import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nupes_edge.errors import NupesError
from nupes_edge.ir import Graph
from nupes_edge.quant.driver import quantize_graph
from nupes_edge.quant.power import decode, encode, level_shift, make_lut, max_table_shift, minmax_alpha, qmax

weights = st.builds(lambda seed, o, k: np.random.default_rng(seed).standard_normal((o, k)).astype(np.float32),
                    st.integers(0, 10_000), st.integers(1, 8), st.integers(1, 40))


@settings(max_examples=60, deadline=None)
@given(w=weights, bits=st.integers(2, 8), a=st.floats(0.2, 2.0))
def test_codes_stay_in_the_signed_grid(w, bits, a):
    codes = encode(w, minmax_alpha(w), a, bits)
    assert codes.dtype == np.int8
    assert np.abs(codes).max() <= qmax(bits)
    assert np.all(np.sign(codes)[codes != 0] == np.sign(w)[codes != 0])


@settings(max_examples=60, deadline=None)
@given(w=weights, bits=st.integers(2, 8))
def test_exponent_one_is_uniform_quantization(w, bits):
    alpha = minmax_alpha(w)
    q = qmax(bits)
    scaled = q * w.astype(np.float64) / alpha[:, None]
    uniform = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)
    np.testing.assert_array_equal(encode(w, alpha, 1.0, bits), uniform)
    np.testing.assert_allclose(decode(encode(w, alpha, 1.0, bits), alpha, 1.0, bits), uniform * alpha[:, None] / q)


@settings(max_examples=60, deadline=None)
@given(w=weights, bits=st.integers(2, 8), a=st.floats(0.2, 2.0))
def test_error_is_half_a_step_in_the_power_domain(w, bits, a):
    # encode rounds in the power domain u^a, so there the error is at most half a grid step
    alpha = minmax_alpha(w)
    u = np.abs(w) / alpha[:, None]
    codes = encode(w, alpha, a, bits)
    err = np.abs(u ** a - np.abs(codes) / qmax(bits))
    assert err.max() <= 0.5 / qmax(bits) + 1e-9
    # and decoding maps the codes back exactly onto that grid
    back = np.abs(decode(codes, alpha, a, bits)) / alpha[:, None]
    np.testing.assert_allclose(back ** a, np.abs(codes) / qmax(bits), atol=1e-12)


def test_lut_is_identity_for_uniform_and_monotone_otherwise():
    for bits in range(2, 9):
        np.testing.assert_array_equal(make_lut(1.0, bits, 0), np.arange(qmax(bits) + 1))
        for a in (0.3, 0.7, 1.4):
            g = max_table_shift(bits)
            lut = make_lut(a, bits, g).astype(np.int64)
            assert lut[0] == 0 and lut[-1] == qmax(bits) << g
            assert np.all(np.diff(lut) >= 0)
            assert lut.max() <= 32767


def test_int8_levels_are_int8_values_times_a_power_of_two():
    """--levels int8: L = 2^E * round(Qmax * 2^(G-E) * (m/Qmax)^(1/a)), the mantissas within int8, the
    same top level Qmax * 2^G (so scales and bias grids do not change), monotone; uniform tables and
    2-bit ones are the same tables as int16 levels; each level within 2^(E-1) of the int16 one."""
    for bits in range(2, 9):
        np.testing.assert_array_equal(make_lut(1.0, bits, 0, 8), np.arange(qmax(bits) + 1))
        for a in (0.3, 0.7, 1.4):
            for g in range(max_table_shift(bits) + 1):
                fine = make_lut(a, bits, g).astype(np.int64)
                lut = make_lut(a, bits, g, 8).astype(np.int64)
                e = level_shift(bits, g, 8)
                assert np.all(lut % (1 << e) == 0) and np.abs(lut >> e).max() <= 127
                assert lut[0] == 0 and lut[-1] == qmax(bits) << g and np.all(np.diff(lut) >= 0)
                assert np.abs(lut - fine).max() <= (1 << e) >> 1
                if bits == 2 or qmax(bits) << g <= 127:
                    np.testing.assert_array_equal(lut, fine)
    with pytest.raises(NupesError, match="levels must be 8 or 16"):
        quantize_graph(Graph("x", (1, 4), "y", []), np.zeros((1, 1, 4), np.float32), "uniform", 4, levels=12)


def test_all_zero_channel_gets_a_finite_scale():
    w = np.zeros((2, 3), np.float32)
    w[1] = [0.5, -1.0, 0.25]
    alpha = minmax_alpha(w)
    assert alpha[0] == 1.0 and alpha[1] == 1.0
    assert np.all(encode(w, alpha, 0.5, 4)[0] == 0)


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 10_000), bits=st.integers(2, 8), o=st.integers(1, 5), k=st.integers(1, 37))
def test_packing_round_trips_at_the_storage_bound(seed, bits, o, k):
    from nupes_edge.packing import pack_rows, row_bytes, unpack_rows

    q = qmax(bits)
    codes = np.random.default_rng(seed).integers(-q, q + 1, (o, k)).astype(np.int8)
    packed = pack_rows(codes, bits)
    assert packed.shape == (o, row_bytes(k, bits)) and packed.dtype == np.uint8
    assert packed.size <= (o * k * bits + 7) // 8 + o  # ceil(params·b/8) plus < 1 byte per channel
    np.testing.assert_array_equal(unpack_rows(packed, bits, k), codes)


def test_packing_layout_is_lsb_first_sign_magnitude():
    from nupes_edge.packing import pack_rows

    # 4-bit: codes 1, -2 → fields 0b0001, 0b1010 → byte 0xA1; 3-bit: 3, -1, 2 → 011, 101, 010 → 0b010_101_011
    assert pack_rows(np.array([[1, -2]], np.int8), 4).tolist() == [[0xA1]]
    assert pack_rows(np.array([[3, -1, 2]], np.int8), 3).tolist() == [[0b10101011, 0b0]]
