/* edgekd C backend fast kernels (see edgekd_kernels_fast.h). Written for edgekd: the GEMM follows the
 * idea of CMSIS-NN's 2x2 register-blocked int8 kernel (two output pixels x two output channels per
 * step, 2-way 16-bit MACs), the depthwise kernel keeps four channels in registers per tap. */
#include "edgekd_kernels_fast.h"

#include <string.h>

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O2") /* the inner loops want -O2's inlining and scheduling even in an -Os build */
#endif
#define EK_INLINE static inline __attribute__((always_inline))

#if defined(__ARM_FEATURE_DSP)
#include <arm_acle.h>
#define EK_SXTB16(x) ((int32_t)__sxtb16((int32_t)(x)))
EK_INLINE int32_t EK_SXTB16_ROR8(uint32_t x) { /* bytes 1 and 3, sign-extended (one instruction) */
    int32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}
#define EK_SMLAD(a, b, acc) __smlad((a), (b), (acc))
#define EK_SMLABB(a, b, acc) __smlabb((a), (b), (acc))
#define EK_SMLATT(a, b, acc) __smlatt((a), (b), (acc))
#else /* portable C with the same results (two's complement wrap-around like the instructions) */
EK_INLINE int32_t EK_SXTB16(uint32_t x) {
    return (int32_t)(((uint32_t)(uint16_t)(int16_t)(int8_t)x) | ((uint32_t)(int16_t)(int8_t)(x >> 16) << 16));
}
EK_INLINE int32_t lo16(int32_t x) { return (int16_t)(uint16_t)(uint32_t)x; }
EK_INLINE int32_t hi16(int32_t x) { return (int16_t)(uint16_t)((uint32_t)x >> 16); }
EK_INLINE int32_t EK_SMLAD(int32_t a, int32_t b, int32_t acc) {
    return (int32_t)((uint32_t)acc + (uint32_t)(lo16(a) * lo16(b)) + (uint32_t)(hi16(a) * hi16(b)));
}
EK_INLINE int32_t EK_SMLABB(int32_t a, int32_t b, int32_t acc) {
    return (int32_t)((uint32_t)acc + (uint32_t)(lo16(a) * lo16(b)));
}
EK_INLINE int32_t EK_SMLATT(int32_t a, int32_t b, int32_t acc) {
    return (int32_t)((uint32_t)acc + (uint32_t)(hi16(a) * hi16(b)));
}
#define EK_SXTB16_ROR8(x) EK_SXTB16(((uint32_t)(x) >> 8) | ((uint32_t)(x) << 24))
#endif

EK_INLINE uint32_t rd32(const int8_t *p) { /* unaligned-safe word read (one LDR on Cortex-M4) */
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* the scratch the code generator plans holds EK_FAST_PTR_BYTES per pointer */
typedef char ek_pointer_fits_its_scratch_slot[sizeof(const int8_t *) <= EK_FAST_PTR_BYTES ? 1 : -1];

EK_INLINE int8_t clamp8(int32_t v, int32_t lo, int32_t hi) { return (int8_t)(v < lo ? lo : v > hi ? hi : v); }

/* TFLM's MultiplyByQuantizedMultiplier plus the output zero point, with one 64-bit rounding step. For a
 * right shift e >= 1, SaturatingRoundingDoublingHighMul then RoundingDivideByPOT equal
 * (acc * mult + 2^30 + 2^(30+e) - [acc < 0] * 2^31) >> (31 + e), given mult = 0 or 2^30 <= mult < 2^31
 * (what QuantizeMultiplier produces): both round half away from zero from the same 64-bit product; the
 * zero point is zp * 2^(31+e) in rnd. Other shifts go to the reference (rnd_hi = zp). */
EK_INLINE int32_t requantize(int32_t acc, const ek_requant *q) {
    const int32_t mult = q->mult, rshift = q->rshift;
    if (rshift < 0) return ek_mul_by_quantized_multiplier(acc, mult, rshift + 32) + q->rnd_hi;
    const int32_t sign = acc >> 31; /* the 64-bit -2^31 of a negative acc: sign:(sign << 31) */
#if defined(__ARM_FEATURE_DSP)
    int32_t lo, hi;
    __asm__("adds %[lo], %[rlo], %[s], lsl #31\n\t"
            "adc %[hi], %[rhi], %[s]\n\t"
            "smlal %[lo], %[hi], %[a], %[m]"
            : [lo] "=&r"(lo), [hi] "=&r"(hi)
            : [rlo] "r"(q->rnd_lo), [rhi] "r"(q->rnd_hi), [s] "r"(sign), [a] "r"(acc), [m] "r"(mult)
            : "cc");
    return hi >> rshift;
#else
    const int64_t rnd = (int64_t)(((uint64_t)(uint32_t)q->rnd_hi << 32) | (uint32_t)q->rnd_lo);
    const int64_t r = rnd + (int64_t)sign * 2147483648LL + (int64_t)acc * mult;
    return (int32_t)(r >> 32) >> rshift;
#endif
}

int32_t ek_fast_requantize(int32_t acc, const ek_requant *q) { return requantize(acc, q); }

/* ---- GEMM: rows of int8 activations x blocked int8 weights, requantised into int8 ------------- */
typedef struct {
    int32_t k4, n_out, act_min, act_max, mask; /* mask: -1 per-channel multipliers, 0 one */
    const int8_t *w;
    const int32_t *bias;
    const ek_requant *rq;
} ek_gemm;

EK_INLINE int8_t requant8(int32_t acc, const ek_requant *q, int32_t lo, int32_t hi) {
    return clamp8(requantize(acc, q), lo, hi);
}

/* Two int8 rows of k4 bytes as int16 pairs, interleaved per 4-deep chunk: r0 (0,2) (1,3), r1 (0,2) (1,3). */
static void expand2(const int8_t *r0, const int8_t *r1, int32_t k4, int32_t *x) {
    for (int32_t j = 0; j < k4; j += 4, x += 4) {
        const uint32_t u0 = rd32(r0 + j), u1 = rd32(r1 + j);
        x[0] = EK_SXTB16(u0);
        x[1] = EK_SXTB16_ROR8(u0);
        x[2] = EK_SXTB16(u1);
        x[3] = EK_SXTB16_ROR8(u1);
    }
}

/* acc[r][c] += row r x channel c over the 4-deep chunks of x (expand2) and one weight pair's blocked
 * bytes (w, 8 per chunk, word-aligned); returns w past them. 16 MACs a chunk. */
#if defined(__ARM_FEATURE_DSP)
/* One chunk: x row 0 even/odd, row 1 even/odd (two LDRD), a weight word per channel (SXTB16 twice). */
#define EK_MAC2X2                                                                                       \
    "ldrd %[x0], %[x1], [%[x]], #8\n\t"                                                                  \
    "ldrd %[x2], %[x3], [%[x]], #8\n\t"                                                                  \
    "ldr %[wa], [%[w]], #4\n\t"                                                                          \
    "sxtb16 %[wb], %[wa], ror #8\n\t"                                                                    \
    "sxtb16 %[wa], %[wa]\n\t"                                                                            \
    "smlad %[a00], %[x0], %[wa], %[a00]\n\t"                                                             \
    "smlad %[a00], %[x1], %[wb], %[a00]\n\t"                                                             \
    "smlad %[a10], %[x2], %[wa], %[a10]\n\t"                                                             \
    "smlad %[a10], %[x3], %[wb], %[a10]\n\t"                                                             \
    "ldr %[wa], [%[w]], #4\n\t"                                                                          \
    "sxtb16 %[wb], %[wa], ror #8\n\t"                                                                    \
    "sxtb16 %[wa], %[wa]\n\t"                                                                            \
    "smlad %[a01], %[x0], %[wa], %[a01]\n\t"                                                             \
    "smlad %[a01], %[x1], %[wb], %[a01]\n\t"                                                             \
    "smlad %[a11], %[x2], %[wa], %[a11]\n\t"                                                             \
    "smlad %[a11], %[x3], %[wb], %[a11]\n\t"
#endif

EK_INLINE const int8_t *mac2x2(const int32_t *x, int32_t chunks, const int8_t *w, int32_t acc[4]) {
    int32_t a00 = acc[0], a01 = acc[1], a10 = acc[2], a11 = acc[3];
#if defined(__ARM_FEATURE_DSP)
    int32_t x0, x1, x2, x3, wa, wb;
    if (chunks & 1)
        __asm__(EK_MAC2X2
                : [a00] "+r"(a00), [a01] "+r"(a01), [a10] "+r"(a10), [a11] "+r"(a11), [x] "+r"(x), [w] "+r"(w),
                  [x0] "=&r"(x0), [x1] "=&r"(x1), [x2] "=&r"(x2), [x3] "=&r"(x3), [wa] "=&r"(wa), [wb] "=&r"(wb)
                : "m"(*(const int32_t(*)[4])x), "m"(*(const int8_t(*)[8])w));
    for (int32_t n = chunks >> 1; n > 0; --n) /* two chunks a trip */
        __asm__(EK_MAC2X2 EK_MAC2X2
                : [a00] "+r"(a00), [a01] "+r"(a01), [a10] "+r"(a10), [a11] "+r"(a11), [x] "+r"(x), [w] "+r"(w),
                  [x0] "=&r"(x0), [x1] "=&r"(x1), [x2] "=&r"(x2), [x3] "=&r"(x3), [wa] "=&r"(wa), [wb] "=&r"(wb)
                : "m"(*(const int32_t(*)[8])x), "m"(*(const int8_t(*)[16])w));
#else
    for (int32_t j = 0; j < chunks; ++j, x += 4, w += 8) {
        const uint32_t w0 = rd32(w), w1 = rd32(w + 4);
        const int32_t w0e = EK_SXTB16(w0), w0o = EK_SXTB16_ROR8(w0);
        const int32_t w1e = EK_SXTB16(w1), w1o = EK_SXTB16_ROR8(w1);
        a00 = EK_SMLAD(x[1], w0o, EK_SMLAD(x[0], w0e, a00));
        a10 = EK_SMLAD(x[3], w0o, EK_SMLAD(x[2], w0e, a10));
        a01 = EK_SMLAD(x[1], w1o, EK_SMLAD(x[0], w1e, a01));
        a11 = EK_SMLAD(x[3], w1o, EK_SMLAD(x[2], w1e, a11));
    }
#endif
    acc[0] = a00;
    acc[1] = a01;
    acc[2] = a10;
    acc[3] = a11;
    return w;
}

/* Two output rows: 2 pixels x 2 channels per step (8 MACs per 4-deep chunk and weight pair). */
static void gemm2(const ek_gemm *g, const int32_t *x, int8_t *o0, int8_t *o1) {
    /* g's fields in locals: the int8 stores below may alias anything, so the compiler would reload them */
    const int8_t *w = g->w;
    const int32_t *const bias = g->bias, *const xend = x + g->k4;
    const ek_requant *const rq = g->rq;
    const int32_t n_out = g->n_out, chunks = g->k4 / 4, mask = g->mask;
    const int32_t lo = g->act_min, hi = g->act_max;
    int32_t oc = 0;
    for (; oc + 1 < n_out; oc += 2) {
        int32_t acc[4] = {bias[oc], bias[oc + 1], bias[oc], bias[oc + 1]};
        w = mac2x2(x, chunks, w, acc);
        const ek_requant *q0 = &rq[oc & mask], *q1 = &rq[(oc + 1) & mask];
        o0[oc] = requant8(acc[0], q0, lo, hi);
        o0[oc + 1] = requant8(acc[1], q1, lo, hi);
        o1[oc] = requant8(acc[2], q0, lo, hi);
        o1[oc + 1] = requant8(acc[3], q1, lo, hi);
    }
    if (oc < n_out) { /* odd channel count: the last channel's weights are 4 bytes per chunk */
        int32_t a0 = bias[oc], a1 = a0;
        for (const int32_t *xp = x; xp < xend; xp += 4, w += 4) {
            const uint32_t w0 = rd32(w);
            const int32_t w0e = EK_SXTB16(w0), w0o = EK_SXTB16_ROR8(w0);
            a0 = EK_SMLAD(xp[1], w0o, EK_SMLAD(xp[0], w0e, a0));
            a1 = EK_SMLAD(xp[3], w0o, EK_SMLAD(xp[2], w0e, a1));
        }
        o0[oc] = requant8(a0, &rq[oc & mask], lo, hi);
        o1[oc] = requant8(a1, &rq[oc & mask], lo, hi);
    }
}

/* ---- int8 rows straight from memory (no int16 copy): one-batch FC, odd pixels, less scratch ------ */
/* The row's last chunk (k % 4 bytes from r) as a word, zero-filled past the depth (the blocked weights
 * are zero there). */
EK_INLINE uint32_t rd_tail(const int8_t *r, int32_t n) {
    uint32_t v = 0;
    memcpy(&v, r, (size_t)n);
    return v;
}

/* acc += one input word (4 depths, sign-extended in registers) x one channel's 4 weights (w). */
EK_INLINE int32_t mac4(int32_t xe, int32_t xo, uint32_t w, int32_t acc) {
    return EK_SMLAD(xo, EK_SXTB16_ROR8(w), EK_SMLAD(xe, EK_SXTB16(w), acc));
}

#if defined(__ARM_FEATURE_DSP)
/* acc += the word (xe, xo) x the next 4 weights at ptr (post-incremented): one channel of gemm_row */
#define EK_MACW(acc, ptr)                                                                               \
    "ldr %[wa], [%[" ptr "]], #4\n\t"                                                                  \
    "sxtb16 %[wt], %[wa], ror #8\n\t"                                                                  \
    "sxtb16 %[wa], %[wa]\n\t"                                                                          \
    "smlad %[" acc "], %[xe], %[wa], %[" acc "]\n\t"                                                   \
    "smlad %[" acc "], %[xo], %[wt], %[" acc "]\n\t"
#endif

/* o[0..n_out) of one row r (k bytes, read as int8 words and sign-extended in registers): 4 channels per
 * step (each input word expanded once for the four), then a pair, then an odd channel. No scratch. */
static void gemm_row(const ek_gemm *g, const int8_t *r, int32_t k, int8_t *o) {
    const int8_t *w = g->w;
    const int32_t *const bias = g->bias;
    const ek_requant *const rq = g->rq;
    const int32_t n_out = g->n_out, pair = 2 * g->k4, mask = g->mask, lo = g->act_min, hi = g->act_max;
    const int8_t *const full = r + (k & ~3); /* the whole chunks end there; then k % 4 bytes */
    const int32_t tail = k & 3;
    int32_t oc = 0;
    for (; oc + 3 < n_out; oc += 4) { /* two weight pairs: channels oc, oc + 1 at w, oc + 2, oc + 3 at wb */
        const int8_t *wb = w + pair;
        int32_t a0 = bias[oc], a1 = bias[oc + 1], a2 = bias[oc + 2], a3 = bias[oc + 3];
        for (const int8_t *x = r; x < full;) {
#if defined(__ARM_FEATURE_DSP) /* in registers whatever the compiler's allocation: 25 instructions a chunk */
            int32_t xe, xo, wa, wt;
            __asm__("ldr %[xe], [%[x]], #4\n\t"
                    "sxtb16 %[xo], %[xe], ror #8\n\t"
                    "sxtb16 %[xe], %[xe]\n\t"
                    EK_MACW("a0", "w") EK_MACW("a1", "w") EK_MACW("a2", "wb") EK_MACW("a3", "wb")
                    : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [x] "+r"(x), [w] "+r"(w),
                      [wb] "+r"(wb), [xe] "=&r"(xe), [xo] "=&r"(xo), [wa] "=&r"(wa), [wt] "=&r"(wt)
                    : "m"(*(const int8_t(*)[4])x), "m"(*(const int8_t(*)[8])w), "m"(*(const int8_t(*)[8])wb));
#else
            const uint32_t u = rd32(x);
            const int32_t xe = EK_SXTB16(u), xo = EK_SXTB16_ROR8(u);
            a0 = mac4(xe, xo, rd32(w), a0);
            a1 = mac4(xe, xo, rd32(w + 4), a1);
            a2 = mac4(xe, xo, rd32(wb), a2);
            a3 = mac4(xe, xo, rd32(wb + 4), a3);
            x += 4, w += 8, wb += 8;
#endif
        }
        if (tail) {
            const uint32_t u = rd_tail(full, tail);
            const int32_t te = EK_SXTB16(u), to = EK_SXTB16_ROR8(u);
            a0 = mac4(te, to, rd32(w), a0);
            a1 = mac4(te, to, rd32(w + 4), a1);
            a2 = mac4(te, to, rd32(wb), a2);
            a3 = mac4(te, to, rd32(wb + 4), a3);
            wb += 8;
        }
        w = wb;
        o[oc] = requant8(a0, &rq[oc & mask], lo, hi);
        o[oc + 1] = requant8(a1, &rq[(oc + 1) & mask], lo, hi);
        o[oc + 2] = requant8(a2, &rq[(oc + 2) & mask], lo, hi);
        o[oc + 3] = requant8(a3, &rq[(oc + 3) & mask], lo, hi);
    }
    for (; oc < n_out; oc += 2) { /* a last pair, then an odd channel (4 weight bytes a chunk) */
        const int32_t two = oc + 1 < n_out, step = two ? 8 : 4;
        int32_t a0 = bias[oc], a1 = two ? bias[oc + 1] : 0;
        for (const int8_t *x = r; x <= full; x += 4, w += step) {
            if (x == full && !tail) break;
            const uint32_t u = x < full ? rd32(x) : rd_tail(full, tail);
            const int32_t xe = EK_SXTB16(u), xo = EK_SXTB16_ROR8(u);
            a0 = mac4(xe, xo, rd32(w), a0);
            if (two) a1 = mac4(xe, xo, rd32(w + 4), a1);
        }
        o[oc] = requant8(a0, &rq[oc & mask], lo, hi);
        if (two) o[oc + 1] = requant8(a1, &rq[(oc + 1) & mask], lo, hi);
    }
}

/* Two int8 rows (k4 bytes each, zero-padded past the depth): 2 pixels x 2 channels per step, the rows
 * sign-extended in registers (no int16 copy: 2 * k4 bytes of im2col scratch instead of 6 * k4). */
static void gemm2_rows(const ek_gemm *g, const int8_t *r0, const int8_t *r1, int8_t *o0, int8_t *o1) {
    const int8_t *w = g->w;
    const int32_t *const bias = g->bias;
    const ek_requant *const rq = g->rq;
    const int32_t n_out = g->n_out, k4 = g->k4, mask = g->mask, lo = g->act_min, hi = g->act_max;
    int32_t oc = 0;
    for (; oc + 1 < n_out; oc += 2) {
        int32_t a00 = bias[oc], a01 = bias[oc + 1], a10 = a00, a11 = a01;
        for (int32_t j = 0; j < k4; j += 4, w += 8) {
            const uint32_t u0 = rd32(r0 + j), u1 = rd32(r1 + j), w0 = rd32(w), w1 = rd32(w + 4);
            const int32_t x0 = EK_SXTB16(u0), x1 = EK_SXTB16_ROR8(u0), x2 = EK_SXTB16(u1), x3 = EK_SXTB16_ROR8(u1);
            const int32_t w0e = EK_SXTB16(w0), w0o = EK_SXTB16_ROR8(w0);
            const int32_t w1e = EK_SXTB16(w1), w1o = EK_SXTB16_ROR8(w1);
            a00 = EK_SMLAD(x1, w0o, EK_SMLAD(x0, w0e, a00));
            a10 = EK_SMLAD(x3, w0o, EK_SMLAD(x2, w0e, a10));
            a01 = EK_SMLAD(x1, w1o, EK_SMLAD(x0, w1e, a01));
            a11 = EK_SMLAD(x3, w1o, EK_SMLAD(x2, w1e, a11));
        }
        const ek_requant *q0 = &rq[oc & mask], *q1 = &rq[(oc + 1) & mask];
        o0[oc] = requant8(a00, q0, lo, hi);
        o0[oc + 1] = requant8(a01, q1, lo, hi);
        o1[oc] = requant8(a10, q0, lo, hi);
        o1[oc + 1] = requant8(a11, q1, lo, hi);
    }
    if (oc < n_out) {
        int32_t a0 = bias[oc], a1 = a0;
        for (int32_t j = 0; j < k4; j += 4, w += 4) {
            const uint32_t u0 = rd32(r0 + j), u1 = rd32(r1 + j), w0 = rd32(w);
            const int32_t w0e = EK_SXTB16(w0), w0o = EK_SXTB16_ROR8(w0);
            a0 = EK_SMLAD(EK_SXTB16_ROR8(u0), w0o, EK_SMLAD(EK_SXTB16(u0), w0e, a0));
            a1 = EK_SMLAD(EK_SXTB16_ROR8(u1), w0o, EK_SMLAD(EK_SXTB16(u1), w0e, a1));
        }
        o0[oc] = requant8(a0, &rq[oc & mask], lo, hi);
        o1[oc] = requant8(a1, &rq[oc & mask], lo, hi);
    }
}

/* ---- convolution: pointwise rows straight from the input, else im2col padded with the zero point -- */
static void im2col(const ek_conv_params *p, const int8_t *in, int32_t pixel, int32_t k4, int8_t *row) {
    const int32_t ic = p->in.c, ox = pixel % p->out.w, oy = (pixel / p->out.w) % p->out.h;
    const int32_t b = pixel / (p->out.w * p->out.h);
    const int32_t iy0 = oy * p->stride_h - p->pad_h, ix0 = ox * p->stride_w - p->pad_w;
    const int8_t zp = (int8_t)(-p->in_offset);
    int8_t *r = row;
    for (int32_t fy = 0; fy < p->fh; ++fy) {
        const int32_t iy = iy0 + p->dil_h * fy;
        for (int32_t fx = 0; fx < p->fw; ++fx, r += ic) {
            const int32_t ix = ix0 + p->dil_w * fx;
            if (iy < 0 || iy >= p->in.h || ix < 0 || ix >= p->in.w) {
                memset(r, zp, (size_t)ic);
                continue;
            }
            const int8_t *src = in + ((b * p->in.h + iy) * p->in.w + ix) * ic;
            if (ic < 4)
                for (int32_t c = 0; c < ic; ++c) r[c] = src[c];
            else
                memcpy(r, src, (size_t)ic);
        }
    }
    memset(r, 0, (size_t)(row + k4 - r)); /* the blocked weights are zero there */
}

void ek_fast_conv2d(const ek_conv_params *p, const int8_t *in, const int8_t *wblk, const int32_t *bias,
                    const ek_requant *rq, int8_t *out, int8_t *scratch) {
    const int32_t ic = p->in.c, oc = p->out.c, k4 = (p->fh * p->fw * ic + 3) / 4 * 4;
    const ek_gemm g = {k4, oc, p->act_min, p->act_max, -1, wblk, bias, rq};
    const int direct = p->fh == 1 && p->fw == 1 && p->stride_h == 1 && p->stride_w == 1 && p->pad_h == 0 &&
                       p->pad_w == 0 && ic % 4 == 0 && p->in.h == p->out.h && p->in.w == p->out.w;
    int32_t *x = (int32_t *)(void *)scratch; /* 4 * k4 bytes, then two im2col rows (not when direct) */
    int8_t *const r0 = scratch + 4 * k4, *const r1 = direct ? r0 : r0 + k4;
    const int32_t pixels = p->out.n * p->out.h * p->out.w;
    int32_t q = 0;
    for (; q + 1 < pixels; q += 2) {
        const int8_t *a0 = in + q * ic, *a1 = a0 + ic;
        if (!direct) {
            im2col(p, in, q, k4, r0);
            im2col(p, in, q + 1, k4, r1);
            a0 = r0;
            a1 = r1;
        }
        expand2(a0, a1, k4, x);
        gemm2(&g, x, out + q * oc, out + (q + 1) * oc);
    }
    if (q < pixels) { /* the last pixel of an odd count: its int8 row straight (no scratch needed) */
        const int8_t *a0 = in + q * ic;
        if (!direct) {
            im2col(p, in, q, k4, r0);
            a0 = r0;
        }
        gemm_row(&g, a0, k4, out + q * oc);
    }
}

/* ---- convolution with less scratch: two int8 im2col rows (2 * k4 bytes), no int16 copy ----------- */
void ek_fast_conv2d_lowmem(const ek_conv_params *p, const int8_t *in, const int8_t *wblk, const int32_t *bias,
                           const ek_requant *rq, int8_t *out, int8_t *scratch) {
    const int32_t oc = p->out.c, k4 = (p->fh * p->fw * p->in.c + 3) / 4 * 4;
    const ek_gemm g = {k4, oc, p->act_min, p->act_max, -1, wblk, bias, rq};
    int8_t *const r0 = scratch, *const r1 = scratch + k4;
    const int32_t pixels = p->out.n * p->out.h * p->out.w;
    int32_t q = 0;
    for (; q + 1 < pixels; q += 2) {
        im2col(p, in, q, k4, r0);
        im2col(p, in, q + 1, k4, r1);
        gemm2_rows(&g, r0, r1, out + q * oc, out + (q + 1) * oc);
    }
    if (q < pixels) {
        im2col(p, in, q, k4, r0);
        gemm_row(&g, r0, k4, out + q * oc);
    }
}

/* Output pixel (oy, ox)'s im2col row for the in-place convolution: input rows up to oy from the ring
 * (each copied there before its output row overwrote it), later rows from the image. */
static void im2col_ring(const ek_conv_params *p, const int8_t *img, const int8_t *ring, int32_t keep, int32_t oy,
                        int32_t ox, int32_t k4, int8_t *row) {
    const int32_t ic = p->in.c, h = p->in.h, w = p->in.w, stride = w * ic;
    const int8_t zp = (int8_t)(-p->in_offset);
    int8_t *r = row;
    for (int32_t fy = 0; fy < p->fh; ++fy) {
        const int32_t iy = oy - p->pad_h + p->dil_h * fy;
        const int8_t *src = iy < 0 || iy >= h ? 0 : iy <= oy ? ring + (iy % keep) * stride : img + iy * stride;
        for (int32_t fx = 0; fx < p->fw; ++fx, r += ic) {
            const int32_t ix = ox - p->pad_w + p->dil_w * fx;
            if (!src || ix < 0 || ix >= w)
                memset(r, zp, (size_t)ic);
            else
                memcpy(r, src + ix * ic, (size_t)ic);
        }
    }
    memset(r, 0, (size_t)(row + k4 - r));
}

/* In place (stride 1, output height and width the input's, out channels <= in channels; io holds the
 * input and receives the output): output row R (flattened over batches) ends at or before input row
 * R + 1 starts, so it overwrites only input rows <= R; each input row is copied into a ring of
 * pad_h + 1 rows just before its own output row, and the taps of rows up to oy read the ring. Scratch
 * (EK_FAST_CONV_INPLACE_SCRATCH): two im2col rows, then the ring. Same results as ek_fast_conv2d. */
void ek_fast_conv2d_inplace(const ek_conv_params *p, int8_t *io, const int8_t *wblk, const int32_t *bias,
                            const ek_requant *rq, int8_t *scratch) {
    const int32_t ic = p->in.c, oc = p->out.c, h = p->in.h, w = p->in.w, k4 = (p->fh * p->fw * ic + 3) / 4 * 4;
    const int32_t stride = w * ic, keep = p->pad_h + 1;
    const ek_gemm g = {k4, oc, p->act_min, p->act_max, -1, wblk, bias, rq};
    int8_t *const r0 = scratch, *const r1 = scratch + k4, *const ring = scratch + 2 * k4;
    for (int32_t b = 0; b < p->in.n; ++b) {
        const int8_t *img = io + b * h * stride;
        int8_t *o = io + b * h * w * oc;
        for (int32_t oy = 0; oy < h; ++oy) {
            memcpy(ring + (oy % keep) * stride, img + oy * stride, (size_t)stride);
            int32_t ox = 0;
            for (; ox + 1 < w; ox += 2, o += 2 * oc) {
                im2col_ring(p, img, ring, keep, oy, ox, k4, r0);
                im2col_ring(p, img, ring, keep, oy, ox + 1, k4, r1);
                gemm2_rows(&g, r0, r1, o, o + oc);
            }
            if (ox < w) {
                im2col_ring(p, img, ring, keep, oy, ox, k4, r0);
                gemm_row(&g, r0, k4, o);
                o += oc;
            }
        }
    }
}

/* ---- fully connected: one batch straight from the input (no scratch), else the 2-row GEMM -------- */
void ek_fast_fully_connected(const ek_fc_params *p, const int8_t *in, const int8_t *wblk, const int32_t *bias,
                             const ek_requant *rq, int8_t *out, int8_t *scratch) {
    const int32_t k = p->accum_depth, k4 = (k + 3) / 4 * 4;
    const ek_gemm g = {k4, p->out_depth, p->act_min, p->act_max, p->per_channel ? -1 : 0,
                       wblk, bias, rq};
    if (p->batches == 1) { /* scratch may be 0 */
        gemm_row(&g, in, k, out);
        return;
    }
    /* x: int16 pairs of 2 rows (4 * k4 bytes), then the rows zero-padded to k4 if k != k4 */
    int32_t *x = (int32_t *)(void *)scratch;
    int8_t *const r0 = scratch + 4 * k4, *const r1 = k != k4 ? r0 + k4 : r0;
    if (k != k4) memset(r0, 0, (size_t)(2 * k4));
    int32_t b = 0;
    for (; b + 1 < p->batches; b += 2) {
        const int8_t *a0 = in + b * k, *a1 = a0 + k;
        if (k != k4) {
            memcpy(r0, a0, (size_t)k);
            memcpy(r1, a1, (size_t)k);
            a0 = r0;
            a1 = r1;
        }
        expand2(a0, a1, k4, x);
        gemm2(&g, x, out + b * p->out_depth, out + (b + 1) * p->out_depth);
    }
    if (b < p->batches) gemm_row(&g, in + b * k, k, out + b * p->out_depth);
}

/* ---- depthwise (depth multiplier 1, channels a multiple of 4): 4 channels per step over all taps --- */
/* acc[0..3] += channels c..c+3 over the taps; w: the packed words of this channel group. */
EK_INLINE void dw_group(const int8_t *const *tap, int32_t c, const int32_t *w, int32_t taps, int32_t acc[4]) {
    int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC unroll 9
#endif
    for (int32_t t = 0; t < taps; ++t, w += 2) {
        const uint32_t u = rd32(tap[t] + c);
        const int32_t x02 = EK_SXTB16(u), x13 = EK_SXTB16_ROR8(u);
        a0 = EK_SMLABB(x02, w[0], a0);
        a2 = EK_SMLATT(x02, w[0], a2);
        a1 = EK_SMLABB(x13, w[1], a1);
        a3 = EK_SMLATT(x13, w[1], a3);
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}

/* One output pixel: every channel group from the tap pointers (9 taps unrolled). */
static void dw_pixel(const int8_t *const *tap, int32_t taps, int32_t ch, const int32_t *w32, const int32_t *bias,
                     const ek_requant *rq, int32_t lo, int32_t hi, int8_t *o) {
    const int32_t *w = w32;
    for (int32_t c = 0; c < ch; c += 4, w += 2 * taps) {
        int32_t acc[4] = {bias[c], bias[c + 1], bias[c + 2], bias[c + 3]};
        if (taps == 9)
            dw_group(tap, c, w, 9, acc);
        else
            dw_group(tap, c, w, taps, acc);
        for (int32_t j = 0; j < 4; ++j) o[c + j] = requant8(acc[j], &rq[c + j], lo, hi);
    }
}

void ek_fast_depthwise_conv2d(const ek_conv_params *p, const int8_t *in, const int32_t *w32,
                              const int32_t *bias, const ek_requant *rq, int8_t *out, int8_t *scratch) {
    const int32_t ch = p->in.c, taps = p->fh * p->fw, fw = p->fw, ih = p->in.h, iw = p->in.w;
    const int32_t lo = p->act_min, hi = p->act_max;
    /* scratch (EK_FAST_DW_SCRATCH): the tap pointers, then one pixel of zero points (out-of-image taps) */
    const int8_t **const tap = (const int8_t **)(void *)scratch;
    int8_t *const zp = scratch + taps * EK_FAST_PTR_BYTES;
    memset(zp, (int8_t)(-p->in_offset), (size_t)ch);
    int8_t *o = out;
    for (int32_t b = 0; b < p->out.n; ++b)
        for (int32_t oy = 0; oy < p->out.h; ++oy)
            for (int32_t ox = 0; ox < p->out.w; ++ox, o += ch) {
                const int32_t iy0 = oy * p->stride_h - p->pad_h, ix0 = ox * p->stride_w - p->pad_w;
                for (int32_t t = 0; t < taps; ++t) {
                    const int32_t iy = iy0 + p->dil_h * (t / fw), ix = ix0 + p->dil_w * (t % fw);
                    const int inside = iy >= 0 && iy < ih && ix >= 0 && ix < iw;
                    tap[t] = inside ? in + ((b * ih + iy) * iw + ix) * ch : zp;
                }
                dw_pixel(tap, taps, ch, w32, bias, rq, lo, hi, o);
            }
}

/* In place (stride 1, output shape = input shape, io holds the input and receives the output): before
 * output row oy overwrites input row oy, that row is kept in a ring of pad_h + 1 rows, where the taps
 * of rows oy - pad_h .. oy read it; rows below oy are still the input. Scratch: the tap and row
 * pointers, ch zero points, then the ring (EK_FAST_DW_INPLACE_SCRATCH). The same MACs and
 * requantisation as ek_fast_depthwise_conv2d. */
void ek_fast_depthwise_conv2d_inplace(const ek_conv_params *p, int8_t *io, const int32_t *w32,
                                      const int32_t *bias, const ek_requant *rq, int8_t *scratch) {
    const int32_t ch = p->in.c, taps = p->fh * p->fw, fw = p->fw, ih = p->in.h, iw = p->in.w;
    const int32_t lo = p->act_min, hi = p->act_max, row = iw * ch, keep = p->pad_h + 1;
    const int8_t **const tap = (const int8_t **)(void *)scratch, **const rows = tap + taps;
    int8_t *const zp = scratch + (taps + p->fh) * EK_FAST_PTR_BYTES, *const ring = zp + ch;
    memset(zp, (int8_t)(-p->in_offset), (size_t)ch);
    for (int32_t b = 0; b < p->in.n; ++b) {
        int8_t *img = io + b * ih * row;
        for (int32_t oy = 0; oy < ih; ++oy) {
            memcpy(ring + (oy % keep) * row, img + oy * row, (size_t)row);
            for (int32_t fy = 0; fy < p->fh; ++fy) { /* this output row's input rows: ring, input or none */
                const int32_t iy = oy - p->pad_h + p->dil_h * fy;
                rows[fy] = iy < 0 || iy >= ih ? 0 : iy <= oy ? ring + (iy % keep) * row : img + iy * row;
            }
            for (int32_t ox = 0; ox < iw; ++ox) {
                const int32_t ix0 = ox - p->pad_w;
                int32_t t = 0;
                for (int32_t fy = 0; fy < p->fh; ++fy)
                    for (int32_t fx = 0; fx < fw; ++fx, ++t) {
                        const int32_t ix = ix0 + p->dil_w * fx;
                        tap[t] = rows[fy] && ix >= 0 && ix < iw ? rows[fy] + ix * ch : zp;
                    }
                dw_pixel(tap, taps, ch, w32, bias, rq, lo, hi, img + oy * row + ox * ch);
            }
        }
    }
}

/* ---- average pool (windows of at most 256 elements, channels a multiple of 4) --------------------- */
#if defined(__ARM_FEATURE_DSP)
#define EK_SXTAB16(acc, x) __sxtab16((acc), (int32_t)(x))
EK_INLINE int32_t EK_SXTAB16_ROR8(int32_t acc, uint32_t x) {
    int32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(acc), "r"(x));
    return r;
}
#else
EK_INLINE int32_t EK_SXTAB16(int32_t acc, uint32_t x) { /* two 16-bit lanes += bytes 0 and 2 */
    const uint32_t l = (uint32_t)acc + (uint32_t)(int32_t)(int8_t)x;
    const uint32_t h = ((uint32_t)acc >> 16) + (uint32_t)(int32_t)(int8_t)(x >> 16);
    return (int32_t)((l & 0xFFFFu) | (h << 16));
}
#define EK_SXTAB16_ROR8(acc, x) EK_SXTAB16((acc), ((uint32_t)(x) >> 8) | ((uint32_t)(x) << 24))
#endif

EK_INLINE int8_t avg8(int32_t sum, int32_t count, int32_t lo, int32_t hi) { /* TFLM's rounding */
    const int32_t v = sum > 0 ? (sum + count / 2) / count : (sum - count / 2) / count;
    return clamp8(v, lo, hi);
}

void ek_fast_avg_pool(const ek_pool_params *p, const int8_t *in, int8_t *out) {
    const int32_t ch = p->in.c, ih = p->in.h, iw = p->in.w, lo = p->act_min, hi = p->act_max;
    int8_t *o = out;
    for (int32_t b = 0; b < p->out.n; ++b)
        for (int32_t oy = 0; oy < p->out.h; ++oy)
            for (int32_t ox = 0; ox < p->out.w; ++ox, o += ch) {
                const int32_t iy0 = oy * p->stride_h - p->pad_h, ix0 = ox * p->stride_w - p->pad_w;
                const int32_t fy0 = iy0 < 0 ? -iy0 : 0, fy1 = p->fh < ih - iy0 ? p->fh : ih - iy0;
                const int32_t fx0 = ix0 < 0 ? -ix0 : 0, fx1 = p->fw < iw - ix0 ? p->fw : iw - ix0;
                const int32_t count = (fy1 - fy0) * (fx1 - fx0) > 0 ? (fy1 - fy0) * (fx1 - fx0) : 1;
                const int8_t *base = in + ((b * ih + iy0 + fy0) * iw + ix0 + fx0) * ch;
                for (int32_t c = 0; c < ch; c += 4) {
                    int32_t s02 = 0, s13 = 0; /* 16-bit lanes: at most 256 x 128 in magnitude */
                    for (int32_t fy = fy0; fy < fy1; ++fy) {
                        const int8_t *r = base + (fy - fy0) * iw * ch + c;
                        for (int32_t fx = fx0; fx < fx1; ++fx, r += ch) {
                            const uint32_t u = rd32(r);
                            s02 = EK_SXTAB16(s02, u);
                            s13 = EK_SXTAB16_ROR8(s13, u);
                        }
                    }
                    o[c] = avg8((int16_t)(uint16_t)(uint32_t)s02, count, lo, hi);
                    o[c + 1] = avg8((int16_t)(uint16_t)(uint32_t)s13, count, lo, hi);
                    o[c + 2] = avg8((int16_t)(uint16_t)((uint32_t)s02 >> 16), count, lo, hi);
                    o[c + 3] = avg8((int16_t)(uint16_t)((uint32_t)s13 >> 16), count, lo, hi);
                }
            }
}
