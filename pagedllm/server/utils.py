"""Async plumbing for the HTTP layer: merging request streams, watching for client disconnects, SSE.

The invariant everything here keeps: once the client is gone, or the server stops caring about a
request, every engine generator of that request is closed, which is what aborts it in the engine
and frees its KV blocks. An async generator left to the garbage collector would be closed late or
never, so each one is closed explicitly.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from pagedllm.server.errors import OpenAIError

T = TypeVar("T")

SSE_DONE = "data: [DONE]\n\n"
# After a non-disconnect message (which a conforming server never sends once the body is read) wait a
# little before asking again, so an odd server cannot turn the watcher into a busy loop.
_RECEIVE_BACKOFF_S = 0.05


class ClientDisconnected(Exception):
    """The client closed the connection before the response was ready."""


async def aclose_quietly(iterator: AsyncIterator[Any]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


async def _pump(index: int, iterator: AsyncIterator[T], queue: asyncio.Queue[tuple[int, Any, bool]]) -> None:
    """Copy one source into the queue as (index, item, False); (index, None | exception, True) ends it."""
    try:
        async for item in iterator:
            queue.put_nowait((index, item, False))  # unbounded: the consumer drains as fast as HTTP sends
    except Exception as e:
        queue.put_nowait((index, e, True))
        return
    finally:
        # Cancelled while suspended at the source's yield? Then only aclose() reaches its cleanup.
        await aclose_quietly(iterator)
    queue.put_nowait((index, None, True))


async def merge_async_iterators(*iterators: AsyncIterator[T]) -> AsyncIterator[tuple[int, T]]:
    """Yield (source index, item) from all sources as items arrive; the first error is raised.
    Closing or cancelling the merged iterator closes every source."""
    if len(iterators) == 1:  # the common case needs no tasks
        try:
            async for item in iterators[0]:
                yield 0, item
        finally:
            await aclose_quietly(iterators[0])
        return
    queue: asyncio.Queue[tuple[int, Any, bool]] = asyncio.Queue()
    tasks = [asyncio.create_task(_pump(i, it, queue)) for i, it in enumerate(iterators)]
    try:
        num_running = len(tasks)
        while num_running:
            index, value, ended = await queue.get()
            if not ended:
                yield index, value
            elif value is not None:
                raise value
            else:
                num_running -= 1
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def wait_for_disconnect(request: Request) -> None:
    """Return when the client disconnects. The body is already read, so the only message left
    for `receive` to deliver is http.disconnect: no polling needed."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
        await asyncio.sleep(_RECEIVE_BACKOFF_S)


async def run_until_disconnected(request: Request, awaitable: Awaitable[T]) -> T:
    """Await `awaitable`, but cancel it and raise ClientDisconnected if the client goes away first.
    uvicorn does not cancel a handler when its client leaves, so without this a non-streaming
    request would keep generating (and holding KV blocks) for nobody."""
    work = asyncio.ensure_future(awaitable)
    watcher = asyncio.create_task(wait_for_disconnect(request))
    try:
        await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not work.done():
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
    if work.cancelled():
        raise ClientDisconnected()
    return work.result()


def json_response(payload: BaseModel) -> Response:
    # pydantic writes a stray NaN/inf as null where json.dumps (JSONResponse) would raise: never a 500.
    return Response(payload.model_dump_json(), media_type="application/json")


def sse_event(payload: BaseModel, exclude: set[str] | None = None) -> str:
    return f"data: {payload.model_dump_json(exclude=exclude)}\n\n"


def sse_error(error: OpenAIError) -> str:
    """An in-stream error: the openai client raises APIError when a chunk carries "error"."""
    return f"data: {json.dumps(error.body())}\n\n"
