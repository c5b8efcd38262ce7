"""The package's shape: imports flow one way — toy world → stages → core — with the entry points and the
tier table on top, and no import cycle anywhere in ``handbook/`` (read from the source with ``ast``)."""

import ast
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "handbook"

# Each module's layer, lowest first: a module may import only from its own layer or those below it.
LAYERS = {
    "core": 0,                                             # models, backends, configs, runner, data, distributed
    "dsft": 1, "aif": 1, "ddpo": 1, "evaluation": 1,       # the paper's stages
    "toy": 2,                                              # the toy world: every toy stand-in
    "top": 3,                                              # entry points, the tier table, notebook helpers, tools
}
STAGES = ("dsft", "aif", "ddpo", "evaluation")


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return name[: -len(".__init__")] if name.endswith(".__init__") else name


def layer_of(module: str) -> str:
    parts = module.split(".")
    if parts[-1] == "__main__":
        return "top"  # `python -m handbook.aif` is an entry point
    if len(parts) > 1 and parts[1] in ("core", "toy", *STAGES):
        return parts[1]
    return "top"


def import_graph() -> dict[str, set[str]]:
    """Module → the handbook modules it imports (anywhere in its source, function bodies included)."""
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(f): f for f in files}
    graph = {m: set() for m in modules}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                targets = ([prefix] if node.module else []) + [f"{prefix}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            graph[module] |= {t for t in targets if t in modules and t != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10_000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_checks_find_what_they_look_for():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert layer_of("handbook.core.runner") == "core" and layer_of("handbook.aif.pool") == "aif"
    assert layer_of("handbook.aif.__main__") == "top" and layer_of("handbook.sft") == "top"
    graph = import_graph()
    assert "handbook.core.backends" in graph["handbook.toy.teacher"]  # relative imports are resolved
    assert "handbook.dsft.dialogues" in graph["handbook.toy.teacher"]


def test_no_import_cycle_in_the_package():
    assert cycles(import_graph()) == []


def test_imports_flow_one_way():
    wrong = [f"{m} ({layer_of(m)}) imports {t} ({layer_of(t)})"
             for m, targets in import_graph().items() for t in targets
             if LAYERS[layer_of(t)] > LAYERS[layer_of(m)]
             or (layer_of(m) in STAGES and layer_of(t) in STAGES and layer_of(m) != layer_of(t)
                 and (layer_of(m), layer_of(t)) not in STAGE_ORDER)]
    assert wrong == []


# A later stage may use an earlier one's code (dDPO validates AIF's triples); never the reverse.
STAGE_ORDER = {("ddpo", "aif")}


def test_every_stage_has_its_own_package():
    for stage in (*STAGES, "core", "toy"):
        assert (PACKAGE / stage / "__init__.py").exists(), stage


def test_an_installed_package_runs_a_packaged_recipe_from_another_directory(tmp_path):
    """``pip install .`` (not editable) into a fresh venv, then the SFT CLI on a recipe of the package."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False, system_site_packages=False).create(env_dir)
    # The new venv sees this environment's installed stack through a .pth file, but not the checkout.
    site = subprocess.run([str(env_dir / "bin" / "python"), "-c", "import site; print(site.getsitepackages()[0])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    ours = [p for p in sys.path if p.endswith("site-packages")]
    Path(site, "stack.pth").write_text("\n".join(ours) + "\n")
    source = tmp_path / "source"  # a copy: building writes build/ beside the sources
    shutil.copytree(ROOT / "handbook", source / "handbook", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                              "--target", site, str(source)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    where = subprocess.run([str(env_dir / "bin" / "python"), "-c", "import handbook; print(handbook.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True).stdout
    assert str(ROOT) not in where and site in where  # the installed copy, not the checkout
    run = subprocess.run([str(env_dir / "bin" / "python"), "-m", "handbook.sft", "--config", "recipes/toy/sft/config.yaml",
                          "--max_steps", "2", "--eval_strategy", "no", "--output_dir", str(tmp_path / "out")],
                         cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "out" / "model.safetensors").exists()
