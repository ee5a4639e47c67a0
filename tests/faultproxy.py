"""A TCP proxy that damages the bytes between the host and an emulated board, seeded: each byte
may be corrupted (one bit flipped), dropped or duplicated, and a chunk may stall before it goes
on. Both directions, each with its own random stream. Used by tests/test_device_qemu.py and
benchmarks/link.py."""
from __future__ import annotations

import random
import socket
import threading
import time


class FaultyProxy:
    def __init__(self, target_port: int, p_corrupt: float = 0.0005, p_drop: float = 0.0005, p_dup: float = 0.0,
                 p_stall: float = 0.01, stall_s: tuple[float, float] = (0.01, 0.2), seed: int = 0,
                 directions: str = "both"):
        self.target = target_port
        self.p = (p_corrupt, p_drop, p_dup)
        self.p_stall, self.stall_s = p_stall, stall_s
        self.seed = seed
        self.directions = directions  # "both", "to_device" or "to_host"
        self.faults = 0
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(1)
        self.port = self.srv.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"socket://127.0.0.1:{self.port}"

    def _mangle(self, data: bytes, rng: random.Random) -> bytes:
        out = bytearray()
        for b in data:
            r = rng.random()
            if r < self.p[0]:
                out.append(b ^ (1 << rng.randrange(8)))
                self.faults += 1
            elif r < self.p[0] + self.p[1]:
                self.faults += 1
            elif r < sum(self.p):
                out += bytes([b, b])
                self.faults += 1
            else:
                out.append(b)
        return bytes(out)

    def _pump(self, src, dst, direction: str):
        rng = random.Random(f"{self.seed}/{direction}")
        damage = self.directions in ("both", direction)
        try:
            while True:
                data = src.recv(256)
                if not data:
                    break
                if damage and rng.random() < self.p_stall:
                    time.sleep(rng.uniform(*self.stall_s))
                dst.sendall(self._mangle(data, rng) if damage else data)
        except OSError:
            pass

    def _serve(self):
        client, _ = self.srv.accept()
        upstream = socket.create_connection(("127.0.0.1", self.target))
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=self._pump, args=(client, upstream, "to_device"), daemon=True).start()
        self._pump(upstream, client, "to_host")
