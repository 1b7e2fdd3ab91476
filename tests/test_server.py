"""The server helpers: the event loop a single-process access point runs on."""

from __future__ import annotations

import asyncio
import gc

import uvloop

from verbund.server import run_on_uvloop, tune_gc


def test_single_process_servers_run_on_uvloop() -> None:
    async def loop_type() -> type:
        return type(asyncio.get_running_loop())

    assert run_on_uvloop(loop_type()) is uvloop.Loop


def test_tune_gc_freezes_what_is_alive_and_raises_the_threshold() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_freeze_count() > 1000
        assert gc.get_threshold()[0] > before[0]
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
