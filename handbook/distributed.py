"""Running the same code in several processes (``accelerate launch``).

* :func:`world_size`, :func:`is_main_process` read the launcher's environment without starting
  anything, so single-process use stays free of ``torch.distributed``.
* :func:`main_process_first` lets rank 0 build shared files (toy data, caches) before the others
  read them, so no two processes write the same file.
* :class:`ShardedBackend` splits a batch of conversations across the processes
  (``accelerate``'s ``split_between_processes``), lets each generate its share with its own copy of
  the model, and gathers the replies back into the original order on every process — no row lost,
  none duplicated.
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


class ShardedBackend:
    """Data-parallel generation: each process answers its slice of the batch; all get every reply."""

    def __init__(self, backend):
        self.backend = backend
        self.name = backend.name

    def chat(self, conversations, sampling, return_exceptions: bool = False):
        from .backends import chat_with_errors

        def local(convs):
            return chat_with_errors(self.backend, convs, sampling) if return_exceptions else self.backend.chat(convs, sampling)

        if world_size() == 1:
            return local(conversations)
        from accelerate import PartialState
        from accelerate.utils import gather_object

        state = PartialState()
        indexed = list(enumerate(conversations))
        with state.split_between_processes(indexed) as shard:
            replies = local([c for _, c in shard]) if shard else []
            mine = [(i, r) for (i, _), r in zip(shard, replies)]
        gathered = gather_object(mine)
        by_index = dict(gathered)
        if sorted(by_index) != list(range(len(conversations))):
            raise RuntimeError(f"sharded generation returned {len(by_index)} of {len(conversations)} replies")
        return [by_index[i] for i in range(len(conversations))]
