/*
 * startup.c - vector table and reset handler for Cortex-M (no libc start files).
 * Copies .data from flash (QEMU loads segments at their load address too, so the copy is
 * needed there as on silicon), zeroes .bss, enables the FPU, calls main.
 */
#include <stdint.h>

#include "board_config.h"
#include "nupes_board.h"

extern uint32_t _estack, _sidata, _sdata, _edata, _sbss, _ebss;
extern int main(void);
void Reset_Handler(void);
void SysTick_Handler(void);
void uart_irq_handler(void);

static void default_handler(void)
{
    for (;;) {
    }
}

void Reset_Handler(void)
{
    uint32_t *src = &_sidata;
    uint32_t *dst = &_sdata;
    while (dst < &_edata) {
        *dst++ = *src++;
    }
    for (dst = &_sbss; dst < &_ebss; ++dst) {
        *dst = 0;
    }
    { /* paint the free RAM the stack grows into, so its high-water mark can be read back (STACK frame) */
        uint32_t here;
        uint32_t *const limit = (uint32_t *)((uintptr_t)&here & ~(uintptr_t)3u) - 16; /* below this frame */
        for (dst = &_ebss; dst < limit; ++dst) {
            *dst = NUPES_STACK_PAINT;
        }
    }
#if defined(__ARM_FP) || defined(__ARM_FEATURE_MVE)
    /* CPACR: full access to CP10/CP11 (the FPU, and Helium on a Cortex-M55) */
    *(volatile uint32_t *)0xE000ED88u |= (0xFu << 20);
    __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
    (void)main();
    default_handler();
}

typedef void (*vector_t)(void);

__attribute__((section(".isr_vector"), used)) const vector_t vector_table[16 + NUPES_UART_IRQ + 1] = {
    (vector_t)(uintptr_t)&_estack,
    Reset_Handler,
    default_handler, /* NMI */
    default_handler, /* HardFault */
    default_handler, /* MemManage */
    default_handler, /* BusFault */
    default_handler, /* UsageFault */
    0, 0, 0, 0,
    default_handler, /* SVCall */
    default_handler, /* DebugMon */
    0,
    default_handler, /* PendSV */
    SysTick_Handler,
    [16 + NUPES_UART_IRQ] = uart_irq_handler,
};
