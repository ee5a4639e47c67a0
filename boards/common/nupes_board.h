/*
 * nupes_board.h - what the firmware application needs from a board: a UART with interrupt-driven
 * receive, a tick counter, and sleep. Board specifics come from the generated board_config.h.
 */
#ifndef NUPES_BOARD_H
#define NUPES_BOARD_H

#include <stdint.h>

#define NUPES_COUNT_CYCLES 0u  /* DWT cycle counter (real silicon) */
#define NUPES_COUNT_SYSTICK 1u /* SysTick ticks */
#define NUPES_COUNT_TIMER 2u   /* a free-running timer (QEMU: virtual ns, exact under -icount) */

void board_init(void);
void uart_write(const uint8_t *buf, uint32_t n);
/* Pops one received byte into *b; returns 0 when none is waiting. */
int uart_read(uint8_t *b);
/* Sleeps until an interrupt when no received byte is waiting. */
void board_wait_for_input(void);
/* Monotonic count (cycles or ticks, see counter_kind) */
uint64_t counter_now(void);
uint32_t counter_kind(void);
/* The RAM between the end of .bss and the stack is painted with this at reset (startup.c) */
#define NUPES_STACK_PAINT 0xA5C3A5C3u
/* The deepest the stack has reached since reset, in bytes from the top of RAM */
uint32_t board_stack_high_water(void);

#endif /* NUPES_BOARD_H */
