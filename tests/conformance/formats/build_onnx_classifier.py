"""Fixture builder (runs in the converter venv): ONNX classifiers with a dynamic batch axis, and onnxruntime's answers.

A small torch CNN (random weights, fixed seed, ten classes, softmax head) exported by ``torch.onnx.export``
with the batch axis dynamic (``dynamic_axes={"input": {0: "batch"}, "probabilities": {0: "batch"}}``), as
torchvision-style classifiers are shipped. Two files, differing only in what the input expects:

- ``imagenet.onnx``: the torchvision convention, RGB 0..1 then ImageNet mean/std. Nothing in an ONNX file says
  so: a user supplies the normalization (model.json ``input.normalization``).
- ``unit.onnx``: the same network with the mean/std folded into the graph, so it takes RGB in 0..1 (the /255
  convention a bare load assumes).

Reference: onnxruntime runs each file directly with the documented preprocessing (RGB, frame stretched to
224x224 bilinear, /255, then mean/std for imagenet.onnx) on the same images, one image per run and all images
in one batch (the dynamic axis must really work). Top-5 (class, probability) go to ``reference.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from agent.sources.scenes import random_scene

SIZE = 224
CLASSES = 10
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
FRAMES = {
    "scene_wide": (320, 240),
    "scene_tall": (240, 320),
    "scene_hd": (640, 360),
    "scene_square": (256, 256),
    "scene_vga": (640, 480),
    "scene_pano": (800, 200),
}


class SmallNet(nn.Module):
    """Conv-BN-ReLU x3, 4x4 average pool, linear, softmax; ``fold`` puts the ImageNet normalization inside."""

    def __init__(self, fold: bool) -> None:
        super().__init__()
        self.fold = fold
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))
        layers: list[nn.Module] = []
        for cin, cout in ((3, 16), (16, 32), (32, 64)):
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.head = nn.Linear(64 * 16, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fold:
            x = (x - self.mean) / self.std
        features = self.features(x)
        features = features - features.mean(dim=1, keepdim=True)  # what differs between images, not what they share
        return torch.softmax(self.head(features) * 25.0, dim=1)  # sharp: clear top classes, not a flat 0.1 each


def preprocess(bgr: np.ndarray, imagenet: bool) -> np.ndarray:
    """The documented preprocessing: RGB, stretched to 224x224 (bilinear), 0..1, [ImageNet mean/std], NCHW."""
    rgb = cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
    x = rgb.astype(np.float32) / 255.0
    if imagenet:
        x = (x - np.asarray(MEAN, np.float32)) / np.asarray(STD, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


def top5(probabilities: np.ndarray) -> list[list[float]]:
    order = np.argsort(-probabilities, kind="stable")[:5]
    return [[int(i), float(probabilities[i])] for i in order]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    out = parser.parse_args().out
    rng = np.random.default_rng(5)
    (out / "images").mkdir(parents=True, exist_ok=True)
    for name, (w, h) in FRAMES.items():
        cv2.imwrite(str(out / "images" / f"{name}.png"), random_scene(rng, w, h, max_objects=4)[0])
    images = {f"{name}.png": cv2.imread(str(out / "images" / f"{name}.png")) for name in FRAMES}
    torch.manual_seed(3)
    base = SmallNet(fold=False)
    with torch.no_grad():  # random but not degenerate BatchNorm statistics
        for module in base.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    base.eval()
    reference: dict[str, object] = {
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "mean": MEAN,
        "std": STD,
        "labels": [f"class{i}" for i in range(CLASSES)],
        "models": {},
    }
    for kind, fold in (("imagenet", False), ("unit", True)):
        model = SmallNet(fold=fold)
        model.load_state_dict(base.state_dict())
        model.eval()
        path = out / f"{kind}.onnx"
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, SIZE, SIZE),),
            str(path),
            input_names=["input"],
            output_names=["probabilities"],
            dynamic_axes={"input": {0: "batch"}, "probabilities": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        shape = session.get_inputs()[0].shape
        assert not isinstance(shape[0], int), f"{path.name}: batch axis is not dynamic ({shape})"
        tensors = {name: preprocess(bgr, imagenet=not fold) for name, bgr in images.items()}
        single = {name: session.run(None, {"input": x})[0][0] for name, x in tensors.items()}
        batched = session.run(None, {"input": np.concatenate(list(tensors.values()))})[0]
        for row, name in zip(batched, tensors, strict=True):
            assert np.allclose(row, single[name], atol=1e-5), f"{path.name}: batch and single runs disagree on {name}"
        reference["models"][kind] = {  # type: ignore[index]
            "input_shape": [d if isinstance(d, int) else str(d) for d in shape],
            "images": {name: {"top5": top5(p)} for name, p in single.items()},
        }
        print(kind, shape, {name: top5(p)[:2] for name, p in single.items()})
    (out / "reference.json").write_text(json.dumps(reference, indent=1))


if __name__ == "__main__":
    main()
