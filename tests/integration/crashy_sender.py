"""A sender that kills itself (SIGKILL) part way through uploading a file.

Run as: python crashy_sender.py PROFILE_DIR NUMBER PEER FILE FRACTION
Sends FILE to PEER over a slow uplink (each piece of the upload holds the
sender up for a moment, as a slow network would, while encryption runs on its
thread at full speed). Once FRACTION of the upload went out and the file is
stored as a job with its reserved blob, prints `KILLED <message id> <blob id>`
and dies without a chance to clean up; prints `FINISHED` if it never got there.
"""

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

from plauder.client import Client


async def main(profile: Path, number: str, peer: str, path: Path, fraction: float) -> None:
    """Send until the kill."""
    client = Client(profile, number)
    await client.start()

    def progress(done: int, total: int) -> None:
        jobs = client.store.media_jobs(number) if done >= fraction * total else []
        if jobs and jobs[0].media.media:
            print(f"KILLED {jobs[0].id} {jobs[0].media.media}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(0.03)  # the slow uplink: about 30 MB/s in pieces of 1 MiB

    await client.chat(peer).send_file(path, progress=progress)
    print("FINISHED", flush=True)
    await client.close()


if __name__ == "__main__":
    profile, number, peer, path, fraction = sys.argv[1:6]
    asyncio.run(main(Path(profile), number, peer, Path(path), float(fraction)))
