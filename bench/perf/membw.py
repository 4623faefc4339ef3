"""Memory bandwidth of this machine, measured with numpy streams (read: sum; copy: dst[:] = src),
split over N Python threads (numpy releases the GIL), arrays far larger than the caches."""
from __future__ import annotations

import threading
import time

import numpy as np

MB = 1 << 20


def _parallel(fn, chunks) -> float:
    threads = [threading.Thread(target=fn, args=c) for c in chunks]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


class Bandwidth:
    def __init__(self, size_mb: int = 256):
        n = size_mb * MB // 8
        self.src = np.ones(n, np.float64)
        self.dst = np.empty_like(self.src)
        self.nbytes = self.src.nbytes

    def read(self, threads: int) -> float:
        """GB/s of reading the array once."""
        parts = np.array_split(np.arange(self.src.size), threads)
        chunks = [(self.src[p[0]:p[-1] + 1],) for p in parts]
        dt = _parallel(lambda a: float(a.sum()), chunks)
        return self.nbytes / dt / 1e9

    def copy(self, threads: int) -> float:
        """GB/s counted as bytes read + written."""
        parts = np.array_split(np.arange(self.src.size), threads)
        chunks = [(self.dst[p[0]:p[-1] + 1], self.src[p[0]:p[-1] + 1]) for p in parts]
        dt = _parallel(lambda d, s: np.copyto(d, s), chunks)
        return 2 * self.nbytes / dt / 1e9
