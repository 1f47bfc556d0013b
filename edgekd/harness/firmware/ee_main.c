/* edgekd benchmark firmware: the MLPerf Tiny / EEMBC serial protocol around a model behind
 * edgekd_model.h (edgekd's C backend, or TFLite Micro in tflm_model.cc), answering every command as
 * MLPerf Tiny's benchmark/api/internally_implemented.cpp (monitor 2.2.0) does, with the reference
 * submissions' input encoding and results. edgekd/harness/monitor.py is the same device in Python and
 * documents each quirk kept here (80-character commands, the first word picks the command, atoi,
 * prefix-less lines); tests/test_firmware_conformance.py replays the official transcript on this file.
 *
 * Compile-time settings (-D...):
 *   EE_MODEL_NAME    "kws01" | "vww01" | "ic01" | "ad01" | "strww01": m-model-[...], the runner's task
 *                    (default "ic01")
 *   EE_VENDOR        the name in m-name-dut-[...] (default "edgekd")
 *   EE_INPUT_FORMAT  int8 | uint8 | float32: what the host sends per input element (default int8).
 *                    uint8 to an int8 model is shifted by -128 (IC, VWW); float32 is quantized here
 *                    with the model's input scale and zero point, q = clamp(round(x / s) + zp) (AD).
 *                    The db buffer holds one input: EDGEKD_INPUT_ELEMENTS x 1 or 4 bytes.
 *   EE_RESULTS       float | softmax | raw: m-results-[...] holds the dequantized outputs ("%.3f"),
 *                    their softmax, or the int8 outputs (default float). ad01 with float results
 *                    prints one value, the anomaly score: the mean squared error between the
 *                    dequantized output and the float input (the AD reference's).
 *   EE_SAMPLES       defined when edgekd_samples.c is linked in: N accuracy samples in the wire
 *                    encoding, and the extra command `db sample K` (copy sample K into the db buffer
 *                    as if loaded: m-load-done, or e-[No sample K]). Without it `db sample` is hex.
 *   EE_ENERGY        defined: m-timestamp-mode-energy and no m-lap-us lines (energy mode).
 *   EE_BOOT_REPORT   defined: main() calls edgekd_boot_report() after board_init(), before the banner:
 *                    the model's own boot diagnostics as prefix-less lines (tflm/tflm_model.cc: the arena
 *                    TFLite Micro used and its stack), which the host runner skips.
 * The float math is float32 in program order, as edgekd/harness/mlperf.py computes it on the host;
 * build with -ffp-contract=off so the compiler keeps it that way (no fused multiply-add). */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "board.h"
#include "edgekd_model.h"

#ifndef EE_MODEL_NAME
#define EE_MODEL_NAME "ic01"
#endif
#ifndef EE_VENDOR
#define EE_VENDOR "edgekd"
#endif
#ifndef EE_INPUT_FORMAT
#define EE_INPUT_FORMAT int8
#endif
#ifndef EE_RESULTS
#define EE_RESULTS float
#endif

/* the settings are words (-DEE_INPUT_FORMAT=uint8): pasted onto a prefix they become numbers */
#define EE_PASTE_(a, b) a##b
#define EE_PASTE(a, b) EE_PASTE_(a, b)
#define EE_FMT_int8 1
#define EE_FMT_uint8 2
#define EE_FMT_float32 3
#define EE_RES_float 1
#define EE_RES_softmax 2
#define EE_RES_raw 3
#define EE_FMT EE_PASTE(EE_FMT_, EE_INPUT_FORMAT)
#define EE_RES EE_PASTE(EE_RES_, EE_RESULTS)
#if EE_FMT < 1 || EE_FMT > 3
#error "EE_INPUT_FORMAT must be int8, uint8 or float32"
#endif
#if EE_RES < 1 || EE_RES > 3
#error "EE_RESULTS must be float, softmax or raw"
#endif

/* older model headers: one int8 element per input byte, no input quantization */
#ifndef EDGEKD_INPUT_ELEMENTS
#define EDGEKD_INPUT_ELEMENTS EDGEKD_INPUT_SIZE
#endif
#ifndef EDGEKD_INPUT_SCALE
#define EDGEKD_INPUT_SCALE 1.0f
#endif
#ifndef EDGEKD_INPUT_ZERO_POINT
#define EDGEKD_INPUT_ZERO_POINT 0
#endif
#ifndef EDGEKD_INPUT_UNSIGNED
#define EDGEKD_INPUT_UNSIGNED 0 /* 1: the model's input tensor is uint8 */
#endif

#define EE_FW_VERSION "ULPMark for tinyML Firmware V0.0.1"
#define EE_CMD_SIZE 80
#define EE_EOL "\r\n"
#define EE_DB_SIZE (EDGEKD_INPUT_ELEMENTS * (EE_FMT == EE_FMT_float32 ? 4 : 1))
/* the AD score needs the float input: one value per output */
#define EE_AD_SCORE_POSSIBLE (EE_RES == EE_RES_float && EDGEKD_OUTPUT_SIZE == EDGEKD_INPUT_ELEMENTS)

#ifdef EE_BOOT_REPORT
void edgekd_boot_report(void);
#endif
#ifdef EE_SAMPLES
extern const int32_t edgekd_sample_count;
extern const uint8_t edgekd_samples[][EE_DB_SIZE];
#endif

static uint8_t g_db[EE_DB_SIZE];        /* gp_buff: kept across loads, as in the reference */
static int32_t g_db_size, g_db_pos;     /* g_buff_size, g_buff_pos */
static int8_t g_q[EDGEKD_INPUT_SIZE];   /* the model input of the last full load */
#if EE_FMT == EE_FMT_float32
static float g_xf[EDGEKD_INPUT_ELEMENTS]; /* ... and the float input it was quantized from */
#endif
static char g_cmd[EE_CMD_SIZE + 1];

/* ---- output ---------------------------------------------------------------------------------- */

static void put(const char *s) {
    while (*s) board_putc(*s++);
}

static void put_u32(uint32_t v) {
    char buf[11];
    int i = 10;
    buf[i] = 0;
    do {
        buf[--i] = (char)('0' + (int)(v % 10u));
        v /= 10u;
    } while (v);
    put(buf + i);
}

static void put_i32(int32_t v) {
    if (v < 0) board_putc('-');
    put_u32(v < 0 ? (uint32_t)0 - (uint32_t)v : (uint32_t)v);
}

static void put_hex2(uint8_t b) {
    static const char hx[] = "0123456789abcdef";
    board_putc(hx[b >> 4]);
    board_putc(hx[b & 15u]);
}

#if EE_RES != EE_RES_raw
/* A float32 that is at least 2^24 is an integer, mant * 2^shift: its exact decimal digits. */
static void put_big_integer(uint32_t bits) {
    uint8_t dig[40]; /* little-endian decimal digits; FLT_MAX has 39 */
    int n = 0, shift = (int)((bits >> 23) & 0xFFu) - 150;
    for (uint32_t mant = (bits & 0x7FFFFFu) | 0x800000u; mant; mant /= 10u) {
        dig[n++] = (uint8_t)(mant % 10u);
    }
    for (; shift > 0; --shift) { /* double the digit string */
        int carry = 0;
        for (int i = 0; i < n; ++i) {
            int d = dig[i] * 2 + carry;
            dig[i] = (uint8_t)(d % 10);
            carry = d / 10;
        }
        if (carry) dig[n++] = (uint8_t)carry;
    }
    while (n) board_putc((char)('0' + dig[--n]));
}

/* printf("%.3f", (double)v) without printf (newlib-nano has no %f): the exact binary value rounded to
 * 3 decimals, ties to even, "-0.000" for small negatives. v * 1000 is exact in double (24 + 10 bits). */
static void put_f3(float v) {
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    if (v != v) {
        put("nan");
        return;
    }
    if (bits >> 31) board_putc('-');
    bits &= 0x7FFFFFFFu;
    memcpy(&v, &bits, sizeof v);
    if (v > 3.4028235e38f) {
        put("inf");
        return;
    }
    if (v >= 16777216.0f) {
        put_big_integer(bits);
        put(".000");
        return;
    }
    double m = (double)v * 1000.0; /* < 2^34: exact, and so are its integer part and fraction */
    uint64_t k = (uint64_t)m;
    double frac = m - (double)k;
    if (frac > 0.5 || (frac == 0.5 && (k & 1u))) ++k;
    put_u32((uint32_t)(k / 1000u));
    board_putc('.');
    uint32_t ms = (uint32_t)(k % 1000u);
    board_putc((char)('0' + ms / 100u));
    board_putc((char)('0' + ms / 10u % 10u));
    board_putc((char)('0' + ms % 10u));
}
#endif

static void line(const char *s) {
    put(s);
    put(EE_EOL);
}

static void error(const char *a, const char *b) {
    put("e-[");
    put(a);
    put(b);
    line("]");
}

/* th_timestamp: m-lap-us-N, the 32-bit microsecond counter (nothing in energy mode) */
static void lap(void) {
#ifndef EE_ENERGY
    put("m-lap-us-");
    put_u32((uint32_t)board_time_us());
    put(EE_EOL);
#endif
}

/* ---- the model side: th_load_tensor, th_infer, th_results ------------------------------------ */

#if EE_FMT == EE_FMT_float32
/* std::round, then the zero point, clamped to the model's input type (NaN: the lowest value) */
static int8_t quantize_input(float x) {
    float v = roundf(x / EDGEKD_INPUT_SCALE) + (float)EDGEKD_INPUT_ZERO_POINT;
    float lo = EDGEKD_INPUT_UNSIGNED ? 0.0f : -128.0f, hi = EDGEKD_INPUT_UNSIGNED ? 255.0f : 127.0f;
    if (!(v >= lo)) v = lo;
    if (v > hi) v = hi;
    return EDGEKD_INPUT_UNSIGNED ? (int8_t)(uint8_t)v : (int8_t)v;
}
#endif

/* The loaded bytes as the next model input, in EE_INPUT_FORMAT; a short load keeps the old input. */
static void load_tensor(int32_t nbytes) {
    if (nbytes != EE_DB_SIZE) {
        put("Input db has ");
        put_i32(nbytes);
        put(" bytes, expected ");
        put_i32(EE_DB_SIZE);
        put(EE_EOL);
        return;
    }
    for (int32_t i = 0; i < EDGEKD_INPUT_ELEMENTS; ++i) {
#if EE_FMT == EE_FMT_float32
        memcpy(&g_xf[i], &g_db[4 * i], 4); /* little-endian float32, as the host packs it */
        g_q[i] = quantize_input(g_xf[i]);
#elif EE_FMT == EE_FMT_uint8
        g_q[i] = (int8_t)(EDGEKD_INPUT_UNSIGNED ? g_db[i] : (uint8_t)(g_db[i] - 128u));
#else
        g_q[i] = (int8_t)g_db[i];
#endif
    }
}

/* The C backend's arena reuses the input's memory: copy the input in before every run. */
static void run_n(int32_t n) {
    for (int32_t i = 0; i < n; ++i) {
        memcpy(edgekd_input(), g_q, EDGEKD_INPUT_SIZE);
        edgekd_invoke();
    }
}

#if EE_RES != EE_RES_raw
static float dequantize(int32_t q, float scale, int32_t zp) { return ((float)q - (float)zp) * scale; }

static float output_value(int32_t i) {
    return dequantize(edgekd_output()[i], EDGEKD_OUTPUT_SCALE, EDGEKD_OUTPUT_ZERO_POINT);
}

#if EE_AD_SCORE_POSSIBLE
static int is_ad01(void) { return strcmp(EE_MODEL_NAME, "ad01") == 0; }

static float input_value(int32_t i) {
#if EE_FMT == EE_FMT_float32
    return g_xf[i];
#else
    int32_t q = EDGEKD_INPUT_UNSIGNED ? (int32_t)(uint8_t)g_q[i] : (int32_t)g_q[i];
    return dequantize(q, EDGEKD_INPUT_SCALE, EDGEKD_INPUT_ZERO_POINT);
#endif
}

/* the anomaly score: mean squared error of the reconstruction, summed in order, in float32 */
static float anomaly_score(void) {
    float acc = 0.0f;
    for (int32_t i = 0; i < EDGEKD_OUTPUT_SIZE; ++i) {
        float d = output_value(i) - input_value(i);
        acc += d * d;
    }
    return acc / (float)EDGEKD_OUTPUT_SIZE;
}
#endif

#if EE_RES == EE_RES_softmax
/* softmax of the dequantized outputs (max subtracted, summed in order), printed as computed */
static void put_softmax(void) {
    float mx = output_value(0), sum = 0.0f;
    for (int32_t i = 1; i < EDGEKD_OUTPUT_SIZE; ++i) mx = output_value(i) > mx ? output_value(i) : mx;
    for (int32_t i = 0; i < EDGEKD_OUTPUT_SIZE; ++i) sum += expf(output_value(i) - mx);
    for (int32_t i = 0; i < EDGEKD_OUTPUT_SIZE; ++i) {
        if (i) board_putc(',');
        put_f3(expf(output_value(i) - mx) / sum);
    }
}
#endif
#endif /* EE_RES != EE_RES_raw */

static void results(void) {
    put("m-results-[");
#if EE_RES == EE_RES_raw
    for (int32_t i = 0; i < EDGEKD_OUTPUT_SIZE; ++i) {
        if (i) board_putc(',');
        put_i32(edgekd_output()[i]);
    }
#elif EE_RES == EE_RES_softmax
    put_softmax();
#else
#if EE_AD_SCORE_POSSIBLE
    if (is_ad01()) {
        put_f3(anomaly_score());
        line("]");
        return;
    }
#endif
    for (int32_t i = 0; i < EDGEKD_OUTPUT_SIZE; ++i) {
        if (i) board_putc(',');
        put_f3(output_value(i));
    }
#endif
    line("]");
}

/* ---- commands -------------------------------------------------------------------------------- */

/* C atoi without its overflow: spaces, a sign, digits up to the first non-digit; clamped to int32 */
static int32_t ee_atoi(const char *s) {
    int64_t v = 0;
    int neg = 0;
    while (*s == ' ' || (*s >= '\t' && *s <= '\r')) ++s;
    if (*s == '+' || *s == '-') neg = *s++ == '-';
    for (; *s >= '0' && *s <= '9'; ++s) {
        v = v * 10 + (*s - '0');
        if (v > 2147483648LL) v = 2147483648LL;
    }
    v = neg ? -v : v;
    return (int32_t)(v > 2147483647LL ? 2147483647LL : v);
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* db load N: the reference keeps the old bytes; an oversized N is a prefix-less line ending in \n */
static void db_load(const char *arg) {
    if (!arg) {
        error("Command 'db load' requires the # of bytes", "");
        return;
    }
    int32_t n = ee_atoi(arg);
    if (n == 0) {
        error("Command 'db load' must be >0 bytes", "");
        return;
    }
    g_db_pos = 0;
    if (n < 0 || n > EE_DB_SIZE) {
        g_db_size = 0; /* the reference keeps N and writes past its buffer; this drops the bytes */
        put("Supplied buffer size ");
        put_i32(n);
        put(" exceeds maximum of ");
        put_i32(EE_DB_SIZE);
        put("\n");
        return;
    }
    g_db_size = n;
    put("m-[Expecting ");
    put_i32(n);
    line(" bytes]");
}

/* db HEX: pairs are checked as they are written; m-load-done once, and the rest of the line dropped */
static void db_hex(const char *h) {
    size_t len = strlen(h);
    if (len % 2u) {
        error("Insufficent number of hex digits", ""); /* sic, as the reference */
        return;
    }
    for (size_t i = 0; i < len; i += 2) {
        int hi = hexval(h[i]), lo = hexval(h[i + 1]);
        if (hi < 0 || lo < 0) {
            char bad[5] = {'\'', h[i], h[i + 1], '\'', 0};
            error("Invalid hex digit ", bad);
            return;
        }
        if (g_db_pos < EE_DB_SIZE) g_db[g_db_pos] = (uint8_t)((hi << 4) | lo);
        ++g_db_pos;
        if (g_db_pos == g_db_size) {
            line("m-load-done");
            return;
        }
    }
}

/* db print: the loaded size, 8 bytes a line joined by '-', and an empty line after a partial one */
static void db_print(void) {
    for (int32_t i = 0; i < g_db_size; ++i) {
        put(i % 8 == 0 ? "m-buffer-" : "-");
        put_hex2(g_db[i]);
        if (i % 8 == 7 || i == g_db_size - 1) put(EE_EOL);
    }
    if (g_db_size % 8) put(EE_EOL);
}

#ifdef EE_SAMPLES
/* db sample K (edgekd's fast path for accuracy runs): baked sample K, as if loaded with db load/HEX */
static void db_sample(const char *arg) {
    int32_t k = (arg && *arg) ? 0 : -1; /* digits only: "db sample x" is no sample */
    for (const char *p = arg; k >= 0 && *p; ++p) {
        k = (*p >= '0' && *p <= '9' && k < 10000000) ? k * 10 + (*p - '0') : -1;
    }
    if (k < 0 || k >= edgekd_sample_count) {
        error("No sample ", arg ? arg : "");
        return;
    }
    memcpy(g_db, edgekd_samples[k], EE_DB_SIZE);
    g_db_size = g_db_pos = EE_DB_SIZE;
    line("m-load-done");
}
#endif

static void cmd_db(char *args[], int n) {
    if (n < 2) {
        error("Command 'db' requires a subcommand", "");
    } else if (strcmp(args[1], "load") == 0) {
        db_load(n > 2 ? args[2] : 0);
    } else if (strcmp(args[1], "print") == 0) {
        db_print();
#ifdef EE_SAMPLES
    } else if (strcmp(args[1], "sample") == 0) {
        db_sample(n > 2 ? args[2] : 0);
#endif
    } else {
        db_hex(args[1]);
    }
}

/* infer [N=1] [W=10]: load the tensor, W warm-up runs, N timed runs between two timestamps, results */
static void cmd_infer(char *args[], int n) {
    int32_t iters = 1, warm = 10;
    if (n > 1) {
        iters = ee_atoi(args[1]);
        if (iters <= 0) {
            error("Inference iterations must be >0", "");
            return;
        }
        if (n > 2) {
            warm = ee_atoi(args[2]);
            if (warm < 0) {
                error("Inference warmup must be >=0", "");
                return;
            }
        }
    }
    load_tensor(g_db_pos < EE_DB_SIZE ? g_db_pos : EE_DB_SIZE);
    put("m-warmup-start-");
    put_i32(warm);
    put(EE_EOL);
    run_n(warm);
    line("m-warmup-done");
    put("m-infer-start-");
    put_i32(iters);
    put(EE_EOL);
    lap();
    run_n(iters);
    lap();
    line("m-infer-done");
    results();
}

static void help(void) {
    line(EE_FW_VERSION);
    line("");
    line("help         : Print this information");
    line("name         : Print the name of the device");
    line("timestsamp   : Generate a timetsamp"); /* sic, as the reference */
    line("db SUBCMD    : Manipulate a generic byte buffer");
    line("  load N     : Allocate N bytes and set load counter");
    line("  db HH[HH]* : Load 8-bit hex byte(s) until N bytes");
    line("  print [N=16] [offset=0]");
    line("             : Print N bytes at offset as hex");
    line("infer N [W=0]: Load input, execute N inferences after W warmup loops");
    line("results      : Return the result fp32 vector");
}

/* ee_profile_parse: the first space-delimited word picks the command; extra words are ignored */
static void dispatch(char *text) {
    char *args[4];
    int n = 0;
    for (char *p = text; *p && n < 4;) {
        while (*p == ' ') *p++ = 0;
        if (!*p) break;
        args[n++] = p;
        while (*p && *p != ' ') ++p;
    }
    if (n == 0) {
        /* an empty command: only m-ready */
    } else if (strcmp(args[0], "name") == 0) {
        line("m-name-dut-[" EE_VENDOR "]");
    } else if (strcmp(args[0], "profile") == 0) {
        line("m-profile-[" EE_FW_VERSION "]");
        line("m-model-[" EE_MODEL_NAME "]");
    } else if (strcmp(args[0], "timestamp") == 0) {
        lap();
    } else if (strcmp(args[0], "help") == 0) {
        help();
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
#ifdef EE_BOOT_REPORT
    edgekd_boot_report();
#endif
#ifdef EE_ENERGY
    line("m-timestamp-mode-energy");
#else
    line("m-timestamp-mode-performance");
#endif
    lap();
    line("m-init-done");
    line("m-ready");
    int len = 0;
    for (;;) {
        int c = board_getc();
        if (c == '%') { /* the delimiter: run what arrived, its first EE_CMD_SIZE characters */
            g_cmd[len] = 0;
            dispatch(g_cmd);
            len = 0;
        } else if (c != '\r' && c != '\n' && len < EE_CMD_SIZE) {
            g_cmd[len++] = (char)c;
        }
    }
}
