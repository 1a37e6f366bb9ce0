"""Look inside MA-AGIQA (notebook 04): stage shapes, the released TABlock reshape, the gate.

- `showcase_variant(data)`: the variant the notebook dissects (the released gate when the
  semantic vectors are prepared, MANIQA alone otherwise).
- `example_batch(data, n)`: the first `n` training inputs (cached tokens or images) and
  their semantic vectors, ready for the model.
- `trace_maniqa(model, inputs, semantic)`: one batch through the model; one row per stage
  with the shapes it received and returned (forward hooks: the model's own code runs).
- `tablock_reshape_demo(channels, tokens)`: `attn @ v` on a small labelled tensor, laid out
  as the released `(attn @ v).transpose(1, 2).reshape(B, C, N)` does it and as it should be.
- `gate_weights(run_or_model, data, n)`: the gate weights of a few test images with their
  sum (the released gate has no softmax: weights can be negative and need not sum to 1).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from agiqa_lib.core.errors import AgiqaError
from agiqa_lib.ma_agiqa.config import TrainConfig
from agiqa_lib.ma_agiqa.data import MAItems, PreparedData
from agiqa_lib.ma_agiqa.model import MAAGIQA
from agiqa_lib.ma_agiqa.train import RunResult, predict


def showcase_variant(data: PreparedData) -> str:
    """The variant notebook 04 takes apart: the released gate when `data` holds the semantic
    vectors (some chosen variant fuses them), else MANIQA alone (the vectors were not
    prepared, so no fused model can run)."""
    return "released_gate" if data.semantic is not None else "maniqa"


def example_batch(data: PreparedData, n: int = 4) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Inputs [n, C, N] (cached tokens) or [n, 3, 224, 224] (images, `full`) and vectors [n, 2, D]."""
    from agiqa_lib.backbones.iqa_backbone import IqaBackbone

    rows = data.rows("train")[:n]
    transform = None if data.tokens is not None else IqaBackbone().transform(False)
    grid = int(round(data.tokens.shape[-1] ** 0.5)) if data.tokens is not None else 28
    items = MAItems(data, rows, grid, seed=0, transform=transform)
    inputs = torch.stack([items[i][0] for i in range(len(rows))]).float()
    semantic = data.semantic[torch.as_tensor(rows)].float() if data.semantic is not None else None
    return inputs, semantic


def _stages(model: MAAGIQA) -> list[tuple[str, nn.Module]]:
    """The modules a forward pass runs, in order, under readable names."""
    maniqa = model.maniqa
    stages = [("backbone (tokens of 784 positions)", model.backbone),
              ("in_proj (lite: 1x1 conv)", maniqa.in_proj)]
    stages += [(f"tablock1[{i}] (attention over channels)", m)
               for i, m in enumerate(maniqa.tablock1)]
    stages += [("conv1 (1x1, on the token grid)", maniqa.conv1), ("swin1", maniqa.swin1)]
    stages += [(f"tablock2[{i}]", m) for i, m in enumerate(maniqa.tablock2)]
    stages += [("conv2 (1x1, halves the width)", maniqa.conv2), ("swin2", maniqa.swin2),
               ("fc_score: f per token", maniqa.fc_score),
               ("fc_weight: w per token", maniqa.fc_weight)]
    fusion = model.fusion
    if fusion is not None:
        stages += [(f"fusion expert: {name}", q)
                   for name, q in zip(fusion.cfg.questions, fusion.queries)]
        stages += [("fusion expert: quality (key on f * w)", fusion.key)]
        if fusion.cfg.gate == "concat_mlp":
            stages += [("fusion: concat MLP", fusion.head)]
        else:
            stages += [("fusion: gate (no softmax as released)"
                        if fusion.cfg.gate == "linear" else "fusion: gate (then softmax)",
                        fusion.gating), ("fusion: output_fc", fusion.output_fc)]
    return stages


def _shape(value) -> str:
    if isinstance(value, torch.Tensor):
        return str(list(value.shape))
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return str(list(value[0].shape))
    return "-"


@torch.no_grad()
def trace_maniqa(model: MAAGIQA, inputs: torch.Tensor,
                 semantic: torch.Tensor | None = None) -> pd.DataFrame:
    """One batch through `model` (eval mode): stage, input shape, output shape, parameters.

    `inputs` are images [B, 3, 224, 224] or cached backbone tokens [B, C, N] (then the
    backbone row is skipped). The final rows give MANIQA's f * w and the model's score.
    """
    rows: list[dict] = []
    hooks = []
    for name, module in _stages(model):
        if isinstance(module, nn.Identity):
            continue

        def record(mod, args, output, name=name):
            rows.append({"stage": name, "input": _shape(args), "output": _shape(output),
                         "parameters": sum(p.numel() for p in mod.parameters())})
        hooks.append(module.register_forward_hook(record))
    was_training = model.training
    model.eval()
    try:
        semantic = semantic if model.needs_semantic else None
        images = inputs.dim() == 4
        out = model(inputs, semantic) if images else model.forward_tokens(inputs, semantic)
        for hook in hooks:
            hook.remove()
        feature = model.maniqa(model.tokens(inputs) if images else inputs.float())
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    rows.append({"stage": "quality feature f * w (MA-AGIQA)", "input": "-",
                 "output": _shape(feature.feature), "parameters": 0})
    if out.gates is not None:
        rows.append({"stage": "gate weights", "input": "-", "output": _shape(out.gates),
                     "parameters": 0})
    rows.append({"stage": "score", "input": "-", "output": _shape(out.score), "parameters": 0})
    return pd.DataFrame(rows).set_index("stage")


def tablock_reshape_demo(channels: int = 3, tokens: int = 4) -> pd.DataFrame:
    """`attn @ v` [1, C, N] with entry (c, n) labelled "c{c}·n{n}", laid out two ways.

    clean: kept as [C, N], row c = channel c. released: `.transpose(1, 2).reshape(B, C, N)`,
    which reads the [N, C] transpose row by row into C rows of N: row c now holds pieces of
    several channels and tokens, so the residual `x + out` adds them to the wrong places.
    """
    labels = np.array([[f"c{c}·n{n}" for n in range(tokens)] for c in range(channels)])
    index = torch.arange(channels * tokens).view(1, channels, tokens)  # stands for attn @ v
    released = index.transpose(1, 2).reshape(1, channels, tokens)[0]
    flat = labels.reshape(-1)
    layouts = {"clean: attn @ v": labels,
               "released: .transpose(1, 2).reshape(B, C, N)": flat[released.numpy()]}
    columns = pd.MultiIndex.from_product([list(layouts), [f"n{n}" for n in range(tokens)]],
                                         names=["layout", "token"])
    body = np.concatenate(list(layouts.values()), axis=1)
    return pd.DataFrame(body, index=pd.Index([f"c{c}" for c in range(channels)],
                                             name="channel row"), columns=columns)


def gate_weights(source: RunResult | MAAGIQA, data: PreparedData | None = None,
                 n: int = 6) -> pd.DataFrame:
    """Gate weight of each expert for `n` test images, their sum and whether any is negative.

    `source` is a trained run (its saved test predictions are read) or a model (scored on
    the first `n` test rows of `data`).
    """
    if isinstance(source, RunResult):
        predictions = source.predictions.head(n)
    else:
        if data is None:
            raise AgiqaError("gate_weights needs `data` to score a model")
        rows = data.rows("test")[:n]
        cfg = TrainConfig(device=str(next(source.parameters()).device))
        pred, gates = predict(source, data, rows, cfg)
        if gates is None:
            raise AgiqaError(f"variant {source.cfg.variant!r} has no gate")
        predictions = data.df.iloc[rows][["name", "generator", "mos"]].assign(pred=pred)
        for j, name in enumerate(source.fusion.expert_names):
            predictions[f"gate_{name}"] = gates[:, j]
    gates = [c for c in predictions if c.startswith("gate_")]
    if not gates:
        raise AgiqaError("this run has no gate weights (MANIQA alone or the concat-MLP)")
    table = predictions[["name", "mos", "pred", *gates]].reset_index(drop=True)
    table["sum of gates"] = table[gates].sum(axis=1)
    table["any negative"] = (table[gates] < 0).any(axis=1)
    return table.rename(columns={g: g.replace("gate_", "gate: ") for g in gates})
