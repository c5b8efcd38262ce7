"""MT-Bench judge prompts: FastChat's ``judge_prompts.jsonl``, or the handbook's own.

FastChat's file (``fastchat/llm_judge/data/judge_prompts.jsonl``) holds the prompts GPT-4 judges
with: ``single-v1`` and ``single-math-v1`` (with a reference answer) for one turn, their
``-multi-turn`` variants for the second turn, and pairwise prompts such as ``pair-v2``; each row has
``name``, ``type``, ``system_prompt``, ``prompt_template`` and ``output_format``. The handbook
ships prompts of its own wording with the same fields and placeholders, so that either drops in.
"""

from __future__ import annotations

from ..core.data import read_jsonl

# Judge prompts of the handbook's own wording, with FastChat's names, fields and placeholders.
_RATE = ('When you have explained your view, rate the response from 1 to 10, written exactly as "[[rating]]", '
         'for example "Rating: [[5]]".')
_SINGLE_SYSTEM_MULTI = ("You are an impartial judge of an AI assistant's reply. {focus} Judge only the assistant's "
                        "answer to the second user question. Explain briefly, then rate. " + _RATE)
# The handbook's prompts carry their own names (``handbook-single-v1``, ...), so that judgment files made with
# them never pass for FastChat runs; each fills the slot of the FastChat prompt of the same name after the prefix.
HANDBOOK_PREFIX = "handbook-"
HANDBOOK_JUDGE_PROMPTS = [
    {"name": HANDBOOK_PREFIX + "single-v1", "type": "single", "system_prompt": "You are a helpful assistant.",
     "prompt_template": "[Instruction]\nYou are an impartial judge of an AI assistant's reply to the question below. "
                        "Weigh helpfulness, relevance, accuracy, depth and how well it follows the instruction. "
                        "Explain briefly, then rate. " + _RATE +
                        "\n\n[Question]\n{question}\n\n[The Start of Assistant's Answer]\n{answer}\n"
                        "[The End of Assistant's Answer]",
     "description": "Prompt for general questions", "category": "general", "output_format": "[[rating]]"},
    {"name": HANDBOOK_PREFIX + "single-math-v1", "type": "single", "system_prompt": "You are a helpful assistant.",
     "prompt_template": "[Instruction]\nYou are an impartial judge of an AI assistant's reply to the question below. "
                        "Weigh correctness and helpfulness: compare the reply with the reference answer and name "
                        "any mistake. Explain briefly, then rate. " + _RATE +
                        "\n\n[Question]\n{question}\n\n[The Start of Reference Answer]\n{ref_answer_1}\n"
                        "[The End of Reference Answer]\n\n[The Start of Assistant's Answer]\n{answer}\n"
                        "[The End of Assistant's Answer]",
     "description": "Prompt for math questions", "category": "math", "output_format": "[[rating]]"},
    {"name": HANDBOOK_PREFIX + "single-v1-multi-turn", "type": "single",
     "system_prompt": _SINGLE_SYSTEM_MULTI.format(focus="Weigh helpfulness, relevance, accuracy, depth and how well "
                                                        "it follows the instruction."),
     "prompt_template": "<|The Start of Assistant A's Conversation with User|>\n\n### User:\n{question_1}\n\n"
                        "### Assistant A:\n{answer_1}\n\n### User:\n{question_2}\n\n### Assistant A:\n{answer_2}\n\n"
                        "<|The End of Assistant A's Conversation with User|>",
     "description": "Prompt for general questions", "category": "general", "output_format": "[[rating]]"},
    {"name": HANDBOOK_PREFIX + "single-math-v1-multi-turn", "type": "single",
     "system_prompt": _SINGLE_SYSTEM_MULTI.format(focus="Weigh correctness and helpfulness against the reference "
                                                        "answers and name any mistake."),
     "prompt_template": "<|The Start of Reference Answer|>\n\n### User:\n{question_1}\n\n### Reference answer:\n"
                        "{ref_answer_1}\n\n### User:\n{question_2}\n\n### Reference answer:\n{ref_answer_2}\n\n"
                        "<|The End of Reference Answer|>\n\n\n<|The Start of Assistant A's Conversation with User|>\n\n"
                        "### User:\n{question_1}\n\n### Assistant A:\n{answer_1}\n\n### User:\n{question_2}\n\n"
                        "### Assistant A:\n{answer_2}\n\n<|The End of Assistant A's Conversation with User|>",
     "description": "Prompt for math questions", "category": "math", "output_format": "[[rating]]"},
    {"name": HANDBOOK_PREFIX + "pair-v2", "type": "pairwise",
     "system_prompt": "You are an impartial judge comparing two AI assistants' replies to the user question below. "
                      "Choose the one that follows the instruction and answers better; the order of the replies, "
                      "their length and the assistants' names must not sway you. Explain briefly, then give your "
                      'verdict exactly as "[[A]]" if assistant A is better, "[[B]]" if assistant B is better, and '
                      '"[[C]]" for a tie.',
     "prompt_template": "[User Question]\n{question}\n\n[The Start of Assistant A's Answer]\n{answer_a}\n"
                        "[The End of Assistant A's Answer]\n\n[The Start of Assistant B's Answer]\n{answer_b}\n"
                        "[The End of Assistant B's Answer]",
     "description": "Prompt for general questions", "category": "general", "output_format": "[[A]]"},
]


def load_judge_prompts(path=None) -> dict[str, dict]:
    """Judge prompts by FastChat's slot names (``single-v1``, ``single-math-v1``, their ``-multi-turn`` variants,
    ``pair-v2``): FastChat's ``judge_prompts.jsonl`` at ``path``, or the handbook's own (whose ``name`` fields
    keep the ``handbook-`` prefix, and that name is what judgments record)."""
    prompts = read_jsonl(path) if path else HANDBOOK_JUDGE_PROMPTS
    out = {}
    for p in prompts:
        for key in ("name", "type", "system_prompt", "prompt_template", "output_format"):
            if key not in p:
                raise ValueError(f"judge prompt {p.get('name', '?')}: field '{key}' is missing")
        out[p["name"].removeprefix(HANDBOOK_PREFIX)] = p
    return out
