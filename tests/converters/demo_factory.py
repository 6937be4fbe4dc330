"""The demo detector as a PyTorch ``module:callable`` factory, with the committed demo weights.

The trained float weights are read back from the committed float ONNX (its initializers carry the
fused module's state-dict names), so tests need no extra weight file and no training run.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEMO_ONNX = REPO / "models" / "demo" / "onnx-fp32" / "model.onnx"


def build() -> object:
    import numpy as np
    import onnx
    import torch
    from onnx import numpy_helper

    scripts = str(REPO / "scripts")
    if scripts not in sys.path:
        sys.path.insert(0, scripts)
    from _demo_train import DemoDetector, fused_for_export

    model = fused_for_export(DemoDetector(192, 4))
    state = model.state_dict()
    weights = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(DEMO_ONNX)).graph.initializer}
    loaded = {k: torch.from_numpy(np.array(weights[k])) for k in state if k in weights}
    missing = [k for k in state if k not in loaded]
    if missing:
        raise RuntimeError(f"demo ONNX lacks weights for {missing}")
    model.load_state_dict(loaded)
    return model.eval()
