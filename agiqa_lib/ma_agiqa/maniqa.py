"""MANIQA quality branch as MA-AGIQA's released code builds it (Yang et al. 2022; Wang et al. 2024).

Input: frozen-or-trained backbone tokens [B, C, N] on a square grid (ViT-B/8 blocks 6-9:
C = 3072, N = 784 = 28 x 28). Two transposed-attention blocks (TABlock, attention across
channels), a 1x1 conv to `embed_dim`, a Swin stage, two more TABlocks, a 1x1 conv to
`embed_dim // 2`, a second Swin stage, then per-token heads f (score) and w (weight).
MA-AGIQA uses the N-d vector f * w as its quality feature; MANIQA alone scores an image
with sum(f * w) / sum(w).

Only modules that reach the output are built: the released model also defines Swin
downsample convs and leftover heads that forward never uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.layers import DropPath, trunc_normal_
from torch import nn


@dataclass(frozen=True)
class ManiqaConfig:
    """Architecture of the MANIQA branch; defaults are the released `full` model."""

    in_channels: int = 3072            # backbone channels (4 ViT-B blocks x 768)
    in_proj: int | None = None         # lite only: 1x1 conv to this width before stage 1
    grid: int = 28                     # token grid side: N = grid ** 2 tokens
    embed_dim: int = 768               # width after conv1; stage 2 runs at embed_dim // 2
    num_tab: int = 2                   # TABlocks before each conv
    depths: tuple[int, ...] = (2, 2)   # Swin blocks per layer (each layer ends in a 3x3 conv)
    num_heads: tuple[int, ...] = (4, 4)
    window_size: int = 4
    dim_mlp: int = 768                 # Swin MLP hidden width (both stages)
    scale: float = 0.8                 # Swin layer residual: x = scale * layer(x) + x
    drop: float = 0.1                  # TABlock dropout, Swin input dropout, head dropout
    drop_path_rate: float = 0.1        # stochastic depth 0 -> rate across all Swin blocks
    clean_tablock: bool = False        # True: undo the released reshape scramble

    @property
    def num_tokens(self) -> int:
        """Tokens per image, which is also the length of the quality feature f * w."""
        return self.grid * self.grid


class TABlock(nn.Module):
    """Transposed attention: a C x C attention map over channels, each channel a token vector.

    The released code reshapes the output with `(attn @ v).transpose(1, 2).reshape(B, C, N)`,
    which is not the inverse of any transpose and mixes channels and tokens. `clean=False`
    reproduces that; `clean=True` keeps `attn @ v` as [B, C, N].
    """

    def __init__(self, num_tokens: int, drop: float = 0.1, clean: bool = False):
        super().__init__()
        self.c_q = nn.Linear(num_tokens, num_tokens)
        self.c_k = nn.Linear(num_tokens, num_tokens)
        self.c_v = nn.Linear(num_tokens, num_tokens)
        self.norm_fact = num_tokens ** -0.5
        self.proj_drop = nn.Dropout(drop)
        self.clean = clean

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, N = x.shape
        q, k, v = self.c_q(x), self.c_k(x), self.c_v(x)
        attn = (q @ k.transpose(-2, -1) * self.norm_fact).softmax(dim=-1)  # [B, C, C]
        out = attn @ v  # [B, C, N]
        if not self.clean:
            out = out.transpose(1, 2).reshape(B, C, N)  # as released
        return x + self.proj_drop(out)


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """[B, H, W, C] -> [B * windows, window * window, C]."""
    B, H, W, C = x.shape
    x = x.view(B, H // window, window, W // window, window, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, C)


def window_reverse(windows: torch.Tensor, window: int, H: int, W: int) -> torch.Tensor:
    """[B * windows, window * window, C] -> [B, H, W, C]."""
    C = windows.shape[-1]
    x = windows.view(-1, H // window, W // window, window, window, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, H, W, C)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside square windows, with a relative position bias."""

    def __init__(self, dim: int, window: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window - 1) ** 2, num_heads))
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window),
                                            indexing="ij")).flatten(1)  # [2, w*w]
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
        self.register_buffer("relative_position_index",
                             rel[..., 0] * (2 * window - 1) + rel[..., 1], persistent=False)
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B_, N, C = x.shape
        qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [B_, heads, N, head_dim]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = attn + bias.view(N, N, -1).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            n_win = mask.shape[0]
            attn = attn.view(B_ // n_win, n_win, self.num_heads, N, N) + mask[None, :, None]
            attn = attn.view(B_, self.num_heads, N, N)
        x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(B_, N, C)
        return self.proj(x)


class SwinBlock(nn.Module):
    """Pre-norm (shifted-)window attention block with a GELU MLP."""

    def __init__(self, dim: int, grid: int, num_heads: int, window: int, shift: int,
                 dim_mlp: int, drop_path: float):
        super().__init__()
        self.grid, self.window, self.shift = grid, window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, num_heads)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim_mlp), nn.GELU(), nn.Linear(dim_mlp, dim))
        self.register_buffer("attn_mask", self._shift_mask() if shift else None,
                             persistent=False)

    def _shift_mask(self) -> torch.Tensor:
        """-100 between tokens that the cyclic shift brought together from far regions."""
        img = torch.zeros(1, self.grid, self.grid, 1)
        cuts = (slice(0, -self.window), slice(-self.window, -self.shift),
                slice(-self.shift, None))
        for i, (h, w) in enumerate((h, w) for h in cuts for w in cuts):
            img[:, h, w, :] = i
        ids = window_partition(img, self.window).squeeze(-1)  # [windows, w*w]
        diff = ids.unsqueeze(1) - ids.unsqueeze(2)
        return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, C = x.shape
        h = self.norm1(x).view(B, self.grid, self.grid, C)
        if self.shift:
            h = torch.roll(h, shifts=(-self.shift, -self.shift), dims=(1, 2))
        h = self.attn(window_partition(h, self.window), mask=self.attn_mask)
        h = window_reverse(h, self.window, self.grid, self.grid)
        if self.shift:
            h = torch.roll(h, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + self.drop_path(h.reshape(B, L, C))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class SwinLayer(nn.Module):
    """Swin blocks (shift 0, window // 2, ...) followed by a 3x3 conv and ReLU."""

    def __init__(self, dim: int, grid: int, depth: int, num_heads: int, window: int,
                 dim_mlp: int, drop_paths: list[float]):
        super().__init__()
        self.grid = grid
        self.blocks = nn.ModuleList([
            SwinBlock(dim, grid, num_heads, window, 0 if i % 2 == 0 else window // 2,
                      dim_mlp, drop_paths[i]) for i in range(depth)])
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, N, C] -> [B, N, C]
        for block in self.blocks:
            x = block(x)
        B, N, C = x.shape
        x = x.transpose(1, 2).reshape(B, C, self.grid, self.grid)
        return F.relu(self.conv(x)).flatten(2).transpose(1, 2)


class SwinStage(nn.Module):
    """MANIQA's `SwinTransformer`: input dropout, then layers with scaled residuals."""

    def __init__(self, dim: int, cfg: ManiqaConfig):
        super().__init__()
        self.scale = cfg.scale
        self.dropout = nn.Dropout(cfg.drop)
        rates = torch.linspace(0, cfg.drop_path_rate, sum(cfg.depths)).tolist()
        starts = [sum(cfg.depths[:i]) for i in range(len(cfg.depths))]
        self.layers = nn.ModuleList([
            SwinLayer(dim, cfg.grid, depth, heads, cfg.window_size, cfg.dim_mlp,
                      rates[start:start + depth])
            for depth, heads, start in zip(cfg.depths, cfg.num_heads, starts)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] -> [B, C, H, W]
        B, C, H, W = x.shape
        x = self.dropout(x).flatten(2).transpose(1, 2)
        for layer in self.layers:
            x = self.scale * layer(x) + x
        return x.transpose(1, 2).reshape(B, C, H, W)


def _head(dim: int, last: nn.Module, drop: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(drop), nn.Linear(dim, 1),
                         last)


@dataclass
class ManiqaOutput:
    """Per-token score f and weight w, each [B, N]."""

    f: torch.Tensor
    w: torch.Tensor

    @property
    def feature(self) -> torch.Tensor:
        """MA-AGIQA's quality feature f * w, [B, N] (not summed)."""
        return self.f * self.w

    @property
    def score(self) -> torch.Tensor:
        """MANIQA's own image score sum(f * w) / sum(w), [B]."""
        return self.feature.sum(dim=1) / self.w.sum(dim=1)


class Maniqa(nn.Module):
    """MANIQA branch: backbone tokens [B, C, N] -> per-token f and w."""

    def __init__(self, cfg: ManiqaConfig):
        super().__init__()
        self.cfg = cfg
        n, dim = cfg.num_tokens, cfg.embed_dim
        self.in_proj = (nn.Conv1d(cfg.in_channels, cfg.in_proj, 1) if cfg.in_proj
                        else nn.Identity())
        self.tablock1 = nn.ModuleList(
            [TABlock(n, cfg.drop, cfg.clean_tablock) for _ in range(cfg.num_tab)])
        self.conv1 = nn.Conv2d(cfg.in_proj or cfg.in_channels, dim, 1, 1, 0)
        self.swin1 = SwinStage(dim, cfg)
        self.tablock2 = nn.ModuleList(
            [TABlock(n, cfg.drop, cfg.clean_tablock) for _ in range(cfg.num_tab)])
        self.conv2 = nn.Conv2d(dim, dim // 2, 1, 1, 0)
        self.swin2 = SwinStage(dim // 2, cfg)
        self.fc_score = _head(dim // 2, nn.ReLU(), cfg.drop)
        self.fc_weight = _head(dim // 2, nn.Sigmoid(), cfg.drop)

    def forward(self, tokens: torch.Tensor) -> ManiqaOutput:
        g = self.cfg.grid
        x = self.in_proj(tokens)  # [B, C, N]
        for tab in self.tablock1:
            x = tab(x)
        x = self.swin1(self.conv1(x.unflatten(2, (g, g))))  # [B, embed_dim, g, g]
        x = x.flatten(2)
        for tab in self.tablock2:
            x = tab(x)
        x = self.swin2(self.conv2(x.unflatten(2, (g, g))))  # [B, embed_dim // 2, g, g]
        x = x.flatten(2).transpose(1, 2)  # [B, N, embed_dim // 2]
        return ManiqaOutput(f=self.fc_score(x).squeeze(-1), w=self.fc_weight(x).squeeze(-1))


def count_parameters(module: nn.Module) -> int:
    """Number of parameters of `module` (trainable or not)."""
    return sum(p.numel() for p in module.parameters())
