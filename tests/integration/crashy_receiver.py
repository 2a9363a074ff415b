"""A receiver that stores messages but delays its acks, to be killed before acking.

Run as: python crashy_receiver.py PROFILE_DIR NUMBER
Prints `GOT <message id>` for each message, then waits (acks are 60 s away).
"""

import asyncio
import sys
from pathlib import Path

from plauder.client import Client, MessageReceived


async def main(profile: Path, number: str) -> None:
    """Receive and print until killed."""
    client = Client(profile, number, ack_delay=60.0)
    await client.start()
    async for ev in client.events():
        if isinstance(ev, MessageReceived):
            print(f"GOT {ev.id}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2]))
