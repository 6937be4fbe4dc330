"""The `convert` extra is one environment: every converter toolchain imports side by side in it."""

from __future__ import annotations

import os

import pytest
from convert_helpers import ok, run

pytestmark = pytest.mark.slow


def test_convert_extra_installs_every_toolchain_together(torch_python):
    if os.environ.get("EDGE_AGENT_CONVERT_TORCH_PYTHON") or os.environ.get("EDGE_AGENT_CONVERT_TF_PYTHON"):
        pytest.skip("per-path toolchain interpreters are configured; this checks the combined `convert` venv")
    code = (
        "import importlib.metadata as md, torch, litert_torch, tensorflow, tf_keras, onnx2tf, ai_edge_quantizer, "
        "onnxruntime.quantization, google.protobuf as pb; "
        "print(torch.__version__, tensorflow.__version__, md.version('litert-torch'), md.version('onnx2tf'), pb.__version__)"
    )
    proc = ok(run(torch_python, code, tool="code", timeout=300))
    torch_v, tf_v, litert_torch_v, onnx2tf_v, protobuf_v = proc.stdout.split()[-5:]
    assert torch_v.startswith("2.13.") and tf_v.startswith("2.21.")
    assert int(protobuf_v.split(".")[0]) >= 6, protobuf_v
    assert litert_torch_v and onnx2tf_v
