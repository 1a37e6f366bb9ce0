"""MA-AGIQA's mixture-of-experts fusion of the MANIQA quality feature and two MLLM vectors.

As released (`models/MA_AGIQA.py`, forward): k = Linear(F, F)(f * w);
q1 = Dropout(ReLU(Linear(D, F)(semantic-content vector))); q2 = the same, own weights, for
the coherence vector; gate g = Linear(3F, 3)([q1; q2; k]) with NO softmax (the paper
describes a softmax); score = Linear(F, 1)(g1 q1 + g2 q2 + g3 k).

Variants (all by config): the paper's softmax gate; one question only (its expert and the
quality expert); and a concat-MLP that replaces gating by an MLP on [q1; q2; k].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from agiqa_lib.core.errors import AgiqaError

QUESTION_EXPERTS = ("semantic_content", "coherence")  # order of the [N, 2, D] vectors
GATES = ("linear", "softmax", "concat_mlp")


@dataclass(frozen=True)
class FusionConfig:
    """Which experts are fused and how; defaults are the released model."""

    feature_dim: int = 784            # length of MANIQA's f * w
    semantic_dim: int = 4096          # MLLM hidden size (LLaMA-2-7B)
    questions: tuple[str, ...] = QUESTION_EXPERTS
    gate: str = "linear"              # "linear" (released), "softmax" (paper), "concat_mlp"
    drop: float = 0.1


# variant name -> (questions used, gate); "maniqa" (no fusion) lives in models.ma_agiqa
FUSION_VARIANTS: dict[str, tuple[tuple[str, ...], str]] = {
    "released_gate": (QUESTION_EXPERTS, "linear"),
    "softmax_gate": (QUESTION_EXPERTS, "softmax"),
    "semantic_only": (("semantic_content",), "linear"),
    "coherence_only": (("coherence",), "linear"),
    "concat_mlp": (QUESTION_EXPERTS, "concat_mlp"),
}


def fusion_config(variant: str, feature_dim: int = 784, semantic_dim: int = 4096,
                  drop: float = 0.1) -> FusionConfig:
    """The FusionConfig of a named variant (see FUSION_VARIANTS)."""
    if variant not in FUSION_VARIANTS:
        raise AgiqaError(f"unknown fusion variant {variant!r}; choose one of "
                         f"{sorted(FUSION_VARIANTS)}")
    questions, gate = FUSION_VARIANTS[variant]
    return FusionConfig(feature_dim, semantic_dim, questions, gate, drop)


@dataclass
class FusionOutput:
    """Predicted score [B] and gate weights [B, experts] (None for concat-MLP)."""

    score: torch.Tensor
    gates: torch.Tensor | None


class MoEFusion(nn.Module):
    """Gate-weighted sum of question experts and the quality expert, then a linear score."""

    def __init__(self, cfg: FusionConfig):
        super().__init__()
        unknown = set(cfg.questions) - set(QUESTION_EXPERTS)
        if unknown or not cfg.questions or cfg.gate not in GATES:
            raise AgiqaError(f"bad fusion config: questions {cfg.questions} must be a non-empty "
                             f"subset of {QUESTION_EXPERTS}, gate one of {GATES}")
        self.cfg = cfg
        f, d = cfg.feature_dim, cfg.semantic_dim
        self.question_index = [QUESTION_EXPERTS.index(q) for q in cfg.questions]
        self.key = nn.Linear(f, f)
        self.queries = nn.ModuleList(
            [nn.Sequential(nn.Linear(d, f), nn.ReLU(), nn.Dropout(cfg.drop))
             for _ in cfg.questions])
        n_experts = len(cfg.questions) + 1
        if cfg.gate == "concat_mlp":
            self.head = nn.Sequential(nn.Linear(n_experts * f, f), nn.ReLU(),
                                      nn.Dropout(cfg.drop), nn.Linear(f, 1))
        else:
            self.gating = nn.Linear(n_experts * f, n_experts)
            self.output_fc = nn.Linear(f, 1)

    @property
    def expert_names(self) -> list[str]:
        """Names of the experts, in the order of the gate weights."""
        return [*self.cfg.questions, "quality"]

    def forward(self, feature: torch.Tensor, semantic: torch.Tensor) -> FusionOutput:
        """feature: [B, F] quality feature f * w; semantic: [B, 2, D] MLLM vectors."""
        experts = [q(semantic[:, i].float()) for q, i in zip(self.queries, self.question_index)]
        experts.append(self.key(feature))
        stacked = torch.cat(experts, dim=1)  # [B, E * F]
        if self.cfg.gate == "concat_mlp":
            return FusionOutput(self.head(stacked).squeeze(-1), None)
        gates = self.gating(stacked)  # [B, E]
        if self.cfg.gate == "softmax":
            gates = gates.softmax(dim=-1)
        mixed = torch.bmm(gates.unsqueeze(1), torch.stack(experts, dim=1)).squeeze(1)
        return FusionOutput(self.output_fc(mixed).squeeze(-1), gates)
