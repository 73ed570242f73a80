"""One worker thread owns the model; requests that are waiting when it becomes free are answered in one batch.

Non-streaming requests are batched (greedy, left padding: the same answers as one at a time). A streaming
request runs alone, because a token streamer follows one sequence. With `max_batch=1` the worker serves
strictly one request at a time, the baseline that dermvqa.bench.serve compares against.
"""
from __future__ import annotations

import collections
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

from PIL import Image

from dermvqa.infer.chat import ReplyStream, generate_replies


@dataclass
class _Job:
    image: Image.Image
    messages: list[dict]
    max_new_tokens: int
    future: Future = field(default_factory=Future)


class Batcher:
    def __init__(self, model, processor, max_batch: int = 8, max_wait_s: float = 0.005):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.model, self.processor = model, processor
        self.max_batch, self.max_wait_s = max_batch, max_wait_s
        self._queue: queue.Queue = queue.Queue()
        self._deferred: collections.deque = collections.deque()
        self.batch_sizes: list[int] = []  # one entry per generate call, for the benchmark
        self._thread = threading.Thread(target=self._work, name="dermvqa-batcher", daemon=True)
        self._thread.start()

    def submit(self, image: Image.Image, messages: list[dict], max_new_tokens: int) -> Future:
        """Future resolving to a chat.Reply."""
        job = _Job(image, messages, max_new_tokens)
        self._queue.put(job)
        return job.future

    def submit_stream(self, stream: ReplyStream) -> None:
        """Queue a ReplyStream; the caller iterates it while the worker generates."""
        self._queue.put(stream)

    def pending(self) -> int:
        return self._queue.qsize() + len(self._deferred)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _next(self, timeout: float | None = None):
        if self._deferred:
            return self._deferred.popleft()
        return self._queue.get(timeout=timeout)

    def _work(self) -> None:
        while True:
            item = self._next()
            if item is None:
                return
            if isinstance(item, ReplyStream):
                self.batch_sizes.append(1)
                item.run()
                continue
            batch = [item]
            deadline = time.monotonic() + self.max_wait_s
            while len(batch) < self.max_batch:
                try:
                    more = self._next(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if not isinstance(more, _Job):  # a stream or the stop signal: serve it after this batch
                    self._deferred.appendleft(more)
                    break
                batch.append(more)
            self._run(batch)

    def _run(self, batch: list[_Job]) -> None:
        live = [job for job in batch if job.future.set_running_or_notify_cancel()]
        if not live:
            return
        self.batch_sizes.append(len(live))
        try:
            replies = generate_replies(self.model, self.processor, [j.image for j in live],
                                       [j.messages for j in live], [j.max_new_tokens for j in live])
        except Exception as e:  # noqa: BLE001 - the error belongs to the requests, not to the worker
            for job in live:
                job.future.set_exception(e)
            return
        for job, reply in zip(live, replies):
            job.future.set_result(reply)
