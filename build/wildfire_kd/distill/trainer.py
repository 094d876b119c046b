"""DistillationTrainer: ultralytics' DetectionTrainer plus the teacher, the KD criterion and a stability guard.

Importable at module level (no side effects) so ultralytics' DDP launcher can rebuild it in each worker (the
settings travel as ``KDRun`` in ``WILDFIRE_KD_RUN``). What depends on ultralytics internals is in ../seam.py.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

from ..ultralytics_env import prepare_ultralytics

prepare_ultralytics()

import torch  # noqa: E402
from ultralytics.utils import DEFAULT_CFG, LOGGER, RANK  # noqa: E402

from ..errors import InputError, TrainingDiverged, TrainingTerminated  # noqa: E402
from ..guard import atomic_write_text  # noqa: E402
from ..layout import BATCH_LOG  # noqa: E402
from ..pool import MIRROR_SPLIT  # noqa: E402
from ..seam import (  # noqa: E402
    RUN_ENV,
    KDRun,
    PooledDataset,
    SeamTrainer,
    pooled_dataloader,
    selected_by_fraction,
    student_of,
    switch_off_ultralytics_trackers,
)
from ..weights import load_detection_model, model_class_names  # noqa: E402
from .loss import UNLABELED_SUFFIX, ResponseKDLoss, kd_alpha, make_criterion  # noqa: E402

__all__ = ["RUN_ENV", "DistillationTrainer", "KDRun"]


def _epoch_of(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.inf  # not a row: dropped


def _record_epoch(line: str) -> float:
    """A batch-log line's epoch; a line cut short or not JSON is dropped (inf)."""
    try:
        return float(json.loads(line).get("epoch", 0)) if line.strip() and line.endswith("\n") else math.inf
    except (ValueError, AttributeError):
        return math.inf


def _refuse_dropped(names: list[str], split: str, mirror: Path) -> None:
    if names:
        shown = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
        raise InputError(
            f"ultralytics could not use {len(names)} of the {split} images that the preflight accepted and would "
            f"train without them: {shown} (links in {mirror}); remove or replace those files"
        )


class DistillationTrainer(SeamTrainer):
    """Trains the student on ground truth plus the teacher's responses; the teacher never enters a checkpoint."""

    def __init__(self, cfg=DEFAULT_CFG, overrides=None, _callbacks=None, kd: KDRun | None = None, teacher=None):
        """``teacher``: the teacher already loaded from the checked file (in-process); DDP workers, rebuilt from
        ``KDRun`` alone, load it themselves."""
        self.kd = kd or KDRun.from_env()
        self._loaded_teacher = teacher
        self.kd.enter_worker()
        # DDP workers inherit the environment; put back what was there when training ends (teardown)
        self._previous_run_env = os.environ.get(RUN_ENV)
        os.environ[RUN_ENV] = self.kd.to_env()
        switch_off_ultralytics_trackers()  # read by the base class's __init__, where it attaches integrations
        super().__init__(cfg, overrides, _callbacks)
        if self.kd.finetune:
            self.finetune_classes = self.answering_for_the_data
        self.teacher: torch.nn.Module | None = None
        self.kd_criterion: ResponseKDLoss | None = None
        self.ema_criterion: ResponseKDLoss | None = None
        self._batch_images = 0
        self.skipped_steps = 0
        self.consecutive_skipped = 0
        self.last_grad_norm: float | None = None
        self._stepped = False
        self._step_skipped = False
        self._batch_index = 0
        self._batch_t0 = 0.0
        self._finite_sums: dict[str, float] = {}
        self._finite_weights: dict[str, int] = {}
        self._log_file = None
        self.terminate_requested = False  # set by the SIGTERM handler of wildfire_kd.distill.train
        self._buffers: list[torch.Tensor] = []
        self.trackers = None  # wildfire_kd.tracking.Trackers while training, when train.loggers asks for any
        self._buffer_backup: list[torch.Tensor] = []
        self.pool_sampler = None  # train.unlabeled: the sampler that mixes the pool into the batches
        for event, fn in (
            ("on_train_start", DistillationTrainer._open_trackers),
            ("on_fit_epoch_end", DistillationTrainer._track_epoch),
            ("teardown", DistillationTrainer._close_trackers),
            ("on_train_epoch_start", DistillationTrainer._on_epoch_start),
            ("on_train_batch_start", DistillationTrainer._on_batch_start),
            ("on_train_batch_end", DistillationTrainer._on_batch_end),
            ("on_train_end", DistillationTrainer._on_train_end),
            ("teardown", DistillationTrainer._close_log),  # also runs when training raises
            ("teardown", DistillationTrainer.restore_run_env),
        ):
            if fn not in self.callbacks[event]:  # DDP workers receive the parent's callbacks, ours included
                self.add_callback(event, fn)

    # --- model set-up ---------------------------------------------------------------------------------------

    def _setup_train(self):
        super()._setup_train()  # student, EMA, optimizer, loaders, the resume checkpoint
        if RANK in {-1, 0}:
            self._check_no_image_dropped()
        if not self.kd.settings.response:
            return
        if not self.kd.teacher:
            raise ValueError("response distillation needs a teacher (train.teacher)")
        teacher, self._loaded_teacher = self._loaded_teacher, None  # the trainer owns it from here
        if teacher is None:
            teacher = load_detection_model(
                self.kd.teacher, self.kd.teacher_sha256, "teacher", self.kd.allow_unsafe_weights
            )
        teacher = self.answering_for_the_data(teacher)  # DDP workers load it whole; in-process it is narrowed already
        teacher = teacher.fuse(verbose=False) if hasattr(teacher, "fuse") else teacher
        teacher = teacher.to(self.device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.teacher = teacher
        settings = self.kd.settings
        self.kd_criterion = make_criterion(student_of(self.model), teacher, settings)
        student_of(self.model).criterion = self.kd_criterion
        # The EMA is what validation runs: give it its own criterion so val/kd_* report how closely the
        # smoothed student follows the teacher on held-out images.
        self.ema_criterion = make_criterion(student_of(self.ema.ema), teacher, settings)
        student_of(self.ema.ema).criterion = self.ema_criterion
        if self.kd_criterion.detection.nc != teacher.model[-1].nc:
            raise ValueError("teacher and student predict a different number of classes")

    def answering_for_the_data(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` answering for the dataset's classes: selected and ordered by name (distill.class_map)."""
        from ..data import teacher_classes
        from ..seam import answering_for

        data_names = [self.data["names"][i] for i in sorted(self.data["names"])]
        if model_class_names(model) == data_names:  # already (the teacher check_inputs narrowed, a resumed run's own)
            return model
        mapped = teacher_classes(model_class_names(model), data_names, self.kd.settings.class_map, "the model", "")
        return answering_for(model, mapped)

    def _check_no_image_dropped(self) -> None:
        """ultralytics skips an image it cannot read ("N corrupt") and trains on the rest without a word: every
        image the preflight accepted must be in its datasets, or the run stops naming the ones left out."""
        from ..data import split_images

        loaders = {"train": self.train_loader, "val": self.test_loader}
        for split, loader in loaders.items():
            dataset = getattr(loader, "dataset", None)
            if dataset is None:
                continue
            used = {Path(f).name for f in dataset.im_files}
            # train.ultralytics.fraction leaves images out on purpose: only those it keeps must all be there
            kept = selected_by_fraction(split_images(self.args.data, split), self.args.fraction, split)
            dropped = [p.name for p in kept if p.name not in used]
            dropped = [n for n in dropped if not any(n.endswith(t) for t in self.kd.tolerated_images)]
            _refuse_dropped(dropped, split, Path(self.args.data).parent / "images" / split)
        pool = getattr(self.train_loader.dataset, "pool_set", None)
        if pool is not None:
            mirror = Path(self.args.data).parent / "images" / MIRROR_SPLIT
            used = {Path(f).name for f in pool.im_files}
            _refuse_dropped([p.name for p in mirror.iterdir() if p.name not in used], "unlabelled pool", mirror)

    def get_dataloader(self, dataset_path: str, batch_size: int = 16, rank: int = 0, mode: str = "train"):
        """Training with an unlabelled pool (train.unlabeled): the labelled split and the pool's frames, each a
        dataset of its own (their augmentations never mix the two), drawn together by the pool's sampler."""
        if mode != "train" or not self.kd.unlabeled_list:
            return super().get_dataloader(dataset_path, batch_size, rank, mode)
        from ultralytics.utils.torch_utils import torch_distributed_zero_first

        from ..pool import mirror_pool
        from .pool_sampler import PoolSampler

        folder = Path(self.args.data).parent / "images" / MIRROR_SPLIT  # beside the mirror of the dataset
        with torch_distributed_zero_first(rank):  # the mirror and ultralytics' label caches: once, on rank 0
            if RANK in {-1, 0}:
                frames = Path(self.kd.unlabeled_list).read_text(encoding="utf-8").splitlines()
                mirror_pool([f for f in frames if f.strip()], folder)
            labelled = self.build_dataset(dataset_path, "train", batch_size)
            pool = self.build_dataset(str(folder), "train", batch_size)
        settings = self.kd.settings
        world = max(self.world_size, 1) if RANK != -1 else 1
        self.pool_sampler = PoolSampler(len(labelled), len(pool), settings.unlabeled_ratio, batch_size,
                                        self.args.seed, max(RANK, 0), world)  # fmt: skip
        workers = self.args.workers
        return pooled_dataloader(PooledDataset(labelled, pool), self.pool_sampler, batch_size, workers, self.device)

    def use_pool(self, listing: Path) -> None:
        """Train with the unlabelled pool listed in ``listing`` (the run's unlabeled.txt, written once the run folder
        exists); DDP workers receive it with the rest of the settings."""
        self.kd.unlabeled_list = str(listing)
        os.environ[RUN_ENV] = self.kd.to_env()

    def resume_training(self, ckpt):
        super().resume_training(ckpt)
        if self.pool_sampler is not None:  # a resumed run continues the pool's stream where it stopped
            self.pool_sampler.set_epoch(self.start_epoch)
        if ckpt is not None and self.resume and RANK in {-1, 0}:
            self._trim_after(self.start_epoch)

    def _trim_after(self, completed_epochs: int) -> None:
        """Drop rows of epochs that the checkpoint does not hold: a kill after ultralytics wrote an epoch's
        results.csv row but before it saved last.pt would otherwise leave that epoch in the log twice."""
        import csv as _csv

        if self.csv.exists():
            with open(self.csv, newline="", encoding="utf-8", errors="replace") as f:
                rows = list(_csv.reader(f))
            width = len(rows[0]) if rows else 0
            kept = rows[:1] + [r for r in rows[1:] if len(r) == width and _epoch_of(r[0]) <= completed_epochs]
            if len(kept) != len(rows):  # later epochs, or a row cut short (a full disk, a kill mid-write)
                atomic_write_text(self.csv, "".join(",".join(r) + "\n" for r in kept))
        log = Path(self.save_dir) / BATCH_LOG
        if log.exists():
            lines = log.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
            kept_lines = [ln for ln in lines if _record_epoch(ln) <= completed_epochs]
            if len(kept_lines) != len(lines):
                atomic_write_text(log, "".join(kept_lines))

    def _model_train(self):
        super()._model_train()
        if self.teacher is not None:
            self.teacher.eval()  # never let BatchNorm statistics of the teacher move

    # --- one optimizer step -----------------------------------------------------------------------------------

    def optimizer_step(self):
        """Clip, and step only when the loss and the gradient norm are finite; otherwise change no weight."""
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=self.kd.grad_clip)
        finite = bool(torch.isfinite(grad_norm)) and bool(torch.isfinite(self.loss))
        self.last_grad_norm = float(grad_norm)
        self._stepped = True
        if finite:
            self.scaler.step(self.optimizer)
            self._step_skipped = False
            self.consecutive_skipped = 0
        else:
            self._step_skipped = True
            self.skipped_steps += 1
            self.consecutive_skipped += 1
        self.scaler.update()  # lowers the AMP scale after an overflow either way
        self.optimizer.zero_grad()
        if finite and self.ema:
            self.ema.update(self.model)
        if self.consecutive_skipped >= self.kd.max_consecutive_skipped:
            raise TrainingDiverged(
                f"{self.consecutive_skipped} consecutive optimizer steps had a non-finite loss or gradient "
                f"(epoch {self.epoch + 1}); lower train.lr0, check the data, or set train.amp=false"
            )

    # --- callbacks: per-batch log and honest epoch means ------------------------------------------------------

    def preprocess_batch(self, batch: dict) -> dict:
        batch = super().preprocess_batch(batch)
        self._batch_images = batch["img"].shape[0]  # the batch log's total is per image, like the loss items
        return batch

    def _on_epoch_start(self):
        self._finite_sums, self._finite_weights, self._batch_index = {}, {}, 0
        alpha = kd_alpha(self.kd.settings.schedule, self.epoch, self.epochs)
        for criterion in (self.kd_criterion, self.ema_criterion):
            if criterion is not None:
                criterion.alpha = alpha

    def _on_batch_start(self):
        self._batch_t0 = time.perf_counter()
        self._stepped = self._step_skipped = False
        # BatchNorm statistics move in the forward pass, before any loss exists: keep a copy to put back if
        # this batch turns out non-finite (a few hundred KB for YOLOv8n)
        self._buffers = [b for b in self.model.buffers() if b.is_floating_point()]
        self._buffer_backup = [b.detach().clone() for b in self._buffers]

    def _on_batch_end(self):
        items = {k: float(v) for k, v in (self.loss_items or {}).items()}
        loss_finite = self.loss is not None and bool(torch.isfinite(self.loss))
        if loss_finite and all(math.isfinite(v) for v in items.values()):
            # keep results.csv and the progress bar free of a skipped step's NaN
            weights = self._item_weights(items)
            for k, v in items.items():
                self._finite_sums[k] = self._finite_sums.get(k, 0.0) + v * weights[k]
                self._finite_weights[k] = self._finite_weights.get(k, 0) + weights[k]
        if self._finite_weights:
            self.set_epoch_means({k: v / max(self._finite_weights[k], 1) for k, v in self._finite_sums.items()})
        if not loss_finite:
            with torch.no_grad():
                torch._foreach_copy_(self._buffers, self._buffer_backup)
            self.drop_nonfinite_loss()
        if RANK in {-1, 0}:
            self._write_batch_log(items, loss_finite)
        self._batch_index += 1
        if self.terminate_requested:  # SIGTERM: this step is done; stop before the next one
            where = f"stopped by SIGTERM in epoch {self.epoch + 1} after batch {self._batch_index}"
            kept = "no epoch had completed; start the run again"
            if self.last.exists():
                kept = f"{self.last} holds every completed epoch; resume: wildfire-kd train --resume {self.save_dir}"
            raise TrainingTerminated(f"{where}; {kept}")

    def _pool_counts(self) -> dict[str, int] | None:
        """This batch's labelled and unlabelled image counts when an unlabelled pool teaches, else None."""
        return self.kd_criterion.last_images if self.pool_sampler is not None and self.kd_criterion else None

    def _item_weights(self, items: dict[str, float]) -> dict[str, int]:
        """Each item's weight in the epoch's mean: 1 per batch; with a pool, the images of its kind in the batch
        (the ground truth's and the KD terms' on labelled images, ``_u`` terms on frames), so a batch without one
        kind does not pull that kind's mean towards 0."""
        counts = self._pool_counts()
        if counts is None:
            return dict.fromkeys(items, 1)
        kinds = {k: "unlabelled" if k.endswith(UNLABELED_SUFFIX) else "labelled" for k in items}
        return {k: counts[kind] if k != "dis_loss" else sum(counts.values()) for k, kind in kinds.items()}

    def _write_batch_log(self, items: dict[str, float], loss_finite: bool) -> None:
        if self._log_file is None:
            path = Path(self.save_dir) / BATCH_LOG
            self._log_file = open(path, "a" if self.resume else "w", encoding="utf-8")  # noqa: SIM115
        nb = len(self.train_loader)
        total = self.loss_per_image(self._batch_images)  # what was backpropagated, per image like the items
        record = {
            "epoch": self.epoch + 1,
            "iteration": self.epoch * nb + self._batch_index,
            "batch": self._batch_index,
            "total": total if loss_finite else None,
            "box": items.get("box_loss"),
            "cls": items.get("cls_loss"),
            "dfl": items.get("dfl_loss"),
            **{k: items.get(k) for k in ("kd_cls", "kd_ld", "kd_box")},
            **self._pool_log(items),
            "kd_alpha": self.kd_criterion.alpha if self.kd_criterion else None,
            "feature_kd": items.get("dis_loss"),
            "teacher_dets_per_image": self.kd_criterion.last_teacher_detections if self.kd_criterion else None,
            "optimizer_step": self._stepped,
            "grad_norm": self.last_grad_norm if self._stepped else None,
            "lr": [g["lr"] for g in self.optimizer.param_groups],
            "skipped": self._step_skipped or not loss_finite,
            "seconds": round(time.perf_counter() - self._batch_t0, 4),
        }
        record = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        self._log_file.write(json.dumps(record) + "\n")
        self._log_file.flush()

    def _pool_log(self, items: dict[str, float]) -> dict:
        """With a pool: the batch's image counts and the KD terms on its frames (a kind absent from it: null)."""
        counts = self._pool_counts()
        if counts is None:
            return {}
        log = {f"{k}{UNLABELED_SUFFIX}": items.get(f"{k}{UNLABELED_SUFFIX}") for k in ("kd_cls", "kd_ld", "kd_box")}
        if not counts["unlabelled"]:
            log = dict.fromkeys(log)
        if not counts["labelled"]:  # nothing measured the ground truth or the labelled KD terms in this batch
            log |= dict.fromkeys(("box", "cls", "dfl", "kd_cls", "kd_ld", "kd_box"))
        return {**log, "labelled_images": counts["labelled"], "unlabelled_images": counts["unlabelled"]}

    def _close_log(self):
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def _open_trackers(self):
        if self.kd.loggers and RANK in {-1, 0}:
            from ..tracking import Trackers

            out = self.kd.tracking_out or str(Path(self.save_dir).parent)
            self.trackers = Trackers.open(self.save_dir, self.kd.loggers, out, self.kd.tracking_params)

    def _track_epoch(self):
        if self.trackers is not None:
            figures = {**self.label_loss_items(self.tloss or {}, prefix="train"), **(self.metrics or {}), **self.lr}
            self.trackers.log_metrics(figures, step=self.epoch + 1)

    def _close_trackers(self):
        if self.trackers is not None:
            self.trackers.close()
            self.trackers = None

    def restore_run_env(self):
        """Put back the WILDFIRE_KD_RUN this trainer replaced (teardown; the DDP parent never runs teardown)."""
        if self._previous_run_env is None:
            os.environ.pop(RUN_ENV, None)
        else:
            os.environ[RUN_ENV] = self._previous_run_env

    def _on_train_end(self):
        self._close_log()
        if self.skipped_steps:
            LOGGER.warning(f"{self.skipped_steps} optimizer step(s) skipped for non-finite loss or gradients")
