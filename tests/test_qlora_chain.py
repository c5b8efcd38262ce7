"""The one-GPU chain end to end on the CPU at toy size, each step from its recipe and its CLI:

QLoRA dSFT (``recipes/zephyr-7b-beta/sft/config_qlora.yaml``) → merge (``python -m handbook.merge``) →
QLoRA dDPO (``recipes/zephyr-7b-beta/dpo/config_qlora.yaml``) → evaluate (``python -m handbook.evaluate``).

The recipes run as written (4-bit NF4 through bitsandbytes' CPU backend, LoRA, paged AdamW, their global
batches) with only the model, the data and the paths swapped for toy-size ones, two steps each.
"""

import json

import torch
from safetensors.torch import load_file

import handbook.dpo
import handbook.evaluate
import handbook.merge
import handbook.sft
from handbook.core.configs import recipe_path


def test_qlora_dsft_merge_qlora_ddpo_evaluate(toy_base, tmp_path, recipe_data):
    sft_out, merged, dpo_out, eval_out = (tmp_path / n for n in ("sft", "merged", "dpo", "eval"))
    handbook.sft.main(["--config", str(recipe_path("zephyr-7b-beta/sft/config_qlora.yaml")),
                       "--model_name_or_path", str(toy_base), "--dataset_name", recipe_data["sft"],
                       "--output_dir", str(sft_out), "--max_steps", "2"])
    adapter = json.loads((sft_out / "adapter_config.json").read_text())
    assert adapter["r"] == adapter["lora_alpha"] == 16 and adapter["base_model_name_or_path"] == str(toy_base)

    handbook.merge.main(["--adapter_dir", str(sft_out), "--output_dir", str(merged)])
    base_w, merged_w = load_file(toy_base / "model.safetensors"), load_file(merged / "model.safetensors")
    assert set(merged_w) == set(base_w)  # a plain checkpoint: no LoRA matrices left
    moved = [k for k in base_w if not torch.equal(base_w[k].float(), merged_w[k].float())]
    assert any("q_proj" in k for k in moved)  # the dSFT adapter is in the weights
    assert (merged / "tokenizer_config.json").exists()

    handbook.dpo.main(["--config", str(recipe_path("zephyr-7b-beta/dpo/config_qlora.yaml")),
                       "--model_name_or_path", str(merged), "--dataset_name", recipe_data["dpo"],
                       "--output_dir", str(dpo_out), "--max_steps", "2"])
    dpo_adapter = json.loads((dpo_out / "adapter_config.json").read_text())
    assert dpo_adapter["r"] == 128 and dpo_adapter["base_model_name_or_path"] == str(merged)
    log = json.loads((dpo_out / "log_history.json").read_text())
    assert log[-1]["step"] == 2

    handbook.evaluate.main(["mt-bench", "--model", str(dpo_out), "--model_id", "qlora-chain",
                            "--output_dir", str(eval_out), "--max_new_tokens", "8"])
    results = json.loads((eval_out / "results-qlora-chain.json").read_text())
    assert results["judged"] == 160 and 1 <= results["score"] <= 10
    answers = [json.loads(x) for x in (eval_out / "model_answer" / "qlora-chain.jsonl").read_text().splitlines()]
    assert len(answers) == 80 and all(len(a["choices"][0]["turns"]) == 2 for a in answers)
