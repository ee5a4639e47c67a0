#include <string.h>

#include "nupes_dsp.h"
#include "nupes_fixedpoint.h"
#include "nupes_kernels.h"
#include "nupes_window.h"

/* Scratch, per pair of output channels of a chunk (an odd last channel paired with itself), int32
 * words: the two biases, the two channels' levels interleaved by word (taps2 words), then per
 * channel a requantization record: mult, s, K (low, high word) of the fused form below, or mult,
 * shift, 0, 0 where that form does not apply. NUPES_WIN_EXTRA: words per pair beside the levels
 * (codegen/plan.py's RQ_ENTRIES = 10 int16 entries per channel). */
#define NUPES_WIN_EXTRA 10

int32_t nupes_conv2d_window_get_buffer_size(const nupes_conv_geom_t *g)
{
    const int32_t chunk = g->out_c < NUPES_WINDOW_CHUNK ? g->out_c : NUPES_WINDOW_CHUNK;
    const int32_t taps2 = (g->k_h * g->k_w * g->in_c + 1) & ~1;
    return ((chunk + 1) >> 1) * (taps2 + NUPES_WIN_EXTRA) * (int32_t)sizeof(int32_t);
}

/* a = p[0], b = p[1], p += 2 (p int32-aligned). On Cortex-M one post-indexed LDRD: GCC splits
 * such a 64-bit load into two LDR. */
#if NUPES_ASM
#define NUPES_WIN_LD2(p, a, b) \
    __asm__("ldrd %0, %1, [%2], #8" : "=&r"(a), "=&r"(b), "+r"(p) : "m"(*(const int32_t(*)[2])(p)))
#else
#define NUPES_WIN_LD2(p, a, b) ((a) = (p)[0], (b) = (p)[1], (p) += 2)
#endif

/* One step: two channels (level words w0, w1) x two positions (window words xa, xb), 8 MACs. */
#define NUPES_WIN_STEP(px, pw)                  \
    do {                                        \
        int32_t xa_, xb_, w0_, w1_;             \
        NUPES_WIN_LD2(px, xa_, xb_);            \
        NUPES_WIN_LD2(pw, w0_, w1_);            \
        a00 = nupes_smlad(xa_, w0_, a00);     \
        a01 = nupes_smlad(xb_, w0_, a01);     \
        a10 = nupes_smlad(xa_, w1_, a10);     \
        a11 = nupes_smlad(xb_, w1_, a11);     \
    } while (0)

/*
 * The fused requantization with the output zero point folded in, for a right shift e = 1..23
 * (docs/numerics.md's MBQM; nupes_fixedpoint.h derives
 *     MBQM(acc) = floor((acc*mult + 2^30 + 2^(30+e) - [acc < 0]*2^31) / 2^(31+e))).
 * Written as (acc*mult + K + [acc >= 0]*2^31) / 2^(32+s), s = e - 1, with
 * K = 2^30 + 2^(30+e) - 2^31 + out_zp*2^(32+s): adding out_zp*2^(32+s) before the floor adds
 * exactly out_zp after it. |acc*mult| < 2^62, |K| < 2^62 (s <= 22): the sum fits int64 and its
 * high word int32. NUPES_WIN_RQ2 requantizes x and y, two outputs of the channel of record r.
 */
#if NUPES_ASM
/* per output: LDRD K, MVN + SMLAL ([acc >= 0] * 2^31 as ~(acc >> 31) * INT32_MIN), SMLAL, ASR */
static inline void nupes_win_rq2(const int32_t *r, int32_t *px, int32_t *py)
{
    int32_t x = *px, y = *py, m, s, lo, hi, t;
    __asm__("ldrd %[m], %[s], [%[r]]\n\t"
            "ldrd %[lo], %[hi], [%[r], #8]\n\t"
            "mvn %[t], %[x], asr #31\n\t"
            "smlal %[lo], %[hi], %[t], %[c]\n\t"
            "smlal %[lo], %[hi], %[x], %[m]\n\t"
            "asr %[x], %[hi], %[s]\n\t"
            "ldrd %[lo], %[hi], [%[r], #8]\n\t"
            "mvn %[t], %[y], asr #31\n\t"
            "smlal %[lo], %[hi], %[t], %[c]\n\t"
            "smlal %[lo], %[hi], %[y], %[m]\n\t"
            "asr %[y], %[hi], %[s]"
            : [x] "+&r"(x), [y] "+&r"(y), [m] "=&r"(m), [s] "=&r"(s), [lo] "=&r"(lo), [hi] "=&r"(hi), [t] "=&r"(t)
            : [r] "r"(r), [c] "r"(INT32_MIN), "m"(*(const int32_t(*)[4])r));
    *px = x;
    *py = y;
}
#define NUPES_WIN_RQ2(r, x, y) nupes_win_rq2((r), &(x), &(y))
#else
static inline int32_t nupes_win_rq(int32_t acc, const int32_t *r)
{
    int64_t num = (int64_t)(((uint64_t)(uint32_t)r[3] << 32) | (uint32_t)r[2]);
    num += (int64_t)acc * r[0];
    num += (int64_t)(acc >= 0) << 31;
    return (int32_t)(num >> 32) >> r[1];
}
#define NUPES_WIN_RQ2(r, x, y) ((x) = nupes_win_rq((x), (r)), (y) = nupes_win_rq((y), (r)))
#endif

/* Layers with a shift outside -23..-1 (record: mult, shift): the plain requantization, out of line */
static NUPES_NOINLINE int32_t nupes_win_rq_plain(int32_t acc, const int32_t *r, int32_t out_zp)
{
    return nupes_requantize(acc, r[0], r[1]) + out_zp;
}

static inline int8_t nupes_win_clamp(int32_t v, int32_t lo, int32_t hi)
{
    return (int8_t)(v < lo ? lo : (v > hi ? hi : v));
}

#if NUPES_USE_DSP && !NUPES_ASM
static inline int8_t nupes_win_byte(uint32_t v) /* the low byte of v as int8 */
{
    return (int8_t)((int32_t)(v & 0xFFu) - (int32_t)((v & 0x80u) << 1));
}
#endif

/* The input bytes under one output position's window, in the weights' (kh, kw, c_in) order, with
 * in_zp for padding (x - zp = 0: zero in the real domain). The valid kernel rows and columns are
 * computed once; a position on the border fills the window with zp first. */
static void nupes_win_gather(const int8_t *in, const nupes_conv_geom_t *g, int32_t zp, int32_t iy0, int32_t ix0,
                             int32_t taps, int8_t *bw)
{
    const int32_t c_n = g->in_c, row = g->k_w * c_n, in_row = g->in_w * c_n;
    int32_t ky0, ky1, kx0, kx1, ky, n, t;
    const int8_t *px;
    int8_t *pb;
    nupes_window_taps(iy0, g->k_h, g->in_h, &ky0, &ky1);
    nupes_window_taps(ix0, g->k_w, g->in_w, &kx0, &kx1);
    if (ky0 > 0 || ky1 < g->k_h || kx0 > 0 || kx1 < g->k_w) {
        const uint32_t zp4 = (uint32_t)(uint8_t)zp * 0x01010101u;
        for (t = 0; t < taps; t += 4) {
            memcpy(bw + t, &zp4, 4);
        }
    }
    n = (kx1 - kx0) * c_n;
    if (ky0 >= ky1 || n <= 0) {
        return;
    }
    px = in + ((iy0 + ky0) * g->in_w + ix0 + kx0) * c_n;
    pb = bw + ky0 * row + kx0 * c_n;
    for (ky = ky0; ky < ky1; ++ky, px += in_row, pb += row) {
        for (t = 0; t + 4 <= n; t += 4) {
            memcpy(pb + t, px + t, 4);
        }
        for (; t < n; ++t) {
            pb[t] = px[t];
        }
    }
}

/* One position's window as int16 pairs x - zp into every other word of xw (s = 0 or 1), in the
 * order nupes_decode_row(run = taps) stores the levels: on the DSP path each group of four taps
 * as (0, 2), (1, 3), the SXTB16 lanes; bw[taps] = zp, so an odd last pair ends in 0. */
static void nupes_win_widen(const int8_t *bw, int32_t taps, int32_t zp, int32_t *xw)
{
    int32_t j = 0;
#if NUPES_USE_DSP
    const int32_t zp2 = (int32_t)(((uint32_t)(uint16_t)zp) | ((uint32_t)(uint16_t)zp << 16));
    for (; j + 4 <= taps; j += 4, xw += 4) {
        const int32_t x4 = nupes_read32(bw + j);
        xw[0] = nupes_ssub16(nupes_sxtb16(x4), zp2);
        xw[2] = nupes_ssub16(nupes_sxtb16_ror8(x4), zp2);
    }
#endif
    for (; j < taps; j += 2, xw += 2) {
        const int16_t pair[2] = {(int16_t)(bw[j] - zp), (int16_t)(bw[j + 1] - zp)};
        memcpy(xw, pair, 4);
    }
}

#if defined(__ARM_FEATURE_MVE)
#include "nupes_mve.h"

/* One packed row of b-bit fields (LSB-first) as the int8 levels t8[field]. */
static void nupes_win_decode8(const uint8_t *p, int32_t bits, const int8_t *t8, int32_t k, int8_t *dst)
{
    const uint32_t mask = (1u << bits) - 1u;
    uint32_t buf = 0;
    int32_t have = 0, i;
    if (bits == 4) { /* two fields a byte */
        for (i = 0; i + 2 <= k; i += 2) {
            const uint32_t b = *p++;
            dst[i] = t8[b & 15u];
            dst[i + 1] = t8[b >> 4];
        }
        if (i < k) {
            dst[i] = t8[*p & 15u];
        }
        return;
    }
    for (i = 0; i < k; ++i) {
        if (have < bits) {
            buf |= (uint32_t)(*p++) << have;
            have += 8;
        }
        dst[i] = t8[buf & mask];
        buf >>= bits;
        have -= bits;
    }
}

/*
 * Helium (Cortex-M55), int8 levels: the row itself (8-bit identity levels, t8 NULL) or, for a table
 * whose levels are int8 values times 2^e (nupes_mve_lut8), a chunk's rows decoded to those int8
 * values on the stack. Four output positions' windows gathered as int8 bytes (in_zp for padding, so
 * the bias folds in_zp out exactly: bias - in_zp * sum(w)), each row multiplied into all four by
 * nupes_mve_dot4_s8 (VMLADAVA), the sums shifted back by e, the four requantized as one vector
 * (exactly nupes_requantize) and stored by one scatter, out_c bytes apart. The folded biases of
 * NUPES_WINDOW_CHUNK channels at a time are made on the stack (with the decoded rows: 2.2 KB).
 * Scratch: 4 * taps bytes, within the window kernel's own.
 */
static void nupes_win_mve(const int8_t *in, int8_t *out, const nupes_conv_geom_t *g, const nupes_layer_t *w,
                          int16_t *scratch, const int8_t *t8, int32_t e)
{
    const int32_t taps = g->k_h * g->k_w * g->in_c, n = g->out_h * g->out_w, out_c = g->out_c;
    const int32_t zp = w->in_zp, out_zp = w->out_zp, lo = w->act_min, hi = w->act_max;
    int8_t *const win = (int8_t *)(void *)scratch;
    const uint32x4_t offs = vmulq_n_u32(vidupq_n_u32(0, 1), (uint32_t)out_c);
    const int32x4_t lo4 = vdupq_n_s32(lo), hi4 = vdupq_n_s32(hi);
    int8_t rows8[NUPES_WINDOW_CHUNK * NUPES_WINDOW_MAX];
    int32_t fold[NUPES_WINDOW_CHUNK];
    int32_t c0, oc, pos, q, t;
    for (c0 = 0; c0 < out_c; c0 += NUPES_WINDOW_CHUNK) {
        const int32_t c1 = c0 + NUPES_WINDOW_CHUNK < out_c ? c0 + NUPES_WINDOW_CHUNK : out_c;
        const int8_t *rows = (const int8_t *)w->packed + c0 * w->row_bytes;
        int32_t rb = w->row_bytes;
        if (t8 != 0) {
            for (oc = c0; oc < c1; ++oc) {
                nupes_win_decode8(w->packed + oc * w->row_bytes, w->bits, t8, taps, rows8 + (oc - c0) * taps);
            }
            rows = rows8;
            rb = taps;
        }
        for (oc = c0; oc < c1; ++oc) {
            const int8_t *row = rows + (oc - c0) * rb;
            int32_t sum = 0;
            for (t = 0; t < taps; ++t) {
                sum += row[t];
            }
            fold[oc - c0] = w->bias[oc] - zp * (sum * (1 << e)); /* the levels' sum, within acc_bound */
        }
        for (pos = 0; pos < n; pos += 4) {
            const int32_t m = n - pos < 4 ? n - pos : 4;
            const mve_pred16_t pm = vctp32q((uint32_t)m);
            for (q = 0; q < 4; ++q) { /* a missing fourth position repeats the last one (its sums unused) */
                const int32_t p = pos + (q < m ? q : m - 1);
                const int32_t oy = p / g->out_w, ox = p - oy * g->out_w;
                nupes_win_gather(in, g, zp, oy * g->stride_h - g->pad_t, ox * g->stride_w - g->pad_l, taps,
                                 win + q * taps);
            }
            for (oc = c0; oc < c1; ++oc) {
                int32x4_t acc = nupes_mve_dot4_s8(rows + (oc - c0) * rb, win, taps, e == 0 ? fold[oc - c0] : 0);
                if (e != 0) {
                    acc = vaddq_n_s32(vshlq_r_s32(acc, e), fold[oc - c0]);
                }
                vstrbq_scatter_offset_p_s32(out + pos * out_c + oc, offs,
                                            nupes_mve_output1(acc, w->mult[oc], w->shift[oc], out_zp, lo4, hi4), pm);
            }
        }
    }
}
#endif

/*
 * Convolution of an input with few channels (a first layer: 1 to 4 channels), with
 * k_h * k_w * in_c <= NUPES_WINDOW_MAX. A kernel row is only k_w * c_in long here, so instead each
 * output position's whole window (x - zp, 0 for padding) is built once as int16 pairs and reused by
 * every output channel of a chunk (NUPES_WINDOW_CHUNK channels, their levels decoded once into
 * scratch). Two output channels x two output positions per step: the scratch interleaves the two
 * channels' level words and the stack the two positions' window words, so per two taps one LDRD
 * of windows, one LDRD of levels and four SMLAD (eight MACs). An odd last position or channel is
 * paired with itself (the same value is computed twice).
 */
void nupes_conv2d_window(const int8_t *in, int8_t *out, const nupes_conv_geom_t *g, const nupes_layer_t *w, int16_t *scratch)
{
    const int32_t taps = g->k_h * g->k_w * g->in_c;
    const int32_t taps2 = (taps + 1) & ~1, words = taps2 >> 1, blk = taps2 + NUPES_WIN_EXTRA;
    const int32_t chunk = g->out_c < NUPES_WINDOW_CHUNK ? g->out_c : NUPES_WINDOW_CHUNK;
    const int32_t n_pos = g->out_h * g->out_w, out_c = g->out_c;
    /* locals: the int8 output stores could alias the layer struct */
    const int32_t out_zp = w->out_zp, act_min = w->act_min, act_max = w->act_max, in_zp = w->in_zp;
    int32_t *lev = (int32_t *)(void *)scratch; /* scratch is int32-aligned */
    int16_t lin[NUPES_WINDOW_MAX];
    int32_t xw[NUPES_WINDOW_MAX]; /* two positions' window words, interleaved */
    int8_t bw[NUPES_WINDOW_MAX + 4]; /* one position's input bytes (read by words) */
    int32_t c0, oc, p, i, k, fast;
#if NUPES_USE_DSP
    const int32_t lo4 = (int32_t)((uint32_t)(uint8_t)act_min * 0x01010101u);
    const int32_t hi4 = (int32_t)((uint32_t)(uint8_t)act_max * 0x01010101u);
#endif
#if defined(__ARM_FEATURE_MVE)
    if (w->lut == 0 && w->bits == 8) { /* int8 weights: the Helium loop (the DSP one stays for the other cores) */
        nupes_win_mve(in, out, g, w, scratch, 0, 0);
        return;
    }
    {
        int8_t t8[256];
        const int32_t e = nupes_mve_lut8(w->lut, 1 << w->bits, t8);
        if (e >= 0) { /* int8 levels times 2^e: the same loop over the decoded rows */
            nupes_win_mve(in, out, g, w, scratch, t8, e);
            return;
        }
    }
#endif
    memset(bw, in_zp, sizeof bw); /* the odd tap and the bytes past the window: zp */
    lin[taps2 - 1] = 0;           /* the odd level */
    for (c0 = 0; c0 < out_c; c0 += chunk) {
        const int32_t c1 = c0 + chunk < out_c ? c0 + chunk : out_c;
        const int32_t pairs = (c1 - c0 + 1) >> 1, odd = (c1 - c0) & 1;
        fast = 1; /* the fused form for the chunk if every shift is in -23..-1 */
        for (oc = c0; oc < c1; ++oc) {
            fast &= w->shift[oc] <= -1 && w->shift[oc] >= -23;
        }
        for (oc = c0; oc < c1; ++oc) {
            int32_t *b = lev + ((oc - c0) >> 1) * blk, *r = b + 2 + taps2;
            const int32_t lane = (oc - c0) & 1, shift = w->shift[oc];
            nupes_decode_row(w->packed + oc * w->row_bytes, w->bits, w->lut, taps, taps, lin);
            b[lane] = w->bias[oc];
            for (i = 0; i < words; ++i) {
                memcpy(&b[2 + 2 * i + lane], &lin[2 * i], 4);
            }
            r += 4 * lane;
            r[0] = w->mult[oc];
            r[1] = shift;
            r[2] = r[3] = 0;
            if (fast) {
                const int32_t s = -shift - 1;
                const uint64_t kk = ((uint64_t)1 << 30) + ((uint64_t)1 << (31 + s)) - ((uint64_t)1 << 31)
                                  + ((uint64_t)(int64_t)out_zp << (32 + s));
                r[1] = s;
                r[2] = (int32_t)(uint32_t)kk;
                r[3] = (int32_t)(uint32_t)(kk >> 32);
            }
        }
        if (odd) { /* the odd last channel paired with itself */
            int32_t *b = lev + (pairs - 1) * blk;
            for (i = 0; i < words + 1; ++i) {
                b[2 * i + 1] = b[2 * i];
            }
            memcpy(b + 2 + taps2 + 4, b + 2 + taps2, 16);
        }
        for (p = 0; p < n_pos; p += 2) {
            const int32_t pa = p, pb = p + 1 < n_pos ? p + 1 : p;
            const int32_t oya = pa / g->out_w, oxa = pa - oya * g->out_w, oyb = pb / g->out_w, oxb = pb - oyb * g->out_w;
            int8_t *qa = out + pa * out_c + c0, *qb = out + pb * out_c + c0;
            const int32_t *pw = lev;
            nupes_win_gather(in, g, in_zp, oya * g->stride_h - g->pad_t, oxa * g->stride_w - g->pad_l, taps, bw);
            nupes_win_widen(bw, taps, in_zp, xw);
            nupes_win_gather(in, g, in_zp, oyb * g->stride_h - g->pad_t, oxb * g->stride_w - g->pad_l, taps, bw);
            nupes_win_widen(bw, taps, in_zp, xw + 1);
            for (k = pairs; k > 0; --k, qa += 2, qb += 2) {
                int32_t a00, a01, a10, a11; /* a<channel><position> */
                const int32_t *px = xw;
                NUPES_WIN_LD2(pw, a00, a10);
                a01 = a00;
                a11 = a10;
                if (words & 1) { /* an odd word first */
                    NUPES_WIN_STEP(px, pw);
                }
                for (i = words >> 1; i > 0; --i) {
                    NUPES_WIN_STEP(px, pw);
                    NUPES_WIN_STEP(px, pw);
                }
                if (fast) {
                    NUPES_WIN_RQ2(pw, a00, a01);
                    NUPES_WIN_RQ2(pw + 4, a10, a11);
                } else {
                    a00 = nupes_win_rq_plain(a00, pw, out_zp);
                    a01 = nupes_win_rq_plain(a01, pw, out_zp);
                    a10 = nupes_win_rq_plain(a10, pw + 4, out_zp);
                    a11 = nupes_win_rq_plain(a11, pw + 4, out_zp);
                }
                pw += 8;
                if (k == 1 && odd) {
                    qa[0] = nupes_win_clamp(a00, act_min, act_max);
                    qb[0] = nupes_win_clamp(a01, act_min, act_max);
                    break;
                }
#if NUPES_ASM
                {
                    /* the four lanes (a00, a10 | a01, a11) saturated to int8, packed, then clamped to
                     * [act_min, act_max] at once (SSUB8 + SEL: per-byte max, then min); two STRH */
                    uint16_t h;
                    __asm__("ssat %[a], #8, %[a]\n\t"
                            "ssat %[b], #8, %[b]\n\t"
                            "ssat %[c], #8, %[c]\n\t"
                            "ssat %[d], #8, %[d]\n\t"
                            "bfi %[a], %[b], #8, #8\n\t"
                            "bfi %[a], %[c], #16, #8\n\t"
                            "bfi %[a], %[d], #24, #8\n\t"
                            "ssub8 %[b], %[a], %[lo]\n\t"
                            "sel %[a], %[a], %[lo]\n\t"
                            "ssub8 %[b], %[a], %[hi]\n\t"
                            "sel %[a], %[hi], %[a]"
                            : [a] "+&r"(a00), [b] "+&r"(a10), [c] "+&r"(a01), [d] "+&r"(a11)
                            : [lo] "r"(lo4), [hi] "r"(hi4)
                            : "cc");
                    h = (uint16_t)a00; /* little-endian: a00 at qa[0], a10 at qa[1] */
                    memcpy(qa, &h, 2);
                    h = (uint16_t)((uint32_t)a00 >> 16);
                    memcpy(qb, &h, 2);
                }
#elif NUPES_USE_DSP
                {
                    /* the same lanes with the emulated instructions */
                    uint32_t v = (uint32_t)nupes_ssat8(a00) & 0xFFu;
                    v |= ((uint32_t)nupes_ssat8(a10) & 0xFFu) << 8;
                    v |= ((uint32_t)nupes_ssat8(a01) & 0xFFu) << 16;
                    v |= (uint32_t)nupes_ssat8(a11) << 24;
                    v = (uint32_t)nupes_min_s8x4(nupes_max_s8x4((int32_t)v, lo4), hi4);
                    qa[0] = nupes_win_byte(v);
                    qa[1] = nupes_win_byte(v >> 8);
                    qb[0] = nupes_win_byte(v >> 16);
                    qb[1] = nupes_win_byte(v >> 24);
                }
#else
                qa[0] = nupes_win_clamp(a00, act_min, act_max);
                qa[1] = nupes_win_clamp(a10, act_min, act_max);
                qb[0] = nupes_win_clamp(a01, act_min, act_max);
                qb[1] = nupes_win_clamp(a11, act_min, act_max);
#endif
            }
        }
    }
}
