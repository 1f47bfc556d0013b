/* Port me: the board interface (board.h) for your microcontroller. These weak defaults only make
 * the project link; replace them with your UART driver and a free-running microsecond timer. */
#include "board.h"

__attribute__((weak)) void board_init(void) {}
__attribute__((weak)) void board_putc(char c) { (void)c; }
__attribute__((weak)) int board_getc(void) { return '%'; }
__attribute__((weak)) uint64_t board_time_us(void) { return 0; }
