"""runtime_c/nupes_mve.h's four-lane requantization (VSHL, VQRDMULH, the ties-away-from-zero fix-up,
VRSHL) against nupes_requantize (nupes_fixedpoint.h) on the emulated Cortex-M55 (QEMU mps3-an547,
Helium): a bare semihosting program compares both over 200,000 x 5 random lanes, with rounding ties and
their neighbours for every right shift 1..31, left shifts where the shifted accumulator fits int32,
and extreme accumulators and multipliers; its exit status is the number of mismatches."""
import os
import shutil
import subprocess

import pytest

from nupes_edge import runtime_c

pytestmark = pytest.mark.skipif(shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-gcc") is None,
                                reason="make setup installs qemu-system-arm and arm-none-eabi-gcc")

HARNESS = r"""
#include <stdint.h>
#include "nupes_fixedpoint.h"
#include "nupes_mve.h"

extern uint32_t _estack;
void Reset_Handler(void);
__attribute__((section(".isr_vector"), used)) void (*const vectors[2])(void) = {
    (void (*)(void))(uintptr_t)&_estack, Reset_Handler};

static uint32_t seed;
static uint32_t rnd(void)
{
    seed ^= seed << 13;
    seed ^= seed >> 17;
    seed ^= seed << 5;
    return seed;
}

static void sh_exit(int32_t code)
{
    volatile uint32_t block[2] = {0x20026u, (uint32_t)code}; /* ADP_Stopped_ApplicationExit, status */
    register uint32_t r0 __asm__("r0") = 0x20u;               /* SYS_EXIT_EXTENDED */
    register volatile uint32_t *r1 __asm__("r1") = block;
    __asm__ volatile("bkpt 0xab" : : "r"(r0), "r"(r1) : "memory");
    for (;;) {
    }
}

__attribute__((noinline)) static int32_t run(void)
{
    int32_t bad = 0, i, l;
    seed = 12345u;
    for (i = 0; i < N; ++i) {
        int32_t acc[4], mult[4], shift[4], want[4], got[4];
        nupes_mve_rq_t q;
        for (l = 0; l < 4; ++l) {
            const uint32_t kind = rnd() % 4;
            shift[l] = -(int32_t)(rnd() % 32);
            mult[l] = (int32_t)(0x40000000u + (rnd() & 0x3FFFFFFFu));
            acc[l] = (int32_t)rnd() >> (rnd() % 32);
            if (kind == 1) { /* ties: mult 2^30 makes SRDHM(acc) = floor((acc + 1) / 2) */
                const int32_t e = -shift[l] > 0 ? -shift[l] : 1;
                const int32_t j = (int32_t)(rnd() % (1u << (31 - e))) - (1 << (30 - e));
                const int32_t r = (2 * j + 1) * (1 << (e - 1)) + (int32_t)(rnd() % 3) - 1;
                mult[l] = 0x40000000;
                shift[l] = -e;
                acc[l] = (int32_t)((uint32_t)r * 2u) - (int32_t)(rnd() & 1u);
            } else if (kind == 2) { /* left shifts, where acc << shift fits */
                shift[l] = (int32_t)(rnd() % 31);
                acc[l] = (int32_t)rnd() >> (shift[l] + 1 + (int32_t)(rnd() % (31 - shift[l])));
            } else if (kind == 3) { /* extremes */
                static const int32_t ex[] = {0, 1, -1, 2, -2, INT32_MAX, INT32_MIN, 0x40000000, -0x40000000, -0x40000001};
                acc[l] = ex[rnd() % 10];
                if (shift[l] > 0) shift[l] = 0;
                if (rnd() & 1) mult[l] = INT32_MAX;
            }
            want[l] = nupes_requantize(acc[l], mult[l], shift[l]);
        }
        q = nupes_mve_rq_load(mult, shift, 4);
        vstrwq_s32(got, nupes_mve_requantize(vldrwq_s32(acc), &q));
        for (l = 0; l < 4; ++l) {
            bad += got[l] != want[l];
        }
        q = nupes_mve_rq_dup(mult[1], shift[1]);
        vstrwq_s32(got, nupes_mve_requantize(vdupq_n_s32(acc[1]), &q));
        bad += got[2] != want[1];
    }
    return bad;
}

/* CP10/CP11 (the FPU and Helium) are enabled before any vector instruction runs: run() is a separate,
 * non-inlined function, since its prologue may already save vector registers. */
void Reset_Handler(void)
{
    int32_t bad;
    *(volatile uint32_t *)0xE000ED88u |= (0xFu << 20);
    __asm__ volatile("dsb\n\tisb" ::: "memory");
    bad = run();
    sh_exit(bad > 255 ? 255 : bad);
}
"""

LINKER = """
MEMORY { FLASH (rx) : ORIGIN = 0, LENGTH = 512K  RAM (rwx) : ORIGIN = 0x01000000, LENGTH = 512K }
_estack = ORIGIN(RAM) + LENGTH(RAM);
SECTIONS { .isr_vector : { KEEP(*(.isr_vector)) } > FLASH  .text : { *(.text*) *(.rodata*) } > FLASH
           .bss (NOLOAD) : { *(.bss*) *(.data*) } > RAM }
"""


def test_vector_requantization_equals_nupes_requantize_on_the_m55(tmp_path):
    inc = os.path.dirname(runtime_c.headers()[0])
    (tmp_path / "h.c").write_text(HARNESS)
    (tmp_path / "l.ld").write_text(LINKER)
    elf = tmp_path / "h.elf"
    subprocess.run(["arm-none-eabi-gcc", "-mcpu=cortex-m55", "-mthumb", "-mfloat-abi=hard", "-std=c99", "-O2", "-Wall",
                    "-Wextra", "-Werror", "-pedantic", "-DN=200000", "-I", inc, "-nostdlib", "-nostartfiles",
                    "-T", str(tmp_path / "l.ld"), str(tmp_path / "h.c"), "-o", str(elf)], check=True)
    r = subprocess.run(["qemu-system-arm", "-M", "mps3-an547", "-semihosting-config", "enable=on,target=native",
                        "-kernel", str(elf), "-display", "none", "-monitor", "none", "-serial", "null"],
                       capture_output=True, timeout=120)
    assert r.returncode == 0, f"{r.returncode} mismatches (255: 255 or more); {r.stderr.decode()[-500:]}"
