"""The shape of the code: no import cycles, small functions, and a loop that never names a model's tensors."""

import ast
from pathlib import Path

SRC = Path(__file__).parent.parent / "src"
LOOP_MODULES = (
    "training/stages.py",
    "training/loop.py",
    "training/grpo.py",
    "evaluation/evaluate.py",
    "models/generation.py",
    "data/batches.py",
)
LAYERS = {
    "pathvqa": 0,  # the base: errors, runs, destinations, answers
    "config": 1,
    "data": 2,
    "models": 3,
    "scoring": 3,
    "synth": 3,
    "runtime": 4,
    "training": 5,
    "evaluation": 6,
    "sweeps": 7,
    "analysis": 8,
    "apps": 9,
}
"""Each package's layer: a module imports from its own package or from a lower layer, never sideways or up."""
TOP_LEVEL_MODULES_AT_MOST = 6
MODEL_TENSORS = ("pixel_values", "input_ids", "attention_mask", "labels", "image_grid_thw", "token_type_ids")


def modules() -> dict[str, Path]:
    return {
        ".".join(f.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__"): f
        for f in sorted(SRC.rglob("*.py"))
    }


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules ``name`` imports anywhere in its file (top level or inside functions)."""
    found = set()
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            for candidate in [base, *(f"{base}.{a.name}" for a in node.names)]:
                if candidate in known:
                    found.add(candidate)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in known}
    return found - {name}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles_in_src():
    mods = modules()
    graph = {name: imports_of(name, path, set(mods)) for name, path in mods.items()}
    assert graph["pathvqa.training.stages"], "the walk must see imports (sanity)"
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_cycle_finder_finds_a_cycle_of_three():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_function_in_src_is_over_80_lines():
    long = [
        f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path in SRC.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > 80
    ]
    assert not long, long


def test_the_loop_and_evaluator_never_name_a_model_tensor():
    for module in LOOP_MODULES:
        text = (SRC / "pathvqa" / module).read_text()
        named = [t for t in MODEL_TENSORS if f'"{t}"' in text or f"'{t}'" in text]
        assert not named, f"{module} names {named}: that is the family's business"


def run_names_spelled(tree: ast.AST) -> list[tuple[int, str]]:
    """Where a module spells a name of the run folder: a file name (``"metrics.json"``, also at the end of a
    path), a name joined onto a path (``run / "logs"``), or a numbered name's prefix (``f"step-{n}"``)."""
    from pathvqa import runs

    prefixes = (runs.STEP, f".tmp-{runs.STEP}", runs.RNG, runs.COMPARISON)
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.BinOp)
            and isinstance(node.op, ast.Div)
            and isinstance(node.right, ast.Constant)
        ):
            if node.right.value in runs.NAMES:
                found.append((node.lineno, node.right.value))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            tail = node.value.split("/")[-1]
            if ("." in tail and tail in runs.NAMES) or node.value.startswith(prefixes):
                found.append((node.lineno, node.value))
    return found


def test_only_the_run_folder_module_names_the_files_inside_a_run():
    """The run folder's layout has one owner (``runs.py``): every name in a run (``runs.NAMES``) and the
    prefixes of the numbered ones (step folders, RNG files, comparisons) are spelled there and nowhere else."""
    named = [
        f"{path.relative_to(SRC)}:{line} {value!r}"
        for path in SRC.rglob("*.py")
        if path.name != "runs.py"
        for line, value in run_names_spelled(ast.parse(path.read_text()))
    ]
    assert not named, named


def test_the_run_name_check_sees_a_name_spelled_elsewhere():
    from pathvqa import runs

    assert (
        runs.is_run_name("step-12") and runs.is_run_name("rng-0.json") and runs.is_run_name("vs_prior.json")
    )
    assert not runs.is_run_name("step-x") and not runs.is_run_name("notes.txt")
    spelled = ['run / "logs"', '"eval/metrics.json"', 'f"step-{n}"', '(run / "feature_cache")', '"mlflow.db"']
    assert [len(run_names_spelled(ast.parse(code))) for code in spelled] == [1, 1, 1, 1, 1]
    assert not run_names_spelled(ast.parse('cfg["eval"]; name == "logs"; "tokenizer"'))


def package_of(module: str) -> str:
    if module == "pathvqa.__main__":
        return "apps"  # ``python -m pathvqa``: the command line's door
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else "pathvqa"


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return [
        f"{name} -> {target}"
        for name, targets in graph.items()
        for target in targets
        if package_of(target) != package_of(name) and LAYERS[package_of(target)] >= LAYERS[package_of(name)]
    ]


def test_packages_import_only_their_own_or_lower_layers():
    mods = modules()
    assert {package_of(m) for m in mods} == set(LAYERS), (
        "every package has a layer, and every layer a package"
    )
    graph = {name: imports_of(name, path, set(mods)) for name, path in mods.items()}
    assert not upward_imports(graph), upward_imports(graph)


def test_the_layer_check_sees_an_import_upward_and_sideways():
    assert upward_imports({"pathvqa.data.prepare": {"pathvqa.training.loop"}}) == [
        "pathvqa.data.prepare -> pathvqa.training.loop"
    ]
    assert upward_imports({"pathvqa.models.base": {"pathvqa.scoring.metrics"}})
    assert not upward_imports({"pathvqa.apps.cli": {"pathvqa.config", "pathvqa.apps.demo"}})


def test_the_top_level_holds_the_base_and_packages():
    top = [p.name for p in (SRC / "pathvqa").glob("*.py") if p.name != "__init__.py"]
    assert len(top) <= TOP_LEVEL_MODULES_AT_MOST, top


def test_the_schema_takes_dataset_formats_and_presets_from_their_tables():
    """A new preset or format is one entry of ``config.datasets``: the schema's allowed values are its keys."""
    import typing

    from pathvqa.config import DataConfig
    from pathvqa.config.datasets import FORMATS, PRESETS

    def values(field: str) -> set[str]:
        annotation = DataConfig.model_fields[field].annotation
        options = (
            (annotation,) if typing.get_origin(annotation) is typing.Literal else typing.get_args(annotation)
        )
        literal = next(a for a in options if typing.get_origin(a) is typing.Literal)
        return set(typing.get_args(literal))

    assert values("preset") == set(PRESETS) and values("format") == set(FORMATS)
    source = (SRC / "pathvqa" / "data" / "sources.py").read_text() + (
        SRC / "pathvqa" / "data" / "spec.py"
    ).read_text()
    assert '"llava"' not in source and "'slake'" not in source and '"slake"' not in source, (
        "a name outside its table"
    )


def test_plan_works_for_a_family_registered_in_a_test_only():
    """``pathvqa plan`` names no family: one defined here (BLIP's model under another name, its section
    registered at run time) is planned like a shipped one."""
    from typing import ClassVar, Literal

    from pathvqa.analysis.plan import plan
    from pathvqa.config import BlipModelConfig, forget_family, load_config, register_family

    class ToySection(BlipModelConfig):
        family: Literal["toy"] = "toy"
        implementation: ClassVar[str] = "tests.test_structure:ToyFamily"

    register_family(ToySection)
    try:
        cfg = load_config(
            "configs/blip_tiny.yaml", ["model.family=toy", "model.hidden_size=32", "model.num_layers=1"]
        )
        assert type(cfg.model) is ToySection
        stage = plan(cfg)["stages"][0]
    finally:
        forget_family("toy")
    assert stage["parameters"]["vision"] > 0 and stage["parameters"]["language_model"] > 0
    assert stage["tokens"]["sequence"] > 0 and stage["fits"]


def __getattr__(name: str):
    if name == "ToyFamily":  # the family the test above registers: BLIP's, under another name
        from pathvqa.models.blip import BlipFamily

        return type("ToyFamily", (BlipFamily,), {"name": "toy"})
    raise AttributeError(name)


def test_no_family_is_named_above_the_models():
    """Analysis, evaluation, training and the apps ask the family (``models.base.Family``); they never
    compare ``model.family`` with a name."""
    from pathvqa.config import FAMILY_CONFIGS

    named = [
        f"{path.relative_to(SRC)}:{node.lineno} {node.value!r}"
        for package in ("analysis", "evaluation", "training", "apps", "runtime")
        for path in (SRC / "pathvqa" / package).rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and node.value in FAMILY_CONFIGS
    ]
    assert not named, named
