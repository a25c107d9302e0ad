"""The trainable predictor head: layer queries over question tokens -> boundary and op logits.

Encoder token states are projected to ``d_model``; ``D`` learned layer queries cross-attend to
them (padding masked); a small transformer encoder mixes along the layer axis; two linear
heads give one boundary logit and three op logits (skip, keep, repeat) per layer.
"""

from __future__ import annotations

import torch
from torch import nn

from polar_vllm.predictor.predictor_config import OP_SPACE, PredictorConfig

__all__ = ["KEEP_PRIOR", "PolarHead"]

KEEP_PRIOR = 1.0
"""Initial bias of the keep logit over skip and repeat."""


class PolarHead(nn.Module):
    """Maps encoder token states [B, T, E] (+ mask) to boundary [B, D] and op [B, D, 3] logits."""

    def __init__(self, config: PredictorConfig) -> None:
        super().__init__()
        d = config.d_model
        self.project = nn.Linear(config.encoder_dim, d)
        # Unit-scale queries: distinct per layer from the start, so attention is not uniform.
        self.layer_queries = nn.Parameter(torch.randn(config.depth, d))
        self.cross_attention = nn.MultiheadAttention(
            d, config.heads, dropout=config.dropout, batch_first=True
        )
        self.cross_norm = nn.LayerNorm(d)
        block = nn.TransformerEncoderLayer(
            d,
            config.heads,
            dim_feedforward=config.ffn,
            dropout=config.dropout,
            batch_first=True,
            norm_first=True,
        )
        self.layer_mixer = nn.TransformerEncoder(
            block, config.blocks, norm=nn.LayerNorm(d), enable_nested_tensor=False
        )
        self.boundary_head = nn.Linear(d, 1)
        self.op_head = nn.Linear(d, len(OP_SPACE))
        with torch.no_grad():  # start near the full program: keep is the likely op
            self.op_head.bias.copy_(torch.tensor([0.0, KEEP_PRIOR, 0.0]))

    def forward(
        self, states: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Boundary logits [B, D] and op logits [B, D, 3]; ``mask`` is True at real tokens."""
        keys = self.project(states)
        queries = self.layer_queries.unsqueeze(0).expand(states.shape[0], -1, -1)
        attended, _ = self.cross_attention(
            queries, keys, keys, key_padding_mask=~mask, need_weights=False
        )
        hidden = self.layer_mixer(self.cross_norm(queries + attended))
        return self.boundary_head(hidden).squeeze(-1), self.op_head(hidden)
