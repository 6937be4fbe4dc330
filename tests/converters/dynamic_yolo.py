"""A small detector in the Ultralytics ONNX layout, exported with dynamic axes (``dynamic=True``-style).

Run in the converter venv: ``python dynamic_yolo.py OUT.onnx [--no-metadata]``. The output is one tensor
``[1, 4+C, N]`` (cx, cy, w, h in input pixels, then C class scores), the head YOLOv8 exports; batch, height
and width are symbolic. ``metadata_props`` carry what an Ultralytics export writes (names, imgsz as
[height, width], stride, task, author), so the converters can be checked to carry them into the manifest.
The weights are seeded, not trained: these tests check shapes, metadata and int8-vs-float agreement.
"""

from __future__ import annotations

import sys

NAMES = {0: "cat", 1: "dog", 2: "bird"}
IMGSZ = (256, 320)  # (height, width): deliberately not square, so a swapped W/H shows
STRIDE = 8
BOX_PIXELS = 64.0


def build(path: str, metadata: bool = True) -> None:
    import onnx
    import torch

    torch.manual_seed(0)

    class TinyYolo(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers: list[torch.nn.Module] = []
            channels = 3
            for width in (16, 32, 32):  # three stride-2 stages: stride 8
                layers += [torch.nn.Conv2d(channels, width, 3, 2, 1), torch.nn.SiLU()]
                channels = width
            self.body = torch.nn.Sequential(*layers)
            self.box = torch.nn.Conv2d(channels, 4, 1)
            self.cls = torch.nn.Conv2d(channels, len(NAMES), 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            feat = self.body(x)
            boxes = torch.sigmoid(self.box(feat)) * BOX_PIXELS  # in pixels, like Ultralytics' decoded head
            scores = torch.sigmoid(self.cls(feat))
            return torch.cat([boxes, scores], 1).flatten(2)

    model = TinyYolo().eval()
    sample = torch.rand(1, 3, *IMGSZ)
    torch.onnx.export(
        model,
        (sample,),
        path,
        input_names=["images"],
        output_names=["output0"],
        opset_version=17,
        dynamo=False,
        dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"}, "output0": {0: "batch", 2: "anchors"}},
    )
    proto = onnx.load(path)
    if metadata:
        props = {
            "author": "Ultralytics",
            "task": "detect",
            "stride": str(STRIDE),
            "batch": "1",
            "imgsz": str(list(IMGSZ)),
            "names": str(NAMES),
            "description": "Ultralytics-layout test detector",
        }
        for key, value in props.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
    onnx.save(proto, path)


if __name__ == "__main__":
    build(sys.argv[1], metadata="--no-metadata" not in sys.argv[2:])
