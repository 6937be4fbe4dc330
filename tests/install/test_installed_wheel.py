"""The built wheel, installed into venvs outside the checkout, run from a temp folder as a user would.

Every console script in pyproject's [project.scripts] is covered automatically: a script added later is
run here without editing this file. The device install (no extras) must run the agent's scripts and must
not pull in torch or TensorFlow; the converter install (`[convert]`) runs one real conversion per converter.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
from pathlib import Path

import pytest
from installed import CONVERTER_SCRIPTS, SCRIPTS, run_installed, user_env

from agent import load_detector
from tests.conformance.refs import assert_detections_match

pytestmark = pytest.mark.slow


def _python(venv: Path, code: str, cwd: Path) -> str:
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code], cwd=cwd, env=user_env(), capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip()


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_console_script_runs_from_the_device_install(script: str, device_venv: Path, tmp_path: Path) -> None:
    """`--help` (and `--version` where offered) from a temp cwd; the converters' help needs no toolchain."""
    proc = run_installed(device_venv, script, "--help", cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, f"{script} --help: exit {proc.returncode}\n{proc.stderr[-3000:]}"
    assert "usage:" in proc.stdout.lower(), proc.stdout[:500]
    if "--version" in proc.stdout:
        version = run_installed(device_venv, script, "--version", cwd=tmp_path, timeout=120)
        assert version.returncode == 0 and importlib.metadata.version("edge-agent") in version.stdout, version


def test_the_device_install_imports_from_site_packages_without_toolchains(device_venv: Path, tmp_path: Path) -> None:
    code = (
        "import importlib.util as u, json, agent, converters, agent.demo_models as d; "
        "print(json.dumps([[agent.__file__, converters.__file__, d.__path__[0]], "
        "[m for m in ('torch', 'tensorflow', 'onnx2tf', 'litert_torch', 'onnxruntime') if u.find_spec(m)]]))"
    )
    files, toolchains = json.loads(_python(device_venv, code, tmp_path))
    for path in files:
        assert path.startswith(str(device_venv)), f"imported from outside the installed wheel: {path}"
    assert not toolchains, f"the device install must not pull in {toolchains}"
    check = subprocess.run(
        [str(device_venv / "bin" / "python"), "-m", "pip", "check"], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout


@pytest.mark.parametrize("script", sorted(CONVERTER_SCRIPTS))
def test_converters_without_the_extra_name_it(script: str, device_venv: Path, tmp_path: Path) -> None:
    """A real run in the device install: one clear error naming the extra and the pip command, exit 2, no output."""
    demo = Path(_python(device_venv, "import agent.demo_models as d; print(d.__path__[0])", tmp_path))
    args = [str(demo / "onnx-fp32" / "model.onnx"), "-o", str(tmp_path / "out")]
    if script == "quantize-onnx":
        args += ["--calibration", str(demo / "selftest")]
    proc = run_installed(device_venv, script, *args, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert re.search(r"pip install 'edge-agent\[convert[a-z-]*\]'", proc.stderr), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_the_wheel_declares_the_convert_extra(convert_venv: Path, tmp_path: Path) -> None:
    """The wheel's metadata: `convert` pulls every converter toolchain, and pip finds the install consistent."""
    code = "import importlib.metadata as m, json; print(json.dumps(m.requires('edge-agent')))"
    requires = json.loads(_python(convert_venv, code, tmp_path))
    extras = {m.group(1) for r in requires if (m := re.search(r'extra == "([^"]+)"', r))}
    assert {"convert", "convert-torch", "convert-tf", "convert-onnx"} <= extras, extras
    convert = [set(m.group(1).split(",")) for r in requires if (m := re.match(r'edge-agent\[([^\]]+)\]; extra == "convert"$', r))]
    assert convert == [{"convert-torch", "convert-onnx"}], requires
    assert any(r.startswith("edge-agent[onnx]") and 'extra == "convert-onnx"' in r for r in requires), requires
    direct = _python(
        convert_venv, "import importlib.metadata as m; print(m.distribution('edge-agent').read_text('direct_url.json'))", tmp_path
    )
    assert '"editable": true' not in direct, f"venv-convert holds an editable install, not the wheel: {direct}"
    check = subprocess.run(
        [str(convert_venv / "bin" / "python"), "-m", "pip", "check"], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout
    unmet = json.loads(_python(convert_venv, EXTRA_CLOSURE_CHECK, tmp_path))  # pip check ignores extras' requirements
    assert unmet == [], f"`pip install 'edge-agent[convert]'` left these requirements unmet: {unmet}"


#: run in the convert venv: every requirement `edge-agent[convert]` pulls in (extras followed through
#: self-references like edge-agent[convert-tf]) is installed at a version its specifier allows
EXTRA_CLOSURE_CHECK = """
import importlib.metadata as md, json
from packaging.requirements import Requirement
reqs = [Requirement(r) for r in md.requires("edge-agent")]
want, seen, unmet = ["convert"], set(), []
while want:
    extra = want.pop()
    if extra in seen:
        continue
    seen.add(extra)
    for req in reqs:
        if req.marker is None or not req.marker.evaluate({"extra": extra}):
            continue
        if req.name == "edge-agent":
            want.extend(req.extras)
            continue
        try:
            version = md.version(req.name)
        except md.PackageNotFoundError:
            unmet.append(f"{req} (missing)")
            continue
        if version not in req.specifier and not req.specifier.contains(version, prereleases=True):
            unmet.append(f"{req} (have {version})")
print(json.dumps(sorted(unmet)))
"""


def test_installed_quantize_onnx_converts(convert_venv: Path, tmp_path: Path) -> None:
    demo = Path(_python(convert_venv, "import agent.demo_models as d; print(d.__path__[0])", tmp_path))
    out = tmp_path / "q"
    proc = run_installed(
        convert_venv,
        "quantize-onnx",
        str(demo / "onnx-fp32" / "model.onnx"),
        "--calibration",
        str(demo / "selftest"),
        "-o",
        str(out),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    det = load_detector(out / "model.onnx")
    assert det.manifest.quantization["format"] == "QDQ"
    assert det.manifest.labels == ("circle", "square", "triangle", "cross")
    det.close()


def test_converted_on_the_workstation_runs_on_the_device_install(convert_venv: Path, device_venv: Path, tmp_path: Path) -> None:
    """convert-to-tflite (convert venv) -> `edge-agent detect --model` (device venv), both from a temp cwd.

    Oracle: the source ONNX run by the agent in this process; the float32 .tflite must find the same boxes.
    """
    import cv2

    demo = Path(_python(convert_venv, "import agent.demo_models as d; print(d.__path__[0])", tmp_path))
    out = tmp_path / "converted"
    proc = run_installed(convert_venv, "convert-to-tflite", str(demo / "onnx-fp32" / "model.onnx"), "-o", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    images = sorted((demo / "selftest").glob("scene_0*.jpg"))[:4]
    detect = run_installed(
        device_venv, "edge-agent", "detect", "--model", str(out / "model.tflite"), *map(str, images), cwd=tmp_path, timeout=300
    )
    assert detect.returncode == 0, detect.stderr[-3000:]
    results = [json.loads(line) for line in detect.stdout.splitlines() if line.startswith("{")]
    assert [r["source_id"] for r in results] == [p.name for p in images]
    source = load_detector(demo / "onnx-fp32" / "model.onnx")
    threshold = source.manifest.thresholds.score
    try:
        matched = 0
        for result, image in zip(results, images, strict=True):
            got = [
                {"box": [d["box"][k] for k in ("x1", "y1", "x2", "y2")], "class_id": d["class_id"], "score": d["score"]}
                for d in result["detections"]
            ]
            matched += assert_detections_match(source.detect(cv2.imread(str(image))), got, threshold, image.name)
    finally:
        source.close()
    assert matched >= len(images), f"only {matched} boxes matched on {len(images)} scenes: the comparison proved little"


def test_installed_convert_to_tflite_converts(convert_venv: Path, tmp_path: Path) -> None:
    demo = Path(_python(convert_venv, "import agent.demo_models as d; print(d.__path__[0])", tmp_path))
    out = tmp_path / "t"
    proc = run_installed(
        convert_venv,
        "convert-to-tflite",
        str(demo / "onnx-fp32" / "model.onnx"),
        "-o",
        str(out),
        "--labels",
        str(demo / "selftest" / "labels.json"),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    det = load_detector(out / "model.tflite")
    assert det.manifest.provenance["converter_path"] == "onnx2tf"
    assert det.manifest.labels == ("circle", "square", "triangle", "cross")
    det.close()
