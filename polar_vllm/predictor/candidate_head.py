"""The trainable head of a candidate predictor: question tokens -> one logit per candidate.

Encoder token states are projected to ``d_model``; a learned query attends over them (padding
masked) and the result, beside the masked mean of the projected states, feeds a small MLP with
one output per candidate program: the logit of "this program answers the question right".
"""

from __future__ import annotations

import torch
from torch import nn

from polar_vllm.predictor.predictor_config import PredictorConfig

__all__ = ["CandidateHead"]


class CandidateHead(nn.Module):
    """Maps encoder token states [B, T, E] (+ mask) to candidate logits [B, C]."""

    def __init__(self, config: PredictorConfig) -> None:
        super().__init__()
        d = config.d_model
        self.project = nn.Linear(config.encoder_dim, d)
        self.pool_query = nn.Parameter(torch.randn(1, 1, d))
        self.attention = nn.MultiheadAttention(
            d, config.heads, dropout=config.dropout, batch_first=True
        )
        self.mlp = nn.Sequential(
            nn.LayerNorm(2 * d),
            nn.Linear(2 * d, config.ffn),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.ffn, len(config.candidates)),
        )

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Candidate logits [B, C]; ``mask`` is True at real tokens."""
        keys = self.project(states)
        query = self.pool_query.expand(states.shape[0], -1, -1)
        attended, _ = self.attention(query, keys, keys, key_padding_mask=~mask, need_weights=False)
        weights = mask.unsqueeze(-1).to(keys.dtype)
        mean = (keys * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        return self.mlp(torch.cat([attended[:, 0], mean], dim=-1))

    @torch.no_grad()
    def set_base_rates(self, rates: torch.Tensor) -> None:
        """Start the output biases at the logits of each candidate's training base rate, so
        the untrained head already ranks candidates as the best static choice would."""
        rates = rates.clamp(1e-3, 1 - 1e-3)
        self.mlp[-1].bias.copy_(torch.log(rates / (1 - rates)))
