/* edgekd C backend kernels: int8, TensorFlow Lite Micro reference numerics (double-rounding
 * requantisation, gemmlowp fixed point for softmax). Written for edgekd; bit-exactness against the
 * tflite-micro interpreter is checked by edgekd's tests. */
#include "edgekd_kernels.h"

#include <string.h>

#define EK_MIN(a, b) ((a) < (b) ? (a) : (b))
#define EK_MAX(a, b) ((a) > (b) ? (a) : (b))

/* ---- fixed-point helpers (gemmlowp semantics) ------------------------------------------------ */
static int32_t srdhm(int32_t a, int32_t b) { /* SaturatingRoundingDoublingHighMul */
    if (a == b && a == INT32_MIN) return INT32_MAX;
    int64_t ab = (int64_t)a * (int64_t)b;
    int64_t nudge = ab >= 0 ? (1LL << 30) : (1 - (1LL << 30));
    return (int32_t)((ab + nudge) / (1LL << 31));
}

static int32_t rdbpot(int32_t x, int32_t exponent) { /* RoundingDivideByPOT */
    int32_t mask = (int32_t)((1LL << exponent) - 1);
    int32_t remainder = x & mask;
    int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

static int32_t sat_mul_pot(int32_t x, int32_t exponent) { /* SaturatingRoundingMultiplyByPOT */
    if (exponent == 0) return x;
    if (exponent < 0) return rdbpot(x, -exponent);
    int32_t threshold = (int32_t)((1LL << (31 - exponent)) - 1);
    if (x > threshold) return INT32_MAX;
    if (x < -threshold) return INT32_MIN;
    return (int32_t)((uint32_t)x << exponent);
}

int32_t ek_mul_by_quantized_multiplier(int32_t x, int32_t mult, int32_t shift) {
    int32_t left = shift > 0 ? shift : 0;
    int32_t right = shift > 0 ? 0 : -shift;
    return rdbpot(srdhm((int32_t)((uint32_t)x << left), mult), right);
}

static int8_t clamp8(int32_t v, int32_t lo, int32_t hi) { return (int8_t)EK_MIN(EK_MAX(v, lo), hi); }

/* ---- convolution ----------------------------------------------------------------------------- */
void ek_conv2d(const ek_conv_params *p, const int8_t *in, const int8_t *filter, const int32_t *bias,
               const int32_t *mult, const int32_t *shift, int8_t *out) {
    const int32_t ic = p->in.c, oc_n = p->out.c;
    for (int32_t b = 0; b < p->out.n; ++b)
        for (int32_t oy = 0; oy < p->out.h; ++oy)
            for (int32_t ox = 0; ox < p->out.w; ++ox) {
                const int32_t iy0 = oy * p->stride_h - p->pad_h, ix0 = ox * p->stride_w - p->pad_w;
                for (int32_t oc = 0; oc < oc_n; ++oc) {
                    int32_t acc = 0;
                    for (int32_t fy = 0; fy < p->fh; ++fy) {
                        const int32_t iy = iy0 + p->dil_h * fy;
                        if (iy < 0 || iy >= p->in.h) continue;
                        for (int32_t fx = 0; fx < p->fw; ++fx) {
                            const int32_t ix = ix0 + p->dil_w * fx;
                            if (ix < 0 || ix >= p->in.w) continue;
                            const int8_t *ip = in + ((b * p->in.h + iy) * p->in.w + ix) * ic;
                            const int8_t *fp = filter + ((oc * p->fh + fy) * p->fw + fx) * ic;
                            for (int32_t c = 0; c < ic; ++c) acc += (int32_t)fp[c] * ((int32_t)ip[c] + p->in_offset);
                        }
                    }
                    if (bias) acc += bias[oc];
                    acc = ek_mul_by_quantized_multiplier(acc, mult[oc], shift[oc]) + p->out_offset;
                    out[((b * p->out.h + oy) * p->out.w + ox) * oc_n + oc] = clamp8(acc, p->act_min, p->act_max);
                }
            }
}

void ek_depthwise_conv2d(const ek_conv_params *p, const int8_t *in, const int8_t *filter,
                         const int32_t *bias, const int32_t *mult, const int32_t *shift, int8_t *out) {
    const int32_t ic = p->in.c, oc_n = p->out.c, dm = p->depth_multiplier;
    for (int32_t b = 0; b < p->out.n; ++b)
        for (int32_t oy = 0; oy < p->out.h; ++oy)
            for (int32_t ox = 0; ox < p->out.w; ++ox) {
                const int32_t iy0 = oy * p->stride_h - p->pad_h, ix0 = ox * p->stride_w - p->pad_w;
                for (int32_t c = 0; c < ic; ++c)
                    for (int32_t m = 0; m < dm; ++m) {
                        const int32_t oc = m + c * dm;
                        int32_t acc = 0;
                        for (int32_t fy = 0; fy < p->fh; ++fy) {
                            const int32_t iy = iy0 + p->dil_h * fy;
                            if (iy < 0 || iy >= p->in.h) continue;
                            for (int32_t fx = 0; fx < p->fw; ++fx) {
                                const int32_t ix = ix0 + p->dil_w * fx;
                                if (ix < 0 || ix >= p->in.w) continue;
                                int32_t iv = in[((b * p->in.h + iy) * p->in.w + ix) * ic + c];
                                int32_t fv = filter[(fy * p->fw + fx) * oc_n + oc];
                                acc += fv * (iv + p->in_offset);
                            }
                        }
                        if (bias) acc += bias[oc];
                        acc = ek_mul_by_quantized_multiplier(acc, mult[oc], shift[oc]) + p->out_offset;
                        out[((b * p->out.h + oy) * p->out.w + ox) * oc_n + oc] = clamp8(acc, p->act_min, p->act_max);
                    }
            }
}

void ek_fully_connected(const ek_fc_params *p, const int8_t *in, const int8_t *filter, const int32_t *bias,
                        const int32_t *mult, const int32_t *shift, int8_t *out) {
    for (int32_t b = 0; b < p->batches; ++b)
        for (int32_t o = 0; o < p->out_depth; ++o) {
            int32_t acc = 0;
            const int8_t *ip = in + b * p->accum_depth, *fp = filter + o * p->accum_depth;
            for (int32_t d = 0; d < p->accum_depth; ++d)
                acc += ((int32_t)fp[d] + p->filter_offset) * ((int32_t)ip[d] + p->in_offset);
            if (bias) acc += bias[o];
            const int32_t k = p->per_channel ? o : 0;
            acc = ek_mul_by_quantized_multiplier(acc, mult[k], shift[k]) + p->out_offset;
            out[b * p->out_depth + o] = clamp8(acc, p->act_min, p->act_max);
        }
}

/* ---- pooling --------------------------------------------------------------------------------- */
static void pool(const ek_pool_params *p, const int8_t *in, int8_t *out, int is_max) {
    const int32_t ch = p->in.c;
    for (int32_t b = 0; b < p->out.n; ++b)
        for (int32_t oy = 0; oy < p->out.h; ++oy)
            for (int32_t ox = 0; ox < p->out.w; ++ox) {
                const int32_t iy0 = oy * p->stride_h - p->pad_h, ix0 = ox * p->stride_w - p->pad_w;
                const int32_t fy0 = EK_MAX(0, -iy0), fy1 = EK_MIN(p->fh, p->in.h - iy0);
                const int32_t fx0 = EK_MAX(0, -ix0), fx1 = EK_MIN(p->fw, p->in.w - ix0);
                for (int32_t c = 0; c < ch; ++c) {
                    int32_t acc = is_max ? -128 : 0, count = 0;
                    for (int32_t fy = fy0; fy < fy1; ++fy)
                        for (int32_t fx = fx0; fx < fx1; ++fx) {
                            int32_t v = in[((b * p->in.h + iy0 + fy) * p->in.w + ix0 + fx) * ch + c];
                            if (is_max) acc = EK_MAX(acc, v);
                            else acc += v;
                            ++count;
                        }
                    if (!is_max) {
                        if (count == 0) count = 1;
                        acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
                    }
                    out[((b * p->out.h + oy) * p->out.w + ox) * ch + c] = clamp8(acc, p->act_min, p->act_max);
                }
            }
}

void ek_avg_pool(const ek_pool_params *p, const int8_t *in, int8_t *out) { pool(p, in, out, 0); }
void ek_max_pool(const ek_pool_params *p, const int8_t *in, int8_t *out) { pool(p, in, out, 1); }

/* ---- add ------------------------------------------------------------------------------------- */
static int8_t add_one(const ek_add_params *p, int32_t a, int32_t b) {
    const int32_t s1 = rdbpot(srdhm((a + p->in1_offset) * (1 << p->left_shift), p->in1_mult), -p->in1_shift);
    const int32_t s2 = rdbpot(srdhm((b + p->in2_offset) * (1 << p->left_shift), p->in2_mult), -p->in2_shift);
    const int32_t raw = rdbpot(srdhm(s1 + s2, p->out_mult), -p->out_shift) + p->out_offset;
    return clamp8(raw, p->act_min, p->act_max);
}

void ek_add(const ek_add_params *p, const int8_t *in1, const int8_t *in2, int8_t *out) {
    if (!p->broadcast) {
        for (int32_t i = 0; i < p->size; ++i) out[i] = add_one(p, in1[i], in2[i]);
        return;
    }
    int32_t idx[6] = {0, 0, 0, 0, 0, 0};
    for (int32_t i = 0; i < p->size; ++i) {
        int32_t o1 = 0, o2 = 0;
        for (int32_t d = 0; d < 6; ++d) {
            o1 += idx[d] * p->in1_strides[d];
            o2 += idx[d] * p->in2_strides[d];
        }
        out[i] = add_one(p, in1[o1], in2[o2]);
        for (int32_t d = 5; d >= 0; --d) {
            if (++idx[d] < p->out_dims[d]) break;
            idx[d] = 0;
        }
    }
}

/* ---- mean (QuantizedMeanOrSum) --------------------------------------------------------------- */
void ek_mean(const ek_mean_params *p, const int8_t *in, int8_t *out) {
    int32_t in_strides[6], s = 1;
    for (int32_t d = p->rank - 1; d >= 0; --d) {
        in_strides[d] = s;
        s *= p->in_dims[d];
    }
    int32_t oidx[6] = {0, 0, 0, 0, 0, 0};
    for (int32_t o = 0; o < p->out_size; ++o) {
        int32_t base = 0;
        for (int32_t d = 0; d < p->rank; ++d) base += (p->reduce[d] ? 0 : oidx[d]) * in_strides[d];
        int32_t ridx[6] = {0, 0, 0, 0, 0, 0}, sum = 0;
        for (int32_t k = 0; k < p->count; ++k) {
            int32_t off = base;
            for (int32_t d = 0; d < p->rank; ++d) off += (p->reduce[d] ? ridx[d] : 0) * in_strides[d];
            sum += in[off];
            for (int32_t d = p->rank - 1; d >= 0; --d) {
                if (!p->reduce[d]) continue;
                if (++ridx[d] < p->in_dims[d]) break;
                ridx[d] = 0;
            }
        }
        int32_t v = ek_mul_by_quantized_multiplier(sum - p->in_zp * p->count, p->mult, p->shift) + p->out_zp;
        out[o] = clamp8(v, -128, 127);
        for (int32_t d = p->rank - 1; d >= 0; --d) { /* next output index over kept dims */
            if (p->reduce[d]) continue;
            if (++oidx[d] < p->in_dims[d]) break;
            oidx[d] = 0;
        }
    }
}

/* ---- softmax (gemmlowp fixed point, as TFLM's reference int8 softmax) ------------------------ */
static int32_t exp_on_interval(int32_t a) { /* exp on [-1/4, 0), Q0.31 in and out */
    const int32_t constant_term = 1895147668, one_third = 715827883;
    int32_t x = a + (1 << 28);
    int32_t x2 = srdhm(x, x), x3 = srdhm(x2, x), x4 = srdhm(x2, x2);
    int32_t x4_over_4 = sat_mul_pot(x4, -2);
    int32_t poly = sat_mul_pot(srdhm(x4_over_4 + x3, one_third) + x2, -1);
    return constant_term + srdhm(constant_term, x + poly);
}

static int32_t exp_on_negative_values(int32_t a) { /* a: Q5.26 (<= 0) -> Q0.31 */
    const int32_t frac_bits = 26, one_quarter = 1 << 24, mask = one_quarter - 1;
    int32_t a_mod = (a & mask) - one_quarter;
    int32_t result = exp_on_interval(sat_mul_pot(a_mod, 5));
    int32_t remainder = a_mod - a;
    static const int32_t mults[7] = {1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242};
    for (int32_t e = -2; e <= 4; ++e)
        if (remainder & (1 << (frac_bits + e))) result = srdhm(result, mults[e + 2]);
    if (a == 0) result = INT32_MAX;
    return result;
}

static int32_t one_over_one_plus_x(int32_t a) { /* Q0.31 in [0,1) -> 1/(1+x) in Q0.31 */
    int64_t sum = (int64_t)a + INT32_MAX;
    int32_t half_den = (int32_t)((sum + (sum >= 0 ? 1 : -1)) / 2);
    const int32_t c48_17 = 1515870810, cneg32_17 = -1010580540, one_q2 = 1 << 29;
    int32_t x = c48_17 + srdhm(half_den, cneg32_17);
    for (int i = 0; i < 3; ++i) {
        int32_t hdx = srdhm(half_den, x);
        int32_t one_minus = one_q2 - hdx;
        x = x + sat_mul_pot(srdhm(x, one_minus), 2);
    }
    return sat_mul_pot(x >> 1, 2);
}

void ek_softmax(const ek_softmax_params *p, const int8_t *in, int8_t *out) {
    for (int32_t i = 0; i < p->outer; ++i) {
        const int8_t *row = in + i * p->depth;
        int32_t mx = -128;
        for (int32_t c = 0; c < p->depth; ++c) mx = EK_MAX(mx, row[c]);
        int32_t sum = 0; /* Q12.19 */
        for (int32_t c = 0; c < p->depth; ++c) {
            int32_t diff = row[c] - mx;
            if (diff >= p->diff_min) {
                int32_t scaled = srdhm(diff * (1 << p->in_left_shift), p->in_mult);
                sum += sat_mul_pot(exp_on_negative_values(scaled), -12);
            }
        }
        uint32_t headroom = sum ? (uint32_t)__builtin_clz((uint32_t)sum) : 32u;
        int32_t num_bits_over_unit = 12 - (int32_t)headroom;
        int32_t shifted_minus_one = (int32_t)(((uint32_t)sum << headroom) - (1u << 31));
        int32_t scale = one_over_one_plus_x(shifted_minus_one);
        int32_t exponent = num_bits_over_unit + 31 - 8;
        for (int32_t c = 0; c < p->depth; ++c) {
            int32_t diff = row[c] - mx;
            if (diff >= p->diff_min) {
                int32_t scaled = srdhm(diff * (1 << p->in_left_shift), p->in_mult);
                int32_t e = exp_on_negative_values(scaled);
                int32_t v = rdbpot(srdhm(scale, e), exponent) - 128;
                out[i * p->depth + c] = clamp8(v, -128, 127);
            } else {
                out[i * p->depth + c] = -128;
            }
        }
    }
}

/* ---- pad, reshape ---------------------------------------------------------------------------- */
void ek_pad(const ek_pad_params *p, const int8_t *in, int8_t *out) {
    int32_t total = 1, in_strides[6], s = 1;
    for (int32_t d = 0; d < p->rank; ++d) total *= p->out_dims[d];
    for (int32_t d = p->rank - 1; d >= 0; --d) {
        in_strides[d] = s;
        s *= p->in_dims[d];
    }
    int32_t idx[6] = {0, 0, 0, 0, 0, 0};
    for (int32_t i = 0; i < total; ++i) {
        int32_t off = 0, inside = 1;
        for (int32_t d = 0; d < p->rank; ++d) {
            int32_t v = idx[d] - p->before[d];
            if (v < 0 || v >= p->in_dims[d]) {
                inside = 0;
                break;
            }
            off += v * in_strides[d];
        }
        out[i] = inside ? in[off] : p->value;
        for (int32_t d = p->rank - 1; d >= 0; --d) {
            if (++idx[d] < p->out_dims[d]) break;
            idx[d] = 0;
        }
    }
}

void ek_copy(const int8_t *in, int8_t *out, int32_t n) {
    if (in != out) memmove(out, in, (size_t)n);
}
