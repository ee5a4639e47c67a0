/*
 * counter.c - the inference counter: the DWT cycle counter where it runs (real Cortex-M4/M7),
 * otherwise SysTick ticks extended to 64 bits by its interrupt. QEMU does not implement the DWT
 * (it reads 0); there, with -icount, SysTick ticks are proportional to executed instructions.
 */
#include <stdint.h>

#include "board_config.h"
#include "nupes_board.h"

#define REG(addr) (*(volatile uint32_t *)(addr))
#define DEMCR REG(0xE000EDFCu)
#define DWT_CTRL REG(0xE0001000u)
#define DWT_CYCCNT REG(0xE0001004u)
#define DWT_LAR REG(0xE0001FB0u)
#define ICSR REG(0xE000ED04u)
#define ICSR_PENDSTSET (1u << 26)
#define SYST_CSR REG(0xE000E010u)
#define SYST_RVR REG(0xE000E014u)
#define SYST_CVR REG(0xE000E018u)

#ifdef NUPES_COUNTER_CMSDK_BASE
/* The Arm CMSDK APB timer (MPS2 / MPS3 boards): a 32-bit down-counter at the peripheral clock,
 * which QEMU derives from virtual time, so under -icount it counts an exact number per instruction. */
#define CT_CTRL REG(NUPES_COUNTER_CMSDK_BASE + 0x00u)
#define CT_VALUE REG(NUPES_COUNTER_CMSDK_BASE + 0x04u)
#define CT_RELOAD REG(NUPES_COUNTER_CMSDK_BASE + 0x08u)
static uint32_t ct_high, ct_last;
#endif

#ifdef NUPES_COUNTER_NRF51_BASE
/* The nRF51's TIMER0 in 32-bit timer mode at 16 MHz (prescaler 0), read by a capture task; QEMU
 * clocks it from virtual time. */
#define NT_START REG(NUPES_COUNTER_NRF51_BASE + 0x000u)
#define NT_CAPTURE0 REG(NUPES_COUNTER_NRF51_BASE + 0x040u)
#define NT_MODE REG(NUPES_COUNTER_NRF51_BASE + 0x504u)
#define NT_BITMODE REG(NUPES_COUNTER_NRF51_BASE + 0x508u)
#define NT_PRESCALER REG(NUPES_COUNTER_NRF51_BASE + 0x510u)
#define NT_CC0 REG(NUPES_COUNTER_NRF51_BASE + 0x540u)
static uint32_t nt_high, nt_last;
#endif

#ifdef NUPES_COUNTER_FPGAIO_BASE
/* The MPS2 / MPS3 FPGA's free-running COUNTER (FPGAIO), prescaler 0: one count per cycle of its
 * clock, which QEMU derives from virtual time (for the boards without a CMSDK timer, AN547). */
#define FP_COUNTER REG(NUPES_COUNTER_FPGAIO_BASE + 0x18u)
#define FP_PRESCALE REG(NUPES_COUNTER_FPGAIO_BASE + 0x1Cu)
static uint32_t fp_high, fp_last;
#endif

#ifdef NUPES_COUNTER_TIMER_BASE
/* A 32-bit general-purpose timer (TIM2), free-running at its input clock. Used when the DWT is
 * absent (QEMU): QEMU clocks it from virtual nanoseconds, so under -icount it counts an exact
 * number per instruction, with no interrupt and no phase jitter. */
#define TIM_CR1 REG(NUPES_COUNTER_TIMER_BASE + 0x00u)
#define TIM_EGR REG(NUPES_COUNTER_TIMER_BASE + 0x14u)
#define TIM_CNT REG(NUPES_COUNTER_TIMER_BASE + 0x24u)
#define TIM_PSC REG(NUPES_COUNTER_TIMER_BASE + 0x28u)
#define TIM_ARR REG(NUPES_COUNTER_TIMER_BASE + 0x2Cu)
static uint32_t tim_high, tim_last;
#endif

static uint32_t kind;
static volatile uint32_t systick_wraps;
static uint32_t cyc_high, cyc_last;

void SysTick_Handler(void)
{
    systick_wraps++;
}

void counter_init(void)
{
#if !defined(__ARM_ARCH_6M__) /* ARMv6-M (Cortex-M0/M0+) has no DWT cycle counter */
    volatile uint32_t spin;
    DEMCR |= 1u << 24; /* TRCENA */
    DWT_LAR = 0xC5ACCE55u; /* unlock (Cortex-M7) */
    DWT_CYCCNT = 0;
    DWT_CTRL |= 1u;
    for (spin = 0; spin < 64u; ++spin) {
    }
    if (DWT_CYCCNT != 0) {
        kind = NUPES_COUNT_CYCLES;
        return;
    }
#endif
#if defined(NUPES_COUNTER_NRF51_BASE)
    NT_MODE = 0u;     /* timer */
    NT_BITMODE = 3u;  /* 32 bit */
    NT_PRESCALER = 0u;
    NT_START = 1u;
    kind = NUPES_COUNT_TIMER;
#elif defined(NUPES_COUNTER_FPGAIO_BASE)
    FP_PRESCALE = 0;
    fp_last = FP_COUNTER;
    kind = NUPES_COUNT_TIMER;
#elif defined(NUPES_COUNTER_CMSDK_BASE)
    CT_CTRL = 0;
    CT_RELOAD = 0xFFFFFFFFu;
    CT_VALUE = 0xFFFFFFFFu;
    CT_CTRL = 1u; /* enable, no interrupt */
    ct_last = 0;
    kind = NUPES_COUNT_TIMER;
#elif defined(NUPES_COUNTER_TIMER_BASE)
    REG(NUPES_RCC_BASE + NUPES_COUNTER_TIMER_RCC_OFFSET) |= 1u << NUPES_COUNTER_TIMER_RCC_BIT;
    TIM_PSC = 0;
    TIM_ARR = 0xFFFFFFFFu;
    TIM_EGR = 1u;
    TIM_CR1 = 1u;
    kind = NUPES_COUNT_TIMER;
#else
    /* last resort: SysTick extended by its wrap interrupt (the interrupt itself adds jitter) */
    kind = NUPES_COUNT_SYSTICK;
    SYST_RVR = 0x00FFFFFFu;
    SYST_CVR = 0;
    SYST_CSR = 7u; /* processor clock, interrupt, enable */
    while (SYST_CVR == 0) { /* VAL reads 0 until the first tick */
    }
#endif
}

uint32_t counter_kind(void)
{
    return kind;
}

uint64_t counter_now(void)
{
#ifdef NUPES_COUNTER_NRF51_BASE
    if (kind == NUPES_COUNT_TIMER) {
        uint32_t now;
        NT_CAPTURE0 = 1u;
        now = NT_CC0;
        if (now < nt_last) {
            nt_high++;
        }
        nt_last = now;
        return ((uint64_t)nt_high << 32) | now;
    }
#endif
#ifdef NUPES_COUNTER_FPGAIO_BASE
    if (kind == NUPES_COUNT_TIMER) {
        const uint32_t now = FP_COUNTER;
        if (now < fp_last) {
            fp_high++;
        }
        fp_last = now;
        return ((uint64_t)fp_high << 32) | now;
    }
#endif
#ifdef NUPES_COUNTER_CMSDK_BASE
    if (kind == NUPES_COUNT_TIMER) {
        const uint32_t now = 0xFFFFFFFFu - CT_VALUE; /* counts up from 0 */
        if (now < ct_last) {
            ct_high++;
        }
        ct_last = now;
        return ((uint64_t)ct_high << 32) | now;
    }
#endif
#ifdef NUPES_COUNTER_TIMER_BASE
    if (kind == NUPES_COUNT_TIMER) {
        const uint32_t now = TIM_CNT;
        if (now < tim_last) {
            tim_high++;
        }
        tim_last = now;
        return ((uint64_t)tim_high << 32) | now;
    }
#endif
    if (kind == NUPES_COUNT_CYCLES) {
        const uint32_t now = DWT_CYCCNT;
        if (now < cyc_last) {
            cyc_high++;
        }
        cyc_last = now;
        return ((uint64_t)cyc_high << 32) | now;
    } else {
        uint32_t wraps, val;
        do { /* retry while the wrap interrupt is pending or ran in between */
            wraps = systick_wraps;
            val = SYST_CVR;
        } while (wraps != systick_wraps || (ICSR & ICSR_PENDSTSET));
        return ((uint64_t)wraps << 24) + (0x00FFFFFFu - val);
    }
}

void board_init(void)
{
    extern void uart_init(void);
    counter_init();
    uart_init();
}
