/*
 * nrf51_uart.c - the nRF51's UART (BBC micro:bit; QEMU microbit, the Cortex-M0 board), 8N1.
 * Receive is interrupt driven into a ring buffer. The UART's own FIFO holds 6 bytes and the
 * RXDRDY event stays set while it holds one; when the ring is full the handler masks the
 * interrupt and leaves the bytes in the FIFO (the emulator then holds the rest), and the main
 * loop takes them itself and unmasks it.
 */
#include <stdint.h>

#include "board_config.h"
#include "nupes_board.h"

#if NUPES_UART_LAYOUT == 4

#define REG(addr) (*(volatile uint32_t *)(addr))
#define UART_STARTRX REG(NUPES_UART_BASE + 0x000u)
#define UART_STARTTX REG(NUPES_UART_BASE + 0x008u)
#define UART_RXDRDY REG(NUPES_UART_BASE + 0x108u)
#define UART_TXDRDY REG(NUPES_UART_BASE + 0x11Cu)
#define UART_INTENSET REG(NUPES_UART_BASE + 0x304u)
#define UART_INTENCLR REG(NUPES_UART_BASE + 0x308u)
#define UART_ENABLE REG(NUPES_UART_BASE + 0x500u)
#define UART_PSELTXD REG(NUPES_UART_BASE + 0x50Cu)
#define UART_PSELRXD REG(NUPES_UART_BASE + 0x514u)
#define UART_RXD REG(NUPES_UART_BASE + 0x518u)
#define UART_TXD REG(NUPES_UART_BASE + 0x51Cu)
#define UART_BAUDRATE REG(NUPES_UART_BASE + 0x524u)
#define INT_RXDRDY (1u << 2)
#define BAUD_115200 0x01D7E000u

#define RING_SIZE NUPES_RX_RING_SIZE
static volatile uint8_t ring[RING_SIZE];
static volatile uint32_t ring_head; /* written by the ISR */
static volatile uint32_t ring_tail; /* written by the main loop */
static volatile uint32_t rx_masked; /* the handler stopped on a full ring */

void uart_init(void)
{
    UART_PSELTXD = NUPES_UART_TX_PIN;
    UART_PSELRXD = NUPES_UART_RX_PIN;
    UART_BAUDRATE = BAUD_115200;
    UART_ENABLE = 4u;
    UART_STARTTX = 1u;
    UART_STARTRX = 1u;
    UART_INTENSET = INT_RXDRDY;
    REG(0xE000E100u) = 1u << NUPES_UART_IRQ; /* NVIC ISER (the Cortex-M0 has 32 interrupts) */
}

void uart_irq_handler(void)
{
    while (UART_RXDRDY) {
        const uint32_t head = ring_head;
        if (head - ring_tail >= RING_SIZE) {
            UART_INTENCLR = INT_RXDRDY; /* full: the bytes stay in the UART's FIFO */
            rx_masked = 1u;
            return;
        }
        UART_RXDRDY = 0u; /* cleared before RXD is read: reading it sets the event again if more wait */
        ring[head % RING_SIZE] = (uint8_t)UART_RXD;
        ring_head = head + 1u;
    }
}

int uart_read(uint8_t *b)
{
    const uint32_t tail = ring_tail;
    if (ring_head == tail) {
        if (rx_masked) {
            rx_masked = 0u;
            UART_INTENSET = INT_RXDRDY; /* the handler runs again for what the FIFO holds */
        }
        return 0;
    }
    *b = ring[tail % RING_SIZE];
    ring_tail = tail + 1u;
    return 1;
}

void uart_write(const uint8_t *buf, uint32_t n)
{
    uint32_t i;
    for (i = 0; i < n; ++i) {
        UART_TXDRDY = 0u;
        UART_TXD = buf[i];
        while (!UART_TXDRDY) {
        }
    }
}

void board_wait_for_input(void)
{
    __asm__ volatile("cpsid i" ::: "memory");
    if (ring_head == ring_tail && !rx_masked) {
        __asm__ volatile("dsb\n\twfi" ::: "memory"); /* a pending interrupt wakes it even while masked */
    }
    __asm__ volatile("cpsie i" ::: "memory");
}

#endif /* NUPES_UART_LAYOUT == 4 */
