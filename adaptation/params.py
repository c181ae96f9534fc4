"""Which parameters a strategy adapts: a ``ParamFilter`` resolved against a model."""

from __future__ import annotations

import re

from torch import nn

from adaptation.config import ParamFilter

_TORCH_NORMS: tuple[type[nn.Module], ...] = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.modules.batchnorm._NormBase,  # BatchNorm*d and InstanceNorm*d
)


def is_norm_layer(module: nn.Module) -> bool:
    """A torch normalisation layer, or one whose class name ends in "Norm" (RMSNorm, and
    hand-written ones in the zoo)."""
    return isinstance(module, _TORCH_NORMS) or type(module).__name__.lower().endswith("norm")


def norm_parameter_names(model: nn.Module) -> list[str]:
    """Names of the affine parameters owned directly by normalisation layers (Tent's choice)."""
    names = []
    for prefix, module in model.named_modules():
        if is_norm_layer(module):
            for pname, _ in module.named_parameters(recurse=False):
                names.append(f"{prefix}.{pname}" if prefix else pname)
    return names


def select_parameters(model: nn.Module, params: ParamFilter) -> list[tuple[str, nn.Parameter]]:
    """The (name, parameter) pairs of ``model`` that ``params`` selects, in the model's order.

    Args:
        model: the module to adapt.
        params: "all", "norm", a regex searched in each name, or a tuple of name substrings.

    Returns:
        A non-empty list; a filter that selects nothing is a ValueError naming the filter and
        the model's parameter names.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if params is None or params == "all":
        chosen = named
    elif params == "norm":
        keep = set(norm_parameter_names(model))
        chosen = [(n, p) for n, p in named if n in keep]
    elif isinstance(params, str):
        pattern = re.compile(params)
        chosen = [(n, p) for n, p in named if pattern.search(n)]
    else:
        chosen = [(n, p) for n, p in named if any(s in n for s in params)]
    if not chosen:
        names = [n for n, _ in named]
        shown = names if len(names) <= 12 else [*names[:12], f"... ({len(names)} in all)"]
        hint = " (the model has no normalisation layers)" if params == "norm" else ""
        raise ValueError(
            f"params: expected a filter matching at least one trainable parameter of "
            f"{type(model).__name__}{hint}, got {params!r}; parameters: {shown}"
        )
    return chosen
