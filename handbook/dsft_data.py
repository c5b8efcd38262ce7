"""``python -m handbook.dsft_data``: dSFT dialogues from a teacher, saved with ``save_to_disk``.

    python -m handbook.dsft_data --config my_data.yaml [--key value ...]   # output_dir, seed_prompts, teacher: {...}

Seed prompts from a file (or ``toy``); the teacher from a backend spec (``{type: openai, base_url: ...,
model: ...}``, a local model, or the toy teacher); :func:`handbook.dsft.dialogues.generate_dialogues`
writes the dialogues, resumably.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .core.backends import with_timeout
from .core.configs import check_dataclass, check_time_bounds, parse_config
from .core.outputs import OVERWRITE_HELP, claim_output_dir
from .core.runner import RunPolicy, guarded_run, reported_errors
from .dsft.dialogues import DialogueConfig, generate_dialogue_sets
from .tiers import build_backend, prompts_from


@dataclass
class DsftDataArguments:
    """``python -m handbook.dsft_data``: generate dSFT dialogues and save them with ``save_to_disk``."""

    output_dir: str = field(metadata={"help": "Where the dataset is saved (datasets' save_to_disk)."})
    seed_prompts: str = field(
        default="toy",
        metadata={"help": "'toy' (train-split toy prompts), or a prompt file: .txt (one per line), .jsonl / "
                          ".json (a 'prompt' field per row), .csv (a 'prompt' column)."})
    toy_prompts_per_category: int = field(default=150, metadata={"help": "Toy seed prompts per category."})
    replies_per_prompt: int = field(
        default=1, metadata={"help": "Dialogues per seed prompt, each with its own sampling seed and cache; rows of "
                                     "one prompt share its prompt_id."})
    teacher: dict = field(default_factory=lambda: {"type": "toy"},
                          metadata={"help": "Backend spec of the teacher (see handbook.toy.backends.build_backend)."})
    cache_path: str | None = field(default=None, metadata={"help": "JSONL cache; default <output_dir>.cache.jsonl"})
    num_turns: int = 2
    temperature: float = 0.7
    max_new_tokens: int = 512
    seed: int = 0
    batch_size: int = 32
    timeout: float | None = field(
        default=None, metadata={"help": "Seconds one request to the teacher's endpoint (type openai) may wait for "
                                        "its reply, unless the teacher's spec sets its own `timeout` (default: 60)."})
    max_total_seconds: float | None = field(
        default=None, metadata={"help": "Time bound of the whole run: past it no request is sent or retried and the "
                                        "run stops with an error; what finished is kept (default: none)."})
    allow_cache_reuse: bool = field(
        default=False, metadata={"help": "Reuse the cache even if the teacher or an argument changed (the message of "
                                         "a refused cache says what changed)."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": OVERWRITE_HELP})

    def __post_init__(self):
        check_dataclass(self)
        check_time_bounds(self)


def run(args: DsftDataArguments, progress: bool = True):
    """The dialogues of ``args``, saved to ``output_dir``. The output is locked for the run (``<output_dir>.lock``,
    beside the dataset; a second run into it is refused with this run's pid), each cache by its own lock; the run
    is bounded by ``max_total_seconds``. Calls that got no reply are never cached: the run raises
    :class:`handbook.core.runner.CallsFailed` and saves nothing; a rerun makes exactly the missing calls."""
    output = args.output_dir.rstrip("/")
    claim_output_dir(output, "dSFT dialogues", args.overwrite_output_dir)  # not a folder of other files
    with guarded_run(f"{output}.lock", f"the output {output}", args.max_total_seconds, args.allow_cache_reuse) as policy:
        return _run(args, progress, policy)


def _run(args: DsftDataArguments, progress: bool, policy: RunPolicy):
    prompts = prompts_from(args.seed_prompts, args.toy_prompts_per_category, args.seed)
    teacher = build_backend(with_timeout(args.teacher, args.timeout), deadline=policy.deadline)
    config = DialogueConfig(num_turns=args.num_turns, temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                            seed=args.seed, batch_size=args.batch_size)
    cache = args.cache_path or f"{args.output_dir.rstrip('/')}.cache.jsonl"
    caches = [cache if args.replies_per_prompt == 1 else str(Path(cache).with_name(f"{Path(cache).stem}.{r}"
                                                                                 f"{Path(cache).suffix}"))
              for r in range(args.replies_per_prompt)]  # one cache per set, whatever the name's suffix
    dataset = generate_dialogue_sets(prompts, teacher, config, args.replies_per_prompt, caches, progress=progress,
                                     policy=policy)
    dataset.save_to_disk(args.output_dir)
    return dataset


def main(argv: list[str] | None = None) -> None:
    (args,) = parse_config([DsftDataArguments], argv)
    dataset = run(args)
    print(f"{len(dataset)} dialogues saved to {args.output_dir}")


if __name__ == "__main__":
    with reported_errors():  # an outage, a locked output, a changed teacher: the message, exit status 1
        main()
