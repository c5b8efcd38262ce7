"""Output folders a run may write into, and names that stay inside them.

Every command writes into an ``output_dir``. Before any work it *claims* the folder (:func:`claim_output_dir`):

* a folder that must never receive a run's files is refused whatever the flags — the filesystem's root, the home
  directory, the current directory (the checkout: a model saved there overwrites its ``README.md``), a file;
* a folder that exists and holds files this handbook did not write (no ``.handbook_output.json``, the marker a claim
  leaves) is refused unless the user passes ``--overwrite_output_dir`` (transformers' convention): a training run
  would overwrite its ``README.md`` and rotate away its ``checkpoint-*`` folders (``save_total_limit``);
* a folder another kind of run made (its marker names another ``what``: a dSFT model folder given as a dDPO
  ``output_dir``, which is also the dDPO reference) is refused the same way;
* the handbook's own folder of the same kind is this run's to write again (a rerun, a resume).

Names a user gives that become file names (``--model_id``) are confined to :func:`check_safe_name`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Iterator

from .runner import RunError, exclusive_lock
from .secrets import redact

MARKER = ".handbook_output.json"
#: What a claim ignores when it decides whether a folder is empty: locks and the marker itself.
_OWN = {MARKER, ".lock"}
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


class OutputRefused(RunError):
    """An output folder (or a name inside it) a run must not write into; the message says why and what to do."""


def check_safe_name(value: str, key: str) -> str:
    """``value`` if it can be one file name inside an output folder (letters, digits, ``. _ + -``, not starting
    with a dot, at most 128 characters): no ``/``, no ``..``, nothing that leaves the folder."""
    if not _SAFE_NAME.match(value or "") or value in (".", ".."):
        raise OutputRefused(f"`{key}`: invalid value {value!r}; it names files inside the output folder, so it may "
                            "hold only letters, digits and . _ + - (no '/', not starting with '.')")
    return value


def _forbidden(path: Path) -> str | None:
    resolved = path.resolve()
    if resolved == Path(resolved.anchor):
        return "the filesystem's root"
    if resolved == Path.home().resolve():
        return "your home directory"
    if resolved == Path.cwd().resolve():
        return "the current directory"
    if resolved.exists() and not resolved.is_dir():
        return "a file, not a folder"
    return None


def claim_output_dir(output_dir: str | os.PathLike, what: str, overwrite: bool = False,
                     key: str = "output_dir") -> Path:
    """Make ``output_dir`` this run's (see the module's rules) and return it, created, with its marker naming
    ``what`` (``"dSFT model"``, ``"AIF data"``, ...). Raises :class:`OutputRefused` before anything is written."""
    from .distributed import is_main_process

    path = Path(output_dir)
    reason = _forbidden(path)
    if reason:
        raise OutputRefused(f"`{key}`: {str(path)!r} is {reason}; a run writes many files into its output folder, "
                            "so give it a folder of its own (e.g. runs/<name>)")
    marker = path / MARKER
    if path.is_dir():
        entries = sorted(p.name for p in path.iterdir() if p.name not in _OWN)
        owner = None
        if marker.is_file():
            try:
                owner = json.loads(marker.read_text()).get("what")
            except (ValueError, AttributeError):
                owner = None
        if entries and owner != what and not overwrite:
            shown = ", ".join(entries[:5]) + (f", ... ({len(entries)} in all)" if len(entries) > 5 else "")
            whose = f"the output of another kind of run ({owner})" if owner else "files this handbook did not write"
            raise OutputRefused(
                f"`{key}`: {path} already holds {whose}: {shown}. A run would overwrite them (and a training run "
                "rotates checkpoint-* folders away). Give another output folder, or pass --overwrite_output_dir "
                "to write into this one anyway.")
    if is_main_process():
        path.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"what": what, "claimed": time.strftime("%Y-%m-%d %H:%M:%S"),
                                      "command": redact(" ".join(sys.argv))[:300]}, indent=1))
    return path


_claimed: set[str] = set()  # output folders this process holds (a claim inside a claim is the same run)

OVERWRITE_HELP = ("Write into an output_dir that holds files this handbook did not write (or another kind of run's "
                  "output); without it such a folder is refused before any work (transformers' convention).")


@contextlib.contextmanager
def claimed_output(output_dir: str | os.PathLike, what: str, overwrite: bool = False) -> Iterator[Path]:
    """For a whole run: :func:`claim_output_dir`, then the folder's lock (:func:`~handbook.core.runner.exclusive_lock`
    on ``<output_dir>/.lock``: a second run into it is refused naming this run's pid) until the run ends. A claim
    of a folder this process already holds (``sft.train`` around ``dsft.training.train``) is part of the same run."""
    key = str(Path(output_dir).resolve())
    if key in _claimed:
        yield Path(output_dir)
        return
    path = claim_output_dir(output_dir, what, overwrite)
    with exclusive_lock(path / ".lock", f"the output folder {path}"):
        _claimed.add(key)
        try:
            yield path
        finally:
            _claimed.discard(key)
