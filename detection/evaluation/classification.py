"""Classification evaluation: accuracy, confusion matrix, per-class precision and recall, confidence analysis.

    evaluator = ClassificationEvaluator(class_names, output_dir)
    evaluator.process(records, outputs)   # records: dicts with path, label (0..K-1), image_id;
                                          # outputs: dicts with probs [K] (class order) - the classifier's output
    metrics = evaluator.evaluate()

Files written under ``output_dir`` (when not None):
    predictions.csv            one row per image: image_id, path, true, predicted, score, true-class probability
    confusion_matrix.csv       rows = true class, columns = predicted class
    confidence_analysis.csv    per class: the most confident correct, the least confident and the most
                               confidently wrong images (rank, path, true, predicted, scores)
    confidence_analysis.png    the same images as a contact sheet with the scores written under each
"""
from __future__ import annotations

import csv
import logging
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from detection.evaluation.evaluator import DatasetEvaluator, EvaluationInputError, json_safe, to_numpy

logger = logging.getLogger(__name__)

__all__ = ["ClassificationEvaluator", "classification_metrics", "confidence_analysis"]

ANALYSIS_KINDS = ("confident_correct", "least_confident", "confident_wrong")
_KIND_TITLES = {"confident_correct": "surest right", "least_confident": "least sure",
                "confident_wrong": "surest wrong"}


def classification_metrics(labels: np.ndarray, probs: np.ndarray, class_names: Sequence[str]) -> Dict:
    """labels int [N] in 0..K-1, probs float [N, K] -> accuracy, top-5 accuracy (K > 5), confusion matrix
    (rows true, columns predicted), per-class precision / recall / F1 / support, mean per-class recall."""
    k = len(class_names)
    pred = probs.argmax(axis=1) if len(probs) else np.zeros(0, np.int64)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (labels, pred), 1)
    tp = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), np.nan)
        recall = np.where(support > 0, tp / np.maximum(support, 1), np.nan)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), np.nan)
    n = len(labels)
    out = dict(num_images=n, accuracy=float(tp.sum() / n) if n else float("nan"),
               mean_class_recall=float(np.nanmean(recall)) if np.isfinite(recall).any() else float("nan"),
               confusion_matrix=cm.tolist(), class_names=list(class_names),
               per_class={c: dict(precision=precision[i], recall=recall[i], f1=f1[i], support=int(support[i]))
                          for i, c in enumerate(class_names)})
    if k > 5 and n:
        top5 = np.argsort(-probs, axis=1)[:, :5]
        out["top5_accuracy"] = float((top5 == labels[:, None]).any(axis=1).mean())
    return out


def confidence_analysis(labels: np.ndarray, probs: np.ndarray, count: int, max_classes: int = 20) -> List[Dict]:
    """Per true class c (up to ``max_classes`` classes with images, most images first), up to ``count`` indices
    of each kind: 'confident_correct' (correct, by predicted probability, highest first), 'least_confident'
    (lowest top-1 probability first, right or wrong), 'confident_wrong' (wrong, by the wrong class's
    probability, highest first). Returns [dict(cls, kind, rank, index)]."""
    pred = probs.argmax(axis=1)
    top = probs.max(axis=1)
    counts = np.bincount(labels, minlength=probs.shape[1])
    classes = [int(c) for c in np.argsort(-counts, kind="stable") if counts[c] > 0][:max_classes]
    rows = []
    for c in sorted(classes):
        idx = np.flatnonzero(labels == c)
        ok = idx[pred[idx] == c]
        bad = idx[pred[idx] != c]
        picks = {
            "confident_correct": ok[np.argsort(-top[ok], kind="stable")][:count],
            "least_confident": idx[np.argsort(top[idx], kind="stable")][:count],
            "confident_wrong": bad[np.argsort(-top[bad], kind="stable")][:count],
        }
        for kind in ANALYSIS_KINDS:
            rows += [dict(cls=c, kind=kind, rank=r + 1, index=int(i)) for r, i in enumerate(picks[kind])]
    return rows


class ClassificationEvaluator(DatasetEvaluator):
    """Accumulates (record, probabilities) pairs; ``evaluate`` returns classification_metrics and writes the
    files listed in the module docstring under ``output_dir`` (None = no files).

    class_names: names of labels 0..K-1. analysis_images: images per class and kind in the confidence analysis
    (0 = no analysis). cell_size: contact-sheet cell (width, height) in pixels.
    """

    def __init__(self, class_names: Sequence[str], output_dir: Optional[str] = None, analysis_images: int = 8,
                 cell_size=(128, 128)):
        self.class_names = list(class_names)
        self.output_dir = output_dir
        self.analysis_images = int(analysis_images)
        self.cell_size = tuple(cell_size)
        self.reset()

    def reset(self) -> None:
        self._records: List[dict] = []
        self._probs: List[np.ndarray] = []

    def process(self, records, outputs) -> None:
        if len(records) != len(outputs):
            raise EvaluationInputError(f"{len(records)} records but {len(outputs)} outputs")
        k = len(self.class_names)
        for rec, out in zip(records, outputs):
            if "probs" in out:
                p = to_numpy(out["probs"], np.float64).reshape(-1)
            else:  # scores/labels only: scatter them back into class order
                p = np.zeros(k, np.float64)
                p[to_numpy(out["labels"], np.int64).reshape(-1)] = to_numpy(out["scores"], np.float64).reshape(-1)
            if p.shape[0] != k:
                raise EvaluationInputError(f"{rec.get('path', rec.get('image_id'))}: output has {p.shape[0]} "
                                           f"class probabilities, the evaluator has {k} classes")
            label = int(rec["label"])
            if not 0 <= label < k:
                raise EvaluationInputError(f"{rec.get('path')}: label {label} outside 0..{k - 1}")
            self._records.append(rec)
            self._probs.append(p)

    def evaluate(self) -> dict:
        k = len(self.class_names)
        labels = np.asarray([int(r["label"]) for r in self._records], dtype=np.int64)
        probs = np.stack(self._probs) if self._probs else np.zeros((0, k))
        metrics = classification_metrics(labels, probs, self.class_names)
        if self.output_dir is not None and len(labels):
            os.makedirs(self.output_dir, exist_ok=True)
            self._write_predictions(labels, probs)
            self._write_confusion(np.asarray(metrics["confusion_matrix"]))
            if self.analysis_images > 0:
                metrics["analysis_files"] = self._write_analysis(labels, probs)
        return json_safe(metrics)

    # -- files ----------------------------------------------------------------------------------------------------
    def _write_predictions(self, labels, probs) -> None:
        pred = probs.argmax(axis=1)
        with open(os.path.join(self.output_dir, "predictions.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["image_id", "path", "true", "predicted", "score", "true_prob"])
            for rec, y, p, pr in zip(self._records, labels, pred, probs):
                w.writerow([rec.get("image_id", ""), rec.get("path", ""), self.class_names[y], self.class_names[p],
                            f"{pr[p]:.6f}", f"{pr[y]:.6f}"])

    def _write_confusion(self, cm) -> None:
        with open(os.path.join(self.output_dir, "confusion_matrix.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["true \\ predicted"] + self.class_names)
            for name, row in zip(self.class_names, cm):
                w.writerow([name] + [int(v) for v in row])

    def _write_analysis(self, labels, probs) -> List[str]:
        from detection.data.image_io import ImageReadError, read_image_rgb
        from detection.utils.visualize import make_contact_sheet, save_image

        rows = confidence_analysis(labels, probs, self.analysis_images)
        csv_path = os.path.join(self.output_dir, "confidence_analysis.csv")
        pred = probs.argmax(axis=1)
        with open(csv_path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["class", "kind", "rank", "image_id", "path", "true", "predicted", "score", "true_prob"])
            for r in rows:
                i = r["index"]
                rec = self._records[i]
                w.writerow([self.class_names[r["cls"]], r["kind"], r["rank"], rec.get("image_id", ""),
                            rec.get("path", ""), self.class_names[labels[i]], self.class_names[pred[i]],
                            f"{probs[i, pred[i]]:.6f}", f"{probs[i, labels[i]]:.6f}"])
        # contact sheet: one row per (class, kind), analysis_images columns, blanks where fewer images exist
        n = self.analysis_images
        cw, ch = self.cell_size
        blank = np.full((ch, cw, 3), 235, np.uint8)
        images, captions, colors = [], [], []
        by_slot = {(r["cls"], r["kind"], r["rank"]): r["index"] for r in rows}
        for c in sorted({r["cls"] for r in rows}):
            for kind in ANALYSIS_KINDS:
                for rank in range(1, n + 1):
                    i = by_slot.get((c, kind, rank))
                    head = f"{self.class_names[c]}: {_KIND_TITLES[kind]}" if rank == 1 else ""
                    if i is None:
                        images.append(blank)
                        captions.append(f"{head}\n(none)" if head else "\n")
                        colors.append((120, 120, 120))
                        continue
                    try:
                        img = read_image_rgb(self._records[i]["path"])
                    except (ImageReadError, KeyError):
                        img = blank
                    images.append(img)
                    p = pred[i]
                    captions.append(f"{head}\n{self.class_names[p]} {probs[i, p]:.3f}")
                    colors.append((0, 120, 0) if p == labels[i] else (200, 0, 0))
        sheet = make_contact_sheet(images, captions, ncols=n, cell_size=(cw, ch), caption_colors=colors,
                                   title="per true class: most confident right / least confident / most "
                                         "confidently wrong (predicted class p; red = wrong)")
        png_path = save_image(os.path.join(self.output_dir, "confidence_analysis.png"), sheet)
        return [csv_path, png_path]
