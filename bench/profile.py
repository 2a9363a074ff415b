"""Optional py-spy sampling of the server during a measured phase (`--profile`)."""

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from bench.workers import Args

_LINE = re.compile(r"^(.*) (\d+)$")
_FRAME_LINE = re.compile(r":\d+\)$")
TOP = 25


def py_spy() -> str | None:
    """The py-spy executable (next to this Python, or on PATH), if installed."""
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


class Profiler:
    """Records server processes with `py-spy record --format raw` until stopped.

    One file per process (`<path>` for one, `<stem>-<pid><suffix>` for several); the
    summary adds them up.
    """

    def __init__(self, pids: list[int], path: Path, rate: int = 250) -> None:
        self.pids = pids
        self.paths = (
            [path] if len(pids) == 1 else [path.with_stem(f"{path.stem}-{pid}") for pid in pids]
        )
        self.rate = rate
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> bool:
        """Start sampling; False if py-spy is not installed."""
        exe = py_spy()
        if exe is None:
            print("bench: py-spy not found (pip install py-spy): not profiling", flush=True)
            return False
        for pid, path in zip(self.pids, self.paths, strict=True):
            path.parent.mkdir(parents=True, exist_ok=True)
            cmd = [exe, "record", "--pid", str(pid), "--format", "raw", "--threads"]
            cmd += ["--rate", str(self.rate), "--nonblocking", "-o", str(path)]
            self._procs.append(
                subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        return True

    def stop(self) -> Args:
        """Stop sampling (SIGINT makes py-spy write its file); the top functions."""
        if not self._procs:
            return {}
        for proc in self._procs:
            proc.send_signal(signal.SIGINT)
        for proc in self._procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self._procs = []
        return summarize_raw([p for p in self.paths if p.exists()])


def _function(frame: str) -> str:
    """`name (file:line)` without the line, and the file without its directories."""
    frame = _FRAME_LINE.sub(")", frame)
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1]}" if where else name


def summarize_raw(paths: list[Path]) -> Args:
    """Samples per thread, and the top functions by self and by inclusive samples."""
    self_samples: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    lines = [line for path in paths for line in path.read_text(errors="replace").splitlines()]
    for line in lines:
        match = _LINE.match(line)
        if not match:
            continue
        stack, count = match.group(1).split(";"), int(match.group(2))
        total += count
        threads[stack[0]] += count
        frames = [_function(f) for f in stack[1:]] or [stack[0]]
        self_samples[frames[-1]] += count
        for fn in set(frames):
            inclusive[fn] += count

    def top(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(fn, round(100 * n / total, 1)) for fn, n in counter.most_common(TOP)]

    return {
        "samples": total,
        "threads_pct": top(threads) if total else [],
        "self_pct": top(self_samples) if total else [],
        "inclusive_pct": top(inclusive) if total else [],
    }
