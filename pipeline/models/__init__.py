"""The model zoo, defined in this package (torchvision cannot load with a CPU-only torch).

`ZOO` maps a name to "module:Class" so that planning can list and check names without importing torch.

A PyTorch artifact is stored without pickled code: `model.pt` (a state_dict, read with weights_only=True) next to
`model.json`, the architecture spec that rebuilds the module. The spec names a zoo model (`name`) or the user's own
class (`target`, imported, never unpickled), plus the structural edits later stages made:
  `resized`: {module path: new sizes} of Conv2d/BatchNorm2d/Linear layers a structured pruning shrank;
  `bn_folded`: true once batch norms were folded into their convolutions (the fuse stage);
  `removed`: [module paths] of whole blocks replaced by an identity (depth pruning, pipeline/optimize): blocks whose
             output has their input's shape, so the network around them is unchanged.
A spec with `kind: export` or `kind: torchscript` points at a torch.export (.pt2) or TorchScript file instead; those
load with torch.export.load / torch.jit.load (no pickle either) and are graphs that later stages can run and export,
not rebuild.
"""
from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path
from typing import Any

ZOO: dict[str, str] = {
    "mobilenet_v2": "pipeline.models.mobilenet_v2:MobileNetV2",
    "keras_mobilenet_v2": "pipeline.models.keras_zoo:mobilenet_v2",
    "mobilenet_v3_small": "pipeline.models.mobilenet_v3:MobileNetV3Small",
    "mobilenet_v3_large": "pipeline.models.mobilenet_v3:MobileNetV3Large",
    "efficientnet_lite0": "pipeline.models.efficientnet_lite:EfficientNetLite0",
    "squeezenet1_1": "pipeline.models.squeezenet:SqueezeNet11",
    "resnet18": "pipeline.models.resnet:ResNet18",
    "resnet50": "pipeline.models.resnet:ResNet50",
    "resnet101": "pipeline.models.resnet:ResNet101",
    "resnext50_32x4d": "pipeline.models.resnet:ResNeXt50",
    "resnext101_32x8d": "pipeline.models.resnet:ResNeXt101",
    "wide_resnet50_2": "pipeline.models.resnet:WideResNet50",
    "shufflenet_v2_x0_5": "pipeline.models.shufflenet_v2:ShuffleNetV2X05",
    "mnasnet0_5": "pipeline.models.mnasnet:MNASNet05",
    "regnet_x_3_2gf": "pipeline.models.regnet:RegNetX3_2GF",
    "regnet_y_800mf": "pipeline.models.regnet:RegNetY800MF",
    "googlenet": "pipeline.models.inception:GoogLeNet",
    "inception_v3": "pipeline.models.inception:InceptionV3",
    "densenet121": "pipeline.models.densenet:DenseNet121",
    "efficientnet_b0": "pipeline.models.efficientnet:EfficientNetB0",
    "efficientnet_b4": "pipeline.models.efficientnet:EfficientNetB4",
    "efficientnet_v2_s": "pipeline.models.efficientnet:EfficientNetV2S",
    "convnext_tiny": "pipeline.models.convnext:ConvNeXtTiny",
    "vit_b_16": "pipeline.models.vit:ViTB16",
    "centernet_mobilenet_v2": "pipeline.models.detector:CenterNetLite",
    "lraspp_mobilenet_v3": "pipeline.models.segmenter:LRASPP",
}
# Models not written in PyTorch; the train stage dispatches on this and produces their format.
FRAMEWORKS: dict[str, str] = {"keras_mobilenet_v2": "keras"}
# The task a zoo model's outputs serve (pipeline.tasks); the others are classifiers. Known without importing torch,
# so that planning refuses `model=centernet_mobilenet_v2 task=classification` before any work.
TASKS: dict[str, str] = {"centernet_mobilenet_v2": "detection", "lraspp_mobilenet_v3": "segmentation"}


def task_of(name: str) -> str:
    """The task a zoo model is built for (classification unless TASKS says otherwise)."""
    return TASKS.get(name, "classification")


def framework(name: str) -> str:
    """'torch' or 'keras': how a zoo model is built, trained and stored."""
    return FRAMEWORKS.get(name, "torch")


def import_target(target: str):
    """The class named by a dotted path ("pkg.module.Class" or "pkg.module:Class")."""
    module, _, attr = target.replace(":", ".").rpartition(".")
    if not module:
        raise ValueError(f"_target_ {target!r} must be a dotted path such as mypkg.models.MyNet")
    return getattr(importlib.import_module(module), attr)


def build(name: str, num_classes: int, **kwargs: Any):
    """Instantiate a zoo model; kwargs the architecture does not take are refused with the accepted ones listed."""
    module, cls_name = ZOO[name].split(":")
    cls = getattr(importlib.import_module(module), cls_name)
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = set(kwargs) - accepted
    if unknown:
        raise TypeError(f"model {name!r} does not take {sorted(unknown)}; it takes {sorted(accepted)}")
    return cls(num_classes=num_classes, **kwargs)


def arch_kwargs(model_cfg: Any) -> dict[str, Any]:
    """The architecture knobs of the model config (input size is a property of the data, not of the weights)."""
    return {"width_mult": float(model_cfg.width_mult), "dropout": float(model_cfg.dropout)}


def output_facts(model) -> dict[str, Any]:
    """What a module says about its outputs, for the artifact's metadata: their names in order and, for a detector,
    how its raw outputs become boxes (`postprocess`, read by pipeline.tasks.detection)."""
    out: dict[str, Any] = {}
    names = getattr(model, "output_names", None)
    if names:
        out["output_names"] = list(names)
    post = getattr(model, "postprocess", None)
    if callable(post):
        out["postprocess"] = post()
    return out


def replace_head(model, num_classes: int) -> tuple[str, int]:
    """Give a classifier a new, freshly initialised last layer for `num_classes` (fine-tuning a pretrained network on
    other classes). The last nn.Linear is replaced (or the last 1x1 nn.Conv2d of a fully convolutional head);
    returns (its module path, the class count it had)."""
    from torch import nn

    last = None
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1):
            last = (name, m)
    if last is None:
        raise ValueError("the model has no nn.Linear or 1x1 nn.Conv2d layer to use as its classification head")
    name, old = last
    if isinstance(old, nn.Linear):
        new, before = nn.Linear(old.in_features, num_classes, old.bias is not None), old.out_features
    else:
        new, before = nn.Conv2d(old.in_channels, num_classes, 1, bias=old.bias is not None), old.out_channels
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)
    return name, before


def save_torch(model, directory: Path, spec: dict[str, Any]) -> Path:
    """Store a PyTorch model as state_dict + JSON architecture spec: loadable with weights_only=True, no pickle."""
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), directory / "model.pt")
    (directory / "model.json").write_text(json.dumps(spec, indent=2))
    return directory / "model.pt"


def module_sizes(model) -> dict[str, dict[str, int]]:
    """Sizes of every Conv2d, BatchNorm2d and Linear layer by module path (what structured pruning changes)."""
    from torch import nn

    out = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            out[name] = {"in_channels": m.in_channels, "out_channels": m.out_channels, "groups": m.groups}
        elif isinstance(m, nn.BatchNorm2d):
            out[name] = {"num_features": m.num_features}
        elif isinstance(m, nn.Linear):
            out[name] = {"in_features": m.in_features, "out_features": m.out_features}
    return out


def resized_layers(model, reference) -> dict[str, dict[str, int]]:
    """Layers of `model` whose sizes differ from the freshly built `reference` (the `resized` entry of a spec)."""
    ref = module_sizes(reference)
    return {n: s for n, s in module_sizes(model).items() if ref.get(n) != s}


def apply_resized(model, resized: dict[str, dict[str, int]]):
    """Replace the named layers by empty ones of the recorded sizes (their weights come from the state_dict)."""
    from torch import nn

    for name, sizes in resized.items():
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        old = getattr(parent, attr)
        if isinstance(old, nn.Identity):  # a batch norm folded into its convolution (bn_folded)
            continue
        if isinstance(old, nn.Conv2d):
            new = nn.Conv2d(sizes["in_channels"], sizes["out_channels"], old.kernel_size, old.stride, old.padding,
                            old.dilation, sizes["groups"], old.bias is not None, old.padding_mode)
        elif isinstance(old, nn.BatchNorm2d):
            new = nn.BatchNorm2d(sizes["num_features"], old.eps, old.momentum, old.affine, old.track_running_stats)
        elif isinstance(old, nn.Linear):
            new = nn.Linear(sizes["in_features"], sizes["out_features"], old.bias is not None)
        else:
            raise ValueError(f"model.json: layer {name!r} is a {type(old).__name__}; only Conv2d, BatchNorm2d and "
                             f"Linear layers can be resized")
        setattr(parent, attr, new)
    return model


def conv_bn_pairs(model) -> list[tuple[str, str]]:
    """(conv, batch norm) module paths where the batch norm reads only that convolution's output (found by tracing)."""
    import torch.fx as fx
    from torch import nn

    gm = fx.symbolic_trace(model)
    mods = dict(model.named_modules())
    pairs = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(mods.get(node.target), nn.BatchNorm2d):
            continue
        src = node.args[0]
        if (isinstance(src, fx.Node) and src.op == "call_module" and isinstance(mods.get(src.target), nn.Conv2d)
                and len(src.users) == 1):
            pairs.append((src.target, node.target))
    return pairs


def fold_batchnorm(model) -> int:
    """Fold every batch norm that follows a convolution into it, in place (the BN becomes an Identity).

    Keeps the model's class and module paths, so the result still saves as state_dict + spec (`bn_folded: true`).
    Returns the number of folded pairs. The model must be in eval mode (running statistics are used).
    """
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    pairs = conv_bn_pairs(model)
    for conv_name, bn_name in pairs:
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        for name, new in ((conv_name, fuse_conv_bn_eval(conv.eval(), bn.eval())), (bn_name, nn.Identity())):
            parent_name, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)
    return len(pairs)


def remove_blocks(model, paths: list[str]):
    """Replace the modules at `paths` by identities, in place (depth pruning); returns the model."""
    from torch import nn

    for name in paths:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if not hasattr(parent, attr):
            raise ValueError(f"model.json: `removed` names {name!r}, which the model does not have")
        setattr(parent, attr, nn.Identity())
    return model


def removable_blocks(model, input_shape) -> list[str]:
    """Module paths of the blocks depth pruning may remove: residual blocks, i.e. children of an nn.Sequential whose
    output has their input's shape and that become the identity when their weights are zero (x + f(x) with f = 0).
    Found by behaviour, not by class, so any residual block of any model counts: one input runs through the model,
    each candidate is re-run on what it saw with its weights zeroed. Replacing one by an identity keeps every other
    layer's shapes."""
    import copy

    import torch
    from torch import nn

    seen: dict[str, torch.Tensor] = {}
    hooks = []
    for name, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential):
            continue
        for child, m in seq.named_children():
            if any(True for _ in m.children()) and any(True for _ in m.parameters()):
                path = f"{name}.{child}" if name else child
                hooks.append(m.register_forward_hook(
                    lambda mod, args, out, path=path: seen.__setitem__(path, args[0].detach())
                    if args and isinstance(out, torch.Tensor) and out.shape == args[0].shape else None))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.randn(2, *list(input_shape)[1:], generator=torch.Generator().manual_seed(0)))
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    found = []
    for path, x in seen.items():
        block = copy.deepcopy(model.get_submodule(path)).eval()
        with torch.no_grad():
            for n, t in [*block.named_parameters(), *block.named_buffers()]:
                t.fill_(1.0 if n.endswith("running_var") else 0.0)
            if torch.allclose(block(x), x):
                found.append(path)
    return [p for p in found if not any(p.startswith(f + ".") for f in found)]  # outermost blocks only


def build_from_spec(spec: dict[str, Any]):
    """An untrained module of the spec's architecture, with its structural edits applied (weights not loaded)."""
    if spec.get("target"):
        cls = import_target(spec["target"])
        model = cls(**spec.get("init", {}))
    else:
        model = build(spec["name"], spec["num_classes"], **spec.get("kwargs", {}))
    if spec.get("removed"):  # first: the layers of a removed block are not there to fold or resize
        remove_blocks(model, spec["removed"])
    # Fold first, then resize: a folded batch norm is an Identity that keeps no size, whichever edit came first.
    if spec.get("bn_folded"):
        fold_batchnorm(model.eval())
    if spec.get("resized"):
        apply_resized(model, spec["resized"])
    return model


def load_torch(path: Path):
    """Rebuild a model stored by `save_torch` (or imported as a torch.export / TorchScript file). Returns (model, spec).

    Never unpickles: weights_only=True refuses anything but tensors, so a checkpoint from elsewhere cannot run code;
    a truncated or foreign file is named with the fix."""
    import torch

    path = Path(path)
    fix = ("re-create it (re-run with cache.force=[STAGE]) or supply a state_dict saved with "
           "torch.save(model.state_dict(), PATH) next to its model.json")
    try:
        spec = json.loads((path.parent / "model.json").read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read the architecture of {path} from {path.parent / 'model.json'} ({e}); {fix}") from e
    kind = spec.get("kind", "state_dict")
    try:
        if kind == "export":
            return torch.export.load(str(path)).module(), spec
        if kind == "torchscript":
            return torch.jit.load(str(path), map_location="cpu").eval(), spec
    except Exception as e:  # torch raises many types for damaged archives
        reason = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise ValueError(f"cannot load {kind} file {path}: it is truncated or corrupt ({reason}); re-export it") from None
    try:
        model = build_from_spec(spec)
    except (ValueError, KeyError, TypeError, ImportError, AttributeError) as e:
        raise ValueError(f"cannot rebuild the architecture of {path} from {path.parent / 'model.json'} ({e}); {fix}") from e
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError/UnpicklingError/EOFError... for damaged or unsafe files
        reason = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        kind = ("it holds more than tensors (a pickled object), which is refused because unpickling can run code"
                if "weights_only" in str(e).lower() or "Unsupported global" in str(e) else "it is truncated or corrupt")
        raise ValueError(f"cannot load PyTorch checkpoint {path}: {kind} ({reason}); {fix}") from None
    if not isinstance(state, dict):
        raise ValueError(f"cannot load PyTorch checkpoint {path}: it holds a {type(state).__name__}, not a state_dict; {fix}")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"PyTorch checkpoint {path} does not fit the architecture in model.json "
                         f"({str(e).splitlines()[0][:300]}); {fix}") from None
    return model.eval(), spec
