"""The ultralytics seam: every place where wildfire-kd relies on ultralytics internals rather than its public API.

ultralytics' trainer is extended by subclassing and callbacks, but a few hooks only work because of how an
upstream method is written (which attribute it reads, when it writes a file, what its loss returns). They all
live here, each saying which upstream method it mirrors, and ``UPSTREAM`` pins the source of those methods:
tests/test_seam.py fails, naming the method to re-check, when an ultralytics release changes one of them,
instead of a run failing somewhere in training.

``SeamTrainer`` is the DetectionTrainer with those hooks; ``DistillationTrainer`` (trainer.py) builds on it with
the teacher, the KD criterion, the stability guard, the batch log and the trackers.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .ultralytics_env import prepare_ultralytics

prepare_ultralytics()

import torch  # noqa: E402
import ultralytics.engine.trainer as _upstream_trainer  # noqa: E402
from ultralytics.models.yolo.detect import DetectionTrainer  # noqa: E402
from ultralytics.utils import LOGGER, RANK, WEIGHTS_DIR  # noqa: E402
from ultralytics.utils.torch_utils import unwrap_model  # noqa: E402

from .config import DistillSettings  # noqa: E402
from .data import TeacherClasses  # noqa: E402
from .guard import replace_durably  # noqa: E402
from .layout import MIRROR_DIR  # noqa: E402

# The upstream methods the hooks below mirror or depend on, with the sha256 (first 16 hex digits) of their source in
# the ultralytics release the project pins (pyproject.toml). After an upgrade, re-check the hook named in each failing
# entry against the new source, then update the hash (`python -m wildfire_kd.seam` prints them all).
UPSTREAM: dict[str, tuple[str, str]] = {
    # upstream name: (sha256[:16] of inspect.getsource, the hook in this module that depends on it)
    "ultralytics.engine.trainer.BaseTrainer._do_train": (
        "87a635e3bfc4fd3f",
        "SeamTrainer.set_epoch_means / drop_nonfinite_loss / loss_per_image: self.loss, self.tloss, loss_items",
    ),
    "ultralytics.engine.trainer.BaseTrainer.save_model": (
        "47f61ede98e6f12b",
        "SeamTrainer.save_model: last, best, epochN writes",
    ),
    "ultralytics.engine.trainer.BaseTrainer.final_eval": (
        "398e74e935f34789",
        "SeamTrainer.final_eval: a copy with durable strips",
    ),
    "ultralytics.engine.trainer.BaseTrainer.get_dataset": (
        "611e9c8ae89f060e",
        "SeamTrainer.get_dataset: reads self.args.data",
    ),
    "ultralytics.engine.trainer.BaseTrainer._setup_train": (
        "aecd0c111afe4314",
        "SeamTrainer._setup_train: calls check_amp",
    ),
    "ultralytics.utils.checks.check_amp": ("079b89ebc804c23b", "offline_check_amp: skips its download offline"),
    "ultralytics.engine.trainer.BaseTrainer.optimizer_step": (
        "bec16cbc552a8f2d",
        "DistillationTrainer.optimizer_step mirrors it",
    ),
    "ultralytics.engine.trainer.BaseTrainer.resume_training": (
        "a43cef5955c0cf67",
        "DistillationTrainer.resume_training; finished_but_not_finalised: its 'nothing to resume' assertion",
    ),
    "ultralytics.utils.dist.generate_ddp_file": ("7c80979f379ddf1a", "KDRun: how a DDP worker rebuilds the trainer"),
    "ultralytics.utils.torch_utils.strip_optimizer": (
        "ff25c3f06964d958",
        "strip_durably: its s= and updates= arguments",
    ),
    "ultralytics.utils.loss.v8DetectionLoss.__call__": (
        "456d58d1828b912b",
        "ground_truth_loss: parse_output, then loss",
    ),
    "ultralytics.utils.loss.v8DetectionLoss.loss": (
        "9762b7e6c2ca12e7",
        "ground_truth_loss: (vector × batch size, items dict)",
    ),
    "ultralytics.utils.loss.v8DetectionLoss.get_assigned_targets_and_loss": (
        "b35c135782626c01",
        "on_ground_truth_assignment: the assigner runs inside it, once per batch",
    ),
    "ultralytics.models.yolo.detect.val.DetectionValidator.preprocess": (
        "5e2b421b4ca52726",
        "relabelling_validator: the batch it returns holds the image on the device, scaled to 0..1",
    ),
    "ultralytics.models.yolo.detect.val.DetectionValidator._prepare_batch": (
        "90fc7a34a69bb8af",
        "relabelling_validator: the ground truth is batch_idx, cls and normalised xywh bboxes",
    ),
    "ultralytics.nn.modules.head.Detect.__init__": (
        "addbe52f3a216e68",
        "narrow_classes: cv3[i][-1] is each scale's class convolution (and one2one_cv3's); no = nc + 4 reg_max",
    ),
    "ultralytics.engine.trainer.BaseTrainer.setup_model": (
        "33c98eece052d628",
        "SeamTrainer.get_model: setup_model loads the .pt it trains and hands the loaded model to get_model",
    ),
    "ultralytics.models.yolo.detect.train.DetectionTrainer.get_model": (
        "35794bdb707704c5",
        "SeamTrainer.get_model: upstream rebuilds the model from its yaml (custom blocks cannot be rebuilt)",
    ),
    "ultralytics.data.build.build_dataloader": (
        "4f01bd7501fe661a",
        "pooled_dataloader: the same InfiniteDataLoader, workers, seed and collate, with the pool's sampler",
    ),
    "ultralytics.engine.trainer.BaseTrainer._close_dataloader_mosaic": (
        "ee5b6df05c4167d6",
        "PooledDataset: mosaic off on train_loader.dataset (its mosaic attribute and close_mosaic)",
    ),
    "ultralytics.data.dataset.YOLODataset.collate_fn": (
        "124bfcaa17398abe",
        "PooledDataset.collate_fn: the labelled flag added to what YOLODataset's collate makes",
    ),
    "ultralytics.models.yolo.detect.train.DetectionTrainer.get_dataloader": (
        "981b10cf054f7a1b",
        "DistillationTrainer.get_dataloader: the datasets built by build_dataset under torch_distributed_zero_first",
    ),
    "ultralytics.data.base.BaseDataset.get_img_files": (
        "baca2eb4485fbd45",
        "selected_by_fraction: the sorted listing, cut to round(n x fraction) or a count",
    ),
    "ultralytics.data.utils.get_split_fraction": (
        "4958549e3aac2e58",
        "selected_by_fraction: a scalar applies to the train split, a list per split",
    ),
    "ultralytics.utils.tal.TaskAlignedAssigner.forward": (
        "ef22692946368b14",
        "on_ground_truth_assignment: its outputs (labels, boxes, scores, fg_mask, gt_idx)",
    ),
}


def _resolve(qualname: str) -> Any:
    parts = qualname.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ModuleNotFoundError(qualname)


def source_hash(qualname: str) -> str:
    """sha256[:16] of an upstream object's source: what ``UPSTREAM`` pins."""
    source = inspect.getsource(_resolve(qualname))
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def changed_upstream() -> list[str]:
    """One line per pinned upstream method whose source is not the pinned one, naming the hook to re-check."""
    import ultralytics

    changed = []
    for qualname, (pinned, hook) in UPSTREAM.items():
        try:
            now = source_hash(qualname)
        except (AttributeError, ModuleNotFoundError, OSError, TypeError) as e:
            now = f"gone ({type(e).__name__})"
        if now != pinned:
            changed.append(
                f"{qualname} changed in ultralytics {ultralytics.__version__} (source {now}, pinned {pinned}): "
                f"re-check {hook} in wildfire_kd/seam.py, then update its pin"
            )
    return changed


# --- the DDP contract ---------------------------------------------------------------------------------------------

RUN_ENV = "WILDFIRE_KD_RUN"


@dataclass
class KDRun:
    """What the trainer needs beyond ultralytics' own arguments.

    Mirrors ``generate_ddp_file``: a DDP worker rebuilds the trainer as ``type(trainer)(cfg, overrides,
    _callbacks)`` from ultralytics' arguments only, whose namespace rejects unknown keys; so the wildfire-kd
    settings travel in the environment variable ``WILDFIRE_KD_RUN`` (JSON), which the workers inherit.
    """

    teacher: str | None
    teacher_sha256: str | None
    distill: dict[str, Any]
    grad_clip: float = 10.0
    max_consecutive_skipped: int = 20
    allow_unsafe_weights: bool = False  # the teacher may need full unpickling (train.allow_unsafe_weights)
    loggers: list[str] = field(default_factory=list)  # train.loggers
    tracking_out: str | None = None  # the folder that holds the run (OUT/mlflow.db lives there)
    tracking_params: dict[str, Any] = field(default_factory=dict)  # the resolved config, flattened
    tolerated_images: list[str] = field(default_factory=list)  # names the preflight flagged (max_bad_fraction)
    full_unpickling: bool = False  # a .pt ultralytics loads was allowed full unpickling (pinned or opted in)
    teacher_modules: list[str] = field(default_factory=list)  # train.teacher_modules: loaded in every process
    finetune: bool = False  # the model trained is a loaded checkpoint finetuned as it is (`wildfire-kd finetune`)
    unlabeled_list: str | None = None  # train.unlabeled: the run's list of pool frames (unlabeled.txt)

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> KDRun:
        raw = os.environ.get(RUN_ENV)
        if not raw:
            raise RuntimeError(f"DistillationTrainer needs its settings: pass kd=KDRun(...) or set {RUN_ENV}")
        return cls(**json.loads(raw))

    @property
    def settings(self) -> DistillSettings:
        return DistillSettings(**self.distill)

    def enter_worker(self) -> None:
        """In a DDP worker, load checkpoints the way the parent does. The parent runs the trainer inside
        ``ultralytics_loading(full)``, a setting of its own process that a worker, a new interpreter, does not
        inherit: without this a worker would refuse the pinned or opted-in file the parent accepted."""
        if RANK != -1 and self.full_unpickling:
            import ultralytics.nn.tasks as tasks

            tasks.SAFE_LOAD = False
        if self.teacher_modules:  # the checkpoint's custom blocks, in this process too (idempotent)
            from .weights import load_modules

            load_modules(self.teacher_modules)


# --- durable files ---------------------------------------------------------------------------------------------


def strip_durably(path: Path, updates: dict | None = None) -> dict:
    """``strip_optimizer(path)``, written to a temporary file renamed over ``path`` (upstream writes in place)."""
    from ultralytics.utils.torch_utils import strip_optimizer

    tmp = path.with_name(f".{path.name}.strip.tmp")
    ckpt = strip_optimizer(path, s=str(tmp), updates=updates)
    if tmp.exists():
        replace_durably(tmp, path)
    return ckpt


# --- ultralytics' AMP check and tracker integrations ---------------------------------------------------------------

_upstream_check_amp = _upstream_trainer.check_amp
AMP_CHECK_WEIGHTS = "yolo26n.pt"  # what ultralytics' check_amp downloads to compare fp32 and AMP outputs


def offline_check_amp(model: torch.nn.Module) -> bool:
    """ultralytics' check_amp, minus its download.

    On CUDA, upstream fetches yolo26n.pt from GitHub to compare fp32 and AMP detections and, when that download
    fails offline, keeps AMP on. Offline (YOLO_OFFLINE, which wildfire-kd sets) and without a local copy of that
    file we keep AMP on the same way, without the connection attempt; anywhere else upstream runs as it is. A step
    that AMP makes non-finite is skipped by the stability guard either way.
    """
    offline = os.environ.get("YOLO_OFFLINE", "").lower() in {"1", "true", "yes"}
    on_cuda = next(model.parameters()).device.type == "cuda"
    if not (on_cuda and offline and not (WEIGHTS_DIR / AMP_CHECK_WEIGHTS).is_file()):
        return _upstream_check_amp(model)
    LOGGER.warning(
        f"AMP: check skipped offline (it needs {AMP_CHECK_WEIGHTS}); AMP stays on. "
        "If losses go NaN or mAP stays 0, set train.amp=false"
    )
    return True


# ultralytics attaches its own tracker callbacks whenever their packages are importable (mlflow, comet, clearml, dvc and
# raytune default to on): a run would then log twice, or fail on an MLflow run already active. wildfire-kd owns
# tracking (train.loggers, wildfire_kd.tracking), and ultralytics' settings file is ours (prepare_ultralytics).
ULTRALYTICS_TRACKERS = ("clearml", "comet", "dvc", "mlflow", "raytune", "tensorboard", "wandb")


def switch_off_ultralytics_trackers() -> None:
    from ultralytics.utils import SETTINGS

    on = {key: False for key in ULTRALYTICS_TRACKERS if SETTINGS.get(key) is not False}
    if on:
        SETTINGS.update(on)


def student_of(model: torch.nn.Module) -> torch.nn.Module:
    """The plain DetectionModel inside DDP and/or ultralytics' feature-distillation wrapper."""
    model = unwrap_model(model)
    return getattr(model, "student_model", model)


# --- the criterion's side: v8DetectionLoss ------------------------------------------------------------------------


def detection_loss(student: torch.nn.Module):
    """The student's own ground-truth criterion (what ``DetectionModel.init_criterion`` builds)."""
    from ultralytics.utils.loss import v8DetectionLoss

    return v8DetectionLoss(student)


def ground_truth_loss(detection, preds, batch: dict) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict]:
    """Mirrors ``v8DetectionLoss.__call__``: (the parsed training outputs, the box/cls/dfl vector × batch size, the
    items dict keyed box_loss/cls_loss/dfl_loss). ``_do_train`` takes the items' keys as its loss names
    (``loss_names = tuple(loss_items)``), so they and the KD terms appended to them are results.csv's columns."""
    parsed = detection.parse_output(preds)
    vector, items = detection.loss(parsed, batch)
    return parsed, vector, items


def loss_names(detection) -> tuple[str, ...]:
    """The ground-truth loss's item names, as ``get_assigned_targets_and_loss`` keys its items dict."""
    return tuple(detection.loss_names)


def on_ground_truth_assignment(detection, record: Callable[[torch.Tensor, torch.Tensor], None]) -> None:
    """Call ``record(target_scores, fg_mask)`` each time the ground-truth loss assigns anchors to boxes.

    The task-aligned assigner runs inside ``get_assigned_targets_and_loss``, once per batch; its forward returns
    (target_labels, target_bboxes, target_scores, fg_mask, target_gt_idx)."""

    def hook(module, inputs, outputs) -> None:
        _, _, target_scores, fg_mask, _ = outputs
        record(target_scores, fg_mask)

    detection.assigner.register_forward_hook(hook)


def selected_by_fraction(images: list[Path], fraction, split: str) -> list[Path]:
    """The images ultralytics trains or validates on when ``fraction`` (train.ultralytics.fraction) leaves some out
    on purpose: mirrors ``BaseDataset.get_img_files`` (sorted, then the first round(n x fraction), or a count)."""
    from ultralytics.data.utils import get_split_fraction

    share = get_split_fraction(fraction, split)
    ordered = sorted(images, key=str)
    count = share if isinstance(share, int) else max(1, round(len(ordered) * share))
    return ordered[:count] if count < len(ordered) else ordered


# --- the unlabelled pool's loader ----------------------------------------------------------------------------


class PooledDataset(torch.utils.data.Dataset):
    """The labelled training set and the unlabelled pool (each a YOLODataset with its own augmentation) as one
    dataset: indices 0..L-1 are the labelled images, then the pool's frames; each item says which it is
    (``labelled``). Mosaic, mixup, cutmix and copy-paste draw their extra images from their own dataset, so a
    labelled image never carries a pool frame's pixels (whose smoke the ground truth would call background), and a
    pool frame never carries boxes. What ultralytics reads off ``train_loader.dataset`` (labels for its plots and
    class weights, im_files) is the labelled set's."""

    def __init__(self, labelled, pool):
        self.labelled_set, self.pool_set = labelled, pool

    def __len__(self) -> int:
        return len(self.labelled_set) + len(self.pool_set)

    def __getitem__(self, index: int) -> dict:
        n = len(self.labelled_set)
        item = self.labelled_set[index] if index < n else self.pool_set[index - n]
        item["labelled"] = index < n
        return item

    @property
    def labels(self):
        return self.labelled_set.labels

    @property
    def im_files(self):
        return self.labelled_set.im_files

    @property
    def mosaic(self) -> bool:
        return bool(getattr(self.labelled_set, "mosaic", False))

    @mosaic.setter
    def mosaic(self, on: bool) -> None:  # BaseTrainer._close_dataloader_mosaic sets it, then calls close_mosaic
        for dataset in (self.labelled_set, self.pool_set):
            dataset.mosaic = on

    def close_mosaic(self, hyp) -> None:
        from copy import copy

        for dataset in (self.labelled_set, self.pool_set):
            dataset.close_mosaic(hyp=copy(hyp))  # each rebuilds its transforms from the hyperparameters it is given

    @staticmethod
    def collate_fn(batch: list[dict]) -> dict:
        from ultralytics.data.dataset import YOLODataset

        flags = [item.pop("labelled") for item in batch]
        collated = YOLODataset.collate_fn(batch)
        collated["labelled"] = torch.tensor(flags, dtype=torch.bool)
        return collated


def pooled_dataloader(dataset: PooledDataset, sampler, batch: int, workers: int, device):
    """Mirrors ``build_dataloader`` for training (an InfiniteDataLoader, its worker count and seeding) with the pool's
    sampler in place of its shuffle or DistributedSampler."""
    from ultralytics.data.build import InfiniteDataLoader, seed_worker
    from ultralytics.utils.torch_utils import get_torch_device_backend

    batches = -(-len(sampler) // batch)
    device_type = getattr(device, "type", str(device).split(":")[0])
    nd = get_torch_device_backend(device).device_count() if device_type not in {"cpu", "mps"} else 0
    nw = min(os.cpu_count() // max(nd, 1), workers, 0 if batches <= 1 else batches)
    seed = torch.initial_seed() - RANK - 1
    generator = torch.Generator()
    generator.manual_seed((6148914691236517205 + RANK + seed) % (1 << 64))
    return InfiniteDataLoader(
        dataset=dataset,
        batch_size=batch,
        shuffle=False,
        num_workers=nw,
        sampler=sampler,
        prefetch_factor=4 if nw > 0 else None,
        pin_memory=nd > 0,
        collate_fn=PooledDataset.collate_fn,
        worker_init_fn=seed_worker,
        generator=generator,
        drop_last=False,
    )


# --- the teacher's classes ---------------------------------------------------------------------------------------


def narrow_classes(model: torch.nn.Module, keep: list[int], names: list[str]) -> torch.nn.Module:
    """``model`` (in place) answering for its classes ``keep`` only, in that order, named ``names``: each scale's
    class convolution keeps those output rows. YOLOv8 scores every class with its own sigmoid, so the kept classes'
    scores are exactly the model's own, and its boxes and DFL bins do not change. Mirrors ``Detect.__init__``."""
    head = model.model[-1]
    index = torch.tensor(keep, dtype=torch.long)
    for branches in (head.cv3, getattr(head, "one2one_cv3", None)):
        for branch in branches or []:
            conv = branch[-1]
            narrowed = torch.nn.Conv2d(
                conv.in_channels, len(keep), conv.kernel_size, conv.stride, conv.padding, bias=conv.bias is not None
            ).to(device=conv.weight.device, dtype=conv.weight.dtype)
            with torch.no_grad():
                narrowed.weight.copy_(conv.weight[index.to(conv.weight.device)])
                if conv.bias is not None:
                    narrowed.bias.copy_(conv.bias[index.to(conv.bias.device)])
            branch[-1] = narrowed
    head.nc, head.no = len(keep), len(keep) + head.reg_max * 4
    model.names = dict(enumerate(names))
    if isinstance(getattr(model, "yaml", None), dict):
        model.yaml["nc"] = len(keep)
    return model


def answering_for(model: torch.nn.Module, classes: TeacherClasses) -> torch.nn.Module:
    """``model`` answering for the dataset's classes as ``classes`` (data.teacher_classes) maps them: narrowed in
    place when they differ from its own, else as it is."""
    return model if classes.identical else narrow_classes(model, classes.keep, classes.dataset)


# --- resuming ------------------------------------------------------------------------------------------------------


def finished_but_not_finalised(error: BaseException) -> bool:
    """``BaseTrainer.resume_training`` asserts "... is finished, nothing to resume" when the checkpoint holds every
    epoch: a run killed after its last epoch's checkpoint but before it was finalised (stripped, validated)."""
    return isinstance(error, AssertionError) and "nothing to resume" in str(error)


# --- the validator's side -----------------------------------------------------------------------------------------


def relabelling_validator(relabel: Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]):
    """A DetectionValidator class whose ground truth on each batch is ``relabel(images, max_det)``: (batch_idx, cls,
    normalised xywh boxes) for the very tensors the model sees. Mirrors ``DetectionValidator.preprocess`` (it returns
    the batch with the images on the device, 0..1) and ``_prepare_batch`` (which reads those three keys)."""
    from ultralytics.models.yolo.detect import DetectionValidator

    class RelabellingValidator(DetectionValidator):
        def preprocess(self, batch):
            batch = super().preprocess(batch)
            batch["batch_idx"], batch["cls"], batch["bboxes"] = relabel(batch["img"], self.args.max_det)
            return batch

    return RelabellingValidator


# --- the trainer's side ----------------------------------------------------------------------------------------


class SeamTrainer(DetectionTrainer):
    """DetectionTrainer with the hooks that depend on how ultralytics' BaseTrainer is written."""

    def get_dataset(self):
        """ultralytics reads a mirror of the dataset, never the dataset itself (label caches, JPEG repairs land in
        the mirror). Depends on ``BaseTrainer.get_dataset`` resolving ``self.args.data``."""
        mirror_root = Path(self.save_dir) / MIRROR_DIR
        if RANK in {-1, 0} and mirror_root.resolve() not in Path(self.args.data).resolve().parents:
            from .data import mirror

            self.args.data = str(mirror(self.args.data, mirror_root))
        return super().get_dataset()

    # set by a trainer that finetunes a loaded model as it is (``finetune_model``)
    finetune_classes: Callable[[torch.nn.Module], torch.nn.Module] | None = None

    def get_model(self, cfg=None, weights=None, verbose=True):
        """Finetuning: the model is the loaded checkpoint itself (``setup_model`` loads the .pt and passes it as
        ``weights``), answering for the dataset's classes; upstream would rebuild it from its yaml, which a model
        with custom blocks cannot be. Training a student: upstream's own."""
        if self.finetune_classes is not None and weights is not None:
            return self.finetune_classes(weights)
        return super().get_model(cfg=cfg, weights=weights, verbose=verbose)

    def _setup_train(self):
        """``BaseTrainer._setup_train`` builds student, EMA, optimizer and loaders, and calls the module-level
        ``check_amp``, which would download a model: it runs with ``offline_check_amp`` in its place."""
        from unittest import mock

        with mock.patch.object(_upstream_trainer, "check_amp", offline_check_amp):
            super()._setup_train()

    def save_model(self):
        """``BaseTrainer.save_model`` writes straight into last.pt, best.pt and epochN.pt (``save_period``): let it
        write temporary files, then fsync and rename each over its final name, so after a crash each file is the
        previous checkpoint or the new one, whole. epochN.pt is copied from the temporary last.pt (the same bytes)."""
        real_last, real_best, save_period = self.last, self.best, self.save_period
        self.last, self.best = self.wdir / f".{real_last.name}.tmp", self.wdir / f".{real_best.name}.tmp"
        self.save_period = 0  # upstream would write epochN.pt in place
        try:
            saved = super().save_model()
        except BaseException:  # a full disk, say: no half-written temporary file stays behind
            for tmp in (self.last, self.best):
                tmp.unlink(missing_ok=True)
            raise
        finally:
            pending = [(self.last, real_last), (self.best, real_best)]
            self.last, self.best, self.save_period = real_last, real_best, save_period
        last_tmp = pending[0][0]
        if save_period > 0 and self.epoch % save_period == 0 and last_tmp.exists():
            epoch_file = self.wdir / f"epoch{self.epoch}.pt"
            epoch_tmp = self.wdir / f".{epoch_file.name}.tmp"
            shutil.copyfile(last_tmp, epoch_tmp)
            pending.append((epoch_tmp, epoch_file))
        for tmp, final in pending:
            if tmp.exists():
                replace_durably(tmp, final)
        return saved

    def final_eval(self):
        """A copy of ``BaseTrainer.final_eval`` in which the optimizer is stripped durably (``strip_durably``)."""
        from ultralytics.utils import LOCAL_RANK
        from ultralytics.utils.torch_utils import torch_distributed_zero_first

        model = self.best if self.best.exists() else None
        with torch_distributed_zero_first(LOCAL_RANK):
            if RANK in {-1, 0}:
                ckpt = strip_durably(self.last) if self.last.exists() else {}
                if model:
                    strip_durably(self.best, updates={"train_results": ckpt.get("train_results")})
        if model:
            LOGGER.info(f"\nValidating {model}...")
            self.validator.args.plots = self.args.plots
            self.validator.args.compile = False
            self.metrics = self.validator(model=model)
            self.metrics.pop("fitness", None)
            self.epoch += 1  # log best metrics at step epochs+1, as ultralytics does
            self.run_callbacks("on_fit_epoch_end")
            self.epoch -= 1

    def set_epoch_means(self, means: dict[str, float]) -> None:
        """Replace the epoch's running loss means, which ``_do_train`` shows in the progress bar and writes to
        results.csv (``self.tloss``, a dict keyed like the criterion's items)."""
        device = self.loss.device if self.loss is not None else self.device
        self.tloss = {k: torch.tensor(v, device=device) for k, v in means.items()}

    def drop_nonfinite_loss(self) -> None:
        """``_do_train`` rewinds the whole epoch from last.pt when the last batch's ``self.loss`` is not finite; the
        stability guard already skipped that step, so the loss it sees is a zero."""
        self.loss = torch.zeros((), device=self.device)

    def loss_per_image(self, batch_images: int) -> float:
        """The loss that was backpropagated, per image. ``_do_train`` sets ``self.loss`` to the sum of the criterion's
        vector (already × batch size) and, under DDP, × world size before ``scaler.scale(self.loss).backward()``."""
        world = self.world_size if RANK != -1 else 1
        return float(self.loss.detach()) / (max(batch_images, 1) * world)


if __name__ == "__main__":  # print the current hashes, to update UPSTREAM after re-checking the hooks
    for name in UPSTREAM:
        print(f"{name}: {source_hash(name)}")
