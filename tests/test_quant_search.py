import numpy as np

from nupes_edge.quant import powerquant
from nupes_edge.quant.power import qmax
from nupes_edge.quant.search import bracketed_minimize, golden_section


def test_golden_section_finds_the_minimum_of_a_convex_function():
    x, fx = golden_section(lambda a: (a - 0.63) ** 2 + 1.0, 0.2, 1.5, tol=1e-6)
    assert abs(x - 0.63) < 1e-5
    assert abs(fx - 1.0) < 1e-9


def test_bracketed_search_finds_the_global_basin_of_a_nonconvex_function():
    f = lambda a: np.cos(8 * a) + 0.3 * (a - 1.0) ** 2  # noqa: E731  minima near 0.39 and 1.18
    x, _ = bracketed_minimize(f, 0.0, 2.0, grid=33, tol=1e-6)
    xs = np.linspace(0, 2, 200_001)
    assert abs(x - xs[np.argmin(f(xs))]) < 1e-4


def test_exponent_search_recovers_the_exponent_of_weights_on_its_grid():
    # Weights that lie exactly on the decode grid of a* = 0.5 reconstruct with zero error at a*.
    bits, a_star = 4, 0.5
    levels = (np.arange(qmax(bits) + 1) / qmax(bits)) ** (1 / a_star)
    rng = np.random.default_rng(1)
    w = rng.choice(np.concatenate([-levels, levels]), size=(8, 64))
    w[:, 0] = 1.0  # every channel's max |w| is 1
    alpha = np.ones(8)
    a = powerquant.search_exponent(w, alpha, bits)
    assert abs(a - a_star) < 0.02
    assert powerquant.reconstruction_error(w, alpha, a, bits) < 1e-6
