"""The CPU benchmarks (bench/) at tiny sizes: what they compare is compared correctly.

Not timed tests: the speed figures come from ``make bench``. These check that the runs being
compared are the same run (same tokens, same reference log-probs, same loss where it must be) and
that the measurements mean what they say.
"""

import json
import sys
import tempfile

import pytest
import torch

pytestmark = pytest.mark.slow  # the benchmarks themselves, at tiny sizes

@pytest.fixture(scope="module")
def random_toy(toy_tokenizer):
    from handbook.tools.synthetic import random_mistral

    with tempfile.TemporaryDirectory() as tmp:
        random_mistral(tmp, toy_tokenizer, "toy", seed=0)
        yield tmp


def test_synthetic_lengths_follow_the_asked_spread(toy_tokenizer):
    from handbook.tools.synthetic import lognormal_lengths, synthetic_pairs

    lengths = lognormal_lengths(20_000, 900, 0.6, seed=1)
    assert lengths.mean() == pytest.approx(900, rel=0.03)
    assert lengths.std() / lengths.mean() == pytest.approx(0.6, rel=0.05)
    pairs = synthetic_pairs(toy_tokenizer, 4, prompt_mean=10, completion_mean=20, seed=0)
    assert set(pairs.column_names) == {"prompt", "chosen", "rejected"}
    text = pairs[0]["chosen"][0]["content"]
    assert len(toy_tokenizer(text, add_special_tokens=False)["input_ids"]) == len(text.split())  # one token a word


def test_dpo_bench_compares_the_same_run(toy_tokenizer, random_toy, load_bench):
    bench = load_bench("bench_dpo")
    from handbook.tools.synthetic import synthetic_pairs

    data = dict(bench.DATA["toy"], pairs=32, batch_size=4)
    train = synthetic_pairs(toy_tokenizer, 32, 12, 24, 0.6, 256, seed=0)
    heldout = synthetic_pairs(toy_tokenizer, 8, 12, 24, 0.6, 256, seed=9)
    runs = {v: bench.run_variant(v, str(random_toy), toy_tokenizer, train, heldout, data, epochs=2)
            for v in ("trl-default", "precompute", "handbook-padded", "handbook", "handbook-random")}
    default, precompute, padded, handbook = (runs[v] for v in ("trl-default", "precompute", "handbook-padded", "handbook"))
    # a precomputed reference is the live reference: the same batches give the same losses
    assert precompute["losses"] == pytest.approx(default["losses"], abs=1e-4)
    assert precompute["heldout_loss"] == pytest.approx(default["heldout_loss"], abs=1e-4)
    # grouping reorders the same pairs: one epoch's tokens are the same, fewer of them padding
    assert len(padded["losses"]) == len(default["losses"]) == 2 * 8
    assert padded["real_token_share"] > default["real_token_share"]
    assert 0 < default["real_token_share"] < 1 and padded["peak_memory_mb"] >= 0
    # the live reference forward shows as processed tokens of its own: precompute processes fewer
    assert precompute["processed_tokens"] < default["processed_tokens"]
    # packed rows: the shipped trainer packs, computes no padding, and the same batches give the same losses
    assert handbook["packed_models"] == 1 and padded["packed_models"] == 0 == default["packed_models"]
    assert handbook["real_token_share"] == 1.0 and padded["real_token_share"] < 0.95
    assert handbook["processed_tokens"] < padded["processed_tokens"]
    assert handbook["losses"] == pytest.approx(padded["losses"], abs=1e-5)
    assert handbook["heldout_loss"] == pytest.approx(padded["heldout_loss"], abs=1e-5)
    assert handbook["cpu_s"] > 0 and handbook["load_average_before"] >= 0
    # packed rows on TRL's own random batches: TRL's losses, step by step
    assert runs["handbook-random"]["real_token_share"] == 1.0
    assert runs["handbook-random"]["losses"] == pytest.approx(default["losses"], abs=1e-4)
    summary = bench._summarise("toy", 1, data, 2, list(runs.values()))
    by_name = {v["variant"]: v for v in summary["variants"]}
    assert by_name["trl-default"]["speedup"] == 1.0 and by_name["precompute"]["epoch_loss_diff_in_se"] < 1e-2
    assert summary["speedup_vs_trl_default"] == by_name["handbook"]["speedup"]
    assert by_name["handbook"]["step_loss_max_diff_vs_padded"] < 1e-5
    assert by_name["handbook-random"]["step_loss_max_diff_vs_trl"] < 1e-4


def test_dpo_bench_interleaves_the_variants(load_bench):
    bench = load_bench("bench_dpo")
    assert bench.interleaved([0, 1, 2], ["a", "b", "c"]) == [(0, ["a", "b", "c"]), (1, ["c", "b", "a"]),
                                                             (2, ["a", "b", "c"])]
    assert list(bench.VARIANTS) == ["trl-default", "precompute", "handbook-padded", "handbook", "handbook-random"]
    assert bench.DATA["medium"]["variants"] == ("trl-default", "handbook-padded", "handbook", "handbook-random")


def test_sft_bench_packing_fills_rows(toy_tokenizer, monkeypatch, load_bench):
    bench = load_bench("bench_sft")
    monkeypatch.setitem(bench.DATA, "toy", dict(bench.DATA["toy"], dialogues=192, mean_tokens=48, max_length=256))
    result = bench.run(sizes=["toy"], verbose=False)
    runs = {r["variant"]: r for r in result["sizes"]["toy"]["runs"]}
    assert result["sft_padding_efficiency_packed"] >= 0.97
    assert runs["packed"]["row_fill"] > 0.9
    assert runs["grouped"]["real_token_share"] > runs["padded"]["real_token_share"]
    assert runs["packed"]["real_tokens"] == runs["padded"]["real_tokens"]  # the same dialogues, all of them


def test_packed_rows_keep_attention_within_each_dialogue(random_toy):
    """Padding-free packing on the CPU (sdpa): position ids restarting at 0 mark where a dialogue begins.

    Only without a KV cache (``use_cache=False``, as TRL's SFTTrainer calls the model): with one,
    transformers does not look for packed sequences, and attention would leak across dialogues.
    """
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(random_toy).eval()
    a, b = torch.randint(10, 1000, (1, 20)), torch.randint(10, 1000, (1, 13))
    with torch.no_grad():
        alone = torch.cat([model(input_ids=a).logits, model(input_ids=b).logits], dim=1)
        positions = torch.cat([torch.arange(20), torch.arange(13)])[None]
        packed = model(input_ids=torch.cat([a, b], 1), position_ids=positions, use_cache=False).logits
        leaky = model(input_ids=torch.cat([a, b], 1), position_ids=positions, use_cache=True).logits
    assert torch.allclose(packed, alone, atol=1e-4)
    assert not torch.allclose(leaky[:, 20:], alone[:, 20:], atol=1e-2)


def test_tutorial_cell_profile_reads_papermill_durations(tmp_path, load_bench):
    bench = load_bench("bench_tutorial")
    nb = {"cells": [
        {"cell_type": "markdown", "source": ["# x"], "metadata": {}},
        {"cell_type": "code", "source": ["import torch\n", "train(model)"], "metadata": {"papermill": {"duration": 2.5}}},
        {"cell_type": "code", "source": ["x = 1"], "metadata": {}}]}
    (tmp_path / "nb.ipynb").write_text(json.dumps(nb))
    cells = bench.cell_profile(tmp_path / "nb.ipynb")
    assert cells == [{"cell": 1, "seconds": 2.5, "code": "train(model)"}, {"cell": 2, "seconds": 0.0, "code": "x = 1"}]


def test_run_all_writes_the_headline_figures(tmp_path, monkeypatch, load_bench):
    run_all = load_bench("run_all")
    fake = {"dpo": {"dpo_run_speedup_vs_trl_default": 1.6, "dpo_real_token_share": 0.8},
            "sft": {"sft_padding_efficiency_packed": 1.0}, "generation": {"generation_batched_speedup": 9.0},
            "tutorial": {"tutorial_seconds": 120.0}, "setup": {"setup_to_first_notebook_seconds": 150.0}}
    for name, module in (("dpo", "bench_dpo"), ("sft", "bench_sft"), ("generation", "bench_generation"),
                         ("tutorial", "bench_tutorial"), ("setup", "bench_setup")):
        stub = load_bench(module)
        monkeypatch.setattr(stub, "run", lambda result=fake[name], **kw: dict(result))
        monkeypatch.setitem(sys.modules, module, stub)  # what `import bench_dpo` in run_all finds
    monkeypatch.setattr(sys.modules["bench_generation"], "format_tables", lambda result: "")
    out = tmp_path / "latest.json"
    run_all.main(["--out", str(out)])
    written = json.loads(out.read_text())
    for key in ("dpo_run_speedup_vs_trl_default", "dpo_real_token_share", "sft_padding_efficiency_packed",
                "generation_batched_speedup", "tutorial_seconds", "setup_to_first_notebook_seconds"):
        assert key in written
    assert written["machine"]["cores"] >= 1 and written["benchmarks"]["dpo"]["bench_seconds"] >= 0


def test_setup_bench_clones_the_working_tree_and_merges_its_result(tmp_path, load_bench):
    """bench_setup measures the code in front of you: a clone of HEAD with the uncommitted changes and
    untracked files laid over it; its figure is merged into latest.json without touching the others."""
    import subprocess

    bench = load_bench("bench_setup")
    dest = tmp_path / "clone"
    overlay = bench.clone(dest)
    repo = bench.REPO
    changed = subprocess.run(["git", "diff", "HEAD", "--name-only"], cwd=repo, text=True,
                             stdout=subprocess.PIPE, check=True).stdout.split()
    assert overlay["changed"] == len(changed)
    for name in changed + ["bench/bench_setup.py", "requirements-dev.txt"]:
        if (repo / name).exists():
            assert (dest / name).read_bytes() == (repo / name).read_bytes(), name
    requirements = (dest / "requirements.txt").read_text().splitlines()
    assert not any(line.startswith("llama-cpp-python") for line in requirements)  # nothing to compile
    assert any(line.startswith("llama-cpp-python[server]==") for line in (dest / "requirements-dev.txt").read_text().splitlines())
    out = tmp_path / "latest.json"
    out.write_text(json.dumps({"tutorial_seconds": 88.0, "benchmarks": {"tutorial": {"x": 1}}}))
    bench.merge_into(out, {"setup_to_first_notebook_seconds": 150.0, "make_install_seconds": 60.0})
    merged = json.loads(out.read_text())
    assert merged["tutorial_seconds"] == 88.0 and merged["benchmarks"]["tutorial"] == {"x": 1}
    assert merged["setup_to_first_notebook_seconds"] == 150.0
    assert merged["benchmarks"]["setup"]["make_install_seconds"] == 60.0


def test_make_tutorial_installs_nothing_that_compiles():
    """`make tutorial` / `make lab` install requirements.txt only; `make test` / `make bench` add requirements-dev.txt."""
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    def plan(target):  # what make would run with no venv yet (dry run, a venv path that does not exist)
        return subprocess.run(["make", "-n", target, "VENV=/nonexistent/venv"], cwd=repo, text=True,
                              stdout=subprocess.PIPE, check=True).stdout
    for target in ("tutorial", "lab"):
        assert "requirements.txt" in plan(target) and "requirements-dev.txt" not in plan(target)
    for target in ("test", "bench"):
        assert "-r requirements-dev.txt" in plan(target)
    assert "make test" in (repo / ".ci" / "run").read_text()


def test_medium_size_is_configurable_from_the_command_line(tmp_path, load_bench):
    from handbook.tools.synthetic import MODEL_SIZES, model_size, parse_size_overrides

    assert parse_size_overrides("hidden_size=64, num_hidden_layers=1") == {"hidden_size": 64, "num_hidden_layers": 1}
    assert model_size("medium", {"num_hidden_layers": 3}) == {**MODEL_SIZES["medium"], "num_hidden_layers": 3}
    with pytest.raises(ValueError, match="key=integer"):
        parse_size_overrides("hidden_size=big")
    with pytest.raises(ValueError, match="unknown model size fields"):
        model_size("medium", {"hidden": 64})
    out = tmp_path / "sft.json"
    load_bench("bench_sft").main(["--sizes", "medium", "--variants", "padded", "--dialogues", "8", "--out", str(out),
                              "--medium", "hidden_size=64,intermediate_size=128,num_hidden_layers=1,"
                                          "num_attention_heads=4,num_key_value_heads=2"])
    result = json.loads(out.read_text())
    assert result["sizes"]["medium"]["parameters"] < 500_000  # the small override, not the 20 M default


def test_make_builds_the_llama_cpp_server_portably():
    """`make install-dev` builds llama-cpp-python from source for a baseline ISA (no native build, no AVX-512, no AMX:
    an AMX build died in the server's worker thread) into a wheel of its own, bypassing pip's wheel cache, and
    installs exactly that wheel."""
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    plan = subprocess.run(["make", "-n", "install-dev", "VENV=/nonexistent/venv", "HANDBOOK_CACHE=/nonexistent/cache"],
                          cwd=repo, text=True, stdout=subprocess.PIPE, check=True).stdout
    for flag in ("-DGGML_NATIVE=OFF", "-DGGML_AVX512=OFF", "-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF",
                 "-DGGML_AMX_BF16=OFF", "--no-binary llama-cpp-python", "--no-cache-dir"):
        assert flag in plan, flag
    assert plan.count("--only-binary llama-cpp-python --find-links /nonexistent/cache/wheels/llama-cpp-python-") >= 1
    assert "--force-reinstall" in plan  # a native build already in the venv is replaced


def test_claims_bench_fingerprints_code_not_prose_and_writes_the_readme_tables(tmp_path, load_bench, monkeypatch):
    import shutil

    bench = load_bench("bench_claims")
    root = tmp_path / "repo"
    shutil.copytree(bench.ROOT / "handbook", root / "handbook", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(bench.ROOT / "notebooks", root / "notebooks")
    monkeypatch.setattr(bench, "ROOT", root)
    before = bench.fingerprint()
    nb_path = root / "notebooks" / "04_ddpo.ipynb"
    nb = json.loads(nb_path.read_text())
    prose = next(c for c in nb["cells"] if c["cell_type"] == "markdown")
    prose["source"].append("\nMore prose.")
    nb_path.write_text(json.dumps(nb))
    assert bench.fingerprint() == before            # prose changes no result
    module = root / "handbook" / "toy" / "claims.py"
    source = module.read_text()
    module.write_text(source.replace('"""What the toy notebooks claim', '"""What the toy notebooks (documented) claim', 1)
                      .replace("SPREAD_K = 4.0", "SPREAD_K = 4.0  # a comment"))
    assert bench.fingerprint() == before            # nor do docstrings and comments
    module.write_text(source)
    code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    code["source"].append("\nbetas = [0.1]")
    nb_path.write_text(json.dumps(nb))
    assert bench.fingerprint() != before            # code does
    assert bench.capability("default") == "DEFAULT"

    from handbook.toy import claims

    readme = tmp_path / "README.md"
    results = ("aif-results", "ddpo-results", "table3-results")
    readme.write_text("intro\n<!-- claims-table:begin (bench/bench_claims.py writes this) -->\nold\n"
                      "<!-- claims-table:end -->\nmiddle\n<!-- reported-table:begin (bench/bench_claims.py writes this) -->"
                      "\n<!-- reported-table:end -->\n"
                      + "".join(f"<!-- {b}:begin (bench/bench_claims.py writes this) -->\nold\n<!-- {b}:end -->\n"
                                for b in results) + "end\n")
    stats = claims.describe([0.8, 0.9, 1.0, 1.1, 1.2])
    measured = {"claims": {c.key: stats for c in claims.CLAIMS}, "reported": {r.key: stats for r in claims.REPORTED}}
    bench.write_readme_tables(measured, readme)
    text = readme.read_text()
    assert text.startswith("intro\n") and "middle" in text and text.endswith("end\n") and "\nold\n" not in text
    assert claims.markdown_table(measured) in text and claims.reported_table(measured) in text
    assert "| 04 | dSFT + dDPO scores above dSFT" in text
    assert all(block in text for block in claims.readme_results(measured).values())
    readme.write_text("intro\n")
    with pytest.raises(ValueError, match="no <!-- claims-table:begin"):
        bench.write_readme_tables(measured, readme)
