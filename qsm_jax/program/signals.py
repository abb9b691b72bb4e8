"""SIGINT and SIGTERM during training: the loop checkpoints and stops; a second signal kills."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class Interrupted(Exception):
    """SIGINT or SIGTERM stopped the run; ``str()`` says whether a checkpoint was saved and how to resume."""

    def __init__(self, env_step: int, last_checkpoint: int | None, saved: bool):
        self.env_step, self.last_checkpoint, self.saved = env_step, last_checkpoint, saved
        if saved:
            text = f"interrupted at env step {env_step}; checkpoint saved there: re-run the same command to resume"
        else:
            where = f"step {last_checkpoint}" if last_checkpoint else "the start"
            text = (
                f"interrupted at env step {env_step}; no checkpoint saved (the env state is not saved with "
                f"checkpoints here): re-run the same command to resume from {where}"
            )
        super().__init__(text)


@contextlib.contextmanager
def stop_requests() -> Iterator[list]:
    """Yields a list that SIGINT or SIGTERM append their number to (the loop then checkpoints and
    stops); a second signal raises KeyboardInterrupt. The previous handlers come back on exit. Off
    the main thread (where handlers cannot be set) the list stays empty."""
    requests: list = []
    if threading.current_thread() is not threading.main_thread():
        yield requests
        return

    def handler(signum, frame):
        if requests:
            raise KeyboardInterrupt
        requests.append(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requests
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
