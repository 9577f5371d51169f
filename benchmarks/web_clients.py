"""``python -m benchmarks.web_clients URL WARM N [--hello]``: hold idle WebSocket connections.

The memory workloads of `benchmarks.web` weigh a server while this process, not theirs,
holds the clients' side. It opens ``WARM`` connections to ``URL`` and prints ``warm``;
after a line on stdin it opens ``N`` more and prints ``ready``; when stdin closes it closes
them all and exits. With ``--hello`` each connection waits for the server's first message
(the web interface's ``hello``) before it counts as open.
"""

from __future__ import annotations

import sys

import trio
from trio_websocket import open_websocket_url


async def _hold(url: str, hello: bool, *, task_status: trio.TaskStatus[None]) -> None:
    async with open_websocket_url(url) as ws:
        if hello:
            await ws.get_message()
        task_status.started()
        await trio.sleep_forever()


async def _open(nursery: trio.Nursery, url: str, count: int, hello: bool) -> None:
    async with trio.open_nursery() as batch:
        for _ in range(count):
            batch.start_soon(nursery.start, _hold, url, hello)


async def main(url: str, warm: int, size: int, hello: bool) -> None:
    stdin = trio.lowlevel.FdStream(sys.stdin.fileno())
    async with trio.open_nursery() as nursery:
        await _open(nursery, url, warm, hello)
        print("warm", flush=True)
        await stdin.receive_some()
        await _open(nursery, url, size, hello)
        print("ready", flush=True)
        while await stdin.receive_some():
            pass
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    arguments = [a for a in sys.argv[1:] if a != "--hello"]
    trio.run(main, arguments[0], int(arguments[1]), int(arguments[2]), "--hello" in sys.argv)
