"""Progress of a long step: its cost said before it starts, an estimate once the first work is
timed, then a tqdm bar on a terminal or, in a log, one line every few seconds."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


class Progress:
    def __init__(self, total: int, unit: str, desc: str, log=print, enabled: bool = True, every_s: float = 10.0,
                 estimate_after_s: float = 2.0):
        self.total, self.unit, self.desc, self.log, self.every_s = total, unit, desc, log, every_s
        self.enabled = enabled
        self.terminal = enabled and sys.stderr.isatty()
        self.bar = tqdm(total=total, unit=unit, desc=desc, leave=False, disable=not self.terminal)
        self.done, self.started = 0, time.perf_counter()
        self.last_line = self.started
        self.estimate_after_s, self.estimated = estimate_after_s, False

    def update(self, n: int) -> None:
        self.done += n
        self.bar.update(n)
        now = time.perf_counter()
        elapsed = now - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate else float("nan")
        if self.enabled and not self.estimated and elapsed >= self.estimate_after_s and self.done < self.total:
            self.estimated = True
            self.log(f"{self.desc}: about {left:.0f}s left at {rate:,.0f} {self.unit}/s (measured on the first "
                     f"{self.done:,} {self.unit})")
        elif self.enabled and not self.terminal and now - self.last_line >= self.every_s and self.done < self.total:
            self.log(f"{self.desc}: {self.done / self.total:.0%} ({self.done:,} of {self.total:,} {self.unit}), "
                     f"about {left:.0f}s left")
        else:
            return
        self.last_line = now

    def close(self) -> float:
        self.bar.close()
        return time.perf_counter() - self.started
