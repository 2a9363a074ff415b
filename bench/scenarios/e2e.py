"""Scenario `e2e`: a few pairs through the real SDK (`plauder.client.Client`, real Olm)."""

import asyncio
import contextlib
import time
from array import array
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.accounts import fetch_code, number
from bench.harness import Settings, environment, generators, server_usage
from bench.loadgen import run_bounded
from bench.stats import summarize
from bench.workers import Args, Commands
from plauder.client import Client, MessageReceived


@dataclass
class E2eParams:
    """Sizes of the e2e scenario."""

    pairs: int = 10
    messages: int = 50  # per sender, each awaited (the SDK's send_text returns on `sent`)
    timeout: float = 300.0


class E2eWorker(Commands):
    """Registers SDK clients, then each sender sends texts to its receiver."""

    def __init__(self, spec: Args) -> None:
        self.spec = spec
        self.clients: dict[int, Client] = {}

    async def cmd_setup(self, server_url: str, profiles: str, timeout: float) -> Args:
        """Register every client through the SDK and start it."""
        indices: list[int] = self.spec["indices"]
        async with aiohttp.ClientSession() as session:

            async def one(i: int) -> None:
                client = Client(Path(profiles) / str(i), number(i))
                self.clients[i] = client
                await client.request_code([server_url])
                await client.verify(await fetch_code(session, self.spec["collector"], number(i)))
                await client.start()

            done, errors = await run_bounded(indices, one, 8, timeout)
        if errors:
            raise RuntimeError(f"SDK registration failed: {errors[:3]}")
        return {"done": done}

    async def cmd_run(self, messages: int, timeout: float) -> Args:
        """Every pair exchanges `messages` texts; latencies in ms."""
        deliver = array("d")
        commit = array("d")

        async def send(a: int, b: int) -> None:
            for k in range(messages):
                t0 = time.monotonic_ns()
                await self.clients[a].send_text(number(b), f"{t0} message {k} " + "x" * 100)
                commit.append((time.monotonic_ns() - t0) / 1e6)

        async def receive(b: int) -> None:
            got = 0
            while got < messages:
                event = await self.clients[b].next_event()
                if isinstance(event, MessageReceived):
                    stamp = int(event.body.split(" ", 1)[0])
                    deliver.append((time.monotonic_ns() - stamp) / 1e6)
                    got += 1

        start = time.monotonic_ns()
        tasks = [send(a, b) for a, b in self.spec["pairs"]]
        tasks += [receive(b) for _, b in self.spec["pairs"]]
        await asyncio.wait_for(asyncio.gather(*tasks), timeout)
        end = time.monotonic_ns()
        return {
            "start_ns": start,
            "end_ns": end,
            "deliver_ms": deliver.tolist(),
            "commit_ms": commit.tolist(),
        }

    async def close(self) -> None:
        """Close every client."""
        for client in self.clients.values():
            with contextlib.suppress(Exception):
                await client.close()


async def run_e2e(p: E2eParams, settings: Settings) -> Args:
    """Run the SDK scenario in one generator process."""
    pairs = [(i, i + 1) for i in range(0, 2 * p.pairs, 2)]
    async with environment(settings) as env:
        spec = env.spec([i for pair in pairs for i in pair], pairs=pairs)
        with generators(env, E2eWorker, [spec]) as pool:
            setup = {
                "server_url": env.server.url,
                "profiles": str(env.tmp / "profiles"),
                "timeout": p.timeout,
            }
            await pool.call("setup", setup, p.timeout + 30)
            before = env.server.snapshot()
            (run,) = await pool.call("run", {"messages": p.messages, "timeout": p.timeout}, 600)
            after = env.server.snapshot()
    usage = server_usage(before, after)
    seconds = (run["end_ns"] - run["start_ns"]) / 1e9
    delivered = len(run["deliver_ms"])
    return {
        "pairs": p.pairs,
        "messages_per_sender": p.messages,
        "delivered": delivered,
        "seconds": seconds,
        "delivered_per_s": delivered / seconds if seconds > 0 else 0.0,
        "latency_ms": summarize(run["deliver_ms"]),
        "send_text_ms": summarize(run["commit_ms"]),
        "loadgen_cpu_s": run["cpu"],
        "server_cpu_per_1000_msgs_s": usage["server_cpu_s"] / max(1, delivered) * 1000,
        **usage,
    }
