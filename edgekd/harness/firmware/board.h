/* The three things the edgekd firmware needs from a board: a UART and a microsecond clock.
 * board_mps2_an386.c implements them for QEMU's mps2-an386 (CMSDK UART0 + APB timer 0); port them
 * to your board (HAL_UART_Transmit / a free-running timer) to run the same firmware on hardware. */
#ifndef EDGEKD_BOARD_H_
#define EDGEKD_BOARD_H_

#include <stdint.h>

void board_init(void);
void board_putc(char c);
int board_getc(void);       /* blocks until a byte arrives */
uint64_t board_time_us(void); /* monotonic microseconds */

#endif
