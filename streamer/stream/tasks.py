"""Background asyncio tasks whose failures are logged when they happen, not when they are collected."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

logger = logging.getLogger(__name__)


def report_failure(task: asyncio.Task[Any]) -> None:
    """Done callback: log the exception a background task ended with (asyncio would say so only
    when the task is garbage-collected, if ever: a pacer or a stats pusher would just stop)."""
    if not task.cancelled() and task.exception() is not None:
        logger.error("background task %s failed", task.get_name(), exc_info=task.exception())


def background(
    coro: Coroutine[Any, Any, Any], loop: asyncio.AbstractEventLoop | None = None
) -> asyncio.Task[Any]:
    """Start ``coro`` as a task on ``loop`` (default: the running one) that reports its failure."""
    task = (loop or asyncio.get_running_loop()).create_task(coro)
    task.add_done_callback(report_failure)
    return task
