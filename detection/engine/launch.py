"""What train_net / test_net / demo share: config from the command line, device, logging, seeding, weights.

Tools stay thin: they parse arguments, call these, and turn `ToolError` (and config / file errors) into exit
code 2 with a one-line message.
"""
from __future__ import annotations

import argparse
import logging
import os
from typing import Callable, List, Optional, Sequence

import torch

from detection.engine.distributed import get_rank, init_distributed

logger = logging.getLogger(__name__)


class ToolError(RuntimeError):
    """A bad command line or input the user can fix; tools print it and exit with code 2."""


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """--cfg FILE and --set KEY VALUE [KEY VALUE ...] (py-faster-rcnn's override syntax)."""
    parser.add_argument("--cfg", required=True, metavar="FILE", help="YAML config (overrides of the defaults)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY VALUE", dest="overrides",
                        help="config overrides, e.g. --set SOLVER.MAX_ITER 100 TEST.SCALES '[400,600]'")
    parser.add_argument("--device", default=None, help="override DEVICE: cpu, cuda, cuda:N")


def load_config_from_args(args: argparse.Namespace):
    """The config of --cfg with --set (and --device) applied; ToolError for a missing file or odd overrides."""
    from detection.config import ConfigError, load_config

    if not os.path.isfile(args.cfg):
        raise ToolError(f"--cfg {args.cfg}: no such file")
    overrides: List[str] = list(args.overrides or [])
    if len(overrides) % 2:
        raise ToolError(f"--set takes KEY VALUE pairs; got an odd number of items: {overrides}")
    if getattr(args, "device", None):
        overrides += ["DEVICE", args.device]
    try:
        return load_config(args.cfg, overrides)
    except ConfigError as exc:
        raise ToolError(str(exc)) from exc


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda if available else cpu; under torchrun on CUDA each process takes GPU LOCAL_RANK."""
    name = str(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ToolError(f"DEVICE {name!r}: CUDA is not available here (torch {torch.__version__}); use cpu")
        if name == "cuda" and "LOCAL_RANK" in os.environ:
            name = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    elif name != "cpu":
        raise ToolError(f"DEVICE {name!r}: expected auto, cpu, cuda or cuda:N")
    return torch.device(name)


def setup_run(cfg, output_dir: Optional[str], distributed: bool = False,
              claim: Optional[Callable[[], object]] = None) -> torch.device:
    """Join torchrun's process group (when `distributed`), check that `output_dir` can be written and call
    `claim` (e.g. lock it for a training run: `run_lock.claim_output_dir`) on rank 0, set up logging into
    `output_dir`, seed, pick the device. Returns the device.

    A user error of rank 0's checks reaches every process (they all raise it, before anything is written)."""
    from detection.utils.logger import setup_logger
    from detection.utils.seed import derive_seed, seed_everything

    device = resolve_device(cfg.DEVICE)
    if distributed:
        init_distributed(device.type)
    rank = get_rank()
    if output_dir:
        _on_rank0_for_all(lambda: (check_writable_dir(output_dir), claim() if claim is not None else None))
    setup_logger(output_dir, rank=rank)
    seed = int(cfg.RNG_SEED)
    if seed >= 0:
        seed_everything(seed if rank == 0 else derive_seed(seed, rank) % 2**31)
    return device


def _on_rank0_for_all(fn: Callable[[], object]) -> None:
    """Run `fn` on rank 0; when it raises, every process raises (rank 0 its own exception, the others a ToolError
    with its message), so that no process waits for a rank that has stopped."""
    from detection.engine.distributed import all_gather_object, get_world_size
    from detection.utils.errors import one_line

    failure, message = None, None
    if get_rank() == 0:
        try:
            fn()
        except Exception as exc:
            failure, message = exc, one_line(exc) or type(exc).__name__
    if get_world_size() > 1:
        message = all_gather_object(message)[0]
    if failure is not None:
        raise failure
    if message is not None:
        raise ToolError(message)


def check_writable_dir(folder: str) -> None:
    """Create `folder` if needed and check a file can be written in it; ToolError "cannot write to DIR: reason"
    otherwise (no permission, read-only, a path through a file, ...)."""
    import tempfile

    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except FileExistsError:  # makedirs: `folder` itself is a file
        raise ToolError(f"cannot write to {folder}: it is a file, not a folder") from None
    except OSError as exc:
        raise ToolError(f"cannot write to {folder}: {exc.strerror or exc}") from None


def find_inference_weights(cfg, weights: Optional[str], task) -> Optional[str]:
    """The checkpoint to evaluate: --weights, else OUTPUT_DIR's `last_checkpoint`, else None when the task's
    model is complete without training (e.g. an ImageNet classifier); otherwise ToolError saying what to pass."""
    from detection.engine.checkpoint import read_last_checkpoint

    if weights:
        return resolve_weights_argument(cfg, weights)
    path = read_last_checkpoint(cfg.OUTPUT_DIR)
    if path is not None:
        logger.info("no --weights: using %s (OUTPUT_DIR's last checkpoint)", path)
        return path
    if not task.needs_weights(cfg):
        return None
    raise ToolError(f"no --weights given and no checkpoint in OUTPUT_DIR {cfg.OUTPUT_DIR}: pass --weights "
                    f"CKPT (e.g. {os.path.join(cfg.OUTPUT_DIR, 'model_final.pth')} after tools/train_net.py)")


def resolve_weights_argument(cfg, weights: str) -> str:
    """The file of --weights: a path, or torchvision's detector file name (or short name) in the torch hub cache
    (hash-checked); ToolError when it is neither."""
    from detection.modeling.torchvision_detectors import TORCHVISION_DETECTOR_FILES, resolve_detector_weights

    path = resolve_detector_weights(weights)
    if path is None:
        raise ToolError(f"--weights {weights}: no such file (a checkpoint written by tools/train_net.py, e.g. "
                        f"{os.path.join(cfg.OUTPUT_DIR, 'model_final.pth')}, a torchvision detector state dict, or "
                        f"one of torchvision's file names in the torch hub cache: "
                        f"{', '.join(TORCHVISION_DETECTOR_FILES.values())})")
    return path


def load_inference_model(task, cfg, weights: Optional[str], device: torch.device):
    """(model in eval mode on `device`, class names): the checkpoint's weights and, when it stored them, its
    class names (else the task's names for the config). CheckpointError when the config's class list (or the
    one found in the data) differs from the checkpoint's: its labels would be reported under other names."""
    from detection.engine.checkpoint import load_model_weights

    model = task.build_model_for_weights(cfg) if weights else task.build_model(cfg)
    names: Sequence[str] = ()
    if weights:
        try:
            state = load_model_weights(model, weights)
        except (KeyError, ValueError, RuntimeError, FileNotFoundError) as exc:
            raise ToolError(f"cannot load --weights {weights} into the model of {cfg.MODEL.META_ARCHITECTURE} / "
                            f"{cfg.MODEL.BACKBONE.NAME}: {exc}") from exc
        names = (state.get("extra") or {}).get("class_names") or ()
        if cfg.DATA.CLASSES or not int(cfg.MODEL.NUM_CLASSES):  # a list is given, or found in the data
            given = "DATA.CLASSES" if cfg.DATA.CLASSES else "the classes found for the config (DATA.CLASSES is [])"
            check_class_names(names, task.resolve_class_names(cfg), weights, given)
    model.to(device).eval()
    return model, list(names) or task.class_names(cfg)


def check_class_names(trained: Sequence[str], given: Sequence[str], weights: str, given_what: str) -> None:
    """CheckpointError naming both lists when a class list given beside checkpoint `weights` differs from the one
    it was trained on (names or order: label k is the k-th name). Nothing to check when either is empty."""
    from detection.engine.checkpoint import CheckpointError

    if trained and given and list(trained) != list(given):
        raise CheckpointError(f"{weights} was trained on the classes {list(trained)}, but {given_what} is "
                              f"{list(given)}: its labels would be reported under other names (names and order "
                              f"must match). Use the checkpoint's list, or fine-tune to the new one with "
                              f"tools/train_net.py --weights {weights}")


def user_errors() -> tuple:
    """Exception types that mean bad input the user can fix (config, files, weights, annotations)."""
    from detection.config import ConfigError
    from detection.data.image_io import ImageReadError
    from detection.data.records import DatasetError
    from detection.engine.checkpoint import CheckpointError
    from detection.utils.atomic_io import OutputWriteError
    from detection.evaluation.evaluator import EvaluationInputError
    from detection.modeling.backbone.weights import WeightsError

    return (ToolError, ConfigError, FileNotFoundError, ImageReadError, DatasetError, EvaluationInputError,
            WeightsError, CheckpointError, OutputWriteError)


def _io_failure(exc: OSError) -> Optional[str]:
    """The one-line message of an OSError that is the user's disk or permissions (full disk, no write access,
    read-only file system, a path through a file), else None."""
    import errno

    name = f" {exc.filename}" if exc.filename else ""
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return f"disk full while writing{name}"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR):
        return f"{exc.strerror}:{name}" if name else str(exc.strerror)
    return None


def run_tool(fn, args) -> int:
    """`fn(args) -> exit code`, with user errors printed as one line `error: ...` (exit 2; a DataLoader worker's
    traceback is left out), the output folders `fn` locked released and the process group closed."""
    import sys

    from detection.engine.run_lock import claims_held, release_claims
    from detection.utils.errors import one_line

    held = claims_held()
    try:
        return fn(args)
    except user_errors() as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:
        message = _io_failure(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    finally:
        release_claims(keep=held)  # OUTPUT_DIR's lock (train_net)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
