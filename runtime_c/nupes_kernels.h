/*
 * nupes_kernels.h - the C99 kernels that generated nupes-edge models call.
 *
 * Numeric contract: docs/numerics.md. Every kernel is bit-exact with the NumPy integer reference
 * (nupes_edge/intref/reference.py) on both paths: portable C, and the Cortex-M DSP path
 * (NUPES_USE_DSP, see nupes_dsp.h). No allocation, no floating point.
 *
 * Layout: activations are int8 HWC (channels innermost), one sample. Weights are packed b-bit
 * sign-magnitude codes (b = 2..8), one byte-padded row per output channel, each row in the
 * kernel's reduction order: (kh, kw, c_in) for conv, (kh, kw) for depthwise, (k) for dense.
 * A row decodes through the layer's power LUT into int16 levels v = sign(q) * L[|q|]; the table in
 * flash is indexed by the whole b-bit field, sign bit included, so decoding is one load.
 */
#ifndef NUPES_KERNELS_H
#define NUPES_KERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Weights and requantization of one conv / depthwise / dense layer (all in flash). */
typedef struct {
    const uint8_t *packed; /* out_c rows of row_bytes bytes (plus one guard byte at the end) */
    int32_t row_bytes;
    int32_t bits;          /* 2..8 */
    const int16_t *lut;    /* 2^bits signed levels: lut[field] = sign(q) * L[|q|] */
    const int32_t *bias;   /* per output channel */
    const int32_t *mult;   /* per output channel, TFLite QuantizeMultiplier mantissa */
    const int32_t *shift;  /* per output channel, TFLite QuantizeMultiplier exponent */
    int32_t in_zp, out_zp, act_min, act_max;
} nupes_layer_t;

typedef struct {
    int32_t in_h, in_w, in_c, out_h, out_w, out_c;
    int32_t k_h, k_w, stride_h, stride_w, pad_t, pad_l; /* bottom/right padding follow from the sizes */
} nupes_conv_geom_t;

/*
 * Decode k codes of one packed row into int16 levels. On the DSP path, within each run of `run`
 * consecutive levels, groups of four are stored as (v0, v2, v1, v3): the order in which
 * __SXTB16 unpacks four int8 inputs. `run` = c_in for conv, k for dense, 1 for none.
 */
void nupes_decode_row(const uint8_t *row, int32_t bits, const int16_t *lut, int32_t k, int32_t run, int16_t *dst);
/* (lut: the layer's 2^bits signed table, as in nupes_layer_t) */

/* Scratch (int16 levels) the conv / dense kernels need: 2 * k_h * k_w * c_in or k entries
 * (depthwise: nupes_depthwise_conv2d_get_buffer_size below). */
int32_t nupes_conv2d_get_buffer_size(const nupes_conv_geom_t *g);
int32_t nupes_fully_connected_get_buffer_size(int32_t k);

/* Standard convolution, zero padding (in the real domain). in: in_h x in_w x in_c. out: out_h x out_w x out_c. */
void nupes_conv2d(const int8_t *in, int8_t *out, const nupes_conv_geom_t *g, const nupes_layer_t *w, int16_t *scratch);

/* Standard convolution of a single-channel input (in_c == 1) with k_h * k_w <= NUPES_C1_MAX_TAPS:
 * the same result as nupes_conv2d, the window built once per position for all output channels.
 * Scratch: nupes_conv2d_c1_get_buffer_size bytes (out_c rows of k_h*k_w levels, padded to even). */
#define NUPES_C1_MAX_TAPS 32
int32_t nupes_conv2d_c1_get_buffer_size(const nupes_conv_geom_t *g);
void nupes_conv2d_c1(const int8_t *in, int8_t *out, const nupes_conv_geom_t *g, const nupes_layer_t *w, int16_t *scratch);

/* Depthwise convolution, output channel o reads input channel o / (out_c / in_c). Scratch: on the
 * DSP path with out_c == in_c, (k_h * k_w + 2) * out_c int16 entries, 4-byte aligned (all channels'
 * levels and an int32 folded bias per channel); else k_h * k_w. The size in bytes: */
int32_t nupes_depthwise_conv2d_get_buffer_size(const nupes_conv_geom_t *g);
void nupes_depthwise_conv2d(const int8_t *in, int8_t *out, const nupes_conv_geom_t *g, const nupes_layer_t *w, int16_t *scratch);

/* Dense: out[o] = requant(bias[o] + sum_k v[o][k] * (in[k] - in_zp)). */
void nupes_fully_connected(const int8_t *in, int8_t *out, int32_t k, int32_t out_n, const nupes_layer_t *w, int16_t *scratch);

/* TFLite int8 ADD, n elements. */
typedef struct {
    int32_t in1_zp, in2_zp, in1_mult, in1_shift, in2_mult, in2_shift;
    int32_t out_mult, out_shift, left_shift, out_zp, act_min, act_max;
} nupes_add_params_t;
void nupes_add(const int8_t *in1, const int8_t *in2, int8_t *out, int32_t n, const nupes_add_params_t *p);

/* Pools (HWC). Output quantization = input quantization. Max: padding never wins.
 * Average (no padding): TFLite rounding, sum +- count/2 then truncating division. */
void nupes_max_pool2d(const int8_t *in, int8_t *out, const nupes_conv_geom_t *g, int32_t act_min, int32_t act_max);
void nupes_avg_pool2d(const int8_t *in, int8_t *out, const nupes_conv_geom_t *g, int32_t act_min, int32_t act_max);
void nupes_global_avg_pool(const int8_t *in, int8_t *out, int32_t hw, int32_t c, int32_t act_min, int32_t act_max);

/* Clamp n values to [lo, hi] (stand-alone ReLU / ReLU6 in the quantized domain). */
void nupes_clamp(const int8_t *in, int8_t *out, int32_t n, int32_t lo, int32_t hi);

/* Index of the largest of n values (first on ties). */
int32_t nupes_argmax_s8(const int8_t *x, int32_t n);

#ifdef __cplusplus
}
#endif

#endif /* NUPES_KERNELS_H */
