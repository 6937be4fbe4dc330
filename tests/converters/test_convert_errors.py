"""Bad inputs: each fails with exit code 2 and a message naming the offending thing."""

from __future__ import annotations

import pytest
from convert_helpers import DEMO_ONNX, FACTORY, run

pytestmark = pytest.mark.slow


def test_unknown_input_kind(torch_python, tmp_path):
    bogus = tmp_path / "model.weird"
    bogus.write_text("not a model")
    proc = run(torch_python, str(bogus), "-o", str(tmp_path / "o"))
    assert proc.returncode == 2 and "unknown model format" in proc.stderr


def test_not_a_factory(torch_python, tmp_path):
    proc = run(torch_python, "no_such_file.onnx", "-o", str(tmp_path / "o"))
    assert proc.returncode == 2 and "no such file" in proc.stderr


def test_corrupt_onnx(torch_python, tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(DEMO_ONNX.read_bytes()[:5000])
    proc = run(torch_python, str(broken), "--calibration", str(tmp_path), tool="quantize")
    assert proc.returncode == 2 and "corrupt" in proc.stderr, proc.stderr[-2000:]


def test_corrupt_torchscript(torch_python, tmp_path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    proc = run(torch_python, str(broken), "-o", str(tmp_path / "o"))
    assert proc.returncode == 2 and "corrupt" in proc.stderr, proc.stderr[-2000:]


def test_missing_calibration_folder(torch_python, tmp_path):
    proc = run(torch_python, FACTORY, "--quantize", "int8", "--calibration", str(tmp_path / "nope"), "-o", str(tmp_path / "o"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def test_empty_calibration_folder(torch_python, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run(torch_python, FACTORY, "--quantize", "int8", "--calibration", str(empty), "-o", str(tmp_path / "o"))
    assert proc.returncode == 2 and "holds no images" in proc.stderr


def test_int8_without_calibration(torch_python, tmp_path):
    proc = run(torch_python, FACTORY, "--quantize", "int8", "-o", str(tmp_path / "o"))
    assert proc.returncode == 2 and "--calibration" in proc.stderr


def test_unconvertible_onnx_op_is_named(tf_python, tmp_path):
    """DFT is a standard ONNX op (opset 17) that onnx2tf has no converter for."""
    model = tmp_path / "dft.onnx"
    code = (
        "import sys, onnx; from onnx import helper as h, TensorProto as T; "
        "n = h.make_node('DFT', ['x'], ['y'], name='the_dft'); "
        "g = h.make_graph([n], 'g', [h.make_tensor_value_info('x', T.FLOAT, [1, 3, 16, 16])], "
        "[h.make_tensor_value_info('y', T.FLOAT, None)]); "
        "onnx.save(h.make_model(g, opset_imports=[h.make_opsetid('', 17)]), sys.argv[1])"
    )
    from convert_helpers import ok

    ok(run(tf_python, code, str(model), tool="code"))
    proc = run(tf_python, str(model), "-o", str(tmp_path / "o"))
    assert proc.returncode == 2 and "'DFT'" in proc.stderr and "the_dft" in proc.stderr, proc.stderr[-2000:]
    assert "other route" in proc.stderr and "litert-torch" in proc.stderr, "the error names the route to try instead"


def test_unconvertible_torch_op_is_named(torch_python, tmp_path):
    """litert-torch has no lowering for aten.cumprod: the error names the op, not just 'conversion failed'."""
    proc = run(torch_python, "tests.converters.unsupported_op:build", "-o", str(tmp_path / "o"))
    assert proc.returncode == 2 and "aten.cumprod" in proc.stderr, proc.stderr[-2000:]
    assert "other route" in proc.stderr and "onnx2tf" in proc.stderr, "the error names the route to try instead"


def test_corrupt_onnx_leaves_no_output(torch_python, tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(DEMO_ONNX.read_bytes()[:5000])
    for tool in ("convert", "quantize"):
        out = tmp_path / tool
        extra = ["--calibration", str(DEMO_ONNX.parents[1] / "selftest")] if tool == "quantize" else []
        proc = run(torch_python, str(broken), *extra, "-o", str(out), tool=tool)
        assert proc.returncode == 2 and str(broken) in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert not out.exists(), f"{tool}: {sorted(out.rglob('*'))}"


def test_quantize_onnx_empty_calibration_folder(torch_python, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run(torch_python, str(DEMO_ONNX), "--calibration", str(empty), "-o", str(tmp_path / "o"), tool="quantize")
    assert proc.returncode == 2 and "holds no images" in proc.stderr and str(empty) in proc.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("tool", ["convert", "quantize"])
def test_missing_labels_file_is_named(tool, torch_python, tmp_path):
    missing = tmp_path / "nope.txt"
    extra = ["--calibration", str(DEMO_ONNX.parents[1] / "selftest")] if tool == "quantize" else []
    proc = run(torch_python, str(DEMO_ONNX), *extra, "--labels", str(missing), "-o", str(tmp_path / "o"), tool=tool)
    assert proc.returncode == 2 and f"--labels {missing}" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("tool", ["convert", "quantize"])
def test_a_task_the_agent_cannot_decode_is_refused_up_front(tool, dynamic_onnx, torch_python, tmp_path):
    """Ultralytics writes task=segment/pose/obb into its exports: refused before any conversion work."""
    import onnx

    proto = onnx.load(str(dynamic_onnx["meta"]))
    next(p for p in proto.metadata_props if p.key == "task").value = "segment"
    seg = tmp_path / "seg.onnx"
    onnx.save(proto, str(seg))
    extra = ["--calibration", str(DEMO_ONNX.parents[1] / "selftest")] if tool == "quantize" else []
    proc = run(torch_python, str(seg), *extra, "-o", str(tmp_path / "o"), tool=tool)
    assert proc.returncode == 2 and "'segment' model" in proc.stderr and "metadata_props 'task'" in proc.stderr, proc.stderr
    assert not (tmp_path / "o").exists()


def test_convert_input_size_contradicting_a_static_onnx(tf_python, tmp_path):
    out = tmp_path / "o"
    proc = run(tf_python, str(DEMO_ONNX), "--input-size", "320x240", "-o", str(out))
    assert proc.returncode == 2 and "--input-size 320x240 contradicts" in proc.stderr, proc.stderr[-2000:]
    assert not out.exists()
