"""Structural edits of a PyTorch model: depth (residual blocks removed) and channels (structured pruning with
torch-pruning's dependency graph, one ratio per coupled group), and the sensitivity analysis that ranks both.

A channel group is what torch-pruning prunes together (a convolution's output channels with every layer that reads
them: the depthwise convolution and batch norms after an expansion, all layers of one residual stage); it is named by
its root module. The layer that outputs the logits is never pruned. The result is a normal zoo-spec model: `removed`
and `resized` in its spec rebuild it without pickles (pipeline.models).
"""
from __future__ import annotations

import copy
from typing import Any

MAX_LAYER_RATIO = 0.9  # no group loses more than this share of its channels, whatever the allocation asks


def head_layers(model, num_classes: int) -> list[str]:
    """The layer that outputs the logits (kept whole: its outputs are the classes)."""
    from torch import nn

    outs = [n for n, m in model.named_modules()
            if (isinstance(m, nn.Linear) and m.out_features == num_classes)
            or (isinstance(m, nn.Conv2d) and m.out_channels == num_classes and m.kernel_size == (1, 1))]
    return outs[-1:]


def _graph(model, input_shape, ignored: list[str]):
    import torch
    import torch_pruning as tp

    mods = dict(model.named_modules())
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=torch.zeros(1, *list(input_shape)[1:]))
    return dg, [mods[n] for n in ignored if n in mods]


def channel_groups(model, input_shape, num_classes: int) -> list[dict[str, Any]]:
    """Every prunable group: {root (module path), channels}, in the model's order."""
    names = {id(m): n for n, m in model.named_modules()}
    dg, ignored = _graph(model, input_shape, head_layers(model, num_classes))
    out = []
    for g in dg.get_all_groups(ignored_layers=ignored, root_module_types=_root_types()):
        root = g[0].dep.target.module
        if id(root) in names:
            out.append({"root": names[id(root)], "channels": len(g[0].idxs)})
    return out


def _root_types():
    import torch_pruning as tp

    return [tp.ops.TORCH_CONV, tp.ops.TORCH_LINEAR]


def prune_channels(model, input_shape, num_classes: int, ratios: dict[str, float], round_to: int | None) -> None:
    """Prune each named group's channels by its ratio (L1 magnitude of the group's weights), in place."""
    import torch
    import torch_pruning as tp

    mods = dict(model.named_modules())
    by_module = {mods[n]: min(float(r), MAX_LAYER_RATIO) for n, r in ratios.items() if n in mods and r > 0}
    if not by_module:
        return
    ignored = [mods[n] for n in head_layers(model, num_classes)]
    pruner = tp.pruner.MetaPruner(model, torch.zeros(1, *list(input_shape)[1:]),
                                  importance=tp.importance.GroupMagnitudeImportance(p=1), pruning_ratio=0.0,
                                  pruning_ratio_dict=by_module, ignored_layers=ignored, round_to=round_to,
                                  root_module_types=_root_types())
    pruner.step()


def apply(model, spec: dict, input_shape, num_classes: int, removed: list[str], ratios: dict[str, float],
          round_to: int | None) -> tuple[Any, dict]:
    """A pruned copy of `model` and its spec: `removed` blocks replaced by identities, then each group pruned."""
    from pipeline import models
    from pipeline.library.training import base_spec

    pruned = copy.deepcopy(model).eval()
    if removed:
        models.remove_blocks(pruned, removed)
    prune_channels(pruned, input_shape, num_classes, ratios, round_to)
    new = base_spec(spec)  # (the reference the new widths are recorded against)
    gone = sorted(set(spec.get("removed", [])) | set(removed))
    if gone:
        new["removed"] = gone
    if spec.get("bn_folded"):  # a folded input model: its batch norms stay folded
        new["bn_folded"] = True
    new["resized"] = models.resized_layers(pruned, models.build_from_spec(new))
    return pruned, new


def sensitivity(model, input_shape, num_classes: int, score, ratio: float, round_to: int | None, log) -> dict:
    """How much accuracy each edit alone costs, without any fine-tuning: every channel group pruned by `ratio`, every
    removable block removed. `score(model) -> accuracy (0-1)` on held-out training images. Returns {groups: [{root,
    channels, drop}], blocks: [{block, drop}], reference}; drops in points."""
    from pipeline import models

    ref = score(model)
    groups = []
    for g in channel_groups(model, input_shape, num_classes):
        trial = copy.deepcopy(model).eval()
        prune_channels(trial, input_shape, num_classes, {g["root"]: ratio}, round_to)
        groups.append({**g, "drop": 100.0 * (ref - score(trial))})
    blocks = []
    for b in models.removable_blocks(model, input_shape):
        trial = models.remove_blocks(copy.deepcopy(model).eval(), [b])
        blocks.append({"block": b, "drop": 100.0 * (ref - score(trial))})
    log.info("sensitivity: %d channel groups at %.0f%% and %d removable blocks scored (reference top-1 %.4f)",
             len(groups), 100 * ratio, len(blocks), ref)
    return {"reference": ref, "ratio": ratio, "groups": groups, "blocks": blocks}


def allocate(sens: dict, ratio: float, allocation: str, strength: float) -> dict[str, float]:
    """Per-group pruning ratios for a global `ratio`. uniform: the same ratio everywhere (a narrower network with the
    original's most important channels); sensitivity: scaled by each group's rank in the sensitivity analysis, from
    (1 + strength) x ratio for the least sensitive group down to (1 - strength) x ratio for the most sensitive. Ranks,
    not the drops themselves: a drop measured without fine-tuning orders the groups far better than it sizes them."""
    groups = sens["groups"]
    if allocation == "uniform" or len(groups) < 2:
        return {g["root"]: ratio for g in groups}
    order = sorted(range(len(groups)), key=lambda i: (groups[i]["drop"], i))
    n = len(groups)
    out = {}
    for rank, i in enumerate(order):
        factor = 1.0 + strength * (1.0 - 2.0 * rank / (n - 1))
        out[groups[i]["root"]] = max(0.0, min(MAX_LAYER_RATIO, ratio * factor))
    return out


def blocks_to_remove(sens: dict, count: int) -> list[str]:
    """The `count` blocks whose removal costs least, in the model's order."""
    ranked = sorted(sens["blocks"], key=lambda b: b["drop"])[:count]
    names = {b["block"] for b in ranked}
    return [b["block"] for b in sens["blocks"] if b["block"] in names]
