"""The host side of the serial verification protocol (docs/protocol.md).

Frames: A5 5A | type u8 | seq u8 | len u16 LE | payload | CRC-32 (IEEE, LE) over type..payload.
The host waits for the firmware's banner, then sends one request at a time and accepts only a
reply with a valid CRC, the request's sequence number and the matching type. An input goes in
LOAD chunks of at most 64 bytes, each acknowledged, then RUN carries the input's CRC-32, so on a
noisy link only the damaged chunk is sent again and the device never runs an input the host did
not send. A lost, corrupt or late reply is retried a bounded number of times, with a timeout that
follows the measured round trip and grows after each failure; before each retry a run of zero
bytes completes any frame the device may have started parsing from garbage, so it
resynchronizes. The same code serves /dev/ttyACM0 and socket://host:port (serial_for_url).
"""
from __future__ import annotations

import struct
import time
import zlib
from dataclasses import dataclass

from .errors import NupesError

SYNC = b"\xa5\x5a"
T_HELLO, T_PROFILE, T_LOAD, T_RUN, T_REPLY, T_ERROR = 0x01, 0x03, 0x04, 0x05, 0x80, 0xEE
T_CALIBRATE = 0x06
T_STACK = 0x07
T_RESET = 0x08  # only in the firmware of a model that carries its state (nupes_edge/state.py)
E_INPUT_CRC = 5
ERRORS = {1: "bad CRC", 2: "bad length", 3: "unknown frame type", 4: "frame too long", 5: "input CRC mismatch"}
RETRYABLE = {1, 4}  # what corruption on the wire causes
BANNER = b"NUPES-EDGE"
PROTOCOL_VERSION = 2
MAX_FRAME = 1 << 16
LOAD_CHUNK = 64  # input bytes per LOAD frame: at 1% byte errors, 54% of such frames arrive intact
HELLO_MAX = 24 + 5 * 256  # the longest HELLO reply (five strings of at most 255 bytes)
# The shortest wait for a reply. On a link that has shown no damage, a late reply is a busy host or
# emulator (tens of ms are common on 2 cores), not a lost frame: resending it only made "frames
# retried" appear with no fault. Once damage has been seen, lost frames are likely and are resent fast.
MIN_TIMEOUT_CLEAN = 0.25  # s
MIN_TIMEOUT = 0.02  # s, on a link that has damaged a frame
IDLE_GAP = 0.1  # s: a frame still incomplete after the line was this long silent lost bytes


class InputCRCError(NupesError):
    """RUN found an assembled input whose CRC differs from the host's: load it again."""


class DeviceError(NupesError):
    """The device did not answer correctly (not connected, not responding, wrong firmware)."""


def encode_frame(ftype: int, seq: int, payload: bytes) -> bytes:
    body = bytes([ftype, seq & 0xFF]) + struct.pack("<H", len(payload)) + payload
    return SYNC + body + struct.pack("<I", zlib.crc32(body))


@dataclass
class Frame:
    type: int
    seq: int
    payload: bytes


class FrameReader:
    """Incremental parser: feed bytes, take complete CRC-checked frames; junk is skipped."""

    def __init__(self, max_payload: int = MAX_FRAME):
        self.buf = bytearray()
        self.crc_errors = 0  # damaged frames seen, each counted once
        self.max_payload = max_payload  # a longer declared length is a damaged header, not a frame to wait for
        self._dropped = 0  # bytes deleted from the front of buf so far (absolute stream positions)
        self._counted: set[int] = set()  # absolute positions of damaged frames already counted

    def feed(self, data: bytes) -> None:
        self.buf += data

    def next(self) -> Frame | None:
        """The first complete frame with a valid CRC, or None. A false sync whose bogus length
        points past the data does not hide the valid frames behind it."""
        buf = self.buf
        earliest_pending = None
        i = buf.find(SYNC)
        while i >= 0:
            if len(buf) - i < 6:
                earliest_pending = i if earliest_pending is None else earliest_pending
                break
            n = struct.unpack_from("<H", buf, i + 4)[0]
            end = i + 10 + n
            if n > self.max_payload:
                pass  # no reply is that long: a damaged header
            elif end > len(buf):
                earliest_pending = i if earliest_pending is None else earliest_pending
            else:
                body = bytes(buf[i + 2:i + 6 + n])
                if zlib.crc32(body) == struct.unpack_from("<I", buf, i + 6 + n)[0]:
                    self._drop(end)
                    return Frame(body[0], body[1], body[4:])
                if self._dropped + i not in self._counted:
                    self._counted.add(self._dropped + i)
                    self.crc_errors += 1
            i = buf.find(SYNC, i + 1)
        # keep only what may still become a frame
        self._drop(earliest_pending if earliest_pending is not None else max(0, len(buf) - 1))
        return None

    def _drop(self, n: int) -> None:
        del self.buf[:n]
        self._dropped += n
        self._counted = {p for p in self._counted if p >= self._dropped}


@dataclass
class Hello:
    version: int
    count_kind: int  # 0 DWT cycles, 1 SysTick ticks
    input_size: int
    output_size: int
    input_scale: float
    output_scale: float
    input_zero_point: int
    output_zero_point: int
    num_layers: int
    board: str
    model: str
    model_hash: str
    input_shape: str
    output_shape: str


def parse_hello(p: bytes) -> Hello:
    version, kind, _, isz, osz, iscale, oscale, izp, ozp, nl = struct.unpack_from("<HBBIIffbbH", p, 0)
    strings, off = [], 24
    for _ in range(5):
        n = p[off]
        strings.append(p[off + 1:off + 1 + n].decode(errors="replace"))
        off += 1 + n
    return Hello(version, kind, isz, osz, iscale, oscale, izp, ozp, nl, *strings)


class Client:
    """timeout: the longest wait for one reply (s); retries: how many times one request may be sent
    again; a request also gives up once it has spent 4 x timeout in all."""

    def __init__(self, url: str, timeout: float = 5.0, retries: int = 30, connect_timeout: float = 5.0,
                 baudrate: int = 115200):
        import serial

        self.url = url
        self.timeout = timeout
        self.retries = retries
        self.seq = 0
        self.reader = FrameReader(HELLO_MAX)
        self.retried = 0
        self.bad_replies = 0  # CRC-valid replies that did not parse
        self.flush_bytes = LOAD_CHUNK + 16  # longer than any frame the device accepts
        self.output_size = None  # known after hello()
        self.rtt: dict[int, float] = {}  # moving mean of the round trip per request type (s)
        deadline = time.monotonic() + connect_timeout
        while True:
            try:
                self.port = serial.serial_for_url(url, baudrate=baudrate, timeout=0.05)
                break
            except (serial.SerialException, OSError, ValueError) as e:
                if time.monotonic() > deadline or url.startswith("/dev/") and "No such file" in str(e):
                    raise DeviceError(f"cannot open {url}: {e}") from None
                time.sleep(0.05)
        sock = getattr(self.port, "_socket", None)  # socket://: send small frames at once (no Nagle)
        if sock is not None:
            import socket

            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        self.port.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _read(self) -> bytes:
        """What has arrived: waits (up to the port's 50 ms timeout) for the first byte only, so a
        short reply is taken as soon as it is complete."""
        try:
            data = self.port.read(1)
            return data + self.port.read(self.port.in_waiting) if data else data
        except Exception as e:  # pyserial raises SerialException or OSError subclasses
            raise DeviceError(f"{self.url}: connection lost ({e})") from None

    def wait_banner(self, timeout: float = 2.0) -> bool:
        """True when the firmware's banner arrived (fresh boot); False if it was already running."""
        deadline = time.monotonic() + timeout
        seen = bytearray()
        while time.monotonic() < deadline:
            seen += self._read()
            i = seen.find(BANNER)
            if i >= 0 and b"\n" in seen[i:]:
                self.reader.feed(bytes(seen[seen.index(b"\n", i) + 1:]))
                return True
        self.reader.feed(bytes(seen))
        return False

    def _wait(self, ftype: int, failures: int, timeout: float) -> float:
        """How long to wait for this attempt's reply: 4x the mean round trip of this type
        (the full timeout before any), growing linearly with the failed attempts (a noisy link
        loses frames at random: doubling would only slow it down), at most the timeout."""
        seen = self.rtt.get(ftype)
        if seen is None and ftype == T_LOAD:
            seen = self.rtt.get(T_HELLO)  # a LOAD is answered as promptly as HELLO (RUN also computes)
        noisy = self.reader.crc_errors or self.bad_replies or self.retried
        base = timeout if seen is None else max(MIN_TIMEOUT if noisy else MIN_TIMEOUT_CLEAN, 4 * seen)
        return min(timeout, base * (1 + failures))

    def request(self, ftype: int, payload: bytes = b"", timeout: float | None = None, parse=None):
        """Send one frame and return the reply's payload, or ``parse(payload)``. A reply that passes
        its CRC but does not parse (wrong length or fields) is a protocol error, retried like a
        lost frame: never a traceback, never a result."""
        timeout = timeout or self.timeout
        give_up = time.monotonic() + 4 * timeout
        attempt = 0
        for attempt in range(self.retries + 1):
            if attempt and time.monotonic() > give_up:
                break
            self.seq = (self.seq + 1) & 0xFF
            # after a failure, a run of zeros first completes any half-parsed frame on the device
            flush = b"\x00" * self.flush_bytes if attempt else b""
            self.retried += bool(attempt)
            self.port.write(flush + encode_frame(ftype, self.seq, payload))
            sent = time.monotonic()
            deadline = sent + self._wait(ftype, attempt, timeout)
            crc_errors = self.reader.crc_errors
            last_byte = sent
            while time.monotonic() < deadline:
                frame = self.reader.next()
                if frame is None:
                    if self.reader.crc_errors > crc_errors:
                        break  # a reply arrived damaged: ask again now rather than wait out the timeout
                    data = self._read()
                    now = time.monotonic()
                    if data:
                        last_byte = now
                        self.reader.feed(data)
                    elif last_byte > sent and SYNC in self.reader.buf and now - last_byte > IDLE_GAP:
                        break  # a reply started, then the line went quiet: bytes were lost on the way
                    continue
                if frame.seq != self.seq:
                    continue  # a stale reply to an earlier attempt
                if frame.type == T_ERROR:
                    code = frame.payload[0] if frame.payload else 0
                    if code in RETRYABLE:
                        break
                    if code == E_INPUT_CRC:
                        raise InputCRCError(f"{self.url}: the device's copy of the input differs from the host's")
                    raise DeviceError(f"{self.url}: device reported {ERRORS.get(code, f'error {code}')}: "
                                      f"{frame.payload[1:].decode(errors='replace')}")
                if frame.type == ftype | T_REPLY:
                    try:
                        result = frame.payload if parse is None else parse(frame.payload)
                    except (struct.error, IndexError, ValueError, UnicodeError):
                        self.bad_replies += 1
                        break
                    took = time.monotonic() - sent
                    self.rtt[ftype] = took if ftype not in self.rtt else 0.8 * self.rtt[ftype] + 0.2 * took
                    return result
        raise DeviceError(f"{self.url}: no valid reply after {attempt + 1} attempts "
                          f"(up to {timeout:.1f} s each); is the board running nupes-edge firmware?")

    def hello(self) -> Hello:
        h = self.request(T_HELLO, parse=parse_hello)
        if h.version != PROTOCOL_VERSION:
            raise DeviceError(f"{self.url}: firmware speaks protocol {h.version}, this host {PROTOCOL_VERSION}")
        self.output_size = h.output_size
        # from now on no reply is longer than this (errors carry a short message): a damaged length
        # beyond it is dropped at once instead of waited for
        self.reader.max_payload = max(64, 8 + h.output_size, 2 + 4 * h.num_layers)
        return h

    def infer(self, x: bytes) -> tuple[int, bytes]:
        """LOAD the input chunk by chunk, then RUN it: (count, output bytes)."""
        def parse(p: bytes) -> tuple[int, bytes]:
            if self.output_size is not None and len(p) != 8 + self.output_size:
                raise ValueError(f"RUN reply of {len(p)} bytes, expected {8 + self.output_size}")
            lo, hi = struct.unpack_from("<II", p, 0)
            return lo | (hi << 32), p[8:]

        for _ in range(3):  # an input CRC mismatch (never expected) reloads the whole input
            for off in range(0, len(x), LOAD_CHUNK):
                def echo(p: bytes, off=off) -> int:
                    if len(p) != 4 or struct.unpack("<I", p)[0] != off:
                        raise ValueError(f"LOAD reply {p.hex()} for offset {off}")
                    return off

                self.request(T_LOAD, struct.pack("<I", off) + x[off:off + LOAD_CHUNK], parse=echo)
            try:
                return self.request(T_RUN, struct.pack("<II", len(x), zlib.crc32(x)), parse=parse)
            except InputCRCError:
                self.retried += 1
        raise DeviceError(f"{self.url}: the device's copy of the input kept differing from the host's")

    def reset_state(self) -> None:
        """Put the model's carried state back to the reset state (RESET: firmware of a carry model only)."""
        def parse(p: bytes) -> None:
            if p:
                raise ValueError(f"RESET reply {p.hex()}")

        self.request(T_RESET, parse=parse)

    def calibrate(self, n: int) -> int:
        """The device's raw count for a loop of exactly 2 * n instructions (n in 1..2^26)."""
        def parse(p: bytes) -> int:
            if len(p) != 8:
                raise ValueError(f"CALIBRATE reply of {len(p)} bytes")
            lo, hi = struct.unpack("<II", p)
            return lo | (hi << 32)

        return self.request(T_CALIBRATE, struct.pack("<I", n), parse=parse)

    def stack(self) -> tuple[int, int]:
        """(bytes of stack used at the deepest since reset, bytes free for it): a high-water mark of
        the RAM the firmware painted at reset."""
        def parse(p: bytes) -> tuple[int, int]:
            if len(p) != 8:
                raise ValueError(f"STACK reply of {len(p)} bytes")
            return struct.unpack("<II", p)

        return self.request(T_STACK, parse=parse)

    def profile(self) -> list[int]:
        def parse(p: bytes) -> list[int]:
            (n,) = struct.unpack_from("<H", p, 0)
            if len(p) != 2 + 4 * n:
                raise ValueError(f"PROFILE reply of {len(p)} bytes for {n} layers")
            return list(struct.unpack_from(f"<{n}I", p, 2))

        return self.request(T_PROFILE, parse=parse)
