"""Where the server's recognizers run: threads of this process, or worker processes each holding the model.

Threads share one loaded model; onnxruntime and numpy release the GIL, but flashlight-text's beam search
and the word alignment hold it (measured: two threads decoding take twice one thread's time), so with the
LM the threads decode one at a time. Worker processes each load the model and decode in parallel; a
session stays on the process that opened its recognizer, the one with the fewest sessions then.
Both keep every session's recognizer under a key the server gives, and run one call at a time per session.
Worker processes are spawned (they import the program's main module again) and end when the server's
process does, even when it is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Protocol, TypeVar

import numpy as np

from dsita.errors import DsitaError
from dsita.serve.protocol import SessionConfig
from dsita.serve.session import Recognizer

Result = TypeVar("Result")


class Workers(Protocol):
    """The server's side of a pool of recognizers."""

    async def open(self, key: int, config: SessionConfig) -> None:
        """A fresh recognizer for session `key` (replacing any it had)."""
        ...

    async def accept(self, key: int, pcm: bytes) -> str:
        """One audio frame of session `key` -> its reply."""
        ...

    async def finish(self, key: int) -> str:
        """The end of session `key`'s utterance -> its result."""
        ...

    def close(self, key: int) -> None:
        """Session `key` has ended: forget its recognizer."""
        ...

    def shutdown(self) -> None:
        """Stop the pool."""
        ...


class ThreadWorkers:
    """Recognizers of one shared model, run on a bounded pool of threads."""

    def __init__(self, model: Any, threads: int) -> None:
        self.model = model
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="dsita-serve")
        self._recognizers: dict[int, Recognizer] = {}

    async def _run(self, function: Callable[..., Result], *args: Any) -> Result:
        return await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)

    async def open(self, key: int, config: SessionConfig) -> None:
        """A fresh recognizer for session `key`, built on a pool thread."""
        self._recognizers[key] = await self._run(Recognizer, self.model, config)

    async def accept(self, key: int, pcm: bytes) -> str:
        """Feed one audio frame to session `key`'s recognizer on a pool thread; its reply."""
        return await self._run(self._recognizers[key].accept, pcm)

    async def finish(self, key: int) -> str:
        """End session `key`'s utterance on a pool thread; its result."""
        return await self._run(self._recognizers[key].finish)

    def close(self, key: int) -> None:
        """Forget session `key`'s recognizer (nothing if it has none)."""
        self._recognizers.pop(key, None)

    def shutdown(self) -> None:
        """Stop the threads without waiting; queued calls are cancelled."""
        self._pool.shutdown(wait=False, cancel_futures=True)


# --- in each worker process ------------------------------------------------------------------------------

_model: Any = None
_recognizers: dict[int, Recognizer] = {}


def _load(path: str, options: Any, server: int) -> None:
    from dsita.inference import load_model

    global _model
    threading.Thread(target=_exit_with, args=(server,), daemon=True).start()
    _model = load_model(path, options)
    _model.transcribe(np.zeros(int(_model.sample_rate) // 2, dtype=np.float32))  # the LM's trie, now


def _exit_with(server: int) -> None:
    """End this process once the server's is gone, however it went (a SIGKILL leaves no time to say so)."""
    while os.getppid() == server:
        time.sleep(1.0)
    os._exit(0)


def _call(key: int, operation: str, payload: Any) -> str:
    if operation == "open":
        _recognizers[key] = Recognizer(_model, payload)
        return ""
    if operation == "close":
        _recognizers.pop(key, None)
        return ""
    recognizer = _recognizers[key]
    return recognizer.accept(payload) if operation == "accept" else recognizer.finish()


# --- in the server ---------------------------------------------------------------------------------------


class ProcessWorkers:
    """Recognizers in `processes` worker processes, each with its own copy of the model."""

    def __init__(self, model: Any, processes: int) -> None:
        # spawn, not fork: the server has threads and an event loop running, which a fork would copy badly.
        self._context = multiprocessing.get_context("spawn")
        self._model = (str(model.package.source), model.options)
        self._pools: list[Executor] = [self._new_pool() for _ in range(processes)]
        self._load = [0] * processes  # sessions per process
        self._home: dict[int, int] = {}

    def _new_pool(self) -> Executor:
        return ProcessPoolExecutor(
            1, mp_context=self._context, initializer=_load, initargs=(*self._model, os.getpid())
        )

    async def _run(self, key: int, operation: str, payload: Any = None) -> str:
        home = self._home[key]
        pool = self._pools[home]
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, _call, key, operation, payload)
        except BrokenProcessPool:
            # The process died (killed, out of memory): its sessions are lost, the next ones get a new one.
            if self._pools[home] is pool:
                self._pools[home] = self._new_pool()
            raise DsitaError("the worker process of this session died; open a new session") from None

    async def open(self, key: int, config: SessionConfig) -> None:
        """A fresh recognizer for session `key` in its process: the least loaded one for a new session."""
        if key not in self._home:
            self._home[key] = min(range(len(self._pools)), key=self._load.__getitem__)
            self._load[self._home[key]] += 1
        await self._run(key, "open", config)

    async def accept(self, key: int, pcm: bytes) -> str:
        """Feed one audio frame to session `key`'s recognizer in its process; its reply."""
        return await self._run(key, "accept", pcm)

    async def finish(self, key: int) -> str:
        """End session `key`'s utterance in its process; its result."""
        return await self._run(key, "finish")

    def close(self, key: int) -> None:
        """Forget session `key`: its process drops the recognizer (a dead process is left alone)."""
        home = self._home.pop(key, None)
        if home is not None:
            self._load[home] -= 1
            with contextlib.suppress(BrokenProcessPool, RuntimeError):  # a dead pool forgot it already
                self._pools[home].submit(_call, key, "close", None)

    def warm_up(self) -> None:
        """Start every process and load its model now, not on the first session."""
        for pool in self._pools:
            try:
                pool.submit(_call, -1, "close", None).result()
            except BrokenProcessPool:
                raise DsitaError(
                    "serve: a worker process died while it loaded the model (a program that starts a server "
                    "with worker processes must guard its entry point: if __name__ == '__main__')"
                ) from None

    def shutdown(self) -> None:
        """Stop every worker process without waiting; queued calls are cancelled."""
        for pool in self._pools:
            pool.shutdown(wait=False, cancel_futures=True)
