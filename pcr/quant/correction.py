"""The UNet's output layer with a per-step, per-channel affine correction of the model output.

    StepAffineConv2d(x) = g_k ⊙ conv2d(x, W, b) + h_k          g, h: [T, C_out], k: the sampling step

The correction is what the `affine` and `bias` calibration objectives fit (pcr.calibrate.objectives):
per step k, the gain g_k and shift h_k that bring the quantized UNet's guided output ε̂_k to the target
ε*_k. Classifier-free guidance is linear, so correcting both branches corrects the guided output by the
same affine map: ε_u' + w (ε_c' - ε_u') = g ⊙ (ε_u + w (ε_c - ε_u)) + h.

The layer is the float `conv_out` (it must be kept in float, `quant.keep_float`) with two buffers more,
read by index like the activation quantizers' rows, so one compiled graph serves every step. The
identity (g = 1, h = 0) is what an uncalibrated step holds.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pcr.quant.modules import keep_scales_float32
from pcr.quant.step import StepCounter

OUTPUT_LAYER = "conv_out"  # (pcr.config.OUTPUT_LAYER too) the last layer of diffusers' UNet2DConditionModel: its output is the model output


class StepAffineConv2d(nn.Conv2d):
    """Buffers: `out_gain [T, C_out]` and `out_shift [T, C_out]` (float32), the row picked by the step counter."""

    @classmethod
    def from_module(cls, conv: nn.Conv2d, *, num_steps: int, counter: StepCounter) -> StepAffineConv2d:
        if type(conv) is not nn.Conv2d:
            raise ValueError(f"the output correction needs a float nn.Conv2d output layer, got {type(conv).__name__}: "
                             f"keep {OUTPUT_LAYER} in float (quant.keep_float)")
        q = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None, padding_mode=conv.padding_mode,
                device="meta")
        q.weight, q.bias = conv.weight, conv.bias
        dev = conv.weight.device
        q.register_buffer("out_gain", torch.ones(num_steps, conv.out_channels, device=dev))
        q.register_buffer("out_shift", torch.zeros(num_steps, conv.out_channels, device=dev))
        object.__setattr__(q, "_counter", counter)
        q.train(conv.training)
        return q

    @torch.no_grad()
    def set_step(self, k: int, gain: Tensor, shift: Tensor) -> None:
        """Fix step k's correction: gain, shift [C_out]."""
        self.out_gain[k], self.out_shift[k] = gain, shift

    def correct(self, y: Tensor) -> Tensor:
        """g_k ⊙ y + h_k for y [N, C_out, H, W] at the counter's step."""
        k = self._counter.index  # [1] int64
        g = self.out_gain.index_select(0, k).reshape(1, -1, 1, 1).to(y.dtype)
        h = self.out_shift.index_select(0, k).reshape(1, -1, 1, 1).to(y.dtype)
        return torch.addcmul(h, y, g)

    def forward(self, x: Tensor) -> Tensor:
        return self.correct(self._conv_forward(x, self.weight, self.bias))

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        keep_scales_float32(self)  # g and h stay float32 whatever dtype the model is cast to
        return self
