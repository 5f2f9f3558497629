"""The explicit training loop: one step = forward -> loss dict -> backward -> optimizer and lr step.

Works for any model that follows the contract (training: `model(images, targets) -> dict of scalar losses`).
"""
import json
import logging
import math
import os
import time
from typing import Callable, Dict, Iterator, List, Optional

import torch
from tqdm import tqdm

from detection.engine.checkpoint import Checkpointer
from detection.engine.distributed import (all_gather_object, any_process, get_world_size, is_main_process,
                                          reduce_mean, unwrap_model)
from detection.utils.atomic_io import atomic_write_text
from detection.utils.seed import get_rng_states

logger = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss."""


def move_to_device(images: List[torch.Tensor], targets: Optional[List[Dict]], device: torch.device):
    """Move a batch (list of images, list of target dicts) to `device`."""
    images = [img.to(device, non_blocking=True) for img in images]
    if targets is not None:
        targets = [{k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()}
                   for t in targets]
    return images, targets


class _TensorBoard:
    """TensorBoard event files in `log_dir` (`tensorboard` is a pinned requirement; without it, a log line and
    nothing else)."""

    def __init__(self, log_dir: str, enabled: bool, purge_step: Optional[int] = None):
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            logger.info("tensorboard is not installed: no event files (metrics.jsonl is still written)")
            return
        self.writer = SummaryWriter(log_dir=log_dir, purge_step=purge_step)

    def add_scalars(self, values: Dict[str, float], step: int) -> None:
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Trainer:
    """Runs iterations `start_iter .. max_iter` over an infinite iterator of `(images, targets)` batches.

    Checkpoints every `snapshot_iters` and at the end (rank 0 only), writes `metrics.jsonl` every `log_period`
    iterations, evaluates with `eval_fn(model) -> dict` every `eval_period` iterations (on every process; the
    metrics come back on rank 0) and, when `best_metric` is set, keeps `model_best.pth` at the best value so far
    (higher is better; remembered across resumes in the checkpoints' `extra`). Stops on a non-finite loss,
    naming the iteration and the loss terms and keeping the last good checkpoint. `ema` (a ModelEMA, the
    checkpointer's) is updated after every optimizer step.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler,
        data_iter: Iterator,
        max_iter: int,
        output_dir: str,
        checkpointer: Checkpointer,
        device: torch.device,
        snapshot_iters: int = 0,
        log_period: int = 20,
        clip_grad_norm: float = 0.0,
        amp: bool = False,
        eval_fn: Optional[Callable[[torch.nn.Module], Dict[str, float]]] = None,
        eval_period: int = 0,
        progress: bool = True,
        best_metric: str = "",
        ema=None,
    ):
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.data_iter = data_iter
        self.max_iter = int(max_iter)
        self.output_dir = output_dir
        self.checkpointer = checkpointer
        self.device = torch.device(device)
        self.snapshot_iters = int(snapshot_iters)
        self.log_period = max(1, int(log_period))
        self.clip_grad_norm = float(clip_grad_norm)
        self.amp = bool(amp) and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.eval_fn = eval_fn
        self.eval_period = int(eval_period)
        self.progress = progress and is_main_process()
        self.best_metric = best_metric
        self.ema = ema
        self.last_good_checkpoint: Optional[str] = None
        self.history: List[Dict[str, float]] = []

    def _write_metrics(self, record: Dict[str, float]) -> None:
        if not is_main_process():
            return
        with open(os.path.join(self.output_dir, "metrics.jsonl"), "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")

    def _drop_redone_metrics(self, start_iter: int) -> None:
        """Remove the metrics.jsonl records of iterations after `start_iter` (written after the checkpoint a resume
        starts from, or by a run killed before its first checkpoint when `start_iter` is 0: about to be redone) and
        a line a kill cut short."""
        path = os.path.join(self.output_dir, "metrics.jsonl")
        if not is_main_process() or not os.path.isfile(path):
            return
        kept, dropped = [], 0
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    redone = int(json.loads(line)["iteration"]) > start_iter
                except (ValueError, KeyError, TypeError):
                    redone = True  # torn by the kill
                if redone:
                    dropped += 1
                else:
                    kept.append(line if line.endswith("\n") else line + "\n")
        if dropped:
            atomic_write_text(path, "".join(kept))
            logger.info("metrics.jsonl: dropped %d record(s) after iteration %d (%s)", dropped, start_iter,
                        "redone after the resume" if start_iter else "of an earlier run that wrote no checkpoint")

    def _remove_earlier_best(self) -> None:
        """A run starting at iteration 0 removes model_best.pth left by an earlier run that wrote no checkpoint
        (killed before it): it is not this run's best."""
        path = os.path.join(self.output_dir, "model_best.pth")
        if os.path.isfile(path):
            os.unlink(path)
            logger.info("removed %s: written by an earlier run that wrote no checkpoint", path)

    def _snapshot(self, iteration: int, name: Optional[str] = None) -> None:
        name = name or f"model_{iteration:07d}"
        rng = all_gather_object(get_rng_states()) if get_world_size() > 1 else None  # on every rank
        path = self.checkpointer.save(name, iteration, rng_per_rank=rng)
        self.last_good_checkpoint = path

    def _evaluate(self, done: int, board: "_TensorBoard") -> None:
        metrics = self.eval_fn(self.model) or {}
        self.model.train()
        record = {"iteration": done, **{f"eval/{k}": float(v) for k, v in metrics.items()
                                        if isinstance(v, (int, float)) and math.isfinite(v)}}
        self._write_metrics(record)
        board.add_scalars({k: v for k, v in record.items() if k != "iteration"}, done)
        value = metrics.get(self.best_metric) if self.best_metric else None
        if value is None or not math.isfinite(float(value)):
            return
        best = self.checkpointer.extra.get("best")
        if best is None or float(value) > best["value"]:
            self.checkpointer.extra["best"] = {"metric": self.best_metric, "value": float(value), "iteration": done}
            self.checkpointer.save("model_best", done, tag_last=False)
            logger.info("new best %s = %.4f at iteration %d: model_best.pth", self.best_metric, float(value), done)

    def run_step(self, iteration: int) -> Dict[str, float]:
        """One optimisation step; returns the (process-averaged) loss values as floats."""
        t0 = time.perf_counter()
        images, targets = next(self.data_iter)
        images, targets = move_to_device(images, targets, self.device)
        data_time = time.perf_counter() - t0
        with torch.autocast(device_type=self.device.type, enabled=self.amp):
            losses = self.model(images, targets)
        total = sum(losses.values())
        if any_process(not bool(torch.isfinite(total)), self.device):
            terms = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items())
            kept = self.last_good_checkpoint or self.checkpointer.last_checkpoint() or "none written yet"
            raise NonFiniteLossError(
                f"non-finite loss at iteration {iteration + 1}: {terms}. Training stopped; "
                f"last good checkpoint: {kept}. Lower SOLVER.BASE_LR or set SOLVER.CLIP_GRAD_NORM.")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if self.clip_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(unwrap_model(self.model))
        reduced = reduce_mean({k: v.detach() for k, v in losses.items()})
        values = {k: float(v) for k, v in reduced.items()}
        values["total_loss"] = sum(values.values())
        values["data_time"] = data_time
        values["time"] = time.perf_counter() - t0
        return values

    def train(self, start_iter: int = 0) -> List[Dict[str, float]]:
        """Train from `start_iter` (iterations already done) to `max_iter`; returns the logged records."""
        self.model.train()
        if is_main_process():
            os.makedirs(self.output_dir, exist_ok=True)
            self._drop_redone_metrics(start_iter)
            if not start_iter:
                self._remove_earlier_best()
        # purge_step: TensorBoard hides the events of the iterations this run redoes (a resume's, or all of those of
        # a run killed before its first checkpoint)
        board = _TensorBoard(os.path.join(self.output_dir, "tensorboard"), enabled=is_main_process(),
                             purge_step=start_iter + 1)
        bar = tqdm(total=self.max_iter, initial=start_iter, disable=not self.progress, desc="train",
                   dynamic_ncols=True, unit="it")
        try:
            for iteration in range(start_iter, self.max_iter):
                lr = self.optimizer.param_groups[0]["lr"]
                values = self.run_step(iteration)
                done = iteration + 1
                loss_text = " ".join(f"{k.replace('loss_', '')}={v:.3f}" for k, v in values.items()
                                     if k.startswith("loss_"))
                bar.set_postfix_str(f"loss={values['total_loss']:.3f} {loss_text} lr={lr:.2e}")
                bar.update(1)
                if done % self.log_period == 0 or done == self.max_iter or done == start_iter + 1:
                    record = {"iteration": done, "lr": lr, **values}
                    self.history.append(record)
                    self._write_metrics(record)
                    board.add_scalars({k: v for k, v in record.items() if k != "iteration"}, done)
                if self.snapshot_iters and done % self.snapshot_iters == 0 and done != self.max_iter:
                    self._snapshot(done)
                if self.eval_fn is not None and self.eval_period and done % self.eval_period == 0:
                    self._evaluate(done, board)
            if start_iter < self.max_iter or self.checkpointer.last_checkpoint() is None:
                self._snapshot(self.max_iter, "model_final")
        finally:
            bar.close()
            board.close()
        return self.history
