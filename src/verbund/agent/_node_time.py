"""Node time held by on-demand instances, per model and UTC hour: what serving cost the site.

An instance holds its node (its CPUs and GPUs) from the moment its job runs until it
ends, idle time included: that is what the site gives up, whether requests came or not.
:class:`NodeTime` adds each ended instance's time to the hours it fell into, and adds the
running ones' time up to now when read, so a report for any period in whole hours is a
sum of buckets. Each bucket is a value an access point may store as it is (not add up):
several access points reading the same site store the same numbers.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["HOUR", "NodeTime", "split_hours"]

HOUR = 3600
KEEP_HOURS = 24 * 400  # buckets older than this are dropped (access points hold them)


def split_hours(start: float, end: float) -> list[tuple[int, float]]:
    """``[start, end)`` (wall-clock seconds) as (hour start, seconds in that hour)."""
    out: list[tuple[int, float]] = []
    at = start
    while at < end:
        hour = int(math.floor(at / HOUR) * HOUR)
        upto = min(end, hour + HOUR)
        out.append((hour, upto - at))
        at = upto
    return out


class NodeTime:
    def __init__(self) -> None:
        # model -> hour start -> [cpu seconds, gpu seconds] of ended instances
        self.closed: dict[str, dict[int, list[float]]] = {}

    def add(self, model: str, start: float, end: float, cpus: int, gpus: int) -> None:
        hours = self.closed.setdefault(model, {})
        for hour, seconds in split_hours(start, end):
            bucket = hours.setdefault(hour, [0.0, 0.0])
            bucket[0] += seconds * cpus
            bucket[1] += seconds * gpus
        if len(hours) > KEEP_HOURS:
            for old in sorted(hours)[: len(hours) - KEEP_HOURS]:
                del hours[old]

    def buckets(
        self, live: list[tuple[str, float, float, int, int]], since: float = 0.0
    ) -> list[dict[str, Any]]:
        """Every hour from ``since`` with node time: ended instances' and, up to now,
        ``live`` ones' (model, running since, now, CPUs, GPUs), oldest first."""
        merged: dict[tuple[str, int], list[float]] = {}
        for model, hours in self.closed.items():
            for hour, (cpu, gpu) in hours.items():
                merged[(model, hour)] = [cpu, gpu]
        for model, start, end, cpus, gpus in live:
            for hour, seconds in split_hours(start, end):
                bucket = merged.setdefault((model, hour), [0.0, 0.0])
                bucket[0] += seconds * cpus
                bucket[1] += seconds * gpus
        floor = math.floor(since / HOUR) * HOUR
        return [
            {"model": model, "hour": hour, "cpu_seconds": round(cpu, 3),
             "gpu_seconds": round(gpu, 3)}
            for (model, hour), (cpu, gpu) in sorted(merged.items(), key=lambda kv: kv[0][1])
            if hour >= floor
        ]  # fmt: skip

    def dump(self) -> dict[str, dict[str, list[float]]]:
        return {m: {str(h): v for h, v in hours.items()} for m, hours in self.closed.items()}

    def load(self, data: Any) -> None:
        if not isinstance(data, dict):
            return
        for model, hours in data.items():
            if isinstance(hours, dict):
                self.closed[str(model)] = {
                    int(h): [float(v[0]), float(v[1])] for h, v in hours.items()
                }
