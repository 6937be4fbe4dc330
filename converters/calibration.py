"""Calibration images: read a folder and preprocess every image exactly as the agent will (agent.preprocess)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agent.decoders.base import TensorInfo
from agent.manifest import InputSpec
from agent.preprocess import Preprocessor
from agent.sources.base import PixelFormat
from converters.errors import CalibrationError
from converters.progress import progress_bar

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
RECOMMENDED_IMAGES = 300  # Ultralytics' threshold; below it int8 ranges are often too narrow


def image_files(folder: Path, what: str = "calibration") -> list[Path]:
    """The images of ``folder`` (sorted); CalibrationError when the folder is missing or has none."""
    if not folder.exists():
        raise CalibrationError(f"{what} folder {folder} does not exist")
    if not folder.is_dir():
        raise CalibrationError(f"{what} path {folder} is not a folder of images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CalibrationError(f"{what} folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def read_bgr(path: Path) -> np.ndarray:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise CalibrationError(f"cannot decode image {path} (corrupt or unsupported)")
    return image


def float_tensor(spec: InputSpec) -> TensorInfo:
    """The float32 input tensor a manifest input spec describes (the fp32 model's input)."""
    return TensorInfo("input", spec.tensor_shape(), np.dtype(np.float32))


def load_calibration(folder: Path, spec: InputSpec, limit: int | None = None, warn: bool = True) -> np.ndarray:
    """``[K, *input_shape[1:]]`` float32: each image letterboxed and normalized by the agent's Preprocessor."""
    files = image_files(folder)
    if limit:
        files = files[:: max(1, len(files) // limit)][:limit]
    if warn and len(files) < RECOMMENDED_IMAGES:
        print(f"note: {len(files)} calibration images; {RECOMMENDED_IMAGES}+ representative frames give safer int8 ranges")
    tensor = float_tensor(spec)
    pre = Preprocessor(spec, tensor)
    out = np.empty((len(files), *tensor.shape), np.float32)
    with progress_bar() as bar:
        task = bar.add_task("preprocessing calibration images", total=len(files))
        for i, path in enumerate(files):
            image = read_bgr(path)
            pre.write(image, PixelFormat.BGR, image.shape[1], image.shape[0], out[i])
            bar.advance(task)
    return out[:, 0]
