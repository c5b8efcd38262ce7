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
    assert layer_of("handbook.aif.__main__") == "aif" and layer_of("handbook.sft") == "top"  # no entry point in a stage
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


# Import name → distribution name, where they differ.
DISTRIBUTION_OF = {"yaml": "pyyaml", "llama_cpp": "llama-cpp-python", "PIL": "pillow"}


def third_party_imports() -> dict[str, set[str]]:
    """Top-level third-party module → the handbook modules that import it (absolute imports outside the package
    and the standard library, function bodies included)."""
    found: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and not node.level and node.module else [])
            for name in names:
                top = name.split(".")[0]
                if top != "handbook" and top not in sys.stdlib_module_names:
                    found.setdefault(top, set()).add(module_name(path))
    return found


def declared_dependencies() -> tuple[set[str], dict[str, set[str]]]:
    import re
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    name = lambda spec: re.split(r"[\[<>=!~ ;]", spec, maxsplit=1)[0].lower().replace("_", "-")  # noqa: E731
    core = {name(s) for s in project["dependencies"]}
    extras = {extra: {name(s) for s in specs} for extra, specs in project["optional-dependencies"].items()}
    return core, extras


def test_every_third_party_import_is_declared():
    """The package imports nothing pyproject.toml does not declare; what only notebooks, tests or optional backends
    need stays in an extra (papermill and the kernel are `notebooks`, not core)."""
    core, extras = declared_dependencies()
    optional = set().union(*extras.values())
    missing = {}
    for module, users in third_party_imports().items():
        dist = DISTRIBUTION_OF.get(module, module).lower().replace("_", "-")
        if dist not in core | optional:
            missing[dist] = sorted(users)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
    assert {"numpy", "pandas", "psutil"} <= core
    assert not {"papermill", "ipykernel", "jupyterlab"} & core and {"papermill", "ipykernel"} <= extras["notebooks"]


def test_every_declared_dependency_is_pinned_in_requirements():
    """requirements.txt pins the tested stack: every core dependency and every extra but vllm (GPU only) and the
    offline GGUF (installed by the Makefile), with requirements-dev.txt for the test extra."""
    import re

    pinned = {re.split(r"[\[=]", line)[0].strip().lower().replace("_", "-")
              for f in ("requirements.txt", "requirements-dev.txt") for line in (ROOT / f).read_text().splitlines()
              if line.strip() and not line.startswith(("#", "-r"))}
    core, extras = declared_dependencies()
    wanted = core | set().union(*(v for k, v in extras.items() if k not in ("vllm", "small-offline", "test"))) \
        | (extras["test"] - {"zephyr-handbook"})
    assert wanted <= pinned, f"declared but not pinned: {sorted(wanted - pinned)}"


def _resolves(dotted: str) -> bool:
    """``handbook.x.y.Name`` names a module (the longest importable prefix) and then attributes of it."""
    import importlib

    parts = dotted.split(".")
    for k in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:k]))
        except ImportError:
            continue
        for attr in parts[k:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_every_module_the_docs_name_exists():
    """Every ``handbook.x.y`` and ``handbook/x/y.py`` that the READMEs, the package's docstrings, the benchmarks and
    the notebooks name exists (a module that moved leaves no stale reference behind)."""
    import re

    files = [ROOT / "README.md", ROOT / "bench" / "README.md", PACKAGE / "recipes" / "README.md",
             *PACKAGE.rglob("*.py"), *(ROOT / "bench").glob("*.py"), *(ROOT / "notebooks").glob("*.ipynb")]
    stale = set()
    for f in files:
        text = f.read_text(encoding="utf-8")
        for m in re.finditer(r"\bhandbook(?:\.[A-Za-z_]\w*)+", text):
            if m.group(0) != "handbook.__file__" and not _resolves(m.group(0)):
                stale.add(f"{f.relative_to(ROOT)}: {m.group(0)}")
        for m in re.finditer(r"\bhandbook/[\w/]+\.py\b", text):
            if not (ROOT / m.group(0)).exists():
                stale.add(f"{f.relative_to(ROOT)}: {m.group(0)}")
    assert not stale, "stale references:\n" + "\n".join(sorted(stale))


def test_the_choosers_hold_no_tier_logic():
    """Which tier tries which source is the tier table's (``handbook.tiers.table.FALLBACKS``), walked by one chooser:
    the choosers and the sizing never compare a tier name."""
    import re

    pattern = re.compile(r"\btier\s*(==|!=|in\b|not in\b)|\bif tier\b")
    for name in ("choices.py", "sizing.py", "names.py"):
        text = (ROOT / "handbook" / "tiers" / name).read_text()
        found = [line.strip() for line in text.splitlines() if pattern.search(line)]
        assert not found, f"handbook/tiers/{name} branches on the tier: {found}"
