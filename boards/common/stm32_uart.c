/*
 * stm32_uart.c - STM32 USART, both register layouts (v1: F2/F4, v2: L4/F7/H7), 8N1.
 * Receive is interrupt driven into a ring buffer. When the ring is full the interrupt is masked
 * (in the USART and at the NVIC: QEMU's USART does not lower its interrupt line when RXNEIE is
 * cleared, so masking there alone let the handler re-enter forever under a flood of input) and
 * the byte stays in the data register (QEMU then holds further bytes; nothing is lost); the main
 * loop unmasks both once it has consumed data.
 */
#include <stdint.h>

#include "board_config.h"
#include "nupes_board.h"

#if NUPES_UART_LAYOUT == 1 || NUPES_UART_LAYOUT == 2

#define REG(addr) (*(volatile uint32_t *)(addr))

#if NUPES_UART_LAYOUT == 1
#define UART_SR REG(NUPES_UART_BASE + 0x00u)
#define UART_DR REG(NUPES_UART_BASE + 0x04u)
#define UART_BRR REG(NUPES_UART_BASE + 0x08u)
#define UART_CR1 REG(NUPES_UART_BASE + 0x0Cu)
#define UART_RDR UART_DR
#define UART_TDR UART_DR
#define UART_ISR UART_SR
#define CR1_UE (1u << 13)
#else
#define UART_CR1 REG(NUPES_UART_BASE + 0x00u)
#define UART_BRR REG(NUPES_UART_BASE + 0x0Cu)
#define UART_ISR REG(NUPES_UART_BASE + 0x1Cu)
#define UART_ICR REG(NUPES_UART_BASE + 0x20u)
#define UART_RDR REG(NUPES_UART_BASE + 0x24u)
#define UART_TDR REG(NUPES_UART_BASE + 0x28u)
#define CR1_UE (1u << 0)
#endif
#define CR1_RE (1u << 2)
#define CR1_TE (1u << 3)
#define CR1_RXNEIE (1u << 5)
#define ISR_RXNE (1u << 5)
#define ISR_TXE (1u << 7)
#define ISR_ORE (1u << 3)

#define RING_SIZE NUPES_RX_RING_SIZE
#define NVIC_ISER REG(0xE000E100u + 4u * (NUPES_UART_IRQ / 32u))
#define NVIC_ICER REG(0xE000E180u + 4u * (NUPES_UART_IRQ / 32u))
#define NVIC_BIT (1u << (NUPES_UART_IRQ % 32u))
static volatile uint8_t ring[RING_SIZE];
static volatile uint32_t ring_head; /* written by the ISR */
static volatile uint32_t ring_tail; /* written by the main loop */

static void gpio_alternate_function(uint32_t pin)
{
    volatile uint32_t *moder = (volatile uint32_t *)(NUPES_GPIO_BASE + 0x00u);
    volatile uint32_t *afr = (volatile uint32_t *)(NUPES_GPIO_BASE + (pin < 8 ? 0x20u : 0x24u));
    const uint32_t af_shift = (pin % 8u) * 4u;
    *afr = (*afr & ~(0xFu << af_shift)) | ((uint32_t)NUPES_GPIO_AF << af_shift);
    *moder = (*moder & ~(3u << (pin * 2u))) | (2u << (pin * 2u));
}

void uart_init(void)
{
    static const uint32_t clocks[][2] = NUPES_CLOCK_ENABLE;
    uint32_t i;
    for (i = 0; i < sizeof clocks / sizeof clocks[0]; ++i) {
        REG(NUPES_RCC_BASE + clocks[i][0]) |= 1u << clocks[i][1];
    }
    (void)REG(NUPES_RCC_BASE + clocks[0][0]); /* read back: let the clock settle */
    gpio_alternate_function(NUPES_GPIO_TX_PIN);
    gpio_alternate_function(NUPES_GPIO_RX_PIN);
    UART_CR1 = 0;
    UART_BRR = (NUPES_UART_CLOCK_HZ + NUPES_UART_BAUD / 2u) / NUPES_UART_BAUD;
    UART_CR1 = CR1_UE | CR1_TE | CR1_RE | CR1_RXNEIE;
    NVIC_ISER = NVIC_BIT;
}

void uart_irq_handler(void)
{
    while (UART_ISR & ISR_RXNE) {
        const uint32_t head = ring_head;
        if (head - ring_tail >= RING_SIZE) {
            UART_CR1 &= ~CR1_RXNEIE; /* full: leave the byte in the register */
            NVIC_ICER = NVIC_BIT;
            return;
        }
        ring[head % RING_SIZE] = (uint8_t)UART_RDR;
        ring_head = head + 1u;
    }
#if NUPES_UART_LAYOUT != 1
    if (UART_ISR & ISR_ORE) {
        UART_ICR = ISR_ORE;
    }
#endif
}

int uart_read(uint8_t *b)
{
    const uint32_t tail = ring_tail;
    if (ring_head == tail) {
        /* The ring is empty: a byte may wait in the data register with its interrupt off (the
         * handler stopped on a full ring). Take it here, interrupts masked so the handler cannot
         * race for it, and turn the interrupt back on. */
        int held;
        __asm__ volatile("cpsid i" ::: "memory");
        held = (UART_ISR & ISR_RXNE) != 0u;
        if (held) {
            *b = (uint8_t)UART_RDR;
        }
        UART_CR1 |= CR1_RXNEIE;
        NVIC_ISER = NVIC_BIT;
        __asm__ volatile("cpsie i" ::: "memory");
        return held;
    }
    *b = ring[tail % RING_SIZE];
    ring_tail = tail + 1u;
    if (!(UART_CR1 & CR1_RXNEIE)) {
        UART_CR1 |= CR1_RXNEIE;
        NVIC_ISER = NVIC_BIT;
    }
    return 1;
}

void uart_write(const uint8_t *buf, uint32_t n)
{
    uint32_t i;
    for (i = 0; i < n; ++i) {
        while (!(UART_ISR & ISR_TXE)) {
        }
        UART_TDR = buf[i];
    }
}

void board_wait_for_input(void)
{
    __asm__ volatile("cpsid i" ::: "memory");
    if (ring_head == ring_tail && !(UART_ISR & ISR_RXNE)) {
        __asm__ volatile("dsb\n\twfi" ::: "memory"); /* a pending interrupt wakes it even while masked */
    }
    __asm__ volatile("cpsie i" ::: "memory");
}

#endif /* NUPES_UART_LAYOUT 1 or 2 */
