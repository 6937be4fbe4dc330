"""A model litert-torch cannot lower (0.10.0 has no lowering for ``aten.cumprod``), for the error test."""

from __future__ import annotations


def build() -> object:
    import torch

    class CumProd(torch.nn.Module):
        input_size = 16

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cumprod(x, dim=-1)

    return CumProd().eval()
