"""ViT-B/16 (Dosovitskiy et al., 2021), as torchvision defines it: 16x16 patches, a class token, learned position
embeddings, 12 pre-norm encoder blocks (12-head attention, 3072-wide GELU MLP).

At 224x224 and 1000 classes: 86.57 M parameters and 17.6 G multiply-accumulates including the attention matrix
products (torchvision: 86.57 M, 17.56 G). The input side must be a multiple of 16.
"""
from __future__ import annotations

import torch
from torch import nn


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_dim: int, dropout: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=1e-6)
        self.self_attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_dim, dim),
                                 nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln_1(x)
        x = x + self.self_attention(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class ViTB16(nn.Module):
    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.0, in_channels: int = 3,
                 image_size: int = 224):
        super().__init__()
        heads = 12
        dim = max(heads, int(round(768 * width_mult / heads)) * heads)
        self.patch = 16
        self.conv_proj = nn.Conv2d(in_channels, dim, self.patch, self.patch)
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embedding = nn.Parameter(torch.empty(1, (image_size // self.patch) ** 2 + 1, dim).normal_(std=0.02))
        self.layers = nn.Sequential(*(EncoderBlock(dim, heads, 4 * dim, dropout) for _ in range(12)))
        self.ln = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] * x.shape[-2] != (self.pos_embedding.shape[1] - 1) * self.patch ** 2:
            side = int(round(((self.pos_embedding.shape[1] - 1) ** 0.5) * self.patch))
            raise ValueError(f"ViT-B/16 was built for {side}x{side} inputs (its position embeddings), got "
                             f"{x.shape[-2]}x{x.shape[-1]}: set model.input_size={side}")
        x = self.conv_proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embedding
        return self.head(self.ln(self.layers(x))[:, 0])
