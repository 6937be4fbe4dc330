"""Where the bundled demo model lives: ``models/demo/<variant>/`` in a checkout, or inside the wheel."""

from __future__ import annotations

from pathlib import Path

from agent.errors import ModelFileError

VARIANTS = ("tflite-int8", "tflite-fp32", "onnx-int8", "onnx-fp32")


def demo_root() -> Path:
    """The demo model folder: the checkout's ``models/demo`` or the installed ``agent/demo_models``."""
    package = Path(__file__).resolve().parent
    for candidate in (package.parent / "models" / "demo", package / "demo_models"):
        if (candidate / VARIANTS[0]).is_dir():
            return candidate
    raise ModelFileError(
        f"the bundled demo model is missing (looked in {package.parent / 'models' / 'demo'} and {package / 'demo_models'}); "
        "reinstall edge-agent or set model.path in the config"
    )


def demo_model_path(variant: str = "tflite-int8") -> Path:
    if variant not in VARIANTS:
        raise ModelFileError(f"unknown demo variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    return demo_root() / variant


def selftest_dir() -> Path:
    """Bundled held-out frames with ground truth (used by self-tests)."""
    return demo_root() / "selftest"


def is_demo_model(path: Path) -> bool:
    """True when ``path`` (a model file or folder) is one of the bundled demo variants."""
    try:
        root = demo_root().resolve()
    except ModelFileError:
        return False
    return path.resolve().is_relative_to(root)


def demo_notice(labels: list[str]) -> str:
    """What the demo model knows, and how to run a real one: said once when it meets real images."""
    return (
        f"the bundled demo model only knows {len(labels)} synthetic shapes ({', '.join(labels)}) as the synthetic source "
        "draws them; on photos or camera frames its detections mean nothing. Point model.path in the config "
        "(or detect --model) at a real .tflite/.onnx model; README 'Converters' makes one from PyTorch, ONNX or TensorFlow"
    )
