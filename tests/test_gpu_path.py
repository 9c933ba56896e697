"""The GPU path as shipped, checked on a CPU: every fact about it that does not need a GPU.

The GPU image's onnxruntime is installed for real (the CPU build of the same version, in
an environment of its own, cached) and loads every graph kind the export writes; the
version just below the claimed minimum must refuse them, so the rule table can fail.
Where a test needs onnxruntime to *believe* a CUDA provider exists (the fallback check),
it says so: no GPU exists here.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

from tritonkit import versions
from tritonkit.errors import RepositoryError, UsageError

ROOT = Path(__file__).resolve().parents[1]
BELOW_FUSED_MINIMUM = "1.22.1"  # the newest onnxruntime before GroupQueryAttention's 12 inputs


# ---- versions: declared once, read everywhere ------------------------------------------


def test_every_image_and_file_reads_the_pinned_versions():
    tag = versions.TRITON_TAG
    for dockerfile in ("Dockerfile", "deploy/engine.Dockerfile"):
        text = (ROOT / dockerfile).read_text()
        assert re.search(rf"^ARG TRITON_TAG={re.escape(tag)}$", text, re.M), dockerfile
        assert "versions.py requirements" in text, f"{dockerfile} must install from versions.py"
        assert not re.search(r"onnxruntime(-gpu)?==|numpy==|tokenizers==", text), dockerfile
    compose = (ROOT / "compose.yaml").read_text()
    defaults = set(re.findall(r"\$\{TRITON_TAG:-([^}]+)\}", compose))
    assert defaults == {tag}
    assert re.search(rf"^TRITON_TAG={re.escape(tag)}$", (ROOT / ".env.example").read_text(), re.M)
    cluster = (ROOT / "deploy/aks/create_cluster.sh").read_text()
    assert f'IMAGE_TAG="${{IMAGE_TAG:-{tag}}}"' in cluster

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert f"onnxruntime-gpu=={versions.ONNXRUNTIME}" in extras["gpu"]
    assert f"onnxruntime-gpu=={versions.ONNXRUNTIME}" in extras["export-gpu"]
    assert f"onnxruntime-genai-cuda=={versions.ONNXRUNTIME_GENAI_CUDA}" in extras["export-gpu"]

    out = subprocess.run(
        [sys.executable, str(ROOT / "tritonkit/versions.py"), "requirements", "gpu"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert f"onnxruntime-gpu=={versions.ONNXRUNTIME}" in out
    # Constrained decoding: the same llguidance where Triton serves (local, CPU and GPU images).
    pin = f"llguidance=={versions.LLGUIDANCE}"
    assert pin in out and pin in extras["serve"] and pin in versions.IMAGE_REQUIREMENTS["cpu"]


def test_the_cpu_image_pins_the_gpu_images_onnxruntime(tmp_path):
    """scripts/image_requirements.py writes cpu.txt from a wheel's metadata plus the pins:
    the CPU stack then serves with the onnxruntime version the GPU image has."""
    wheel = tmp_path / "tritonkit-0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(
            "tritonkit-0.dist-info/METADATA",
            "Metadata-Version: 2.1\nName: tritonkit\nVersion: 0\n"
            "Requires-Dist: numpy<2\n"
            'Requires-Dist: onnxruntime>=1.20; extra == "serve"\n',
        )
    subprocess.run(
        [sys.executable, str(ROOT / "scripts/image_requirements.py"), str(wheel), str(tmp_path)],
        check=True,
    )
    cpu = (tmp_path / "cpu.txt").read_text().split()
    assert f"onnxruntime=={versions.ONNXRUNTIME}" in cpu and "onnxruntime>=1.20" in cpu
    assert not any("onnxruntime" in r for r in (tmp_path / "client.txt").read_text().split())


def _resolved_extra(extras: dict[str, list[str]], name: str) -> set[str]:
    found: set[str] = set()
    for req in extras[name]:
        inner = re.fullmatch(r"tritonkit\[([\w-]+)\]", req)
        if inner:
            found |= _resolved_extra(extras, inner.group(1))
        else:
            found.add(re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].lower())
    return found


def test_no_extra_puts_two_onnxruntime_builds_in_one_environment():
    from tritonkit.export.compat import onnxruntime_conflict

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for name in extras:
        names = _resolved_extra(extras, name)
        assert not {"onnxruntime", "onnxruntime-gpu"} <= names, name
        assert not {"onnxruntime-genai", "onnxruntime-gpu"} <= names, name  # genai pulls ort
    assert "onnxruntime-genai" not in _resolved_extra(extras, "export-gpu")
    assert onnxruntime_conflict(["onnxruntime"]) is None
    from tritonkit.export.compat import ONNXRUNTIME_BUILDS

    assert "onnxruntime-extensions" not in ONNXRUNTIME_BUILDS  # an add-on, not a build
    message = onnxruntime_conflict(["onnxruntime", "onnxruntime-gpu"])
    assert message and "export-gpu" in message and "\n" not in message


# ---- which onnxruntime loads a graph ---------------------------------------------------


def _graph(opset: int, nodes: list) -> object:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    return helper.make_model(
        helper.make_graph(nodes, "g", [x], [x]),
        opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("com.microsoft", 1)],
    )


def test_min_onnxruntime_rules():
    from onnx import helper

    from tritonkit.export.compat import UNKNOWN, min_onnxruntime

    assert min_onnxruntime(_graph(18, [])) == "1.20"
    assert min_onnxruntime(_graph(22, [])) == "1.21"
    assert min_onnxruntime(_graph(24, [])) == UNKNOWN

    def gqa(n: int) -> object:
        inputs = [f"i{k}" for k in range(n)]
        return helper.make_node("GroupQueryAttention", inputs, ["o"], domain="com.microsoft")

    assert min_onnxruntime(_graph(18, [gqa(9)])) == "1.20"
    assert min_onnxruntime(_graph(18, [gqa(11)])) == "1.22"
    assert min_onnxruntime(_graph(18, [gqa(12)])) == "1.23"
    assert min_onnxruntime(_graph(18, [gqa(17)])) == UNKNOWN
    gbq = helper.make_node("GatherBlockQuantized", ["a", "b", "c"], ["o"], domain="com.microsoft")
    assert min_onnxruntime(_graph(18, [gbq])) == "1.20"
    gbq.attribute.append(helper.make_attribute("bits", 8))
    assert min_onnxruntime(_graph(18, [gbq])) == "1.23"
    # What the old GPU image pinned cannot load any fused graph.
    assert versions.version_tuple("1.28.0rc1") == (1, 28, 0)
    assert not versions.at_least("1.28.0rc1", "1.28.1") and versions.at_least("1.28.0", "1.28")
    assert not versions.at_least("1.20.1", "1.23") and versions.at_least(
        versions.ONNXRUNTIME, "1.23"
    )


def _onnxruntime_env(version: str) -> Path:
    """A cached virtual environment holding onnxruntime ``version`` (CPU build): its python."""
    from tritonkit.export.packaged import cache_root

    env = cache_root() / "onnxruntime-envs" / version
    python = env / "bin" / "python"
    stamp = env / ".installed"
    if not stamp.is_file():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(env)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", f"onnxruntime=={version}", "numpy<2"],
            check=True, timeout=600,
        )  # fmt: skip
        stamp.touch()
    return python


_LOADER = """
import json, sys
import onnxruntime as ort
out = {"version": ort.__version__}
for path in sys.argv[1:]:
    try:
        ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        out[path] = "ok"
    except Exception as exc:
        out[path] = str(exc).splitlines()[0][:300]
print(json.dumps(out))
"""


def _load_in(python: Path, graphs: list[Path]) -> dict[str, str]:
    proc = subprocess.run(
        [str(python), "-c", _LOADER, *map(str, graphs)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def graph_kinds(tmp_path_factory) -> dict[str, Path]:
    """Every graph kind the export writes, on a tiny Llama with tied embeddings (so int4
    also uses GatherBlockQuantized): the CPU's fused float32 and int4 and the concat graph
    through main_export, and the GPU's float16 fused and int4 graphs through the same
    builder call a ``--device cuda`` export makes (its verification needs a GPU)."""
    from conftest import save_tiny_model

    from tritonkit.export import main_export
    from tritonkit.export.fused import build_fused
    from tritonkit.export.loading import load

    root = tmp_path_factory.mktemp("graph-kinds")
    src = save_tiny_model("llama", root / "src", tie_word_embeddings=True)
    kinds = {}
    for kind, options in {
        "fused float32 (cpu)": dict(graph="fused"),
        "int4 (cpu)": dict(quantize="int4"),
        "concat": dict(graph="concat"),
    }.items():
        kinds[kind] = main_export(str(src), root / kind.split()[0] / "x", **options).output
    for kind, quantize in {"fused float16 (cuda)": None, "int4 (cuda)": "int4"}.items():
        loaded = load(str(src), dtype="float16")
        out = root / kind.replace(" ", "-").replace("(", "").replace(")", "")
        out.mkdir()
        build_fused(loaded.model, loaded.tokenizer, out, "float16", "cuda", 16, quantize)
        kinds[kind] = out
    return kinds


@pytest.mark.slow
def test_the_gpu_images_onnxruntime_loads_every_graph_kind(graph_kinds):
    from tritonkit.core.layout import read_export_report
    from tritonkit.export.compat import graph_min_onnxruntime

    graphs = {kind: folder / "model.onnx" for kind, folder in graph_kinds.items()}
    minimums = {kind: graph_min_onnxruntime(path) for kind, path in graphs.items()}
    for kind, folder in graph_kinds.items():
        if (folder / "export.json").is_file():  # main_export records it
            assert read_export_report(folder).min_onnxruntime == minimums[kind]
    assert minimums["concat"] == "1.20"
    assert {minimums[k] for k in graphs if k != "concat"} == {"1.23"}

    pinned = _load_in(_onnxruntime_env(versions.ONNXRUNTIME), list(graphs.values()))
    assert pinned["version"] == versions.ONNXRUNTIME
    assert all(pinned[str(p)] == "ok" for p in graphs.values()), pinned

    # Just below the claimed minimum every fused graph must be refused: the table is tight.
    below = _load_in(_onnxruntime_env(BELOW_FUSED_MINIMUM), list(graphs.values()))
    assert below[str(graphs["concat"])] == "ok"
    for kind, path in graphs.items():
        if kind != "concat":
            refused = below[str(path)]  # its first node newer than that release, by name
            assert refused != "ok", kind
            assert re.search("GroupQueryAttention|GatherBlockQuantized", refused), refused


# ---- which graph a CUDA export writes --------------------------------------------------


def test_cuda_exports_are_fused_in_float16_only(monkeypatch):
    """Installs stood in (no onnxruntime-gpu can be installed here beside the CPU build)."""
    from tritonkit.export import fused

    monkeypatch.setattr(fused, "builder_available", lambda: True)
    monkeypatch.setattr(fused, "_cuda_onnxruntime", lambda: True)
    assert fused.choose_graph("auto", "llama", "float16", "cuda") == fused.FUSED
    assert fused.choose_graph("auto", "llama", "float32", "cuda") == fused.CONCAT
    assert fused.choose_graph("auto", "llama", "bfloat16", "cuda") == fused.CONCAT
    assert fused.choose_graph("auto", "llama", "float32", "cpu") == fused.FUSED
    with pytest.raises(UsageError, match=r"float16 only .*float32 GroupQueryAttention.*concat"):
        fused.choose_graph("fused", "llama", "float32", "cuda")
    with pytest.raises(UsageError, match=r"bfloat16.*numpy has no bfloat16"):
        fused.choose_graph("fused", "llama", "bfloat16", "cuda")


def test_the_builders_cuda_float32_graph_is_not_one_the_engine_runs(tmp_path, tiny_model_folder):
    """Why float32 on CUDA is refused: the builder writes another attention op there."""
    import onnx

    from tritonkit.export.architectures import dims_of
    from tritonkit.export.fused import build_fused
    from tritonkit.export.loading import load
    from tritonkit.model_repository.runtime.fused_decoder import CacheShape, FusedDecoder

    loaded = load(str(tiny_model_folder("llama")))
    build_fused(loaded.model, loaded.tokenizer, tmp_path, "float32", "cuda", 16)
    graph = onnx.load(str(tmp_path / "model.onnx"), load_external_data=False)
    assert "position_ids" in [i.name for i in graph.graph.input]
    assert "GroupQueryAttention" not in {n.op_type for n in graph.graph.node}
    d = dims_of(loaded.model.config)
    shape = CacheShape(d.num_layers, d.num_kv_heads, d.head_dim, 2, 32)
    # onnxruntime itself refuses it, or the engine does (no KV rows, position_ids in)
    with pytest.raises(Exception, match=r"not a fused-attention graph|invalid model"):
        FusedDecoder(str(tmp_path / "model.onnx"), shape)


# ---- a GPU session never runs on the CPU -----------------------------------------------


def _tiny_graph(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    model = helper.make_model(
        helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y]),
        opset_imports=[helper.make_opsetid("", 18)],
    )
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def test_a_gpu_session_that_would_run_on_the_cpu_fails_to_load(tmp_path, monkeypatch):
    import onnxruntime as ort

    from tritonkit.model_repository.runtime.decoder import GpuUnavailable, make_session

    graph = _tiny_graph(tmp_path / "g.onnx")
    _session, device, _ = make_session(str(graph))
    assert device == "cpu"
    with pytest.raises(GpuUnavailable, match=r"has no CUDA provider.*onnxruntime-gpu alone"):
        make_session(str(graph), ["CUDAExecutionProvider", "CPUExecutionProvider"])
    # onnxruntime made to list a CUDA provider it cannot start (what a wheel without its
    # CUDA libraries does on a GPU VM): it falls back to the CPU, and that must fail too.
    real = ort.get_available_providers()
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", *real])
    with pytest.raises(GpuUnavailable, match="CUDA provider failed to start"):
        make_session(str(graph), ["CUDAExecutionProvider", "CPUExecutionProvider"])


def test_tensorrt_provider_options_cover_every_input(tmp_path, tiny_model_folder):
    from tritonkit.core.layout import read_export_report
    from tritonkit.export import main_export
    from tritonkit.model_repository.runtime.engines import tensorrt_provider_options

    for graph in ("concat", "fused"):
        folder = main_export(str(tiny_model_folder("llama")), tmp_path / graph, graph=graph)
        report = read_export_report(folder.output)
        options = tensorrt_provider_options(report, 8, 512, str(tmp_path / "cache"))
        assert options["trt_engine_cache_enable"] == "True"
        assert options["trt_engine_cache_path"] == str(tmp_path / "cache")
        for key in ("min", "opt", "max"):
            shapes = dict(s.split(":") for s in options[f"trt_profile_{key}_shapes"].split(","))
            assert set(shapes) == {t.name for t in report.inputs}
        past = report.inputs[-1].name
        lo, hi = (options[f"trt_profile_{k}_shapes"] for k in ("min", "max"))
        lo_past, hi_past = (dict(s.split(":") for s in o.split(","))[past] for o in (lo, hi))
        d = report.dims
        if graph == "concat":  # a prefill's past is empty; it grows to the context
            assert lo_past == f"1x{d.num_kv_heads}x0x{d.head_dim}"
        else:  # the KV rows have a fixed capacity
            assert lo_past == f"1x{d.num_kv_heads}x512x{d.head_dim}"
        assert hi_past == f"8x{d.num_kv_heads}x512x{d.head_dim}"


# ---- TensorRT ----------------------------------------------------------------------------


def test_tensorrt_refuses_fused_exports_before_needing_a_gpu(tmp_path, tiny_model_folder):
    from tritonkit.export import main_export
    from tritonkit.export.tensorrt import build_engine

    fused = main_export(str(tiny_model_folder("llama")), tmp_path / "f", graph="fused").output
    with pytest.raises(UsageError, match=r"cannot build the fused graph.*--graph concat"):
        build_engine(fused, tmp_path / "engine")


def test_tensorrt_engines_are_judged_by_their_build_precision():
    import torch

    from tritonkit.export.tensorrt import ENGINE_TOLERANCES, bindable, engine_tolerance

    assert engine_tolerance("float32", "fp32") == ENGINE_TOLERANCES["float32"]
    assert engine_tolerance("float32", "fp16") == ENGINE_TOLERANCES["float16"]
    assert engine_tolerance("float16", "fp16") == ENGINE_TOLERANCES["float16"]
    assert engine_tolerance("float32", "bf16") == ENGINE_TOLERANCES["bfloat16"]
    keep: list = []
    empty = torch.zeros(2, 4, 0, 8)
    bound = bindable(empty, keep)
    assert bound.numel() == 1 and bound.data_ptr() != 0 and keep == [bound]
    full = torch.zeros(2)
    assert bindable(full, keep) is full and len(keep) == 1


def test_the_tensorrt_plan_config_lists_both_profiles(tmp_path, tiny_model_folder):
    from tritonkit.export import main_export
    from tritonkit.model_repository import (
        RepositorySpec,
        TensorRTPlan,
        build_repository,
    )
    from tritonkit.model_repository import config as cfg

    export = main_export(str(tiny_model_folder("llama")), tmp_path / "e", graph="concat").output
    engine = tmp_path / "engine"
    engine.mkdir()
    (engine / "model.plan").write_bytes(b"placeholder: engines need a GPU")
    (engine / "tensorrt.json").write_text(json.dumps({"profiles": ["prefill", "decode"]}))
    built = build_repository(
        export, tmp_path / "r", TensorRTPlan(plan=engine), RepositorySpec(target="gpu")
    )
    decoder = cfg.read(built.path / "llm_decoder")
    assert decoder.platform == "tensorrt_plan"
    assert list(decoder.instance_group[0].profile) == ["0", "1"]
    (engine / "tensorrt.json").write_text(json.dumps({"profiles": ["only"]}))
    with pytest.raises(UsageError, match="optimization profiles"):
        build_repository(
            export, tmp_path / "r2", TensorRTPlan(plan=engine), RepositorySpec(target="gpu")
        )


# ---- what a GPU repository may hold, and its KV cache ------------------------------------


def test_a_gpu_repository_refuses_graphs_the_image_cannot_serve(tmp_path, tiny_model_folder):
    from tritonkit.export import main_export
    from tritonkit.model_repository import OnnxRuntime, RepositorySpec, build_repository

    src = str(tiny_model_folder("llama"))
    fused = main_export(src, tmp_path / "fused", graph="fused").output
    with pytest.raises(RepositoryError, match=r"exported for the CPU.*--device cuda"):
        build_repository(fused, tmp_path / "r1", spec=RepositorySpec(target="gpu"))
    build_repository(
        fused, tmp_path / "r-cpu", spec=RepositorySpec(target="cpu")
    )  # fine where it was made for

    report = json.loads((fused / "export.json").read_text())
    report["device"] = "cuda"  # as if exported on a GPU: TensorRT still cannot take it
    (fused / "export.json").write_text(json.dumps(report))
    with pytest.raises(RepositoryError, match="--tensorrt-accelerator cannot take the fused"):
        build_repository(
            fused,
            tmp_path / "r1b",
            OnnxRuntime(tensorrt_accelerator=True),
            RepositorySpec(target="gpu"),
        )

    concat = main_export(src, tmp_path / "concat", graph="concat").output
    build_repository(
        concat,
        tmp_path / "r2",
        OnnxRuntime(tensorrt_accelerator=True),
        RepositorySpec(target="gpu"),
    )
    report = json.loads((concat / "export.json").read_text())
    report["min_onnxruntime"] = "1.99"
    (concat / "export.json").write_text(json.dumps(report))
    with pytest.raises(
        RepositoryError, match=rf"needs onnxruntime >= 1.99.*{versions.ONNXRUNTIME}"
    ):
        build_repository(concat, tmp_path / "r3", spec=RepositorySpec(target="gpu"))
    del report["min_onnxruntime"]  # an export made before the field: read from the graph
    (concat / "export.json").write_text(json.dumps(report))
    build_repository(concat, tmp_path / "r4", spec=RepositorySpec(target="gpu"))


def _report(layers: int, kv: int, hd: int, context: int, dtype: str = "float16") -> object:
    from tritonkit.core.layout import ExportReport

    dims = dict(num_layers=layers, num_attention_heads=4 * kv, num_kv_heads=kv, head_dim=hd,
                hidden_size=4 * kv * hd, vocab_size=128256, max_positions=context)  # fmt: skip
    return ExportReport.from_dict(
        {
            "passed": True,
            "graph": "fused",
            "dtype": dtype,
            "device": "cuda",
            "dims": dims,
            "files": {"model": "model.onnx"},
            "inputs": [],
            "outputs": [],
        }
    )


def test_the_kv_cache_is_sized_from_the_gpus_memory():
    from tritonkit.model_repository.gpus import GIB, GPUS, plan_kv_cache

    llama8b = _report(32, 8, 128, 131072)  # Llama-3.1-8B, float16
    whole = 16 * 131072 * 2 * 32 * 8 * 128 * 2
    assert whole > 270e9  # the model's own context for 16 rows: about 275 GB
    plan = plan_kv_cache(llama8b, 16 * GIB, GPUS["a100"], 16, None)
    assert plan.context % 256 == 0 and 0 < plan.context < 131072
    assert plan.kv_cache_bytes + plan.weights_bytes <= 0.9 * 80 * GIB
    assert plan.kv_cache_bytes + plan.weights_bytes > 0.8 * 80 * GIB  # not wasteful either
    with pytest.raises(
        UsageError, match=r"--max-context 131072 x 16 rows needs .* use --max-context"
    ):
        plan_kv_cache(llama8b, 16 * GIB, GPUS["a100"], 16, 131072)
    with pytest.raises(UsageError, match="leave room for only"):  # 8B float16 on a T4
        plan_kv_cache(llama8b, 16 * GIB, GPUS["t4"], 16, None)

    # A small context that fits is taken as asked (never refused for being small).
    assert plan_kv_cache(llama8b, 16 * GIB, GPUS["a100"], 16, 64).context == 64
    with pytest.raises(UsageError) as info:  # nothing fits: no "--max-context 0" advice
        plan_kv_cache(llama8b, 15 * GIB, GPUS["t4"], 16, 64)
    assert "--max-context 0" not in str(info.value) and "larger GPU" in str(info.value)

    smol = _report(30, 3, 64, 8192)  # SmolLM2-135M: a T4 could hold its whole context...
    t4 = plan_kv_cache(smol, 270 << 20, GPUS["t4"], 16, None)
    assert t4.context == 4096  # ...but no flash attention there: capped
    assert plan_kv_cache(smol, 270 << 20, GPUS["a10"], 16, None).context == 8192
    assert "T4 15 GiB" in t4.describe() and "16 rows x 4096 tokens" in t4.describe()


def test_gpu_build_writes_the_chosen_context(tmp_path, tiny_model_folder, capsys):
    from tritonkit.cli import run
    from tritonkit.export import main_export
    from tritonkit.model_repository import config as cfg

    export = main_export(str(tiny_model_folder("llama")), tmp_path / "e", graph="concat").output
    assert run(["repo", "build", "--export", str(export), "--output", str(tmp_path / "r"),
                "--target", "gpu", "--gpu", "a10"]) == 0  # fmt: skip
    assert "GPU budget: A10 22.5 GiB x 0.9" in capsys.readouterr().out
    entry = cfg.read(tmp_path / "r" / "llm")
    assert entry.parameters["max_context"].string_value == "256"  # the tiny model's own


def test_the_entrypoint_warns_of_a_driver_older_than_the_images_cuda(tmp_path):
    """A stand-in ``nvidia-smi`` reports the driver (no GPU exists here). A warning, not a
    refusal: data-center GPUs run newer CUDA on older drivers through forward
    compatibility, and a provider that cannot start fails the load with its own words."""
    from test_hardening import KEY, _entrypoint

    assert "versions.py MIN_DRIVER > /etc/tritonkit/min-driver" in (ROOT / "Dockerfile").read_text()
    min_file = tmp_path / "min-driver"
    min_file.write_text(f"{versions.MIN_DRIVER}\n")
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    env = {"TRITON_ADMIN_KEY": KEY, "TRITONKIT_MIN_DRIVER_FILE": str(min_file)}
    for driver, old in (("535.183.01", True), (f"{versions.MIN_DRIVER}.65.06", False)):
        smi.write_text(f"#!/bin/sh\necho {driver}\n")
        smi.chmod(0o755)
        code, args, err = _entrypoint(tmp_path, env)
        assert code == 0 and any(a.startswith("--model-repository=") for a in args), err
        warned = f"R{versions.MIN_DRIVER} or newer" in err
        assert warned == old, err
        if old:
            assert driver in err and len(err.strip().splitlines()) == 1


# ---- scripts/gpu_check -----------------------------------------------------------------


def test_gpu_check_says_what_it_cannot_run_without_crashing(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts/gpu_check.py"), "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stdout
    assert re.search(r"CUDA GPU visible to PyTorch\s+FAIL", lines)
    # The image's versions are checked first, and this environment is not the image's.
    assert re.search(rf"onnxruntime-gpu {re.escape(versions.ONNXRUNTIME)} .*\s+FAIL", lines)
    assert "Traceback" in (tmp_path / "gpu_check.log").read_text()  # kept for the reader
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert any(r[1] == "FAIL" for r in report)
