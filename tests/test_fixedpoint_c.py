"""The C requantization helpers (runtime_c/nupes_fixedpoint.h) against the NumPy reference on
random and edge values: the fast SRDHM/RDBPOT forms and the fused one-SMLAL form are exact."""
import subprocess

import numpy as np

from nupes_edge import runtime_c
from nupes_edge.intref.fixedpoint import multiply_by_quantized_multiplier

HARNESS = r"""
#include <stdio.h>
#include <stdint.h>
#include "nupes_fixedpoint.h"
int main(void) {
    long acc, m, shift;
    while (scanf("%ld %ld %ld", &acc, &m, &shift) == 3) {
        nupes_rq_t q;
        nupes_rq_init(&q, (int32_t)m, (int32_t)shift);
        printf("%d %d\n", (int)nupes_requantize((int32_t)acc, (int32_t)m, (int32_t)shift),
               (int)nupes_rq_apply((int32_t)acc, &q));
    }
    return 0;
}
"""


def test_requantization_in_c_matches_the_reference(tmp_path):
    import os

    src = tmp_path / "h.c"
    src.write_text(HARNESS)
    inc = os.path.dirname(runtime_c.headers()[0])
    exe = tmp_path / "h"
    subprocess.run(["gcc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-I", inc, str(src), "-o", str(exe)], check=True)
    rng = np.random.default_rng(7)
    n = 20000
    acc = rng.integers(-2**31, 2**31, n) >> rng.integers(0, 31, n)
    mult = rng.integers(2**30, 2**31, n)
    shift = -rng.integers(0, 32, n)
    left = rng.random(n) < 0.1  # left shifts only where the pre-shift fits int32, as the generator guarantees
    shift[left] = rng.integers(1, 8, left.sum())
    acc[left] >>= 8
    edges = np.array([0, 1, -1, 2**31 - 1, -2**31, 2**30, -2**30, 12345, -12345])
    acc = np.concatenate([acc, np.repeat(edges, 32)])
    mult = np.concatenate([mult, np.full(len(edges) * 32, 2**31 - 1)])
    shift = np.concatenate([shift, np.tile(-np.arange(32), len(edges))])
    lines = "\n".join(f"{a} {m} {s}" for a, m, s in zip(acc, mult, shift))
    out = subprocess.run([str(exe)], input=lines, capture_output=True, text=True, check=True).stdout.split()
    got = np.array(out, np.int64).reshape(-1, 2)
    want = np.array([int(multiply_by_quantized_multiplier(np.int64(a), int(m), int(s))) for a, m, s in zip(acc, mult, shift)])
    np.testing.assert_array_equal(got[:, 0], want)
    np.testing.assert_array_equal(got[:, 1], want)
