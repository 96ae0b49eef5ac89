"""A step's heartbeat: none for a step that ends within a third of its heartbeat timeout (most
do: 600 needless calls to the server at 200 devices), then one every third."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.testing import ActivityEnvironment

from activities._heartbeat import heartbeating


@activity.defn
async def _work(seconds: float) -> None:
    async with heartbeating("apply"):
        await asyncio.sleep(seconds)


def _env(beats: list[Any]) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, heartbeat_timeout=timedelta(seconds=0.6))
    env.on_heartbeat = lambda *details: beats.append(details)
    return env


async def test_a_short_step_sends_no_heartbeat():
    beats: list[Any] = []
    await _env(beats).run(_work, 0.05)
    assert beats == []


async def test_a_long_step_beats_every_third_of_its_timeout():
    beats: list[Any] = []
    await _env(beats).run(_work, 0.75)
    # At 0.2, 0.4 and 0.6 s (a third of 0.6 s), never at the start.
    assert 2 <= len(beats) <= 4 and set(beats) == {("apply",)}
