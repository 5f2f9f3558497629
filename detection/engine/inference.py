"""Run a model over a test loader and score it with an evaluator (any task), on one or many processes.

    metrics, predictions = inference_on_dataset(task, cfg, model, loader, dataset, evaluator, device)

Each process predicts its shard (the test loader's InferenceSampler); outputs are moved to the CPU, gathered on
rank 0, fed to the evaluator in dataset order, and rank 0 returns the metrics (other ranks return {}, []).
"""
from __future__ import annotations

import logging
import time
from typing import Dict, List, Tuple

import torch
from tqdm import tqdm

from detection.engine.distributed import get_world_size, is_main_process

logger = logging.getLogger(__name__)


def _to_cpu(output: Dict) -> Dict:
    return {k: (v.detach().cpu() if torch.is_tensor(v) else v) for k, v in output.items()}


def predict_dataset(task, cfg, model, loader, device, progress: bool = True, desc: str = "test"
                    ) -> List[Tuple[int, Dict]]:
    """[(dataset index, CPU output dict)] of this process's shard, in loader order."""
    results: List[Tuple[int, Dict]] = []
    was_training = model.training
    model.eval()
    runner = task.inference_module(cfg, model)  # the model or its test-time augmentation wrapper, built once
    try:
        with torch.no_grad():
            for images, targets in tqdm(loader, desc=desc, disable=not (progress and is_main_process()),
                                        dynamic_ncols=True, unit="batch"):
                images = [img.to(device, non_blocking=True) for img in images]
                outputs = runner(images)
                results.extend((int(t["index"]), _to_cpu(o)) for t, o in zip(targets, outputs))
    finally:
        model.train(was_training)
    return results


def gather_to_main(items: List) -> List:
    """All processes' lists concatenated on rank 0 (rank order); [] elsewhere. Identity when not distributed."""
    if get_world_size() == 1:
        return items
    gathered = [None] * get_world_size()
    torch.distributed.all_gather_object(gathered, items)
    return [x for part in gathered for x in part] if is_main_process() else []


def inference_on_dataset(task, cfg, model, loader, dataset, evaluator, device, progress: bool = True,
                         batch_size: int = 16) -> Tuple[Dict, List[Tuple[int, Dict]]]:
    """(evaluator.evaluate(), [(dataset index, CPU output)] sorted by index) on rank 0; ({}, []) elsewhere.

    The evaluator gets `(records, outputs)` in dataset order, `batch_size` images at a time.
    """
    start = time.perf_counter()
    predictions = gather_to_main(predict_dataset(task, cfg, model, loader, device, progress))
    if not is_main_process():
        return {}, []
    predictions.sort(key=lambda p: p[0])
    elapsed = time.perf_counter() - start
    logger.info("inference on %d images: %.1f s (%.3f s / image)", len(predictions), elapsed,
                elapsed / max(len(predictions), 1))
    evaluator.reset()
    for i in range(0, len(predictions), batch_size):
        chunk = predictions[i:i + batch_size]
        evaluator.process([dataset.records[idx] for idx, _ in chunk], [out for _, out in chunk])
    return evaluator.evaluate(), predictions
