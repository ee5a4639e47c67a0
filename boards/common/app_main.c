/*
 * app_main.c - the nupes-edge firmware test application.
 *
 * After UART init it prints a banner line, then serves binary frames (docs/protocol.md):
 *   A5 5A | type u8 | seq u8 | len u16 LE | payload | CRC-32 (IEEE) LE over type..payload
 * HELLO -> protocol version, board, model name and hash, sizes and quantization;
 * LOAD (offset + a chunk of the input tensor) -> the offset, acknowledged; RUN (input size and
 * the CRC-32 of the whole input) -> count (u64) + output tensor; PROFILE -> per-layer counts of
 * the last inference; RESET (firmware of a model that carries its state, APP_RESET) -> the model's state
 * back to the reset state, acknowledged; anything malformed -> a typed ERROR frame. Frames stay short (a chunk is at
 * most LOAD_CHUNK bytes) so that on a noisy link most of them arrive intact, and a corrupted
 * length is refused at once instead of swallowing the frames behind it. Sleeps in WFI while idle.
 */
#include <stdint.h>
#include <string.h>

#include "app_model.h"
#include "nupes_board.h"

#define PROTOCOL_VERSION 2u
#define T_HELLO 0x01u
#define T_PROFILE 0x03u
#define T_LOAD 0x04u
#define T_RUN 0x05u
#define T_CALIBRATE 0x06u
#define T_STACK 0x07u
#define T_RESET 0x08u
#define T_REPLY 0x80u
#define T_ERROR 0xEEu
#define E_BAD_CRC 1u
#define E_BAD_LENGTH 2u
#define E_UNKNOWN_TYPE 3u
#define E_TOO_LONG 4u
#define E_INPUT_CRC 5u

#define LOAD_CHUNK 64u /* input bytes per LOAD frame (docs/protocol.md) */
#define MAX_PAYLOAD (LOAD_CHUNK + 4u)
#define MAX_REPLY (APP_OUTPUT_SIZE + 8u > 4u * APP_NUM_LAYERS + 2u ? APP_OUTPUT_SIZE + 8u : 4u * APP_NUM_LAYERS + 2u)
/* The HELLO reply: 24 fixed bytes and five length-prefixed strings (sizeof counts each one's NUL,
 * which stands for its length byte), so the buffer below always holds it, whatever the names. */
#define HELLO_LEN (24u + sizeof APP_BOARD_NAME + sizeof APP_MODEL_NAME + sizeof APP_MODEL_HASH \
                   + sizeof APP_INPUT_SHAPE + sizeof APP_OUTPUT_SHAPE)
#define TX_PAYLOAD (MAX_REPLY > HELLO_LEN ? (MAX_REPLY > 64u ? MAX_REPLY : 64u) : HELLO_LEN)

static uint8_t rx[MAX_PAYLOAD];
static int8_t input[APP_INPUT_SIZE];
static uint8_t tx[TX_PAYLOAD + 10u];
static int8_t out[APP_OUTPUT_SIZE];
static uint32_t layer_counts[APP_NUM_LAYERS];
static uint64_t layer_start;
#ifdef APP_RESET
/* A model that carries its state must not run one input twice: a RUN that arrives again without a LOAD
 * since the last one (its reply was lost and the host asks again) gets the last reply again. */
static int loaded_since_run = 0, ran = 0;
static uint64_t last_count;
#endif

static uint32_t crc32_update(uint32_t crc, const uint8_t *p, uint32_t n)
{
    uint32_t i, b;
    for (i = 0; i < n; ++i) {
        crc ^= p[i];
        for (b = 0; b < 8u; ++b) {
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
        }
    }
    return crc;
}

static void put_u16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put_u32(uint8_t *p, uint32_t v) { put_u16(p, v & 0xFFFFu); put_u16(p + 2, v >> 16); }

/* payload already at tx + 6 */
static void send_frame(uint32_t type, uint32_t seq, uint32_t len)
{
    uint32_t crc;
    tx[0] = 0xA5u;
    tx[1] = 0x5Au;
    tx[2] = (uint8_t)type;
    tx[3] = (uint8_t)seq;
    put_u16(tx + 4, len);
    crc = ~crc32_update(0xFFFFFFFFu, tx + 2, len + 4u);
    put_u32(tx + 6 + len, crc);
    uart_write(tx, len + 10u);
}

static void send_error(uint32_t seq, uint32_t code, const char *msg)
{
    const uint32_t n = (uint32_t)strlen(msg);
    tx[6] = (uint8_t)code;
    memcpy(tx + 7, msg, n);
    send_frame(T_ERROR, seq, n + 1u);
}

static uint32_t put_str(uint8_t *p, const char *s)
{
    const uint32_t n = (uint32_t)strlen(s);
    p[0] = (uint8_t)n;
    memcpy(p + 1, s, n);
    return n + 1u;
}

static void reply_hello(uint32_t seq)
{
    uint8_t *p = tx + 6;
    uint32_t n = 0;
    put_u16(p, PROTOCOL_VERSION);
    p[2] = (uint8_t)counter_kind();
    p[3] = 0;
    put_u32(p + 4, APP_INPUT_SIZE);
    put_u32(p + 8, APP_OUTPUT_SIZE);
    put_u32(p + 12, APP_INPUT_SCALE_BITS);
    put_u32(p + 16, APP_OUTPUT_SCALE_BITS);
    p[20] = (uint8_t)(int8_t)APP_INPUT_ZERO_POINT;
    p[21] = (uint8_t)(int8_t)APP_OUTPUT_ZERO_POINT;
    put_u16(p + 22, APP_NUM_LAYERS);
    n = 24;
    n += put_str(p + n, APP_BOARD_NAME);
    n += put_str(p + n, APP_MODEL_NAME);
    n += put_str(p + n, APP_MODEL_HASH);
    n += put_str(p + n, APP_INPUT_SHAPE);
    n += put_str(p + n, APP_OUTPUT_SHAPE);
    send_frame(T_HELLO | T_REPLY, seq, n);
}

static void profile_hook(int32_t layer, int32_t start)
{
    const uint64_t now = counter_now();
    if (start) {
        layer_start = now;
    } else {
        layer_counts[layer] += (uint32_t)(now - layer_start); /* a tiled layer: the sum of its bands */
    }
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* LOAD: offset u32, then 1..LOAD_CHUNK bytes of the input tensor; the reply echoes the offset */
static void reply_load(uint32_t seq, uint32_t len)
{
    const uint32_t off = len >= 4u ? get_u32(rx) : 0u;
    if (len < 5u || off > APP_INPUT_SIZE || len - 4u > APP_INPUT_SIZE - off) {
        send_error(seq, E_BAD_LENGTH, "chunk outside the input");
        return;
    }
    memcpy((uint8_t *)input + off, rx + 4, len - 4u);
#ifdef APP_RESET
    loaded_since_run = 1;
#endif
    put_u32(tx + 6, off);
    send_frame(T_LOAD | T_REPLY, seq, 4u);
}

/* RUN: input size u32 and the CRC-32 of the whole input, so a stale or missing chunk can never
 * produce an output for an input the host did not send */
static void reply_run(uint32_t seq, uint32_t len)
{
    uint64_t t0, t1;
    if (len != 8u || get_u32(rx) != APP_INPUT_SIZE) {
        send_error(seq, E_BAD_LENGTH, "input size");
        return;
    }
    if (~crc32_update(0xFFFFFFFFu, (const uint8_t *)input, APP_INPUT_SIZE) != get_u32(rx + 4)) {
        send_error(seq, E_INPUT_CRC, "input crc");
        return;
    }
#ifdef APP_RESET
    if (ran && !loaded_since_run) { /* the same RUN again: its reply, not a second step of the state */
        t0 = 0;
        t1 = last_count;
    } else
#endif
    {
        APP_PROFILE_HOOK = profile_hook;
        memset(layer_counts, 0, sizeof layer_counts);
        t0 = counter_now();
        APP_RUN(input, out);
        t1 = counter_now();
    }
#ifdef APP_RESET
    loaded_since_run = 0;
    ran = 1;
    last_count = t1 - t0;
#endif
    put_u32(tx + 6, (uint32_t)(t1 - t0));
    put_u32(tx + 10, (uint32_t)((t1 - t0) >> 32));
    memcpy(tx + 14, out, APP_OUTPUT_SIZE);
    send_frame(T_RUN | T_REPLY, seq, APP_OUTPUT_SIZE + 8u);
}

/* A loop of exactly 2 instructions per iteration (SUBS, BNE), counted like an inference: the host
 * checks the counter's scale against it (tests/test_device_cores.py). */
static void reply_calibrate(uint32_t seq, uint32_t len)
{
    uint64_t t0, t1;
    uint32_t n;
    if (len != 4u || (n = get_u32(rx)) == 0u || n > (1u << 26)) {
        send_error(seq, E_BAD_LENGTH, "calibrate");
        return;
    }
    t0 = counter_now();
#if defined(__ARM_ARCH_6M__) /* GCC writes Thumb-1 in divided syntax, where SUB sets the flags */
    __asm__ volatile("1: sub %0, #1\n\tbne 1b" : "+l"(n) : : "cc");
#else
    __asm__ volatile("1: subs %0, %0, #1\n\tbne 1b" : "+l"(n) : : "cc");
#endif
    t1 = counter_now();
    put_u32(tx + 6, (uint32_t)(t1 - t0));
    put_u32(tx + 10, (uint32_t)((t1 - t0) >> 32));
    send_frame(T_CALIBRATE | T_REPLY, seq, 8u);
}

uint32_t board_stack_high_water(void)
{
    extern uint32_t _ebss, _estack;
    const uint32_t *p = &_ebss;
    while (p < &_estack && *p == NUPES_STACK_PAINT) {
        ++p;
    }
    return (uint32_t)((uintptr_t)&_estack - (uintptr_t)p);
}

static void reply_stack(uint32_t seq)
{
    extern uint32_t _ebss, _estack;
    put_u32(tx + 6, board_stack_high_water());
    put_u32(tx + 10, (uint32_t)((uintptr_t)&_estack - (uintptr_t)&_ebss));
    send_frame(T_STACK | T_REPLY, seq, 8u);
}

#ifdef APP_RESET
static void reply_reset(uint32_t seq)
{
    APP_RESET();
    ran = 0;
    send_frame(T_RESET | T_REPLY, seq, 0u);
}
#endif

static void reply_profile(uint32_t seq)
{
    uint32_t i;
    put_u16(tx + 6, APP_NUM_LAYERS);
    for (i = 0; i < APP_NUM_LAYERS; ++i) {
        put_u32(tx + 8 + 4 * i, layer_counts[i]);
    }
    send_frame(T_PROFILE | T_REPLY, seq, 2u + 4u * APP_NUM_LAYERS);
}

int main(void)
{
    enum { SYNC1, SYNC2, HEADER, PAYLOAD, CRC } state = SYNC1;
    uint8_t hdr[4];
    uint8_t crcb[4];
    uint32_t got = 0, len = 0;
    static const char banner[] = "NUPES-EDGE v2 board=" APP_BOARD_NAME " model=" APP_MODEL_NAME "\n";

    board_init();
    uart_write((const uint8_t *)banner, sizeof banner - 1u);
    for (;;) {
        uint8_t b;
        if (!uart_read(&b)) {
            board_wait_for_input();
            continue;
        }
        switch (state) {
        case SYNC1:
            state = b == 0xA5u ? SYNC2 : SYNC1;
            break;
        case SYNC2:
            state = b == 0x5Au ? HEADER : (b == 0xA5u ? SYNC2 : SYNC1);
            got = 0;
            break;
        case HEADER:
            hdr[got++] = b;
            if (got == 4u) {
                len = (uint32_t)hdr[2] | ((uint32_t)hdr[3] << 8);
                got = 0;
                if (len > MAX_PAYLOAD) {
                    send_error(hdr[1], E_TOO_LONG, "frame too long");
                    state = SYNC1;
                } else {
                    state = len ? PAYLOAD : CRC;
                }
            }
            break;
        case PAYLOAD:
            rx[got++] = b;
            if (got == len) {
                got = 0;
                state = CRC;
            }
            break;
        case CRC:
            crcb[got++] = b;
            if (got == 4u) {
                const uint32_t want = (uint32_t)crcb[0] | ((uint32_t)crcb[1] << 8) | ((uint32_t)crcb[2] << 16) | ((uint32_t)crcb[3] << 24);
                const uint32_t have = ~crc32_update(crc32_update(0xFFFFFFFFu, hdr, 4), rx, len);
                state = SYNC1;
                if (want != have) {
                    send_error(hdr[1], E_BAD_CRC, "bad crc");
                } else if (hdr[0] == T_HELLO) {
                    reply_hello(hdr[1]);
                } else if (hdr[0] == T_LOAD) {
                    reply_load(hdr[1], len);
                } else if (hdr[0] == T_RUN) {
                    reply_run(hdr[1], len);
                } else if (hdr[0] == T_PROFILE) {
                    reply_profile(hdr[1]);
                } else if (hdr[0] == T_CALIBRATE) {
                    reply_calibrate(hdr[1], len);
                } else if (hdr[0] == T_STACK) {
                    reply_stack(hdr[1]);
#ifdef APP_RESET
                } else if (hdr[0] == T_RESET) {
                    reply_reset(hdr[1]);
#endif
                } else {
                    send_error(hdr[1], E_UNKNOWN_TYPE, "unknown frame type");
                }
            }
            break;
        }
    }
}
