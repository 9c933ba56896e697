"""GPU check: what can be verified on a machine with a CUDA GPU and PyTorch.

Run by scripts/gpu_check.sh. Each row says what ran and what it showed, or why it was
skipped (no onnxruntime-gpu, no TensorRT, no tritonserver on such a machine is normal).
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

rows: list[tuple[str, str, str]] = []


def row(check: str, result: str, detail: str = "") -> None:
    rows.append((check, result, detail))
    print(f"{check:44} {result:8} {detail}", flush=True)


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        row("CUDA GPU visible to PyTorch", "FAIL", "torch.cuda.is_available() is False")
        return 1
    row("CUDA GPU visible to PyTorch", "ok", torch.cuda.get_device_name(0))
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 checks compare with fp32 CPU kernels
    torch.backends.cudnn.allow_tf32 = False

    from tritonkit.errors import TritonkitError
    from tritonkit.export import main_export

    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    ok = True
    for dtype in ("float32", "float16"):
        t0 = time.perf_counter()
        try:
            result = main_export(
                "tiny-llama", work / dtype, dtype=dtype, device="cuda", graph="concat"
            )
            r = result.report
            worst = max(c["onnx_err"] / c["limit"] for c in r["checks"])
            row(
                f"export on cuda, {dtype}: checks vs PyTorch",
                "ok",
                f"worst error {worst:.2f} of its limit, greedy_match={r['greedy_match']}, "
                f"{time.perf_counter() - t0:.1f}s",
            )
        except TritonkitError as exc:
            ok = False
            row(f"export on cuda, {dtype}: checks vs PyTorch", "FAIL", str(exc))

    # Timing: transformers generate on the GPU vs the onnxruntime loop (CPU here).
    import numpy as np

    from tritonkit.export.loading import load
    from tritonkit.model_repository.runtime.decoder import OnnxDecoder

    loaded = load("tiny-llama", device="cuda")
    ids = torch.tensor([loaded.tokenizer("The quick brown fox")["input_ids"]], device="cuda")
    times = []
    for _ in range(6):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        loaded.model.generate(ids, max_new_tokens=64, min_new_tokens=64, do_sample=False)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    row(
        "transformers generate on cuda, 64 tokens",
        "ok",
        f"{64 / statistics.median(times[1:]):.0f} tokens/s (median)",
    )

    import onnxruntime as ort

    providers = ort.get_available_providers()
    gpu_ort = "CUDAExecutionProvider" in providers
    decoder = OnnxDecoder(
        str(work / "float32" / "model.onnx"), ["CUDAExecutionProvider"] if gpu_ort else None
    )
    n = ids.shape[1]
    t0 = time.perf_counter()
    logits, past = decoder.forward(
        ids.cpu().numpy(), np.ones((1, n), np.int64), np.arange(n)[None], decoder.empty_past(1)
    )
    for i in range(63):
        tok = np.asarray([[int(logits[0].argmax())]])
        logits, past = decoder.forward(
            tok, np.ones((1, n + i + 1), np.int64), np.asarray([[n + i]]), past
        )
    row(
        f"onnxruntime KV loop on {decoder.device}",
        "ok",
        f"{64 / (time.perf_counter() - t0):.0f} tokens/s; providers {providers}",
    )
    if not gpu_ort:
        row("entry model with KV cache on the GPU", "skipped", "no onnxruntime-gpu here")

    ok &= fused_checks(work)

    try:
        import tensorrt  # noqa: F401

        row("TensorRT engine build", "todo", "tensorrt present: run tritonkit export tensorrt")
    except ImportError:
        row("TensorRT engine build", "skipped", "no tensorrt package here")
    if shutil.which("tritonserver") is None:
        try:
            from tritonkit.serve.binary import find_distribution

            find_distribution()
            row("local Triton (pytriton wheel)", "present", "")
        except Exception as exc:
            row("local Triton (pytriton wheel)", "skipped", str(exc).splitlines()[0][:80])
    (work / "gpu_check.json").write_text(json.dumps(rows, indent=2))
    print(f"\nreport: {work / 'gpu_check.json'}")
    return 0 if ok else 1


def fused_checks(work: Path) -> bool:
    """The fused-attention graph in float16 on CUDA: verified against transformers on the
    GPU through the serving engine's KV rows, then one decode step timed at positions 16
    and 1024 (batch 1 and 8). Needs onnxruntime-gpu; says so when it is missing."""
    import numpy as np
    import onnxruntime as ort

    from tritonkit.errors import TritonkitError
    from tritonkit.export import main_export
    from tritonkit.model_repository.runtime.fused_decoder import CacheShape, FusedDecoder

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        row("fused graph float16 on cuda", "skipped", "no onnxruntime-gpu here")
        return True
    t0 = time.perf_counter()
    try:
        result = main_export(
            "tiny-llama", work / "fused16", dtype="float16", device="cuda", graph="fused"
        )
    except TritonkitError as exc:
        row("fused graph float16 on cuda: checks", "FAIL", str(exc)[:160])
        return False
    r = result.report
    worst = max(c["onnx_err"] / c["limit"] for c in r["checks"])
    row(
        "fused graph float16 on cuda: checks",
        "ok",
        f"worst error {worst:.2f} of its limit, greedy_match={r['greedy_match']}, "
        f"{time.perf_counter() - t0:.1f}s",
    )
    d = r["dims"]
    shape = CacheShape(d["num_layers"], d["num_kv_heads"], d["head_dim"], 8, 1100, np.float16)
    decoder = FusedDecoder(str(result.output / "model.onnx"), shape, ["CUDAExecutionProvider"])
    for batch in (1, 8):
        times = {}
        for position in (16, 1024):
            samples = []
            for _ in range(30):
                decoder.lengths[:batch] = position
                t1 = time.perf_counter()
                decoder.decode(list(range(batch)), [7] * batch)
                samples.append(time.perf_counter() - t1)
            times[position] = statistics.median(samples[5:]) * 1e3
        row(
            f"fused decode step on cuda, batch {batch}",
            "ok",
            f"p16 {times[16]:.2f} ms, p1024 {times[1024]:.2f} ms ({times[1024] / times[16]:.2f}x)",
        )
    return True


if __name__ == "__main__":
    sys.exit(main())
