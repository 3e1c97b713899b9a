"""DataLoader reader processes that never outlive the command that started them.

Readers start from a forkserver (zarr keeps an event-loop thread in the parent, which
fork would copy), so their parent is the forkserver, not the training process: PyTorch's
own watchdog and PR_SET_PDEATHSIG both watch the wrong process, and a SIGKILLed run left
its readers (~290 MB each) running. Each reader watches the command's process instead.
"""
from __future__ import annotations

import functools
import os
import threading
import time

POLL_S = 1.0


def reader_options(workers: int) -> dict:
    """DataLoader keyword arguments for ``workers`` reader processes (none for 0)."""
    if not workers:
        return {}
    return {"multiprocessing_context": "forkserver",
            "worker_init_fn": functools.partial(_exit_with, os.getpid())}


def alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (dead, not yet reaped) does not."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:                # no /proc (macOS): ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True


def _exit_with(pid: int, worker_id: int) -> None:
    def watch():
        while alive(pid):
            time.sleep(POLL_S)
        os._exit(0)
    threading.Thread(target=watch, name="vssl-parent-watch", daemon=True).start()
