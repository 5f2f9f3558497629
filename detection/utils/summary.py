"""A Keras ``model.summary()`` for PyTorch modules: every layer's output shape, parameter count and whether it
trains, with totals.

    text = summarize_model(model, example_inputs=([torch.rand(3, 224, 224)],))
    rows, totals = model_summary_rows(model, example_inputs)

Rows are the leaf modules (and any module holding parameters of its own besides its children) in registration
order, named by their qualified name. Output shapes come from forward hooks during one no-grad forward pass in
eval mode (layers the pass does not reach show "-"). A parameter shared by several modules is counted once, at its
first owner, so the totals equal ``sum(p.numel() for p in model.parameters())``.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

__all__ = ["model_summary_rows", "summarize_model"]


def _shape_of(out: Any) -> str:
    if torch.is_tensor(out):
        return str([None if i == 0 else d for i, d in enumerate(out.shape)]).replace("None", "B")
    if isinstance(out, (list, tuple)):
        shapes = [_shape_of(o) for o in out]
        return shapes[0] if len(set(shapes)) == 1 and len(shapes) > 4 else ", ".join(shapes)
    if isinstance(out, dict):
        return ", ".join(f"{k}: {_shape_of(v)}" for k, v in out.items())
    return type(out).__name__


def model_summary_rows(model: nn.Module, example_inputs: Optional[Sequence] = None) -> Tuple[List[Dict], Dict]:
    """Per-layer rows ``dict(name, type, output, params, trainable)`` and totals ``dict(total, trainable,
    non_trainable)``. ``trainable`` is 'yes', 'no', 'partly' or '' (no parameters). ``example_inputs``: positional
    arguments of one forward pass to record output shapes (None = no shapes)."""
    seen: set = set()
    rows: List[Dict] = []
    hooks = []
    shapes: Dict[int, str] = {}
    for name, module in model.named_modules():
        own = [p for p in module.parameters(recurse=False) if id(p) not in seen]
        is_leaf = next(module.children(), None) is None
        if not is_leaf and not own:
            continue
        seen.update(id(p) for p in own)
        n = sum(p.numel() for p in own)
        n_train = sum(p.numel() for p in own if p.requires_grad)
        trainable = "" if n == 0 else "yes" if n_train == n else "no" if n_train == 0 else "partly"
        rows.append(dict(name=name or type(model).__name__, type=type(module).__name__, output="-", params=n,
                         trainable_params=n_train, trainable=trainable, _id=id(module)))
        if example_inputs is not None:
            def hook(_module, _inputs, output, key=id(module)):  # returns None: the output is left alone
                shapes.setdefault(key, _shape_of(output))

            hooks.append(module.register_forward_hook(hook))
    if example_inputs is not None:
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                model(*example_inputs)
        finally:
            for h in hooks:
                h.remove()
            model.train(was_training)
    for r in rows:
        r["output"] = shapes.get(r.pop("_id"), "-")
    total = sum(r["params"] for r in rows)
    trainable = sum(r["trainable_params"] for r in rows)
    return rows, dict(total=total, trainable=trainable, non_trainable=total - trainable)


def summarize_model(model: nn.Module, example_inputs: Optional[Sequence] = None, title: Optional[str] = None,
                    notes: str = "", max_name: int = 48) -> str:
    """The Keras-style table (see the module docstring) as text, ending with the totals."""
    rows, totals = model_summary_rows(model, example_inputs)
    name_w = min(max_name, max([len("Layer (type)")] + [len(f"{r['name']} ({r['type']})") for r in rows]))
    out_w = max([len("Output Shape")] + [len(r["output"]) for r in rows])
    header = f"{'Layer (type)':<{name_w}}  {'Output Shape':<{out_w}}  {'Param #':>12}  Trainable"
    rule = "=" * len(header)
    lines = [f'Model: "{title or type(model).__name__}"', rule, header, rule]
    for r in rows:
        label = f"{r['name']} ({r['type']})"
        if len(label) > name_w:
            label = "..." + label[-(name_w - 3):]
        lines.append(f"{label:<{name_w}}  {r['output']:<{out_w}}  {r['params']:>12,}  {r['trainable']}")
    lines += [rule, f"Total params: {totals['total']:,}", f"Trainable params: {totals['trainable']:,}",
              f"Non-trainable params: {totals['non_trainable']:,}"]
    if notes:
        lines += ["-" * len(header), notes.rstrip()]
    lines.append(rule)
    return "\n".join(lines) + "\n"
