"""Running a queue's commands: as subprocesses that never block the event loop, always
under a timeout, killed with everything they started when they overrun; and status
queries coalesced, so one reconciler pass costs one ``squeue``/``qstat`` call.

Which command to run, and what its output means, is the backend's (``backend`` and
the queue's subclass); this module only runs them.
"""

from __future__ import annotations

import asyncio
import os
import signal

from ...errors import BackendError
from .jobs import CommandResult, JobInfo


async def run_command(
    argv: list[str], *, env: dict, timeout: float, stdin: str | None = None
) -> CommandResult:
    """Run ``argv`` in its own session with ``env``, feeding it ``stdin``.

    Raises ``BackendError`` when it cannot be started or does not finish within
    ``timeout`` seconds (it is killed then, and so is anything it started).
    """
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        raise BackendError(f"Cannot run {argv[0]}: {exc.strerror or exc}") from None
    try:
        out, err = await asyncio.wait_for(
            proc.communicate(stdin.encode() if stdin is not None else None), timeout
        )
    except TimeoutError:
        await kill(proc)
        raise BackendError(f"{argv[0]} did not answer within {timeout:g} s") from None
    except BaseException:
        await kill(proc)
        raise
    return CommandResult(
        proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")
    )


async def kill(proc) -> None:
    """Kill a command and everything it started (it leads its own session)."""
    if proc.returncode is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            try:
                proc.kill()
            except ProcessLookupError:
                pass
        await proc.wait()


def chunks(items: list, size: int):
    """``items`` in lists of at most ``size`` (queues limit the ids of one call)."""
    for i in range(0, len(items), size):
        yield items[i : i + size]


class StatusBatcher:
    """Coalesces concurrent status queries into as few queue calls as possible.

    Ids asked for while a query runs wait for the next one, which then covers every
    caller at once; ``check_clusters`` and all the ``check_workers`` calls of one
    reconciler pass therefore cost one ``squeue``/``qstat`` call, not one per cluster.
    """

    def __init__(self, fetch):
        self._fetch = fetch
        self._waiting: dict[str, list[asyncio.Future]] = {}
        self._task: asyncio.Task | None = None

    async def query(self, job_ids: list[str]) -> dict[str, JobInfo]:
        loop = asyncio.get_running_loop()
        futures = {}
        for job_id in job_ids:
            fut = loop.create_future()
            self._waiting.setdefault(job_id, []).append(fut)
            futures[job_id] = fut
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._drain())
        results = await asyncio.gather(*futures.values())
        return dict(zip(futures, results, strict=True))

    async def _drain(self) -> None:
        # yield once so queries made in the same loop iteration join the first batch
        await asyncio.sleep(0)
        while self._waiting:
            batch, self._waiting = self._waiting, {}
            try:
                result = await self._fetch(list(batch))
            except Exception as exc:
                _settle(batch, lambda fut, _id, exc=exc: fut.set_exception(exc))
                continue
            except BaseException:
                _settle(batch, lambda fut, _id: fut.cancel())
                raise
            _settle(batch, lambda fut, job_id, result=result: fut.set_result(result[job_id]))

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for futs in self._waiting.values():
            for fut in futs:
                fut.cancel()
        self._waiting = {}


def _settle(batch: dict, action) -> None:
    for job_id, futs in batch.items():
        for fut in futs:
            if not fut.done():
                action(fut, job_id)
