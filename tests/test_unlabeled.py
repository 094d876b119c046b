"""Unlabelled frames (train.unlabeled, issue 28): they teach through the KD terms only, never the ground truth; their
augmentation never mixes them into a labelled image; the sampler's epochs and DDP shares; the preflight's refusals;
the CLI end to end on tiny data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import invoke_cli, run_cli, smoke_args
from wildfire_kd.config import DistillSettings
from wildfire_kd.distill.loss import make_criterion
from wildfire_kd.distill.pool_sampler import PoolSampler

# --- the criterion: the ground truth never sees a pool frame --------------------------------------------------------


def _calibrated(model):
    """``model`` in eval mode with BatchNorm statistics of real activations: a fresh model's running statistics
    (mean 0, variance 1) let its activations die out, so every image would give the same outputs."""
    torch.manual_seed(7)
    model.train()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = None  # a cumulative average over the passes below
        for _ in range(4):
            model(torch.rand(8, 3, 64, 64))
    return model.eval()


def _models():
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    teacher = _calibrated(DetectionModel("yolov8s.yaml", nc=2, verbose=False))
    for p in teacher.parameters():
        p.requires_grad_(False)
    torch.manual_seed(1)
    student = DetectionModel("yolov8n.yaml", nc=2, verbose=False)
    student.args = get_cfg()
    return _calibrated(student), teacher  # eval: BatchNorm per image, so one image's outputs never depend on another's


def _batch(images: torch.Tensor, labelled: list[bool]) -> dict:
    """Boxes on the labelled images only (two on image 0, one on the last labelled one)."""
    boxes = []
    if any(labelled):
        first, last = labelled.index(True), len(labelled) - 1 - labelled[::-1].index(True)
        boxes = [(first, 0, (0.5, 0.5, 0.4, 0.4)), (first, 1, (0.3, 0.3, 0.2, 0.3)), (last, 0, (0.6, 0.4, 0.3, 0.3))]
    return {
        "img": images,
        "batch_idx": torch.tensor([float(i) for i, _, _ in boxes]),
        "cls": torch.tensor([[float(c)] for _, c, _ in boxes]).view(-1, 1),
        "bboxes": torch.tensor([list(b) for _, _, b in boxes]).view(-1, 4),
        "labelled": torch.tensor(labelled),
    }


GROUND_TRUTH = ("box_loss", "cls_loss", "dfl_loss")


@pytest.mark.parametrize("method", ["dense", "pseudo"])
def test_a_batch_of_only_unlabelled_frames_gives_exactly_zero_ground_truth_and_nonzero_kd(method):
    student, teacher = _models()
    criterion = make_criterion(student, teacher, DistillSettings(method=method, teacher_conf=0.001))
    torch.manual_seed(2)
    batch = _batch(torch.rand(3, 3, 64, 64), [False, False, False])
    loss, items = criterion(student(batch["img"]), batch)
    assert all(items[k].item() == 0.0 for k in GROUND_TRUTH)
    assert all(loss[i].item() == 0.0 for i in range(3))
    terms = criterion.TERMS
    assert all(items[k].item() == 0.0 for k in terms), "no labelled image: its KD terms are 0"
    assert sum(items[f"{k}_u"].item() for k in terms) > 0, "the frames' KD terms teach"
    assert criterion.last_images == {"labelled": 0, "unlabelled": 3}
    # the ground-truth part of the vector backpropagates nothing; the KD part does
    params = [p for p in student.parameters() if p.requires_grad]
    gt_grads = torch.autograd.grad(loss[:3].sum(), params, allow_unused=True, retain_graph=True)
    assert all(g is None or not g.any() for g in gt_grads)
    kd_grads = torch.autograd.grad(loss[3:].sum(), params, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in kd_grads)


def test_an_unlabelled_frame_changes_no_ground_truth_term_but_its_own_kd_terms():
    """What the frame shows (smoke, say) must not move the ground-truth loss: a background image would (its anchors'
    class scores against 0). Its content moves only the ``_u`` terms."""
    student, teacher = _models()
    criterion = make_criterion(student, teacher, DistillSettings())
    torch.manual_seed(3)
    images = torch.rand(3, 3, 64, 64)
    other = images.clone()
    other[1] = torch.rand(3, 64, 64) * 0.5 + 0.5  # another frame in slot 1, the labelled images unchanged
    flags = [True, False, True]
    _, items = criterion(student(images), _batch(images, flags))
    _, changed = criterion(student(other), _batch(other, flags))
    for k in GROUND_TRUTH + ("kd_cls", "kd_ld"):
        assert torch.equal(items[k], changed[k]), k
    assert not torch.equal(items["kd_ld_u"], changed["kd_ld_u"])
    # control: the same frame counted as a (background) labelled image does move the ground-truth class loss
    _, as_background = criterion(student(other), _batch(other, [True, True, True]))
    _, as_background_before = criterion(student(images), _batch(images, [True, True, True]))
    assert not torch.equal(as_background["cls_loss"], as_background_before["cls_loss"])


def test_the_ground_truth_of_a_mixed_batch_is_that_of_its_labelled_images_alone():
    student, teacher = _models()
    criterion = make_criterion(student, teacher, DistillSettings())
    torch.manual_seed(4)
    images = torch.rand(4, 3, 64, 64)
    mixed = _batch(images, [True, False, True, False])
    loss, items = criterion(student(images), mixed)
    alone = _batch(images[[0, 2]], [True, True])
    del alone["labelled"]
    alone_loss, alone_items = criterion(student(images[[0, 2]]), alone)  # the plain path: no pool at all
    for k in GROUND_TRUTH + ("kd_cls", "kd_ld", "kd_box"):
        assert torch.allclose(items[k], alone_items[k], rtol=1e-5, atol=1e-7), k
    assert torch.allclose(loss[:6], alone_loss, rtol=1e-5, atol=1e-6), "labelled images weigh as in a batch alone"
    settings = DistillSettings(unlabeled_weight=0.25)
    weighted, _ = make_criterion(student, teacher, settings)(student(images), mixed)
    assert torch.allclose(weighted[6:], loss[6:] * 0.25, rtol=1e-5), "the pool's weight scales its KD terms only"
    assert torch.allclose(weighted[:6], loss[:6])


# --- augmentation: a labelled image never carries a pool frame's pixels ---------------------------------------------


def _solid_images(folder: Path, colour: tuple[int, int, int], count: int, labels: Path | None) -> Path:
    from PIL import Image

    folder.mkdir(parents=True)
    for i in range(count):
        Image.new("RGB", (64, 64), colour).save(folder / f"{folder.name}_{i}.png")
        if labels is not None:
            labels.mkdir(parents=True, exist_ok=True)
            (labels / f"{folder.name}_{i}.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    return folder


def _datasets(tmp_path: Path, together: bool):
    """Red labelled images and blue pool frames, with every mixing augmentation on (mosaic, mixup, cutmix)."""
    from ultralytics.cfg import get_cfg
    from ultralytics.data.build import build_yolo_dataset

    root = tmp_path / "ds"
    red = _solid_images(root / "images" / "lab", (220, 20, 20), 6, root / "labels" / "lab")
    blue = _solid_images(root / "images" / "pool", (20, 20, 220), 6, root / "labels" / "pool")
    for f in (root / "labels" / "pool").iterdir():
        f.write_text("")  # as the pool's mirror gives them: empty label files
    cfg = get_cfg(overrides={"imgsz": 64, "mosaic": 1.0, "mixup": 1.0, "cutmix": 1.0, "hsv_h": 0, "hsv_s": 0,
                             "hsv_v": 0, "fliplr": 0.5, "cache": False})  # fmt: skip
    data = {"names": {0: "smoke"}, "nc": 1, "channels": 3}
    if together:  # the control: one dataset over both folders, as ultralytics alone would mix them
        return build_yolo_dataset(cfg, [str(red), str(blue)], 4, data, mode="train"), None
    return build_yolo_dataset(cfg, str(red), 4, data), build_yolo_dataset(cfg, str(blue), 4, data)


def _colours(image: torch.Tensor) -> tuple[bool, bool]:
    """(has labelled-red pixels, has pool-blue pixels), whatever the channel order."""
    a, c = image[0].int(), image[2].int()
    return bool(((a - c).abs() > 120).logical_and(a > c).any()), bool(((a - c).abs() > 120).logical_and(c > a).any())


def test_mosaic_and_mixup_never_paste_a_pool_frame_into_a_labelled_image(tmp_path):
    import random

    from wildfire_kd.seam import PooledDataset

    random.seed(0)
    labelled, pool = _datasets(tmp_path, together=False)
    dataset = PooledDataset(labelled, pool)
    red_first = _colours(dataset[0]["img"])[0]
    for i in range(len(dataset)):
        item = dataset[i]
        red, blue = _colours(item["img"])
        own, other = (red, blue) if red_first else (blue, red)
        if item["labelled"]:
            assert own and not other, f"labelled image {i} carries pool pixels"
            assert len(item["cls"]) > 0
        else:
            assert other and not own, f"pool frame {i} carries labelled pixels"
            assert len(item["cls"]) == 0, "a pool frame never carries boxes"
    batch = PooledDataset.collate_fn([dataset[0], dataset[len(labelled)]])
    assert batch["labelled"].tolist() == [True, False] and batch["img"].shape[0] == 2
    # the control: one dataset over both folders does paste blue into red mosaics
    together, _ = _datasets(tmp_path / "control", together=True)
    mixed = [_colours(together[i]["img"]) for i in range(len(together))]
    assert any(r and b for r, b in mixed), "the check above could not fail: no mosaic mixed the colours"


def test_closing_mosaic_closes_it_in_both_pools(tmp_path):
    from copy import copy

    from ultralytics.cfg import get_cfg

    from wildfire_kd.seam import PooledDataset

    labelled, pool = _datasets(tmp_path, together=False)
    dataset = PooledDataset(labelled, pool)
    dataset.mosaic = False
    dataset.close_mosaic(hyp=copy(get_cfg(overrides={"imgsz": 64})))
    names = {type(t).__name__ for ds in (labelled, pool) for t in ds.transforms.transforms}
    assert "Mosaic" not in names and not labelled.mosaic and not pool.mosaic


# --- the sampler ------------------------------------------------------------------------------------------------


def _global_batches(sampler: PoolSampler, epoch: int) -> list[list[int]]:
    order, batches, start = sampler.epoch_order(epoch), [], 0
    for size in sampler.batch_sizes():
        batches.append(order[start : start + size])
        start += size
    return batches


def test_an_epoch_holds_every_labelled_image_once_and_the_ratio_of_pool_frames_in_every_batch():
    sampler = PoolSampler(labelled=60, pool=600, ratio=3.0, batch=8, seed=0)
    order = sampler.epoch_order(0)
    labelled = [i for i in order if i < 60]
    assert sorted(labelled) == list(range(60))
    assert len(order) - 60 == sampler.per_epoch == 180 and len(sampler) == 240
    for batch in _global_batches(sampler, 0):
        n = sum(i < 60 for i in batch)
        assert abs(n - len(batch) * 60 / 240) <= 1, "each batch holds both kinds in the epoch's proportion"
        assert batch[:n] == [i for i in batch if i < 60], "labelled images first"
    assert sampler.epoch_order(0) == PoolSampler(60, 600, 3.0, 8, seed=0).epoch_order(0), "seeded"
    assert sampler.epoch_order(1) != order


def test_the_pool_is_walked_as_a_stream_so_every_frame_is_seen_as_evenly_as_the_budget_allows():
    sampler = PoolSampler(labelled=10, pool=25, ratio=2.0, batch=4, seed=3)
    seen = np.zeros(25, dtype=int)
    for epoch in range(5):  # 5 x 20 = 100 frames = 4 full passes over the pool
        np.add.at(seen, sampler.pool_frames(epoch), 1)
    assert (seen == 4).all()
    assert sampler.distinct_frames_seen(1) == 20 and sampler.distinct_frames_seen(2) == 25
    it = iter(sampler)
    first = list(it)
    assert first == sampler.epoch_order(0) and sampler.epoch == 1, "each pass over the sampler is the next epoch"
    sampler.set_epoch(3)
    assert list(sampler) == sampler.epoch_order(3)


@pytest.mark.parametrize(("labelled", "pool", "ratio", "batch"), [(60, 600, 10.0, 4), (7, 50, 1.3, 2), (33, 5, 2.0, 8)])
def test_each_ddp_rank_gets_its_own_share_of_both_pools_and_the_same_number_of_batches(labelled, pool, ratio, batch):
    world = 2
    ranks = [PoolSampler(labelled, pool, ratio, batch, seed=1, rank=r, world=world) for r in range(world)]
    shares = [r.epoch_order(4)[r.rank :: world] for r in ranks]
    assert len(shares[0]) == len(shares[1]) == len(ranks[0]) == len(ranks[1])
    whole = ranks[0].epoch_order(4)
    assert sorted(shares[0] + shares[1]) == sorted(whole), "together the ranks cover the epoch once"
    assert sorted(i for share in shares for i in share if i < labelled) == list(range(labelled))
    global_batches = _global_batches(ranks[0], 4)
    for share in shares:  # each per-rank batch is the rank's part of one global batch: its share of both kinds
        rank_batches = [share[k : k + batch] for k in range(0, len(share), batch)]
        assert len(rank_batches) == len(global_batches)
        for mine, whole_batch in zip(rank_batches, global_batches, strict=True):
            assert set(mine) <= set(whole_batch)
            n_mine, n_whole = sum(i < labelled for i in mine), sum(i < labelled for i in whole_batch)
            assert n_whole // world <= n_mine <= -(-n_whole // world), "labelled images split evenly over ranks"
        assert any(i >= labelled for i in share), "and pool frames"


# --- bad input: exit 2 naming the folder and the problem ----------------------------------------------------------


@pytest.fixture
def pool_dir(tmp_path, fire_smoke_data) -> Path:
    from wildfire_kd.synth import synthesize

    root = synthesize(tmp_path / "pooled", train_images=2, val_images=1, imgsz=96, seed=41, unlabeled_images=6)
    return root.parent / "unlabeled"


def _train(data: Path, teacher: Path, out: Path, *extra: str):
    return invoke_cli(*smoke_args("train", data, teacher, out, *extra))


def test_bad_unlabelled_folders_are_refused_naming_the_folder(tmp_path, fire_smoke_data, teacher_pt, pool_dir):
    out = tmp_path / "runs"
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = {
        "does not exist": str(tmp_path / "missing"),
        "holds no frames": str(empty),
    }
    for expected, folder in cases.items():
        r = _train(fire_smoke_data, teacher_pt, out, "--unlabeled", folder)
        assert r.returncode == 2, r.stderr
        assert folder in r.stderr and expected in r.stderr
    labelled = tmp_path / "labelled"
    shutil.copytree(pool_dir, labelled)
    (labelled / "unlabeled_00002.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    r = _train(fire_smoke_data, teacher_pt, out, "--unlabeled", str(labelled))
    assert r.returncode == 2 and "holds label files for 1 frames" in r.stderr and "unlabeled_00002.txt" in r.stderr
    r = _train(fire_smoke_data, teacher_pt, out, "--unlabeled", str(pool_dir), "--set", "distill.response=false")
    assert r.returncode == 2 and "train.unlabeled" in r.stderr and "distill.response=true" in r.stderr
    assert not out.exists(), "nothing was written before the refusals"


def test_a_pool_that_overlaps_the_dataset_is_refused_naming_the_overlap(tmp_path, fire_smoke_data, teacher_pt):
    out = tmp_path / "runs"
    val_image = sorted((fire_smoke_data.parent / "images" / "val").iterdir())[0]
    copied = tmp_path / "copied"
    copied.mkdir()
    shutil.copyfile(val_image, copied / "frame_0001.jpg")  # the same bytes under another name
    r = _train(fire_smoke_data, teacher_pt, out, "--unlabeled", str(copied))
    assert r.returncode == 2, r.stderr
    assert "also in the dataset" in r.stderr and f"same bytes as {val_image}" in r.stderr
    train_folder = fire_smoke_data.parent / "images" / "train"
    r = _train(fire_smoke_data, teacher_pt, out, "--unlabeled", str(train_folder))
    assert r.returncode == 2 and "is train image" in r.stderr, r.stderr


def test_unreadable_frames_count_against_the_tolerated_fraction(tmp_path, fire_smoke_data, pool_dir):
    from wildfire_kd.data import preflight
    from wildfire_kd.errors import InputError
    from wildfire_kd.pool import preflight_pool

    (pool_dir / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    info = preflight(fire_smoke_data)
    with pytest.raises(InputError, match=r"1 of 7 unlabelled frames cannot be used .*broken\.jpg"):
        preflight_pool([str(pool_dir)], info)
    pool = preflight_pool([str(pool_dir)], info, max_bad_fraction=0.2)
    assert pool.listed == 7 and len(pool.images) == 6 and pool.bad_images == [str(pool_dir / "broken.jpg")]
    before = pool.sha256
    (pool_dir / "unlabeled_00000.jpg").write_bytes((pool_dir / "unlabeled_00001.jpg").read_bytes())
    again = preflight_pool([str(pool_dir)], info, max_bad_fraction=0.2)
    assert again.sha256 != before, "the content digest follows the frames' bytes"
    assert "duplicate_image" in again.problems and len(again.images) == 6, "a duplicate frame is reported, kept"
    listed = preflight_pool([str(pool_dir)], info, listed=again.images[:3])  # resuming: the run's own list
    assert listed.listed == 3 and listed.images == again.images[:3]


# --- synth and the CLI end to end ----------------------------------------------------------------------------------


def test_synth_writes_a_pool_without_labels_and_leaves_the_splits_as_they_were(tmp_path):
    r = invoke_cli("synth", str(tmp_path / "a"), "--train-images", "4", "--val-images", "2", "--imgsz", "64",
                   "--unlabeled", "5")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "+ 5 unlabelled frames in" in r.stdout
    invoke_cli("synth", str(tmp_path / "b"), "--train-images", "4", "--val-images", "2", "--imgsz", "64")
    a, b = tmp_path / "a", tmp_path / "b"
    for split in ("train", "val"):
        for f in (b / "images" / split).iterdir():
            assert (a / "images" / split / f.name).read_bytes() == f.read_bytes(), "the pool changes no split"
    frames = sorted((a / "unlabeled").iterdir())
    assert [f.suffix for f in frames] == [".jpg"] * 5, "frames only: no label beside them"
    assert len(list((a / "unlabeled_labels").iterdir())) == 5
    train_bytes = {f.read_bytes() for f in (a / "images" / "train").iterdir()}
    assert not any(f.read_bytes() in train_bytes for f in frames)


@pytest.mark.slow
def test_train_with_an_unlabelled_pool_end_to_end(tmp_path, fire_smoke_data, teacher_pt, pool_dir):
    out = tmp_path / "runs"
    before = {p: p.stat().st_mtime_ns for p in pool_dir.rglob("*")}
    r = run_cli(*smoke_args("train", fire_smoke_data, teacher_pt, out, "--unlabeled", str(pool_dir),
                            "--set", "distill.unlabeled_ratio=0.5"))  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    run = out / "student"
    frames = (run / "unlabeled.txt").read_text().splitlines()
    assert sorted(Path(f).name for f in frames) == sorted(p.name for p in pool_dir.iterdir())
    report = json.loads((run / "unlabeled.json").read_text())
    assert (report["images"], report["per_epoch"], report["epochs_completed"]) == (6, 8, 2)
    assert report["distinct_frames_seen"] == 6 and report["folders"] == [str(pool_dir.resolve())]
    assert json.loads((run / "train.json").read_text())["unlabeled"]["sha256"] == report["sha256"]
    header = (run / "results.csv").read_text().splitlines()[0].split(",")
    assert {"train/kd_cls_u", "train/kd_ld_u", "train/kd_box_u", "train/kd_cls"} <= set(header)
    log = [json.loads(line) for line in (run / "batch_log.jsonl").read_text().splitlines()]
    assert sum(r["labelled_images"] for r in log) == 2 * 16 and sum(r["unlabelled_images"] for r in log) == 2 * 8
    assert all(r["kd_ld_u"] > 0 for r in log if r["unlabelled_images"])
    validation = json.loads((run / "validation" / "validation.json").read_text())
    assert validation["unlabeled"]["images"] == 6
    assert "6 unlabelled frames from" in (run / "validation" / "validation.md").read_text()
    assert {p: p.stat().st_mtime_ns for p in pool_dir.rglob("*")} == before, "the pool is never written to"


def test_the_builds_train_fingerprint_follows_the_pools_content_and_verify_checks_it_once(
    tmp_path, fire_smoke_data, teacher_pt, pool_dir
):
    from wildfire_kd.config import load_config
    from wildfire_kd.errors import InputError
    from wildfire_kd.pipeline import Build, TrainStage

    def fingerprint(*unlabeled: Path) -> str:
        given = [f"train.data={fire_smoke_data}", f"train.teacher={teacher_pt}"]
        config = load_config(None, [*given, f"train.unlabeled={[str(p) for p in unlabeled]}"])
        return TrainStage().fingerprint(Build.verify(config, tmp_path / "build"))

    without, with_pool = fingerprint(), fingerprint(pool_dir)
    frame = pool_dir / "unlabeled_00003.jpg"
    frame.write_bytes((pool_dir / "unlabeled_00004.jpg").read_bytes())  # same names, other content
    assert len({without, with_pool, fingerprint(pool_dir)}) == 3
    frame.write_bytes(b"not an image")
    with pytest.raises(InputError, match="unlabelled frames cannot be used"):
        fingerprint(pool_dir)
