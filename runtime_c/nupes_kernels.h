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
    const int16_t *lut;    /* 2^bits signed levels: lut[field] = sign(q) * L[|q|]; NULL for an 8-bit
                            * identity table (then `packed` holds int8 levels) and for _s8 dense */
    const int32_t *bias;   /* per output channel */
    const int32_t *mult;   /* per output channel, TFLite QuantizeMultiplier mantissa */
    const int32_t *shift;  /* per output channel, TFLite QuantizeMultiplier exponent */
    int32_t in_zp, out_zp, act_min, act_max;
    const uint32_t *pairs; /* nupes_fully_connected_p4/_p2 only: 2^(2 bits) packed (lo, hi) level pairs */
    int32_t lshift;        /* nupes_fully_connected_s8 only: levels are codes << lshift */
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

/* Standard convolution, zero padding (in the real domain). in: in_h x in_w x in_c. out: out_h x out_w x out_c.
 * nupes_conv2d_ref takes any shape. nupes_conv2d is the fast one: on the DSP path it needs
 * in_c % 4 == 0 and k_h * k_w <= 64 (the code generator checks; other shapes get _ref). Both:
 * scratch of nupes_conv2d_get_buffer_size bytes. */
void nupes_conv2d_ref(const int8_t *in, int8_t *out, const nupes_conv_geom_t *g, const nupes_layer_t *w, int16_t *scratch);
void nupes_conv2d(const int8_t *in, int8_t *out, const nupes_conv_geom_t *g, const nupes_layer_t *w, int16_t *scratch);

/* Convolution with in_c % 4 == 0 (not a pointwise one) whose weights need no decoding
 * into scratch: _s8, bits 8 with lut NULL (rows of int8 levels); _p4 / _p2, bits 4 / 2 with each
 * group of four codes of a row stored (c0, c2, c1, c3), so one 2b-bit field is a pair of levels
 * in SXTB16's lane order: _p4 / _p2 look it up in a table of 256 / 16 packed (lo, hi) level pairs
 * they make from `lut` on the stack. `bias` is folded: bias - in_zp * sum(row levels). Two
 * output positions' windows are built once (int16, in_zp for padding) for every output channel.
 * The same result as nupes_conv2d. Scratch: nupes_conv2d_im2col_get_buffer_size bytes, int32-aligned
 * (2 * k_h * k_w * in_c int16 entries). Stack: about 700 bytes (requantization records of 32
 * channels), 1.7 KB for _p4 (its pair table); on the Cortex-M55 about 1.4 KB for _p2 (a table of
 * four levels per code byte). The window kernel's Helium form adds 2.3 KB (a chunk's decoded rows). */
int32_t nupes_conv2d_im2col_get_buffer_size(const nupes_conv_geom_t *g);
/* one entry point per weight format (a model links only what it calls): int8 levels, 4-, 2-bit */
void nupes_conv2d_im2col_s8(const int8_t *in, int8_t *out, const nupes_conv_geom_t *g, const nupes_layer_t *w,
                            int16_t *scratch);
void nupes_conv2d_im2col_p4(const int8_t *in, int8_t *out, const nupes_conv_geom_t *g, const nupes_layer_t *w,
                            int16_t *scratch);
void nupes_conv2d_im2col_p2(const int8_t *in, int8_t *out, const nupes_conv_geom_t *g, const nupes_layer_t *w,
                            int16_t *scratch);

/* 1x1 convolution, stride 1, no padding: a matrix product over HWC pixels; the same result as
 * nupes_conv2d. Scratch: nupes_conv2d_get_buffer_size (two decoded channels). */
void nupes_conv2d_1x1(const int8_t *in, int8_t *out, const nupes_conv_geom_t *g, const nupes_layer_t *w, int16_t *scratch);

/* Standard convolution of an input with few channels (a first layer) with k_h * k_w * in_c <=
 * NUPES_WINDOW_MAX: the same result as nupes_conv2d, each position's window (x - zp) built once for
 * all output channels. Scratch: nupes_conv2d_window_get_buffer_size bytes (NUPES_WINDOW_CHUNK
 * channels' levels and requantizations). */
#define NUPES_WINDOW_MAX 64
#define NUPES_WINDOW_CHUNK 32 /* output channels decoded at a time */
int32_t nupes_conv2d_window_get_buffer_size(const nupes_conv_geom_t *g);
void nupes_conv2d_window(const int8_t *in, int8_t *out, const nupes_conv_geom_t *g, const nupes_layer_t *w, int16_t *scratch);

/* Depthwise convolution, output channel o reads input channel o / (out_c / in_c). Scratch: k_h * k_w
 * int16 entries (one decoded channel; on the DSP path with out_c == in_c, four channels' levels and
 * their requantization constants live on the stack: about 700 bytes deep in all). The size in bytes: */
int32_t nupes_depthwise_conv2d_get_buffer_size(const nupes_conv_geom_t *g);
void nupes_depthwise_conv2d(const int8_t *in, int8_t *out, const nupes_conv_geom_t *g, const nupes_layer_t *w, int16_t *scratch);

/* Dense: out[o] = requant(bias[o] + sum_k v[o][k] * (in[k] - in_zp)). */
void nupes_fully_connected(const int8_t *in, int8_t *out, int32_t k, int32_t out_n, const nupes_layer_t *w, int16_t *scratch);

/* Dense layers whose levels are codes << lshift (uniform 8-bit): `packed` holds int8 two's-complement
 * codes, rows of k bytes, and `bias` is folded: bias - in_zp * sum(levels). Same result as
 * nupes_fully_connected. No scratch. Four rows a pass (runtime_c/nupes_fc_job.h: Thumb-2 jobs on
 * the device, their C definitions on the host). */
void nupes_fully_connected_s8(const int8_t *in, int8_t *out, int32_t k, int32_t out_n, const nupes_layer_t *w);

/* Dense layers with 4-bit (_p4) or 2-bit (_p2) codes (one entry point per width, so a model links
 * only what it uses): each group of four codes of a row is stored (c0, c2, c1, c3)
 * (the row padded to a whole group), so one 2b-bit field indexes `pairs`, two levels in SXTB16's
 * lane order; `bias` is folded as for _s8. Same result as nupes_fully_connected. No scratch; stack
 * about 0.3 KB (2 bits: 1.4 KB, with a 256-entry copy of the pair table indexed by a whole byte of
 * codes). */
void nupes_fully_connected_p4(const int8_t *in, int8_t *out, int32_t k, int32_t out_n, const nupes_layer_t *w);
void nupes_fully_connected_p2(const int8_t *in, int8_t *out, int32_t k, int32_t out_n, const nupes_layer_t *w);

/* TFLite int8 ADD, n elements: out = clamp(requant(in1_table[in1 + 128] + in2_table[in2 + 128],
 * out_mult, out_shift) + out_zp, act_min, act_max). The two 256-entry tables (in flash) hold each
 * input's rescaling to the common grid, requant((x - inK_zp) * 2^left_shift, inK_mult, inK_shift)
 * for x = -128..127; the kernel reads only them and the out_* and act_* fields (the in*_ fields and
 * left_shift say how the tables were made). Every sum s of two entries has
 * |2 s 2^max(out_shift, 0)| < 2^31 (checked by the code generator). With in1_table == NULL (a model
 * built for a flash budget) nupes_add_computed computes each rescaling from the in*_ fields instead:
 * the same result, 2 KB less flash, about 2.5x the instructions. */
typedef struct {
    int32_t in1_zp, in2_zp, in1_mult, in1_shift, in2_mult, in2_shift;
    int32_t out_mult, out_shift, left_shift, out_zp, act_min, act_max;
    const int32_t *in1_table, *in2_table;
} nupes_add_params_t;
void nupes_add(const int8_t *in1, const int8_t *in2, int8_t *out, int32_t n, const nupes_add_params_t *p);
void nupes_add_computed(const int8_t *in1, const int8_t *in2, int8_t *out, int32_t n, const nupes_add_params_t *p);

/* Pools (HWC). Output quantization = input quantization. Max: padding never wins (taps outside the
 * image are skipped); in and out must not overlap (the DSP path accumulates in out).
 * Average (no padding): TFLite rounding, sum +- count/2 then truncating division. */
void nupes_max_pool2d(const int8_t *in, int8_t *out, const nupes_conv_geom_t *g, int32_t act_min, int32_t act_max);
void nupes_avg_pool2d(const int8_t *in, int8_t *out, const nupes_conv_geom_t *g, int32_t act_min, int32_t act_max);
void nupes_global_avg_pool(const int8_t *in, int8_t *out, int32_t hw, int32_t c, int32_t act_min, int32_t act_max);

/* Every convolution kernel has this signature; nupes_conv2d_inplace runs one of them over its own
 * input, `band` output rows per call, holding up to `slots` rows in `pend` (the least-RAM plan). */
typedef void (*nupes_conv_fn)(const int8_t *in, int8_t *out, const nupes_conv_geom_t *g, const nupes_layer_t *w,
                              int16_t *scratch);
void nupes_conv2d_inplace(nupes_conv_fn kernel, int8_t *buf, const nupes_conv_geom_t *g, const nupes_layer_t *w,
                          int16_t *scratch, int8_t *pend, int32_t band, int32_t slots);

/* A depthwise convolution (multiplier 1, in_c a multiple of 4) written over its own input `buf`, four
 * channels at a time (runtime_c/nupes_depthwise_inplace.c). `grp`: 4 * (in_h * in_w + out_h * out_w)
 * bytes, 4-byte aligned. */
void nupes_depthwise_inplace(int8_t *buf, const nupes_conv_geom_t *g, const nupes_layer_t *w, int16_t *scratch,
                             int8_t *grp);

#ifndef NUPES_PROFILE_FN_DEFINED
#define NUPES_PROFILE_FN_DEFINED
/* Profiling hook: (layer, 1) before and (layer, 0) after each layer (a tiled layer: each band). */
typedef void (*nupes_profile_fn)(int32_t layer, int32_t start);
#endif

/* One layer of a tiled chain: a convolution's kernel and weights, or (conv NULL) a pooling. */
#define NUPES_POOL_MAX 1
#define NUPES_POOL_AVG 2
#define NUPES_CHAIN_MAX 8
typedef struct {
    nupes_conv_fn conv;
    const nupes_layer_t *w;
    int32_t pool, act_min, act_max; /* a pooling's kind and output bounds */
    nupes_conv_geom_t g;            /* the whole layer's geometry */
} nupes_stage_t;

/* Layers s[0..n-1] (n <= NUPES_CHAIN_MAX), each reading the one before, run `band` rows of the last
 * one's output at a time, layer k < n-1 through tiles[k] (runtime_c/nupes_tiled.c): only `in` and `out`
 * are whole. `hook` (may be NULL) brackets each call, as layer first_layer + k. */
void nupes_tiled_chain(const nupes_stage_t *s, int32_t n, const int8_t *in, int8_t *out, int8_t *const *tiles,
                       int32_t band, int16_t *scratch, nupes_profile_fn hook, int32_t first_layer);

/* A tiled chain whose result is added to the chain's own input `buf` (a residual block) and written
 * back over it; the last layer's rows go to tiles[n - 1], the sums wait in `pend` (`slots` rows) until
 * no later band reads those input rows. The add is layer first_layer + n; input_first: `buf` is the
 * add's first operand. */
typedef void (*nupes_add_fn)(const int8_t *in1, const int8_t *in2, int8_t *out, int32_t n, const nupes_add_params_t *p);
void nupes_tiled_residual(const nupes_stage_t *s, int32_t n, int8_t *buf, int8_t *const *tiles, int32_t band,
                          int16_t *scratch, nupes_profile_fn hook, int32_t first_layer, nupes_add_fn add,
                          const nupes_add_params_t *ap, int32_t input_first, int8_t *pend, int32_t slots);

/* TFLite Micro's int8 UNIDIRECTIONAL_SEQUENCE_LSTM over `steps` rows of `features` int8 inputs, from
 * the reset state, into `steps` rows of `units` int8 hidden states (nupes_lstm.c). Gate order: input,
 * forget, cell, output. scratch: 5 * units int16. */
typedef struct {
    const int8_t *w_in;      /* 4 x units x features */
    const int8_t *w_rec;     /* 4 x units x units */
    const int32_t *in_bias;  /* 4 x units: bias - in_zp * sum(w_in row) */
    const int32_t *rec_bias; /* 4 x units: -hid_zp * sum(w_rec row) */
    int32_t fc_mult[8], fc_shift[8]; /* the input FCs' (gates 0..3), then the recurrent FCs' */
    int32_t hid_zp, cell_mult, cell_shift, gate_mult, gate_shift, hid_mult, hid_shift;
    int32_t tanh_mult, tanh_shift, cell_clip, cell_tanh;
    int32_t steps, features, units;
} nupes_lstm_t;
void nupes_lstm_s8(const int8_t *in, int8_t *out, const nupes_lstm_t *p, int16_t *scratch);
/* The same from the carried state (a "carry" model): hidden (units int8) and cell (units int16) hold the
 * state the steps start from and, on return, the last step's; the model resets them (hidden to its zero
 * point, cell to 0). scratch: 4 * units int16 (nupes_lstm_carry.c). */
void nupes_lstm_s8_carry(const int8_t *in, int8_t *out, const nupes_lstm_t *p, int16_t *scratch, int8_t *hidden,
                         int16_t *cell);

/* TFLite Micro's int8 SVDF from the reset state (nupes_svdf.c): `inputs` int8 values into `units` int8
 * outputs through units x rank filters. From the reset state only each filter's newest state value is
 * not at its zero point, so only the newest time weight of each filter is kept. No scratch. */
typedef struct {
    const int8_t *w_feature;      /* filters x inputs */
    const int32_t *feature_bias;  /* filters: -in_zp * sum(w_feature row) */
    const int16_t *w_time;        /* filters: each filter's newest time weight (int16, or int8 values) */
    const int32_t *bias;          /* units */
    int32_t mult1, shift1, mult2, shift2; /* input x feature -> state; state x time -> output */
    int32_t state_lo, state_hi, state_zp, out_zp; /* the state's type range (int16 or int8) and zero point */
    int32_t inputs, units, rank;
} nupes_svdf_t;
void nupes_svdf_s8(const int8_t *in, int8_t *out, const nupes_svdf_t *p);
/* The same from the carried state (a "carry" model, nupes_svdf_carry.c): p->w_time then holds every
 * filter's `memory` time weights (filters x memory), and state the filters x memory state values (int16,
 * also for an int8 state), updated in place; the model resets it (to the zero point). */
void nupes_svdf_s8_carry(const int8_t *in, int8_t *out, const nupes_svdf_t *p, int32_t memory, int16_t *state);

/* Elementwise int8 MUL of two HWC tensors of pixels x c values, either of which may instead hold c
 * values applied at every pixel (TFLite Micro's int8 MUL, bit for bit). */
typedef struct {
    int32_t in1_zp, in2_zp, mult, shift, out_zp, act_min, act_max;
} nupes_mul_params_t;
void nupes_mul_s8(const int8_t *a, const int8_t *b, int8_t *out, int32_t pixels, int32_t c, int32_t a_per_channel,
                  int32_t b_per_channel, const nupes_mul_params_t *p);

/* MEAN over the hw pixels of an HWC tensor, per channel, into c outputs that may have their own
 * quantization (TFLite Micro's reference_ops::QuantizedMeanOrSum, bit for bit). The code generator
 * folds 1/hw into (mult, shift) and checks that (255 * hw) << max(shift, 0) fits int32. */
typedef struct {
    int32_t mult, shift, in_zp, out_zp;
} nupes_mean_params_t;
void nupes_mean_s8(const int8_t *in, int8_t *out, int32_t hw, int32_t c, const nupes_mean_params_t *p);

/* Clamp n values to [lo, hi] (stand-alone ReLU / ReLU6 in the quantized domain). */
void nupes_clamp(const int8_t *in, int8_t *out, int32_t n, int32_t lo, int32_t hi);

/* TFLite Micro's int8 MAXIMUM / MINIMUM of two tensors of n values sharing one quantization: on the
 * codes. out may be either input. */
void nupes_maximum_s8(const int8_t *a, const int8_t *b, int8_t *out, int32_t n);
void nupes_minimum_s8(const int8_t *a, const int8_t *b, int8_t *out, int32_t n);

/* Index of the largest of n values (first on ties). */
int32_t nupes_argmax_s8(const int8_t *x, int32_t n);

/* An elementwise activation by table: out[i] = table[in[i] + 128] (in and out may be the same). */
void nupes_lut_s8(const int8_t *in, int8_t *out, int32_t n, const int8_t *table);

/* Channel concatenation of n_in HWC tensors of `pixels` pixels (input k has channels[k]); the
 * output must not overlap the inputs. */
void nupes_concat_hwc_s8(const int8_t *const *ins, const int32_t *channels, int32_t n_in, int8_t *out,
                         int32_t pixels);

/* A byte move (nupes_edge/moves.py): for every (i0..i4) below count, dst[dst_off + sum i_k dst_stride[k]] =
 * src[src_off + sum i_k src_stride[k]]. The code generator checks every move against its tensors. */
typedef struct {
    int32_t count[5];
    int32_t src_off;
    int32_t src_stride[5];
    int32_t dst_off;
    int32_t dst_stride[5];
} nupes_move_t;
void nupes_copy_s8(const int8_t *src, int8_t *dst, const nupes_move_t *m);
void nupes_fill_s8(int8_t *dst, int32_t n, int32_t value);

/* REDUCE_MAX: output j (outer loops, in order) is the largest of the inner loops' values from
 * src + src_off + its outer offset. */
typedef struct {
    int32_t outer_count[5];
    int32_t src_off;
    int32_t outer_stride[5];
    int32_t inner_count[5];
    int32_t inner_stride[5];
} nupes_reduce_t;
void nupes_reduce_max_s8(const int8_t *src, int8_t *dst, const nupes_reduce_t *r);
/* MEAN over any axes: as nupes_mean_s8, each output summing the inner loops' values. */
void nupes_mean_reduce_s8(const int8_t *src, int8_t *dst, const nupes_reduce_t *r, const nupes_mean_params_t *p);

/* TFLite Micro's int8 SOFTMAX over each of `rows` rows of `cols` values (1 <= cols <= 4095); output
 * scale 1/256, zero point -128. input_multiplier, input_left_shift (0..31) and diff_min (<= 0) are
 * TFLite Micro's Prepare values (nupes_edge/intref/softmax.py, softmax_params). No scratch. */
void nupes_softmax_s8(const int8_t *input, int8_t *output, int32_t rows, int32_t cols,
                      int32_t input_multiplier, int32_t input_left_shift, int32_t diff_min);

#ifdef __cplusplus
}
#endif

#endif /* NUPES_KERNELS_H */
