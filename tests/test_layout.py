"""The package layout stays as docs/architecture.md says: registries without cycles, models that know no data code,
no import-time fallbacks for first-party modules, resolved values passed on rather than written into the config."""
import ast
import json
import os
import subprocess
import sys

from detection.config import dump_config, get_default_config, load_config
from detection.engine.detection_task import DetectionTask
from fixtures_data import write_coco_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "detection")


def _modules(folder):
    for dirpath, _, files in os.walk(folder):
        for name in files:
            if name.endswith(".py"):
                yield os.path.join(dirpath, name)


def _imported(path):
    """Every module name an `import` / `from ... import` statement of the file names (at any depth)."""
    tree = ast.parse(open(path, encoding="utf-8").read(), filename=path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, node.lineno


def test_models_import_no_data_engine_or_evaluation_code():
    forbidden = ("detection.data", "detection.engine", "detection.evaluation", "detection.datasets")
    bad = [f"{os.path.relpath(p, ROOT)}:{line} imports {name}"
           for p in _modules(os.path.join(PACKAGE, "modeling"))
           for name, line in _imported(p) if name.startswith(forbidden)]
    assert not bad, "\n".join(bad)


def test_analysis_imports_no_engine_export_or_api_code():
    forbidden = ("detection.engine", "detection.export", "detection.api", "detection.results", "detection.image_input")
    bad = [f"{os.path.relpath(p, ROOT)}:{line} imports {name}"
           for p in _modules(os.path.join(PACKAGE, "analysis"))
           for name, line in _imported(p) if name.startswith(forbidden)]
    assert not bad, "\n".join(bad)


def test_generated_datasets_import_no_model_or_engine_code():
    forbidden = ("detection.modeling", "detection.engine")
    bad = [f"{os.path.relpath(p, ROOT)}:{line} imports {name}"
           for p in _modules(os.path.join(PACKAGE, "datasets"))
           for name, line in _imported(p) if name.startswith(forbidden)]
    assert not bad, "\n".join(bad)
    # and the data package holds readers, transforms, samplers and loaders only: no generator
    assert not [p for p in _modules(os.path.join(PACKAGE, "data")) if "synthetic" in os.path.basename(p)]


def test_no_import_time_fallback_for_first_party_modules():
    """No `try: import detection.x except ModuleNotFoundError/ImportError` anywhere in the package."""
    bad = []
    for path in _modules(PACKAGE):
        tree = ast.parse(open(path, encoding="utf-8").read())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Try):
                continue
            caught = {ast.unparse(h.type) for h in node.handlers if h.type is not None}
            if not caught & {"ModuleNotFoundError", "ImportError"}:
                continue
            if all(any(isinstance(n, ast.Raise) for n in ast.walk(h)) for h in node.handlers):
                continue  # re-raised with instructions: not a fallback
            names = [n for stmt in node.body for sub in ast.walk(stmt) for n, _ in _imported_node(sub)]
            if any(n == "detection" or n.startswith("detection.") or n.startswith(".") for n in names):
                bad.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}")
    assert not bad, bad


def _imported_node(node):
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name, node.lineno
    elif isinstance(node, ast.ImportFrom):
        yield ("." * node.level) + (node.module or ""), node.lineno
    elif isinstance(node, ast.Call) and ast.unparse(node.func).endswith("import_module") and node.args:
        arg = node.args[0]
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            yield arg.value, node.lineno


def _in_a_fresh_process(code: str):
    """The JSON value that `code` prints last, run by a new Python process on this checkout."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": ROOT})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_detection_registers_every_family_and_task():
    families, tasks, backbones = _in_a_fresh_process(
        "import json, detection, detection.modeling as m, detection.engine as e; "
        "print(json.dumps([m.META_ARCHITECTURES.names(), e.TASKS.names(), m.BACKBONES.names()]))")
    assert families == tasks == ["classifier", "faster_rcnn"]
    assert {"vgg16", "resnet50", "mobilenet_v2", "tiny"} <= set(backbones)


def test_resolved_classes_are_passed_on_not_written_into_the_config(tmp_path):
    path = write_coco_dataset(tmp_path, name="instances_mini.json")
    cfg = get_default_config()
    cfg.MODEL.BACKBONE.NAME, cfg.MODEL.BACKBONE.WEIGHTS = "tiny", ""
    cfg.DATA.FORMAT, cfg.DATA.ROOT, cfg.DATA.CLASSES = "coco", os.path.join(tmp_path, "coco"), []
    cfg.DATA.TRAIN_SETS = ["instances_mini.json:images"]
    task = DetectionTask()
    model = task.build_model(cfg)
    assert cfg.DATA.CLASSES == []  # untouched
    assert model.roi_heads.num_classes == 4  # car, person, zebra + background
    assert task.class_names(cfg) == ["car", "person", "zebra"]
    text = dump_config(cfg, resolved=task.resolved(cfg))
    assert "CLASSES: []" in text and "_RESOLVED_:" in text and "# Resolved at run time" in text
    saved = tmp_path / "config.yaml"
    saved.write_text(text)
    again = load_config(str(saved))
    assert again.DATA.CLASSES == [] and list(again._RESOLVED_.CLASSES) == ["car", "person", "zebra"]
    assert dump_config(again) == text  # the section survives a reload and a re-dump
    os.remove(path)  # a trained model's config needs no dataset to know its classes
    reloaded = DetectionTask()
    assert reloaded.resolve_class_names(again) == ["car", "person", "zebra"]
    assert reloaded.build_model(again).roi_heads.num_classes == 4


def test_importing_the_ops_loads_no_model_engine_or_api_code():
    loaded = _in_a_fresh_process("import sys, json, detection.ops, torch; torch.ops.detection.nms; "
                                 "print(json.dumps(sorted(m for m in sys.modules if m.startswith('detection'))))")
    assert "detection.ops" in loaded
    assert not [m for m in loaded if m.split(".")[1:2] in (["modeling"], ["engine"], ["api"], ["data"],
                                                            ["evaluation"], ["export"])], loaded
