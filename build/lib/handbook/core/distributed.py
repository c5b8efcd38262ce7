"""Running the same code in several processes (``accelerate launch``).

* :func:`world_size`, :func:`is_main_process` read the launcher's environment without starting
  anything, so single-process use stays free of ``torch.distributed``.
* :func:`main_process_first` lets rank 0 build shared files (toy data, caches) before the others
  read them, so no two processes write the same file.
* :func:`finish` ends a launched run cleanly.

Data-parallel generation (``ShardedBackend``) is in :mod:`handbook.core.backends`.
"""

from __future__ import annotations

import contextlib
import os


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


@contextlib.contextmanager
def main_process_first():
    """Rank 0 runs the block first, then the others (a no-op in a single process)."""
    if world_size() == 1:
        yield
        return
    from accelerate import PartialState

    with PartialState().main_process_first():
        yield


def finish(trainer) -> None:
    """End a launched run cleanly: every rank waits for the others, then leaves the process group.

    Without it each process tears the group down at interpreter exit, in no set order; on the CPU
    (gloo) a rank exiting while another still holds the group was seen to abort the launch.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        trainer.accelerator.wait_for_everyone()
        dist.destroy_process_group()
