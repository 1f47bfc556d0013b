/* edgekd C backend: int8 kernels with TensorFlow Lite Micro reference semantics (C99, no heap).
 * Generated models call these with parameters computed at export time (multipliers, shifts, padding). */
#ifndef EDGEKD_KERNELS_H_
#define EDGEKD_KERNELS_H_

#include <stdint.h>

typedef struct {
    int32_t n, h, w, c;
} ek_shape4;

typedef struct {
    ek_shape4 in, out;
    int32_t fh, fw, stride_h, stride_w, dil_h, dil_w, pad_h, pad_w;
    int32_t depth_multiplier; /* depthwise only */
    int32_t in_offset, out_offset, act_min, act_max;
} ek_conv_params;

typedef struct {
    int32_t batches, accum_depth, out_depth, per_channel;
    int32_t in_offset, filter_offset, out_offset, act_min, act_max;
} ek_fc_params;

typedef struct {
    ek_shape4 in, out;
    int32_t fh, fw, stride_h, stride_w, pad_h, pad_w, act_min, act_max;
} ek_pool_params;

typedef struct {
    int32_t size, in1_offset, in2_offset, out_offset, left_shift;
    int32_t in1_mult, in1_shift, in2_mult, in2_shift, out_mult, out_shift, act_min, act_max;
    int32_t broadcast; /* 0: same shapes; 1: use the strides below (6-D, output order) */
    int32_t out_dims[6], in1_strides[6], in2_strides[6];
} ek_add_params;

typedef struct {
    int32_t in_dims[6], reduce[6], rank, out_size, count;
    int32_t in_zp, out_zp, mult, shift;
} ek_mean_params;

typedef struct {
    int32_t outer, depth, in_mult, in_left_shift, diff_min;
} ek_softmax_params;

typedef struct {
    int32_t rank, in_dims[6], out_dims[6], before[6];
    int8_t value;
} ek_pad_params;

int32_t ek_mul_by_quantized_multiplier(int32_t x, int32_t mult, int32_t shift);
void ek_conv2d(const ek_conv_params *p, const int8_t *in, const int8_t *filter, const int32_t *bias,
               const int32_t *mult, const int32_t *shift, int8_t *out);
void ek_depthwise_conv2d(const ek_conv_params *p, const int8_t *in, const int8_t *filter,
                         const int32_t *bias, const int32_t *mult, const int32_t *shift, int8_t *out);
void ek_fully_connected(const ek_fc_params *p, const int8_t *in, const int8_t *filter, const int32_t *bias,
                        const int32_t *mult, const int32_t *shift, int8_t *out);
void ek_avg_pool(const ek_pool_params *p, const int8_t *in, int8_t *out);
void ek_max_pool(const ek_pool_params *p, const int8_t *in, int8_t *out);
void ek_add(const ek_add_params *p, const int8_t *in1, const int8_t *in2, int8_t *out);
void ek_mean(const ek_mean_params *p, const int8_t *in, int8_t *out);
void ek_softmax(const ek_softmax_params *p, const int8_t *in, int8_t *out);
void ek_pad(const ek_pad_params *p, const int8_t *in, int8_t *out);
void ek_copy(const int8_t *in, int8_t *out, int32_t n);

#endif /* EDGEKD_KERNELS_H_ */
