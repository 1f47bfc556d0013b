/* Host build of the board interface (stdin/stdout, CLOCK_MONOTONIC): runs the protocol firmware on a
 * PC, e.g. `./firmware_host < commands.txt`, to check it without a board. */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "board.h"

void board_init(void) { setvbuf(stdout, NULL, _IOLBF, 0); }
void board_putc(char c) { putchar(c); }
int board_getc(void) {
    int c = getchar();
    if (c == EOF) {
        fflush(stdout);
        exit(0);
    }
    return c;
}
uint64_t board_time_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000u + (uint64_t)t.tv_nsec / 1000u;
}
