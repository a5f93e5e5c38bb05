"""Dynamic batching: a bounded queue in front of one inference thread.

Handlers `submit` work that is already decoded and preprocessed; one coroutine takes the first waiting
item, then whatever else arrives within `max_delay_s`, up to `max_batch_size` (Triton's dynamic batcher
and TorchServe's batch_size/max_batch_delay), and runs the batch on a single worker thread so that the
event loop keeps accepting requests meanwhile. A full queue is refused at once rather than left to
time out: the caller answers 503 and the client retries.
"""
import asyncio
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable


class Overloaded(Exception):
    """The queue is full, or the service is shutting down (HTTP 503)."""


@dataclass
class Item:
    payload: Any
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass
class Timing:
    queue_s: float  # from submit to the start of the item's batch
    infer_s: float  # the whole batch's run
    batch_size: int


class Batcher:
    def __init__(self, run_batch: Callable[[list[Any]], list[Any]], max_batch_size: int = 8,
                 max_delay_s: float = 0.005, queue_size: int = 64):
        self.run_batch, self.max_batch_size, self.max_delay_s = run_batch, max_batch_size, max_delay_s
        self.queue: asyncio.Queue[Item] = asyncio.Queue(queue_size)
        self.batch_sizes: Counter[int] = Counter()
        self.closing = False
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="convnext-inference")
        self._task: asyncio.Task | None = None
        self._busy = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._serve())

    async def call(self, function: Callable, *args) -> Any:
        """Run `function` on the inference thread (in turn with the batches): warm-up, for one."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def submit(self, payload: Any) -> asyncio.Future:
        """A future for (result, Timing); raises Overloaded at once when it cannot be queued."""
        if self.closing:
            raise Overloaded("shutting down")
        item = Item(payload, asyncio.get_running_loop().create_future())
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            raise Overloaded(f"queue full ({self.queue.maxsize} waiting)") from None
        self._arrived.set()
        return item.future

    async def _take_batch(self) -> list[Item]:
        batch = [await self.queue.get()]
        self._busy = True  # holding items: close() must wait for their answers
        deadline = time.perf_counter() + self.max_delay_s
        while len(batch) < self.max_batch_size:
            if not self.queue.empty():
                batch.append(self.queue.get_nowait())
                continue
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            self._arrived.clear()
            try:  # an Event (not queue.get) is what may be cancelled here, so no item can be lost
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                break
        return [item for item in batch if not item.future.done()]  # timed-out callers are gone

    async def _serve(self) -> None:
        while True:
            batch = await self._take_batch()
            if not batch:
                self._busy = False
                continue
            started = time.perf_counter()
            try:
                results = await self.call(self.run_batch, [item.payload for item in batch])
            except Exception as error:  # a bug, not bad input: every caller in the batch gets it
                results = [error] * len(batch)
            finally:
                self._busy = False
            infer_s = time.perf_counter() - started
            self.batch_sizes[len(batch)] += 1
            for item, result in zip(batch, results):
                if item.future.done():
                    continue
                if isinstance(result, Exception):
                    item.future.set_exception(result)
                else:
                    item.future.set_result((result, Timing(started - item.enqueued, infer_s, len(batch))))

    async def close(self) -> None:
        """Refuse new work, answer everything queued, then stop the thread."""
        self.closing = True
        while not self.queue.empty() or self._busy:
            await asyncio.sleep(0.005)
        if self._task is not None:
            self._task.cancel()
        self._executor.shutdown(wait=True)
