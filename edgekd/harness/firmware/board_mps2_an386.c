/* QEMU mps2-an386 (Cortex-M4): CMSDK APB UART0 at 0x40004000, CMSDK APB timer 0 at 0x40000000
 * clocked at 25 MHz. Under `qemu -icount shift=0` one instruction is one nanosecond of emulated time. */
#include "board.h"

#define UART0_BASE 0x40004000u
#define TIMER0_BASE 0x40000000u
#define REG(addr) (*(volatile uint32_t *)(addr))
#define UART_DATA REG(UART0_BASE + 0x00)
#define UART_STATE REG(UART0_BASE + 0x04)
#define UART_CTRL REG(UART0_BASE + 0x08)
#define UART_BAUDDIV REG(UART0_BASE + 0x10)
#define TIMER_CTRL REG(TIMER0_BASE + 0x00)
#define TIMER_VALUE REG(TIMER0_BASE + 0x04)
#define TIMER_RELOAD REG(TIMER0_BASE + 0x08)
#define TIMER_HZ 25000000u

static uint32_t last_value;
static uint64_t ticks;

void board_init(void) {
    UART_BAUDDIV = 16;
    UART_CTRL = 3; /* TX and RX enabled */
    TIMER_RELOAD = 0xFFFFFFFFu;
    TIMER_VALUE = 0xFFFFFFFFu;
    TIMER_CTRL = 1;
    last_value = TIMER_VALUE;
}

void board_putc(char c) {
    while (UART_STATE & 1u) {
    }
    UART_DATA = (uint32_t)(unsigned char)c;
}

int board_getc(void) {
    while (!(UART_STATE & 2u)) {
        (void)board_time_us(); /* keep the 32-bit timer from wrapping unseen while idle */
    }
    return (int)(UART_DATA & 0xFFu);
}

uint64_t board_time_us(void) {
    uint32_t v = TIMER_VALUE;
    ticks += (uint32_t)(last_value - v); /* down-counter */
    last_value = v;
    return ticks / (TIMER_HZ / 1000000u);
}
