"""The host side of the serial verification protocol (docs/protocol.md).

Frames: A5 5A | type u8 | seq u8 | len u16 LE | payload | CRC-32 (IEEE, LE) over type..payload.
The host waits for the firmware's banner, then sends one request at a time and accepts only a
reply with a valid CRC, the request's sequence number and the matching type. A lost, corrupt or
late reply is retried a bounded number of times; before each retry a run of zero bytes completes
any frame the device may have started parsing from garbage, so it resynchronizes. The same code
serves /dev/ttyACM0 and socket://host:port (pyserial's serial_for_url).
"""
from __future__ import annotations

import struct
import time
import zlib
from dataclasses import dataclass

from .errors import NupesError

SYNC = b"\xa5\x5a"
T_HELLO, T_INFER, T_PROFILE, T_REPLY, T_ERROR = 0x01, 0x02, 0x03, 0x80, 0xEE
ERRORS = {1: "bad CRC", 2: "bad length", 3: "unknown frame type", 4: "frame too long"}
RETRYABLE = {1, 4}  # what corruption on the wire causes
BANNER = b"NUPES-EDGE"
PROTOCOL_VERSION = 1
MAX_FRAME = 1 << 16


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

    def __init__(self):
        self.buf = bytearray()
        self.crc_errors = 0

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
            if end > len(buf):
                earliest_pending = i if earliest_pending is None else earliest_pending
            else:
                body = bytes(buf[i + 2:i + 6 + n])
                if zlib.crc32(body) == struct.unpack_from("<I", buf, i + 6 + n)[0]:
                    del buf[:end]
                    return Frame(body[0], body[1], body[4:])
                self.crc_errors += 1
            i = buf.find(SYNC, i + 1)
        # keep only what may still become a frame
        keep = earliest_pending if earliest_pending is not None else max(0, len(buf) - 1)
        del buf[:keep]
        return None


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
    def __init__(self, url: str, timeout: float = 5.0, retries: int = 5, connect_timeout: float = 5.0,
                 baudrate: int = 115200):
        import serial

        self.url = url
        self.timeout = timeout
        self.retries = retries
        self.seq = 0
        self.reader = FrameReader()
        self.retried = 0
        self.bad_replies = 0  # CRC-valid replies that did not parse
        self.flush_bytes = 4096
        self.output_size = None  # known after hello()
        deadline = time.monotonic() + connect_timeout
        while True:
            try:
                self.port = serial.serial_for_url(url, baudrate=baudrate, timeout=0.05)
                break
            except (serial.SerialException, OSError, ValueError) as e:
                if time.monotonic() > deadline or url.startswith("/dev/") and "No such file" in str(e):
                    raise DeviceError(f"cannot open {url}: {e}") from None
                time.sleep(0.05)

    def close(self) -> None:
        self.port.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _read(self) -> bytes:
        try:
            return self.port.read(512)
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

    def request(self, ftype: int, payload: bytes = b"", timeout: float | None = None, parse=None):
        """Send one frame and return the reply's payload, or ``parse(payload)``. A reply that passes
        its CRC but does not parse (wrong length or fields) is a protocol error, retried like a
        lost frame: never a traceback, never a result."""
        timeout = timeout or self.timeout
        for attempt in range(self.retries + 1):
            self.seq = (self.seq + 1) & 0xFF
            if attempt:
                self.retried += 1
                self.port.write(b"\x00" * self.flush_bytes)  # completes any half-parsed frame on the device
            self.port.write(encode_frame(ftype, self.seq, payload))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                frame = self.reader.next()
                if frame is None:
                    self.reader.feed(self._read())
                    continue
                if frame.seq != self.seq:
                    continue  # a stale reply to an earlier attempt
                if frame.type == T_ERROR:
                    code = frame.payload[0] if frame.payload else 0
                    if code in RETRYABLE:
                        break
                    raise DeviceError(f"{self.url}: device reported {ERRORS.get(code, f'error {code}')}: "
                                      f"{frame.payload[1:].decode(errors='replace')}")
                if frame.type == ftype | T_REPLY:
                    if parse is None:
                        return frame.payload
                    try:
                        return parse(frame.payload)
                    except (struct.error, IndexError, ValueError, UnicodeError):
                        self.bad_replies += 1
                        break
        raise DeviceError(f"{self.url}: no valid reply after {self.retries + 1} attempts "
                          f"({timeout:.1f} s each); is the board running nupes-edge firmware?")

    def hello(self) -> Hello:
        h = self.request(T_HELLO, parse=parse_hello)
        if h.version != PROTOCOL_VERSION:
            raise DeviceError(f"{self.url}: firmware speaks protocol {h.version}, this host {PROTOCOL_VERSION}")
        self.flush_bytes = h.input_size + 32
        self.output_size = h.output_size
        return h

    def infer(self, x: bytes) -> tuple[int, bytes]:
        def parse(p: bytes) -> tuple[int, bytes]:
            if self.output_size is not None and len(p) != 8 + self.output_size:
                raise ValueError(f"INFER reply of {len(p)} bytes, expected {8 + self.output_size}")
            lo, hi = struct.unpack_from("<II", p, 0)
            return lo | (hi << 32), p[8:]

        return self.request(T_INFER, x, timeout=self.timeout + len(x) / 2000.0, parse=parse)

    def profile(self) -> list[int]:
        def parse(p: bytes) -> list[int]:
            (n,) = struct.unpack_from("<H", p, 0)
            if len(p) != 2 + 4 * n:
                raise ValueError(f"PROFILE reply of {len(p)} bytes for {n} layers")
            return list(struct.unpack_from(f"<{n}I", p, 2))

        return self.request(T_PROFILE, parse=parse)
