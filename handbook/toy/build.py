"""Build (once) and cache the toy world's tokenizer and base model.

``toy_base_path()`` returns a directory that ``AutoTokenizer`` and ``AutoModelForCausalLM`` load
like any hub checkpoint: a byte-level BPE tokenizer trained on the toy corpus, carrying the Zephyr
chat template, and a tiny randomly initialised Mistral-architecture model. The directory's name
holds a fingerprint of everything that goes into it (the world's corpus, the sizes, the seed), so
a changed world is rebuilt and an unchanged one is reused by every notebook, CLI and test.

The base is *not* pretrained: a probe on this stack found that pretraining the tiny base on plain
toy facts made dSFT worse (it stopped copying names from the prompt) and dDPO go backwards, so the
toy base is the random initialisation and dSFT teaches both the dialogue format and the tasks.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from ..core.chat_templates import ZEPHYR_CHAT_TEMPLATE
from . import world

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>")


@dataclass(frozen=True)
class ToyModelConfig:
    """Sizes of the toy tokenizer and model (a Mistral architecture, ~0.6 M parameters)."""

    vocab_size: int = 1536  # an upper bound: the trainer stops when every merge is made (~1,260)
    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 256
    seed: int = 0


def default_cache_dir() -> Path:
    """``$HANDBOOK_CACHE``, else ``~/.cache/zephyr-handbook``."""
    return Path(os.environ.get("HANDBOOK_CACHE", Path.home() / ".cache" / "zephyr-handbook"))


def toy_corpus() -> list[str]:
    """Every text the toy world can produce: prompts, follow-ups and replies in every style."""
    rng = random.Random(0)
    lines = []
    for p in world.all_prompts():
        lines.append(p.text)
        lines.append(p.follow_up_text())
        core = p.task.answer(p.item)
        for follow in (True, False):
            for filler in world.FILLERS:
                lines.append(world.apply_style(core, p.constraint, follow, ramble=rng.random() < 0.3, filler=filler))
        lines.append(p.task.wrong_answer(p.item, rng))
        lines.append(f"{world.DISCLAIMERS[len(lines) % 2]} {core[0].lower()}{core[1:]}")
    lines = list(dict.fromkeys(lines))  # de-duplicated, order kept
    # A lexicon, so that every word of the world becomes one token whichever way it is preceded
    # (after a space, a newline or a quote): a probe found held-out copying and recall far better
    # with whole-word tokens than with words split into pieces.
    lexicon = sorted({w for line in lines for w in re.findall(r"[A-Za-z]+|\d+", line)})
    lines += [f"{w} '{w}' {w}" for w in lexicon for _ in range(8)]
    return lines


def train_tokenizer(config: ToyModelConfig = ToyModelConfig(), corpus: list[str] | None = None):
    """A byte-level BPE tokenizer trained on the toy corpus, with the Zephyr chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus if corpus is not None else toy_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        additional_special_tokens=["<|system|>", "<|user|>", "<|assistant|>"],
        chat_template=ZEPHYR_CHAT_TEMPLATE,
        padding_side="right",
        model_max_length=config.max_position_embeddings,
    )


def init_model(tokenizer, config: ToyModelConfig = ToyModelConfig()):
    """A randomly initialised Mistral-architecture causal LM sized by ``config``."""
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    mcfg = MistralConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        max_position_embeddings=config.max_position_embeddings,
        sliding_window=None,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(config.seed)
    model = MistralForCausalLM(mcfg)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def fingerprint(config: ToyModelConfig, corpus: list[str]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(asdict(config), sort_keys=True).encode())
    h.update(ZEPHYR_CHAT_TEMPLATE.encode())
    for line in corpus:
        h.update(line.encode() + b"\n")
    return h.hexdigest()[:12]


def toy_base_dir(config: ToyModelConfig = ToyModelConfig(), cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the toy base of ``config`` lives on this machine, built or not (pure: nothing is built)."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / f"toy-base-{_base_fingerprint(config)}"


@functools.lru_cache(maxsize=None)
def _base_fingerprint(config: ToyModelConfig) -> str:
    """:func:`fingerprint` of ``config`` on the toy corpus, which is fixed for the process: computed once (~70 ms),
    not at every name resolution."""
    return fingerprint(config, toy_corpus())


def toy_base_path(config: ToyModelConfig = ToyModelConfig(), cache_dir: str | os.PathLike | None = None) -> Path:
    """The build step of the toy base (tokenizer + model): its directory (:func:`toy_base_dir`), built here on first
    use (under a second), then reused."""
    def build(tmp: Path) -> None:
        tokenizer = train_tokenizer(config, toy_corpus())
        init_model(tokenizer, config).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "toy_config.json").write_text(json.dumps(asdict(config), indent=2))

    return build_once(toy_base_dir(config, cache_dir), build)


def build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """Run ``build(tmp_dir)`` unless ``target`` is already built, then move the result into place.

    The build happens in a temporary directory beside ``target`` and is renamed atomically, with a
    ``BUILD_OK`` marker, so a killed build leaves nothing half-written and two racing processes
    end with one complete copy.
    """
    if (target / "BUILD_OK").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        build(tmp)
        (tmp / "BUILD_OK").write_text("ok\n")
        try:
            os.replace(tmp, target)  # atomic; fails if another process finished first
        except OSError:
            if not (target / "BUILD_OK").exists():
                shutil.rmtree(target, ignore_errors=True)
                os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
