"""quantize-onnx: ORT static QDQ on the demo ONNX, detection head kept float; the agent loads the result."""

from __future__ import annotations

import pytest
from convert_helpers import DEMO_ONNX, SELFTEST, report

from agent import load_detector

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("method", ["minmax", "percentile"])
def test_quantize_onnx_demo(method, torch_python, conversions, calibration_dir):
    out = conversions.get(f"onnx-q-{method}", torch_python,
                          [str(DEMO_ONNX), "--calibration", str(calibration_dir), "--method", method,
                           "--validate", str(SELFTEST), "--max-map-drop", "3"], tool="quantize")
    data = report(out)
    assert data["map_drop_points"] <= 3.0, data
    det = load_detector(out / "model.onnx")
    q = det.manifest.quantization
    assert q["format"] == "QDQ" and q["calibration"] == method and q["float_nodes"]
    assert det.manifest.labels == ("circle", "square", "triangle", "cross")  # taken from the source's manifest
