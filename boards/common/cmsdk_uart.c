/*
 * cmsdk_uart.c - Arm CMSDK APB UART (the MPS2 / MPS3 boards: Cortex-M7, M33, M55 under QEMU), 8N1.
 * Receive is interrupt driven into a ring buffer. When the ring is full the handler leaves the
 * byte in DATA (the UART holds further bytes meanwhile; nothing is lost), clears the interrupt and
 * disables it; the main loop then takes the held byte itself and enables the interrupt again.
 */
#include <stdint.h>

#include "board_config.h"
#include "nupes_board.h"

#if NUPES_UART_LAYOUT == 3

#define REG(addr) (*(volatile uint32_t *)(addr))
#define UART_DATA REG(NUPES_UART_BASE + 0x00u)
#define UART_STATE REG(NUPES_UART_BASE + 0x04u)
#define UART_CTRL REG(NUPES_UART_BASE + 0x08u)
#define UART_INTCLEAR REG(NUPES_UART_BASE + 0x0Cu)
#define UART_BAUDDIV REG(NUPES_UART_BASE + 0x10u)
#define STATE_TXFULL (1u << 0)
#define STATE_RXFULL (1u << 1)
#define CTRL_TXEN (1u << 0)
#define CTRL_RXEN (1u << 1)
#define CTRL_RXINTEN (1u << 3)
#define INT_RX (1u << 1)

#define RING_SIZE NUPES_RX_RING_SIZE
static volatile uint8_t ring[RING_SIZE];
static volatile uint32_t ring_head; /* written by the ISR */
static volatile uint32_t ring_tail; /* written by the main loop */

void uart_init(void)
{
    const uint32_t div = (NUPES_UART_CLOCK_HZ + NUPES_UART_BAUD / 2u) / NUPES_UART_BAUD;
    UART_CTRL = 0;
    UART_BAUDDIV = div < 16u ? 16u : div;
    UART_INTCLEAR = 0xFu;
    UART_CTRL = CTRL_TXEN | CTRL_RXEN | CTRL_RXINTEN;
    REG(0xE000E100u + 4u * (NUPES_UART_IRQ / 32u)) = 1u << (NUPES_UART_IRQ % 32u); /* NVIC ISER */
}

void uart_irq_handler(void)
{
    UART_INTCLEAR = INT_RX;
    while (UART_STATE & STATE_RXFULL) {
        const uint32_t head = ring_head;
        if (head - ring_tail >= RING_SIZE) {
            UART_CTRL &= ~CTRL_RXINTEN; /* full: the byte stays in DATA until the main loop takes it */
            return;
        }
        ring[head % RING_SIZE] = (uint8_t)UART_DATA;
        ring_head = head + 1u;
    }
}

int uart_read(uint8_t *b)
{
    const uint32_t tail = ring_tail;
    if (ring_head == tail) {
        /* The ring is empty: a byte may still wait in DATA without an interrupt to come (the handler
         * stopped on a full ring, or the byte arrived while the interrupt was off: the UART signals
         * only arrivals). Take it here, with interrupts masked so the handler cannot race for it. */
        int held;
        __asm__ volatile("cpsid i" ::: "memory");
        held = (UART_STATE & STATE_RXFULL) != 0u;
        if (held) {
            *b = (uint8_t)UART_DATA;
        }
        UART_CTRL |= CTRL_RXINTEN;
        __asm__ volatile("cpsie i" ::: "memory");
        return held;
    }
    *b = ring[tail % RING_SIZE];
    ring_tail = tail + 1u;
    return 1;
}

void uart_write(const uint8_t *buf, uint32_t n)
{
    uint32_t i;
    for (i = 0; i < n; ++i) {
        while (UART_STATE & STATE_TXFULL) {
        }
        UART_DATA = buf[i];
    }
}

void board_wait_for_input(void)
{
    __asm__ volatile("cpsid i" ::: "memory");
    if (ring_head == ring_tail && !(UART_STATE & STATE_RXFULL)) {
        __asm__ volatile("dsb\n\twfi" ::: "memory"); /* a pending interrupt wakes it even while masked */
    }
    __asm__ volatile("cpsie i" ::: "memory");
}

#endif /* NUPES_UART_LAYOUT == 3 */
