"""The node's health: problem bookkeeping with throttled logs, and /diagnostics."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

# Levels as ints here; DiagnosticStatus.level is a ``byte`` field (bytes in rclpy).
OK, WARN, ERROR = 0, 1, 2
_LEVEL_NAMES = {OK: "OK", WARN: "WARN", ERROR: "ERROR"}


_DIGITS = re.compile(r"\d+")


@dataclass
class Problem:
    level: int
    message: str
    first: float
    last: float
    count: int = 1


class ProblemBook:
    """Remembers recent problems by kind; decides when each may be logged again.

    A camera sending 30 bad frames a second must not flood the log: each kind of
    problem is logged at most once per ``throttle`` seconds, with the count of
    repeats since, and stays visible in diagnostics for ``hold`` seconds.
    """

    def __init__(self, throttle: float = 5.0, hold: float = 10.0) -> None:
        self.throttle = throttle
        self.hold = hold
        self._problems: dict[str, Problem] = {}
        self._logged: dict[tuple[str, str], tuple[float, int]] = {}  # message shape -> (last logged, repeats)
        self._lock = threading.Lock()
        self.total = 0

    def report(self, kind: str, level: int, message: str, now: float | None = None) -> str | None:
        """Record a problem; return the line to log now, or None while throttled.

        Diagnostics keep the latest problem of each ``kind``; the log throttles each
        distinct message (numbers ignored), so a new kind of fault is always logged.
        """
        now = time.monotonic() if now is None else now
        shape = (kind, _DIGITS.sub("#", message))
        with self._lock:
            self.total += 1
            p = self._problems.get(kind)
            if p is None or now - p.last > self.hold:
                p = self._problems[kind] = Problem(level, message, now, now)
            else:
                p.level, p.message, p.last = level, message, now
                p.count += 1
            last_logged, repeats = self._logged.get(shape, (float("-inf"), 0))
            if now - last_logged < self.throttle:
                self._logged[shape] = (last_logged, repeats + 1)
                return None
            if len(self._logged) > 512:  # bounded: messages carry topic names and sizes
                self._logged.clear()
            self._logged[shape] = (now, 0)
        suffix = f" ({repeats} more since the last report)" if repeats > 0 else ""
        return f"{message}{suffix}"

    def clear(self, kind: str) -> None:
        with self._lock:
            self._problems.pop(kind, None)

    def active(self, now: float | None = None) -> list[tuple[str, Problem]]:
        """Problems seen within ``hold`` seconds, worst first."""
        now = time.monotonic() if now is None else now
        with self._lock:
            live = [(k, p) for k, p in self._problems.items() if now - p.last <= self.hold]
        return sorted(live, key=lambda kp: (-kp[1].level, -kp[1].last))


def build_status(name: str, hardware_id: str, problems: list[tuple[str, Problem]],
                 values: dict[str, str], base_level: int = OK, base_message: str = "running") -> DiagnosticStatus:
    """One DiagnosticStatus: the worst active problem sets level and message."""
    level, message = base_level, base_message
    if problems:
        worst = problems[0][1]
        if worst.level >= level:
            level, message = worst.level, worst.message
    status = DiagnosticStatus(level=bytes([level]), name=name, message=message, hardware_id=hardware_id)
    kv = [KeyValue(key=k, value=v) for k, v in values.items()]
    kv += [KeyValue(key=f"problem.{k}", value=f"{_LEVEL_NAMES.get(p.level, p.level)}: {p.message}") for k, p in problems]
    status.values = kv
    return status


def diagnostic_array(stamp, statuses: list[DiagnosticStatus]) -> DiagnosticArray:
    msg = DiagnosticArray()
    msg.header.stamp = stamp
    msg.status = statuses
    return msg
