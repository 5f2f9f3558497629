#!/usr/bin/env python
"""Train a model from a config: Faster R-CNN (VOC / COCO layouts) or the image classifier.

  python tools/train_net.py --cfg configs/quickstart.yaml [--set KEY VALUE ...] [--resume] [--weights CKPT]
  torchrun --nproc_per_node 8 tools/train_net.py --cfg configs/faster_rcnn_r50_c4_voc0712.yaml   # DDP

Writes into OUTPUT_DIR: config.yaml (the resolved config), log.txt, model_summary.txt, metrics.jsonl,
model_<iter>.pth every TRAIN.SNAPSHOT_ITERS, model_final.pth, last_checkpoint, model_best.pth (best periodic
evaluation), tensorboard/ (event files), and the final evaluation under inference/ (skip with --skip-eval). With
SOLVER.EMA the averaged weights are evaluated and are the checkpoints' 'model' (the raw ones: 'model_raw').
--resume continues from OUTPUT_DIR's last_checkpoint exactly where it stopped (model, optimizer, schedule, RNG and
data order); the config must be the checkpoint's, key by key, but for the keys that may change on resume (logging,
snapshot and evaluation periods, loader workers, device: docs/config.md) and those named in --allow-changes, which
take effect from the checkpoint's iteration (config.yaml notes each change). SOLVER.MAX_ITER below the
checkpoint's iteration is refused. Without --resume an OUTPUT_DIR that already holds a run is refused, so nothing is
overwritten; a run holds OUTPUT_DIR/train.lock (an exclusive flock, dropped when the process ends, even when
killed) for its whole length, and a second run on the same OUTPUT_DIR is refused while it does. A run restarted
after a kill before its first checkpoint starts afresh (the killed run's metrics.jsonl rows are dropped).
Exit codes: 0 done, 1 training stopped (non-finite loss), 2 bad arguments / config / input / OUTPUT_DIR in use.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

import _setup_check  # noqa: F401,E402  (one line saying `make setup` when the package is not installed)

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
logger = logging.getLogger("detection.train_net")


def _parser() -> argparse.ArgumentParser:
    from detection.engine.launch import add_config_arguments

    p = argparse.ArgumentParser(prog="train_net.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p)
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last_checkpoint (the config "
                   "must be the run's own, but for keys that may change on resume: docs/config.md)")
    p.add_argument("--allow-changes", nargs="+", default=[], metavar="KEY",
                   help="with --resume: continue although these config keys differ from the checkpoint's (e.g. "
                        "SOLVER.BASE_LR SOLVER.STEPS); the new values take effect from its iteration on")
    p.add_argument("--weights", default=None, metavar="CKPT",
                   help="initialise the model from this checkpoint or state dict (fine-tuning; tensors of another "
                        "shape, e.g. the class layers of another dataset, keep their initialisation; not with "
                        "--resume)")
    p.add_argument("--skip-eval", action="store_true", help="no evaluation on DATA.TEST_SET after training")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    return p


def train(args) -> int:
    import torch

    from detection.config import dump_config
    from detection.engine.checkpoint import Checkpointer, load_last_training_checkpoint, load_model_weights
    from detection.engine.ema import build_ema
    from detection.engine.distributed import (get_world_size, is_distributed, is_main_process, launched_by_torchrun,
                                              synchronize, weights_match_rank0)
    from detection.engine.inference import inference_on_dataset
    from detection.engine.launch import ToolError, load_config_from_args, resolve_weights_argument, setup_run
    from detection.engine.optim import build_lr_scheduler, build_optimizer
    from detection.engine.resume import check_resume, resume_note
    from detection.engine.run_lock import claim_output_dir
    from detection.engine.tasks import get_task
    from detection.engine.trainer import NonFiniteLossError, Trainer
    from detection.evaluation.evaluator import json_safe
    from detection.utils.atomic_io import atomic_write_text, remove_stale_temporaries, write_json

    cfg = load_config_from_args(args)
    if args.resume and args.weights:
        raise ToolError("--resume continues OUTPUT_DIR's own run; --weights starts a new one: pick one")
    if args.allow_changes and not args.resume:
        raise ToolError("--allow-changes goes with --resume (a new run takes any config)")
    output_dir = cfg.OUTPUT_DIR
    # one writer per OUTPUT_DIR: rank 0 locks it for the whole run, and refuses a finished run without --resume
    device = setup_run(cfg, output_dir, distributed=launched_by_torchrun(),
                       claim=lambda: claim_output_dir(output_dir, resume=args.resume))
    main = is_main_process()
    if main:
        remove_stale_temporaries(output_dir)  # left by writes a kill interrupted
    task = get_task(cfg)
    resume_path, resume_state = load_last_training_checkpoint(output_dir) if args.resume else (None, None)
    note = ""
    if resume_state is not None:  # refuse a config that would make it another run, before anything is written
        changes = check_resume(resume_state, resume_path, cfg, task.class_names(cfg), args.allow_changes)
        note = resume_note(resume_state.get("config", ""), int(resume_state["iteration"]), resume_path, changes)
    weights = resolve_weights_argument(cfg, args.weights) if args.weights else None
    filled_later = weights or resume_state is not None  # no ImageNet file needed
    model = (task.build_model_for_weights(cfg) if filled_later else task.build_model(cfg)).to(device)
    if weights:
        try:
            source = load_model_weights(model, weights, skip_mismatched=True)
        except (KeyError, ValueError, RuntimeError) as exc:
            raise ToolError(f"cannot initialise the model from --weights {args.weights}: {exc}") from exc
        logger.info("initialised the model from %s", args.weights)
        source_names = (source.get("extra") or {}).get("class_names")
        if source_names and list(source_names) != list(task.class_names(cfg)):  # fine-tuning to another list
            logger.info("--weights %s was trained on the classes %s; this run trains %s", args.weights,
                        list(source_names), list(task.class_names(cfg)))
    config_text = note + dump_config(cfg, resolved=task.resolved(cfg))
    summary = task.summary(cfg, model)
    if main:
        atomic_write_text(os.path.join(output_dir, "config.yaml"), config_text)
        atomic_write_text(os.path.join(output_dir, "model_summary.txt"), summary + "\n")
        logger.info("model summary:\n%s", summary)

    s = cfg.SOLVER
    optimizer = build_optimizer(model.named_parameters(), s.OPTIMIZER, s.BASE_LR, s.MOMENTUM, s.WEIGHT_DECAY,
                                s.BIAS_LR_FACTOR, s.WEIGHT_DECAY_BIAS)
    scheduler = build_lr_scheduler(optimizer, policy=s.LR_POLICY, max_iter=s.MAX_ITER, steps=s.STEPS,
                                   gamma=s.GAMMA, warmup_iters=s.WARMUP_ITERS, warmup_factor=s.WARMUP_FACTOR)
    ema = build_ema(cfg, model)  # the averaged model: evaluated and saved as the checkpoints' 'model'
    checkpointer = Checkpointer(model, optimizer, scheduler, output_dir, save_to_disk=main, config_text=config_text,
                                ema=ema)
    start_iter = checkpointer.restore(resume_state, resume_path) if resume_state is not None else 0
    data = task.build_train_data(cfg, model, start_iter=start_iter)
    checkpointer.extra["class_names"] = list(task.class_names(cfg))

    train_model = model
    if is_distributed():  # every torchrun launch, a single process included
        ids = [device.index] if device.type == "cuda" else None
        train_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        logger.info("DistributedDataParallel over %d process(es), backend %s", get_world_size(),
                    torch.distributed.get_backend())
        if ema is not None and start_iter == 0:  # DDP gave every rank rank 0's initial weights: average from them
            ema.load_state_dict(model.state_dict())

    test_state = {}

    def evaluate(_trained_model=None, out_dir=None):  # the Trainer passes the (DDP-wrapped) model; use the inner one
        if "loader" not in test_state:
            test_state["loader"], test_state["dataset"] = task.build_test_data(cfg)
        loader, dataset = test_state["loader"], test_state["dataset"]
        evaluator = task.build_evaluator(cfg, dataset, out_dir if main else None)
        evaluated = model if ema is None else ema.module  # with SOLVER.EMA the averaged model
        return inference_on_dataset(task, cfg, evaluated, loader, dataset, evaluator, device,
                                    progress=not args.no_progress)[0]

    trainer = Trainer(train_model, optimizer, scheduler, data, s.MAX_ITER, output_dir, checkpointer, device,
                      snapshot_iters=cfg.TRAIN.SNAPSHOT_ITERS, log_period=cfg.TRAIN.LOG_PERIOD,
                      clip_grad_norm=s.CLIP_GRAD_NORM, amp=s.AMP, eval_fn=evaluate,
                      eval_period=cfg.TEST.EVAL_PERIOD, progress=not args.no_progress,
                      best_metric=task.best_metric, ema=ema)
    logger.info("training %s / %s for %d iterations (from %d) on %s x%d; outputs in %s",
                cfg.MODEL.META_ARCHITECTURE, cfg.MODEL.BACKBONE.NAME, s.MAX_ITER, start_iter, device,
                get_world_size(), os.path.abspath(output_dir))
    try:
        trainer.train(start_iter)
    except NonFiniteLossError as exc:
        logger.error("%s", exc)
        return 1
    if get_world_size() > 1:
        if not weights_match_rank0(model) or (ema is not None and not weights_match_rank0(ema.module)):
            logger.error("model weights differ between processes after training: the DDP run diverged")
            return 1
        logger.info("model weights identical on all %d processes", get_world_size())
    final = os.path.join(output_dir, "model_final.pth")
    if not args.skip_eval:
        eval_dir = os.path.join(output_dir, "inference")
        metrics = evaluate(out_dir=eval_dir)
        if main:
            write_json(os.path.join(eval_dir, "metrics.json"), json_safe(metrics))
            headline = {k: metrics[k] for k in (task.best_metric, "voc_metric", "voc_rules") if k in metrics}
            logger.info("final evaluation on %s: %s (all metrics: %s)", cfg.DATA.TEST_SET, headline,
                        os.path.join(eval_dir, "metrics.json"))
    synchronize()
    if main:
        print(f"trained model: {os.path.abspath(final)}\noutputs: {os.path.abspath(output_dir)}")
    return 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from detection.engine.launch import run_tool

    return run_tool(train, args)


if __name__ == "__main__":
    sys.exit(main())
