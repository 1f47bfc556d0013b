/* edgekd benchmark firmware: the EEMBC / MLPerf Tiny serial protocol (monitor 2.2.0) around a model
 * from edgekd's C backend (edgekd_model.h). Commands end with '%'; every answer ends with m-ready. */
#include <stdint.h>
#include <string.h>

#include "board.h"
#include "edgekd_model.h"

#ifndef EE_MODEL_NAME
#define EE_MODEL_NAME "ic01"
#endif
#define CMD_MAX 80

static int8_t g_input[EDGEKD_INPUT_SIZE];
static int32_t g_expect, g_loaded;
static char g_cmd[CMD_MAX + 1];

static void put(const char *s) {
    while (*s) board_putc(*s++);
}

static void put_u64(uint64_t v) {
    char buf[21];
    int i = 20;
    buf[i] = 0;
    do {
        buf[--i] = (char)('0' + (int)(v % 10u));
        v /= 10u;
    } while (v);
    put(buf + i);
}

static void put_i32(int32_t v) {
    if (v < 0) {
        board_putc('-');
        put_u64((uint64_t)(-(int64_t)v));
    } else {
        put_u64((uint64_t)v);
    }
}

static void line(const char *s) {
    put(s);
    put("\r\n");
}

static void error(const char *a, const char *b) {
    put("e-[");
    put(a);
    put(b);
    line("]");
}

static void lap(void) {
    put("m-lap-us-");
    put_u64(board_time_us());
    put("\r\n");
}

static int parse_u32(const char *s, uint32_t *out) {
    uint32_t v = 0;
    if (!s || !*s) return 0;
    for (; *s; ++s) {
        if (*s < '0' || *s > '9' || v > 100000000u) return 0;
        v = v * 10u + (uint32_t)(*s - '0');
    }
    *out = v;
    return 1;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static void results(void) {
    const int8_t *o = edgekd_output();
    put("m-results-[");
    for (int32_t i = 0; i < EDGEKD_OUTPUT_SIZE; ++i) {
        if (i) board_putc(',');
        put_i32(o[i]);
    }
    line("]");
}

static void cmd_db(char *args[], int n) {
    uint32_t v;
    if (n == 3 && strcmp(args[1], "load") == 0) {
        if (!parse_u32(args[2], &v) || v > EDGEKD_INPUT_SIZE) {
            error("Invalid load size ", args[2]);
            return;
        }
        g_expect = (int32_t)v;
        g_loaded = 0;
        put("m-[Expecting ");
        put_u64(v);
        line(" bytes]");
    } else if (n == 2 && strcmp(args[1], "print") == 0) {
        static const char hx[] = "0123456789abcdef";
        put("m-buffer-");
        for (int32_t i = 0; i < g_loaded; ++i) {
            board_putc(hx[((uint8_t)g_input[i]) >> 4]);
            board_putc(hx[((uint8_t)g_input[i]) & 15]);
        }
        put("\r\n");
    } else if (n == 2) {
        const char *h = args[1];
        size_t len = strlen(h);
        if (len % 2) {
            error("Hex string must have an even number of digits", "");
            return;
        }
        for (size_t i = 0; i < len; i += 2) {
            int hi = hexval(h[i]), lo = hexval(h[i + 1]);
            if (hi < 0 || lo < 0) {
                char bad[4] = {'\'', hi < 0 ? h[i] : h[i + 1], '\'', 0};
                error("Invalid hex digit ", bad);
                return;
            }
            if (g_loaded >= g_expect) {
                error("Too many bytes", "");
                return;
            }
            g_input[g_loaded++] = (int8_t)((hi << 4) | lo);
        }
        if (g_loaded == g_expect) line("m-load-done");
    } else {
        error("Unknown db command", "");
    }
}

static void run_n(uint32_t n) {
    for (uint32_t i = 0; i < n; ++i) {
        memcpy(edgekd_input(), g_input, EDGEKD_INPUT_SIZE);
        edgekd_invoke();
    }
}

static void cmd_infer(char *args[], int n) {
    uint32_t iters = 0, warm = 0;
    if (n < 2 || !parse_u32(args[1], &iters) || (n > 2 && !parse_u32(args[2], &warm))) {
        error("infer needs N [W]", "");
        return;
    }
    if (iters == 0) {
        error("Inference iterations must be >0", "");
        return;
    }
    if (g_loaded != EDGEKD_INPUT_SIZE) {
        error("Input buffer is not full; use db load", "");
        return;
    }
    put("m-warmup-start-");
    put_u64(warm);
    put("\r\n");
    run_n(warm);
    line("m-warmup-done");
    put("m-infer-start-");
    put_u64(iters);
    put("\r\n");
    lap();
    run_n(iters);
    lap();
    line("m-infer-done");
    results();
}

static void dispatch(char *text) {
    char *args[8];
    int n = 0;
    for (char *p = text; *p && n < 8;) {
        while (*p == ' ') *p++ = 0;
        if (!*p) break;
        args[n++] = p;
        while (*p && *p != ' ') ++p;
    }
    if (n == 0) {
        error("Empty command", "");
    } else if (strcmp(args[0], "name") == 0) {
        line("m-name-dut-[edgekd " EE_MODEL_NAME " on mps2-an386]");
    } else if (strcmp(args[0], "profile") == 0) {
        line("m-profile-[edgekd-c-backend]");
        line("m-model-[" EE_MODEL_NAME "]");
    } else if (strcmp(args[0], "timestamp") == 0) {
        lap();
    } else if (strcmp(args[0], "help") == 0) {
        line("m-[name, profile, timestamp, db load N, db HEX, db print, infer N W, results]");
    } else if (strcmp(args[0], "db") == 0) {
        cmd_db(args, n);
    } else if (strcmp(args[0], "infer") == 0) {
        cmd_infer(args, n);
    } else if (strcmp(args[0], "results") == 0) {
        results();
    } else {
        error("Unknown command: ", args[0]);
    }
    line("m-ready");
}

int main(void) {
    board_init();
    line("m-timestamp-mode-performance");
    line("m-init-done");
    line("m-ready");
    int len = 0, overflow = 0;
    for (;;) {
        int c = board_getc();
        if (c == '%') {
            g_cmd[len] = 0;
            if (overflow) {
                error("Command too long", "");
                line("m-ready");
            } else {
                dispatch(g_cmd);
            }
            len = 0;
            overflow = 0;
        } else if (c == '\r' || c == '\n') {
            continue;
        } else if (len < CMD_MAX) {
            g_cmd[len++] = (char)c;
        } else {
            overflow = 1;
        }
    }
}
