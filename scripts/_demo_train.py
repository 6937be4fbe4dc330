"""The demo detector: a small anchor-free CNN, its target assignment, loss and CPU training loop.

Design (why it looks like this):
- ReLU, not SiLU: SiLU is known to quantize badly to int8, ReLU folds into the conv.
- Backbone to stride 16 for receptive field, upsampled and fused back to ONE stride-8 output level:
  the smallest objects (~11 px at 192) still get their own cell, and there is one grid to decode.
- The box decode lives in the graph and is normalized to 0..1 of the input, so boxes and sigmoid
  scores share a 0..1 range in the single ``[1, 4+C, N]`` output and a per-tensor int8 scale fits both.
  Sigmoid-bounded regressions (YOLOv5-style) instead of ``exp`` keep every tensor's range small.
  The head (1x1 convs + decode) is one module, ``DetectHead``, so int8 exports keep it float by name.
- Assignment: the centre cell plus the two nearest neighbour cells are positives (YOLOv5-style);
  the offset range ``-0.5..1.5`` cells lets a neighbour reach the centre. BCE on class scores over
  all cells (normalized by positives, like YOLOv8), GIoU on positive boxes.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from _demo_data import SceneSet, batches
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn

STRIDE = 8
WIDTHS = (16, 32, 48, 80)
BOX_GAIN, CLS_GAIN = 5.0, 1.0
EXPORT_INPUT_SIZE = 192  # build_demo_model.INPUT_SIZE (the factory takes no arguments)


class ConvBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DetectHead(nn.Module):
    """1x1 convs + in-graph decode -> ``[B, 4+C, N]``.

    One module, so int8 exports can find it by name scope and keep it float: it is ~0.2% of the
    compute, and quantizing it cost ~0.05 mAP@0.5:0.95 (box sizes come out of a 2-channel conv).
    """

    def __init__(self, channels: int, num_classes: int, input_size: int) -> None:
        super().__init__()
        self.xy = nn.Conv2d(channels, 2, 1)
        self.wh = nn.Conv2d(channels, 2, 1)
        self.cls = nn.Conv2d(channels, num_classes, 1)
        nn.init.constant_(self.cls.bias, -math.log((1 - 0.01) / 0.01))  # start at score 0.01: stable BCE
        g = input_size // STRIDE
        gy, gx = torch.meshgrid(torch.arange(g, dtype=torch.float32), torch.arange(g, dtype=torch.float32), indexing="ij")
        # cell offset folded with the -0.5 of the (2*sigmoid - 0.5) regression, already normalized
        self.register_buffer("grid", (torch.stack([gx, gy])[None] - 0.5) * STRIDE / input_size)
        self.xy_gain = 2.0 * STRIDE / input_size
        self.wh_gain = 0.4  # max box side = 40% of the input (largest scene objects are ~30%)

    def boxes(self, f: torch.Tensor) -> torch.Tensor:
        """Normalized cx, cy, w, h maps ``[B, 4, H, W]``."""
        s = torch.sigmoid(self.wh(f))
        return torch.cat([torch.sigmoid(self.xy(f)) * self.xy_gain + self.grid, s * s * self.wh_gain], 1)

    def forward_train(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalized cxcywh boxes ``[B,4,N]`` and class logits ``[B,C,N]`` (logits for a stable BCE)."""
        return self.boxes(f).flatten(2), self.cls(f).flatten(2)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.boxes(f), torch.sigmoid(self.cls(f))], 1).flatten(2)


class DemoDetector(nn.Module):
    """``forward(x: [B,3,S,S] in 0..1) -> [B, 4+C, (S/8)^2]``: cx, cy, w, h (0..1 of input), class scores."""

    def __init__(self, input_size: int, num_classes: int, widths: tuple[int, int, int, int] = WIDTHS) -> None:
        super().__init__()
        a, b, c, d = widths
        self.input_size, self.num_classes = input_size, num_classes
        self.stem = nn.Sequential(ConvBNReLU(3, a, 2), ConvBNReLU(a, b, 2), ConvBNReLU(b, b))  # stride 4
        self.p3 = nn.Sequential(ConvBNReLU(b, c, 2), ConvBNReLU(c, c))  # stride 8
        self.p4 = nn.Sequential(ConvBNReLU(c, d, 2), ConvBNReLU(d, d), ConvBNReLU(d, d))  # stride 16
        self.neck = nn.Sequential(ConvBNReLU(c + d, c), ConvBNReLU(c, c))
        self.head = DetectHead(c, num_classes, input_size)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        p3 = self.p3(self.stem(x))
        p4 = self.p4(p3)
        return self.neck(torch.cat([p3, F.interpolate(p4, scale_factor=2.0, mode="nearest")], 1))

    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head.forward_train(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def fused_for_export(model: DemoDetector) -> DemoDetector:
    """An eval-mode copy with every BatchNorm folded into its conv (clean graphs for both exporters)."""
    fused = copy.deepcopy(model).eval()
    for module in fused.modules():
        if isinstance(module, ConvBNReLU):
            conv, bn = module[0], module[1]
            module[0] = torch.nn.utils.fusion.fuse_conv_bn_eval(conv, bn)
            module[1] = nn.Identity()
    # Contiguous weights: litert-torch 0.10.0 keys its constant cache on the data_ptr of a temporary
    # `.contiguous()` copy, so channels_last weights (from training) can be swapped for another
    # same-shaped weight whose freed temporary had the same address.
    return fused.to(memory_format=torch.contiguous_format)



def export_architecture() -> DemoDetector:
    """The untrained export graph (BatchNorm folded), for ``convert-to-tflite _demo_train:export_architecture``.

    The build script saves the trained fused state dict and converts with ``--weights`` through this
    factory, the same ``module:callable`` path users take.
    """
    from agent.sources.scenes import CLASSES

    return fused_for_export(DemoDetector(EXPORT_INPUT_SIZE, len(CLASSES)))

# ---- assignment and loss ----------------------------------------------------------------

def assign_targets(gt: torch.Tensor, grid: int) -> tuple[torch.Tensor, ...]:
    """Positive cells for a batch of padded ground truth ``[B, M, 5]`` (class, x1, y1, x2, y2 in input px).

    Returns ``(batch_idx, cell_idx, class_id, target_boxes_xyxy_px)``, one row per positive.
    """
    b, m = (gt[..., 0] >= 0).nonzero(as_tuple=True)
    g = gt[b, m]
    cx, cy = (g[:, 1] + g[:, 3]) / 2 / STRIDE, (g[:, 2] + g[:, 4]) / 2 / STRIDE
    gi, gj = cx.floor().clamp(0, grid - 1), cy.floor().clamp(0, grid - 1)
    dx = torch.where(cx - gi < 0.5, -1.0, 1.0)
    dy = torch.where(cy - gj < 0.5, -1.0, 1.0)
    ci = torch.stack([gi, gi + dx, gi]).flatten()
    cj = torch.stack([gj, gj, gj + dy]).flatten()
    ok = (ci >= 0) & (ci < grid) & (cj >= 0) & (cj < grid)
    cell = (cj * grid + ci)[ok].long()
    # one row per (ground truth, candidate cell); candidates are stacked as [centre, x-neighbour, y-neighbour]
    return b.repeat(3)[ok], cell, g[:, 0].repeat(3)[ok].long(), g[:, 1:].repeat(3, 1)[ok]


def giou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Generalized IoU of matching rows of two ``[P,4]`` xyxy box sets."""
    iw = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0)
    ih = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp(min=0)
    inter = iw * ih
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter + 1e-9
    cw = torch.maximum(a[:, 2], b[:, 2]) - torch.minimum(a[:, 0], b[:, 0])
    ch = torch.maximum(a[:, 3], b[:, 3]) - torch.minimum(a[:, 1], b[:, 1])
    hull = cw * ch + 1e-9
    iou = inter / union
    return iou - (hull - union) / hull


def detection_loss(boxes: torch.Tensor, logits: torch.Tensor, gt: torch.Tensor, input_size: int) -> torch.Tensor:
    grid = input_size // STRIDE
    b, cell, cls, target = assign_targets(gt, grid)
    n_pos = max(len(b), 1)
    cls_target = torch.zeros_like(logits)
    cls_target[b, cls, cell] = 1.0
    cls_loss = F.binary_cross_entropy_with_logits(logits, cls_target, reduction="sum") / n_pos
    p = boxes[b, :, cell] * input_size  # [P, 4] cxcywh in input px
    pred = torch.stack([p[:, 0] - p[:, 2] / 2, p[:, 1] - p[:, 3] / 2, p[:, 0] + p[:, 2] / 2, p[:, 1] + p[:, 3] / 2], 1)
    box_loss = (1.0 - giou(pred, target)).mean() if len(b) else boxes.sum() * 0.0
    return CLS_GAIN * cls_loss + BOX_GAIN * box_loss


# ---- training --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class TrainResult:
    model: DemoDetector  # the EMA weights, eval mode
    final_loss: float  # mean loss over the last epoch
    seconds: float
    epoch_losses: list[float]


class WeightEMA:
    """Exponential moving average of weights and BN statistics, with YOLO's ramp.

    The decay ramps up from 0 so the average never carries much of the random init; a plain
    0.998 over a ~3k-step run would keep a visible share of it.
    """

    def __init__(self, model: DemoDetector, decay: float = 0.998, tau: float = 300.0) -> None:
        self.model = copy.deepcopy(model).eval()
        self.decay, self.tau, self.updates = decay, tau, 0
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: DemoDetector) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        ema_state, state = self.model.state_dict(), model.state_dict()
        for key, value in ema_state.items():
            if value.dtype.is_floating_point:
                value.mul_(d).add_(state[key].detach(), alpha=1 - d)


def _augmented_batch(data: SceneSet, idx: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random horizontal/vertical flips: the letterbox is centred, so a flipped sample is still a valid frame."""
    size = data.images.shape[1]
    x = torch.from_numpy(data.images[idx]).permute(0, 3, 1, 2).float().div_(255.0)
    gt = torch.from_numpy(data.boxes[idx].copy())
    valid = gt[..., 0] >= 0
    for axis, (lo, hi) in ((3, (1, 3)), (2, (2, 4))):
        flip = torch.from_numpy(rng.random(len(idx)) < 0.5)
        if flip.any():
            x[flip] = x[flip].flip(axis)
            sel = flip[:, None] & valid
            a, b = gt[..., lo].clone(), gt[..., hi].clone()
            gt[..., lo] = torch.where(sel, size - b, a)
            gt[..., hi] = torch.where(sel, size - a, b)
    return x.contiguous(memory_format=torch.channels_last), gt


def train_detector(
    data: SceneSet, input_size: int, num_classes: int, epochs: int, batch_size: int, lr: float, seed: int
) -> TrainResult:
    """AdamW + warmup/cosine schedule, EMA of the weights; a rich bar per epoch and for the whole run."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = DemoDetector(input_size, num_classes).to(memory_format=torch.channels_last)
    decay = [p for n, p in model.named_parameters() if p.ndim == 4]
    no_decay = [p for n, p in model.named_parameters() if p.ndim != 4]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    steps_per_epoch = len(data) // batch_size
    total, warmup = epochs * steps_per_epoch, min(300, epochs * steps_per_epoch // 5)

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, total - warmup)
        return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    ema = WeightEMA(model)
    epoch_losses: list[float] = []
    start = time.perf_counter()
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns) as progress:
        run = progress.add_task("training", total=epochs, info="")
        for epoch in range(epochs):
            model.train()
            task = progress.add_task(f"  epoch {epoch + 1}/{epochs}", total=steps_per_epoch, info="")
            running = 0.0
            for step, idx in enumerate(batches(len(data), batch_size, rng)):
                x, gt = _augmented_batch(data, idx, rng)
                boxes, logits = model.forward_train(x)
                loss = detection_loss(boxes, logits, gt, input_size)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                ema.update(model)
                running += loss.item()
                progress.update(task, advance=1, info=f"loss {running / (step + 1):.3f}")
            epoch_losses.append(running / steps_per_epoch)
            progress.remove_task(task)
            progress.update(run, advance=1, info=f"loss {epoch_losses[-1]:.3f}")
    return TrainResult(ema.model.eval(), epoch_losses[-1], time.perf_counter() - start, epoch_losses)
