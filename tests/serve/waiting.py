"""Waiting on a server state in async tests, not on a guessed amount of time."""

from __future__ import annotations

import asyncio
import time

import pytest


async def until(condition, what: str, limit_s: float = 30.0) -> None:
    """Return once `condition()` holds; fail naming `what` after `limit_s` seconds."""
    give_up = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > give_up:
            pytest.fail(f"the server did not reach this state within {limit_s:g} s: {what}")
        await asyncio.sleep(0.01)
