/* edgekd C backend: fast int8 kernels for Cortex-M4 (2-way SIMD MACs with the ACLE intrinsics when
 * __ARM_FEATURE_DSP is defined, the same arithmetic in portable C elsewhere), bit-exact with the
 * reference kernels of edgekd_kernels.c. The code generator prepares their constant data:
 *   - the input offset folded into the bias (bias + in_offset * sum of the weights), so padding reads
 *     the input zero point and every MAC is a plain int8 x int8 product;
 *   - GEMM weights blocked by output-channel pairs and 4-deep chunks (zero-padded to a multiple of 4);
 *   - depthwise weights as int16 pairs in words (channels 0|2, 1|3 of every 4, per tap) for
 *     SMLABB / SMLATT. */
#ifndef EDGEKD_KERNELS_FAST_H_
#define EDGEKD_KERNELS_FAST_H_

#include "edgekd_kernels.h"

/* Scratch bytes a fast conv / fully connected needs at most for accumulation depth k (im2col + int16
 * rows); less without im2col (pointwise, k a multiple of 4), none for a one-batch fully connected
 * layer (see the code generator). */
#define EK_FAST_GEMM_SCRATCH(k) (6 * (((k) + 3) / 4 * 4))
/* Scratch bytes per pointer kept in a kernel's scratch (tap pointers: in the arena, not on the stack);
 * 8 so the same generated arena serves 64-bit host builds. */
#define EK_FAST_PTR_BYTES 8
/* Depthwise: taps (fh * fw) at most this; scratch: the tap pointers and one pixel of zero points. */
#define EK_FAST_DW_MAX_TAPS 64
#define EK_FAST_DW_SCRATCH(ch, taps) ((taps) * EK_FAST_PTR_BYTES + (ch))
/* In-place depthwise scratch: the tap and row pointers, a pixel of zero points and pad_h + 1 input rows. */
#define EK_FAST_DW_INPLACE_SCRATCH(ch, w, pad_h, taps, fh) \
    (((taps) + (fh)) * EK_FAST_PTR_BYTES + (ch) + ((pad_h) + 1) * (w) * (ch))

/* One channel's requantisation (TFLM's MultiplyByQuantizedMultiplier of (mult, shift), plus the output
 * zero point zp) prepared by the code generator. A right shift e = -shift in 1..23: rshift = e - 1 and
 * rnd = 2^30 + 2^(30 + e) + zp * 2^(31 + e) as the 64-bit rnd_hi:rnd_lo, so the result is
 * (acc * mult + rnd - [acc < 0] * 2^31) >> 32 >> rshift (one SMLAL). Other shifts: rshift = shift - 32
 * (negative) and rnd_hi = zp, the reference arithmetic. */
typedef struct {
    int32_t mult, rshift, rnd_lo, rnd_hi;
} ek_requant;

int32_t ek_fast_requantize(int32_t acc, const ek_requant *q);
void ek_fast_conv2d(const ek_conv_params *p, const int8_t *in, const int8_t *wblk, const int32_t *bias,
                    const ek_requant *rq, int8_t *out, int8_t *scratch);
/* The same convolution with two int8 im2col rows of scratch (EK_FAST_CONV_LOWMEM_SCRATCH; the GEMM
 * sign-extends them in registers: a few more instructions per MAC). */
#define EK_FAST_CONV_LOWMEM_SCRATCH(k) (2 * (((k) + 3) / 4 * 4))
void ek_fast_conv2d_lowmem(const ek_conv_params *p, const int8_t *in, const int8_t *wblk, const int32_t *bias,
                           const ek_requant *rq, int8_t *out, int8_t *scratch);
/* In place: stride 1, output height and width the input's, out channels <= in channels; io is the
 * input, overwritten by the output. Scratch: two im2col rows and pad_h + 1 input rows. */
#define EK_FAST_CONV_INPLACE_SCRATCH(k, w, ic, pad_h) (EK_FAST_CONV_LOWMEM_SCRATCH(k) + ((pad_h) + 1) * (w) * (ic))
void ek_fast_conv2d_inplace(const ek_conv_params *p, int8_t *io, const int8_t *wblk, const int32_t *bias,
                            const ek_requant *rq, int8_t *scratch);
void ek_fast_depthwise_conv2d(const ek_conv_params *p, const int8_t *in, const int32_t *w32,
                              const int32_t *bias, const ek_requant *rq, int8_t *out, int8_t *scratch);
/* Stride 1, output shape = input shape: io is the input, overwritten by the output. */
void ek_fast_depthwise_conv2d_inplace(const ek_conv_params *p, int8_t *io, const int32_t *w32,
                                      const int32_t *bias, const ek_requant *rq, int8_t *scratch);
/* One batch: straight from the input, no scratch (scratch may be 0); more: EK_FAST_GEMM_SCRATCH. */
void ek_fast_fully_connected(const ek_fc_params *p, const int8_t *in, const int8_t *wblk, const int32_t *bias,
                             const ek_requant *rq, int8_t *out, int8_t *scratch);
/* Windows of at most 256 elements (16-bit sums), channels a multiple of 4. */
void ek_fast_avg_pool(const ek_pool_params *p, const int8_t *in, int8_t *out);

#endif /* EDGEKD_KERNELS_FAST_H_ */
