"""The one trainer of m2s: student, teacher and distillation runs differ only in data and extra loss.

- ``student``: single scans; task loss (weighted CE + Lovász) on every labelled point.
- ``teacher``: the dataset appends M2SKD fused hard-class points (``fusion:`` in the YAML); the
  teacher learns on them too, their labels weighted by ``loss.fused_weight``; validation scores the
  scan's own points only.
- ``distill``: the model (the student) sees ``batch.student_view()``; an ``extra_loss`` module
  built by ``m2s_training.distill.build_distiller`` receives the full batch (fused points included,
  for the teacher), the student's output and the step, and returns named, weighted loss terms.

Runs under ``torchrun`` use DDP (gloo on CPU, nccl on CUDA); only rank 0 writes. ``OUT/last.pt``
holds everything needed to continue exactly (model, optimizer, scheduler, scaler, step, RNG);
``OUT/best.pt`` is the model with the best validation mIoU. ``OUT/log.csv`` has one row per
logged value (step, epoch, split, name, value) and ``OUT/curves.png`` plots it.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import math
import os
import random
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from m2s_perception.checkpoint import read_checkpoint
from m2s_perception.labels import load_label_map
from m2s_perception.models import ModelConfig, ModelOutput, build_model
from m2s_training.atomic import atomic_path, write_text_atomic
from m2s_training.checkpoint import save_checkpoint
from m2s_training.data.dataset import AugmentConfig, Batch, SemanticKittiDataset, make_loader
from m2s_training.data.semantic_kitti import split_sequences
from m2s_training.losses import LossConfig, SegmentationLoss, class_weights_from_counts
from m2s_training.metrics import SegmentationMetrics, confusion_matrix

MODES = ("student", "teacher", "distill")


# --- configuration -----------------------------------------------------------------------------


@dataclass
class DataConfig:
    batch_size: int = 2
    num_workers: int = 2
    train_split: str = "train"
    val_split: str = "val"
    max_train_scans: int | None = None  # evenly spaced subset; None = every scan
    max_val_scans: int | None = None
    max_train_points: int | None = None  # random subset of each training scan's points (CPU budget)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    min_lr_ratio: float = 0.01  # cosine decay ends at lr × min_lr_ratio
    grad_clip: float = 10.0  # max gradient norm; 0 disables


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    epochs: int = 10
    max_steps: int | None = None  # optimisation steps in total; None = epochs × steps per epoch
    val_every: int = 0  # steps between validations; 0 = after every epoch
    checkpoint_every: int = 200  # steps between OUT/last.pt writes (also written at the end)
    log_every: int = 10  # steps averaged per CSV row
    seed: int = 0
    amp: bool = True  # mixed precision, used on CUDA only
    fusion: dict[str, Any] | None = None  # MultiScanFuser keyword arguments (teacher / distill)
    distill: dict[str, Any] | None = None  # passed to build_distiller (distill mode)


def _from_dict(cls: type, values: dict[str, Any], where: str) -> Any:
    """Build dataclass ``cls`` from a mapping, recursing into dataclass fields; unknown keys fail."""
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(values).__name__}")
    if cls is ModelConfig:
        return ModelConfig.from_dict(values)
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{where}: unknown keys {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _from_dict(hint, value, f"{where}.{name}")
        elif typing.get_origin(hint) is tuple:
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def load_config(path: str | Path) -> TrainConfig:
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f) or {}
    try:
        return _from_dict(TrainConfig, doc, str(path))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from None


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(dataclasses.asdict(config))


# --- distributed helpers -----------------------------------------------------------------------


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def init_distributed(device: str) -> Distributed:
    """Join the process group when started by torchrun (WORLD_SIZE > 1)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(device: str, ddp: Distributed) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and ddp.enabled:
        device = f"cuda:{ddp.local_rank}"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"--device {device}: CUDA is not available on this machine")
        torch.cuda.set_device(torch.device(device))
    return torch.device(device)


class ResumableSampler(DistributedSampler):
    """DistributedSampler (also for one process) that can start mid-epoch after a resume."""

    start = 0  # samples of this rank's epoch already consumed

    def __iter__(self):
        return iter(list(super().__iter__())[self.start :])

    def __len__(self) -> int:
        return self.num_samples - self.start


# --- logging -----------------------------------------------------------------------------------


class CsvLog:
    """Long-format CSV: step, epoch, split, name, value; on resume rows after the checkpoint are cut."""

    FIELDS = ("step", "epoch", "split", "name", "value")

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        rows = self.read(path) if resume_step is not None and path.exists() else []
        rows = [r for r in rows if int(r["step"]) <= (resume_step or 0)]
        text = ",".join(self.FIELDS) + "\n" + "".join(",".join(str(r[k]) for k in self.FIELDS) + "\n" for r in rows)
        write_text_atomic(path, text)

    def write(self, step: int, epoch: int, split: str, values: dict[str, float]) -> None:
        with open(self.path, "a", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            for name, value in values.items():
                writer.writerow([step, epoch, split, name, f"{value:.6g}"])

    @staticmethod
    def read(path: Path) -> list[dict[str, str]]:
        with open(path, encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f))


def plot_curves(log_path: Path, png_path: Path) -> None:
    """Training loss terms (left) and validation metrics (right) against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[tuple[str, str], tuple[list[int], list[float]]] = {}
    for row in CsvLog.read(log_path):
        steps, values = series.setdefault((row["split"], row["name"]), ([], []))
        steps.append(int(row["step"]))
        values.append(float(row["value"]))
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 4))
    for (split, name), (steps, values) in sorted(series.items()):
        if split == "train" and name != "lr":
            ax_loss.plot(steps, values, label=name)
        elif split == "val" and name in ("miou", "hard_miou", "accuracy"):
            ax_val.plot(steps, values, marker="o", label=name)
    ax_loss.set(title="training loss terms", xlabel="step", ylabel="loss")
    ax_val.set(title="validation", xlabel="step", ylim=(0, 1))
    for ax in (ax_loss, ax_val):
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend()
    fig.tight_layout()
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


# --- the trainer -------------------------------------------------------------------------------


def lr_factor(step: int, total_steps: int, optim: OptimConfig) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio``."""
    if step < optim.warmup_steps:
        return (step + 1) / optim.warmup_steps
    progress = (step - optim.warmup_steps) / max(1, total_steps - optim.warmup_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return optim.min_lr_ratio + (1.0 - optim.min_lr_ratio) * cosine


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    # plain values only, so inference can still read the checkpoint with torch.load(weights_only=True)
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    def __init__(
        self,
        config: TrainConfig,
        data_root: str | Path,
        out_dir: str | Path,
        mode: str = "student",
        teacher: str | Path | None = None,
        device: str = "auto",
        resume: bool = False,
    ):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
        if mode == "teacher" and not config.fusion:
            raise ValueError("teacher mode needs a 'fusion:' section (MultiScanFuser settings) in the config")
        if mode == "distill" and teacher is None:
            raise ValueError("distill mode needs --teacher CHECKPOINT")
        self.config, self.mode = config, mode
        self.out_dir = Path(out_dir)
        self.last_path, self.best_path = self.out_dir / "last.pt", self.out_dir / "best.pt"
        if self.last_path.exists() and not resume:
            raise FileExistsError(
                f"{self.last_path} exists: pass --resume to continue that run, or choose another --out"
            )
        if resume and not self.last_path.exists():
            raise FileNotFoundError(f"--resume: no checkpoint {self.last_path} to resume from")

        self.ddp = init_distributed("cuda" if device == "auto" and torch.cuda.is_available() else device)
        self.device = resolve_device(device, self.ddp)
        if self.ddp.enabled and self.device.type == "cpu":
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // self.ddp.world_size))
        seed_everything(config.seed)
        self.label_map = load_label_map()
        self.use_amp = config.amp and self.device.type == "cuda"

        self.train_set, self.val_set = self._datasets(Path(data_root))
        self.sampler = ResumableSampler(
            self.train_set, num_replicas=self.ddp.world_size, rank=self.ddp.rank, shuffle=True, seed=config.seed
        )
        self.steps_per_epoch = math.ceil(self.sampler.num_samples / config.data.batch_size)
        by_epochs = config.epochs * self.steps_per_epoch
        self.total_steps = min(by_epochs, config.max_steps) if config.max_steps else by_epochs

        self.model = build_model(config.model).to(self.device)
        self.class_weights = class_weights_from_counts(self.train_set.label_counts(), config.loss.class_weight_power)
        self.criterion = SegmentationLoss(self.class_weights, config.loss).to(self.device)
        self.extra_loss = self._extra_loss(teacher)
        self.ddp_model: nn.Module = self.model
        if self.ddp.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp_model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        # the extra loss's trainable parameters (distillation adapters) are optimised with the model
        self.extra_params = (
            [p for p in self.extra_loss.parameters() if p.requires_grad] if self.extra_loss is not None else []
        )
        self.optimizer = torch.optim.AdamW(
            [*self.model.parameters(), *self.extra_params], lr=config.optim.lr, weight_decay=config.optim.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, self.total_steps, config.optim)
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.step, self.best_miou = 0, -1.0
        if resume:
            self._load_state()
        self.log = CsvLog(self.out_dir / "log.csv", self.step if resume else None) if self.ddp.is_main else None
        if self.ddp.is_main:
            write_text_atomic(self.out_dir / "config.yaml", yaml.safe_dump(config_to_dict(config), sort_keys=False))

    # --- setup ---

    def _datasets(self, root: Path) -> tuple[SemanticKittiDataset, SemanticKittiDataset]:
        data = self.config.data
        fuser = None
        if self.mode in ("teacher", "distill") and self.config.fusion:
            from m2s_training.fusion import MultiScanFuser

            fuser = MultiScanFuser(**self.config.fusion)
        if not (root / "sequences").is_dir():
            raise FileNotFoundError(f"{root}: no sequences/ folder (expected SemanticKITTI layout ROOT/sequences/XX)")
        splits = {s: split_sequences(root, s, self.label_map) for s in (data.train_split, data.val_split)}
        for split, sequences in splits.items():
            if not sequences:
                wanted = " ".join(self.label_map.sequences(split))
                raise FileNotFoundError(f"{root}/sequences: none of the {split} sequences ({wanted}) exist")
        train = SemanticKittiDataset(
            root,
            splits[data.train_split],
            self.label_map,
            data.augment,
            fuser,
            data.max_train_scans,
            self.config.seed,
            data.max_train_points,
        )
        val_fuser = fuser if self.mode == "teacher" else None  # a teacher is judged on the input it will get
        val = SemanticKittiDataset(root, splits[data.val_split], self.label_map, None, val_fuser, data.max_val_scans)
        return train, val

    def _extra_loss(self, teacher: str | Path | None) -> nn.Module | None:
        if self.mode != "distill":
            return None
        from m2s_training.distill import build_distiller

        return build_distiller(
            self.config.distill or {}, teacher, self.config.model, self.device, class_weights=self.class_weights
        ).to(self.device)

    # --- checkpoints ---

    def _trainer_state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "best_miou": self.best_miou,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "extra_loss": self._extra_loss_trainable_state(),
            "rng": _rng_state(),
            "config": config_to_dict(self.config),
            "mode": self.mode,
        }

    def _save(self, path: Path, with_state: bool, **meta: Any) -> None:
        state = self._trainer_state() if with_state else None
        save_checkpoint(
            path, self.model, self.config.model, training_state=state, mode=self.mode, step=self.step, **meta
        )

    def _extra_loss_trainable_state(self) -> dict[str, torch.Tensor] | None:
        """Only what the run optimises (adapters): a frozen teacher is rebuilt from --teacher."""
        if self.extra_loss is None:
            return None
        return {n: p.detach().cpu() for n, p in self.extra_loss.named_parameters() if p.requires_grad}

    def _load_state(self) -> None:
        checkpoint = read_checkpoint(self.last_path)
        state = checkpoint.get("training_state")
        if state is None:
            raise ValueError(f"{self.last_path}: no trainer state to resume from")
        if state["mode"] != self.mode:
            raise ValueError(f"{self.last_path}: was a {state['mode']} run, cannot resume it as {self.mode}")
        self.model.load_state_dict(checkpoint["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.extra_loss is not None and state["extra_loss"] is not None:
            params = dict(self.extra_loss.named_parameters())
            with torch.no_grad():
                for name, value in state["extra_loss"].items():
                    params[name].copy_(value)
        self.step, self.best_miou = state["step"], state["best_miou"]
        _set_rng_state(state["rng"])

    # --- training ---

    def _autocast(self):
        if self.use_amp:
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def loss_terms(self, batch: Batch) -> tuple[ModelOutput, dict[str, torch.Tensor]]:
        """Forward the model on what it may see and return every named loss term."""
        seen = batch.student_view() if self.mode == "distill" else batch
        with self._autocast():
            output = self.ddp_model(seen.points, seen.batch_index, seen.batch_size)
            terms = self.criterion(output.point_logits, seen.labels, seen.is_fused)
            if self.extra_loss is not None:
                extra = self.extra_loss(batch, output, step=self.step)
                clash = set(extra) & set(terms)
                if clash:
                    raise ValueError(f"extra loss terms {sorted(clash)} clash with the task loss terms")
                terms.update(extra)
        return output, terms

    def _optimise(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.ddp.enabled:  # DDP syncs the model's gradients; the extra loss's adapters are synced here
            for p in self.extra_params:
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= self.ddp.world_size
        if self.config.optim.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.config.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()

    def fit(self, stop_at_step: int | None = None) -> SegmentationMetrics | None:
        """Train to ``total_steps`` (or stop early at ``stop_at_step``, as an interrupted run would).

        Returns the last validation metrics (rank 0), None if no validation ran.
        """
        stop = min(self.total_steps, stop_at_step or self.total_steps)
        self.model.train()
        metrics, sums, count = None, {}, 0
        progress = tqdm(
            total=self.total_steps, initial=self.step, disable=not self.ddp.is_main, desc=self.mode, mininterval=2
        )
        started = time.monotonic()
        while self.step < stop:
            epoch, offset = divmod(self.step, self.steps_per_epoch)
            self.sampler.set_epoch(epoch)
            self.sampler.start = offset * self.config.data.batch_size
            self.train_set.set_epoch(epoch)
            loader = make_loader(
                self.train_set,
                self.config.data.batch_size,
                self.sampler,
                self.config.data.num_workers,
                pin_memory=self.device.type == "cuda",
            )
            for batch in loader:
                _, terms = self.loss_terms(batch.to(self.device, non_blocking=True))
                loss = sum(terms.values())
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"step {self.step}: loss is {loss.item()} ({_describe(terms)})")
                self._optimise(loss)
                self.step += 1
                for name, value in {**terms, "loss": loss}.items():
                    sums[name] = sums.get(name, 0.0) + value.detach()
                count += 1
                progress.update(1)
                if self.step % self.config.log_every == 0 or self.step == stop:
                    means = {k: float(v) / count for k, v in sums.items()}
                    progress.set_postfix(loss=f"{means['loss']:.3f}")
                    self._log(epoch, "train", {**means, "lr": self.scheduler.get_last_lr()[0]})
                    sums, count = {}, 0
                end_of_epoch = self.step % self.steps_per_epoch == 0
                val_due = self.step % self.config.val_every == 0 if self.config.val_every else end_of_epoch
                if val_due or self.step == self.total_steps:
                    metrics = self._validate_and_keep_best(epoch) or metrics
                if self.step % self.config.checkpoint_every == 0 or self.step == stop:
                    self._checkpoint()
                if self.step >= stop:
                    break
        progress.close()
        if self.ddp.is_main:
            minutes = (time.monotonic() - started) / 60
            print(f"{self.mode}: {self.step} steps in {minutes:.1f} min; best val mIoU {self.best_miou:.4f}")
        return metrics

    def _log(self, epoch: int, split: str, values: dict[str, float]) -> None:
        if self.log is not None:
            self.log.write(self.step, epoch, split, values)

    def _checkpoint(self) -> None:
        if self.ddp.is_main:
            self._save(self.last_path, with_state=True, best_miou=self.best_miou)
            plot_curves(self.log.path, self.out_dir / "curves.png")
        self.ddp.barrier()

    def _validate_and_keep_best(self, epoch: int) -> SegmentationMetrics | None:
        metrics = None
        if self.ddp.is_main:
            metrics = self.validate()
            self._log(
                epoch, "val", {"miou": metrics.miou, "hard_miou": metrics.hard_miou, "accuracy": metrics.accuracy}
            )
            tqdm.write(f"step {self.step}: val mIoU {metrics.miou:.4f}, accuracy {metrics.accuracy:.4f}")
            if metrics.miou > self.best_miou:
                self.best_miou = metrics.miou
                self._save(self.best_path, with_state=False, val_miou=metrics.miou, val_iou=metrics.iou.tolist())
        self.ddp.barrier()
        return metrics

    @torch.no_grad()
    def validate(self) -> SegmentationMetrics:
        """Val mIoU of the model (argmax over classes 1..C-1, as at inference); fused points unscored."""
        self.model.eval()
        num_classes = self.config.model.num_classes
        confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=self.device)
        sampler = torch.utils.data.SequentialSampler(self.val_set)
        loader = make_loader(self.val_set, self.config.data.batch_size, sampler, self.config.data.num_workers)
        for batch in tqdm(loader, desc="val", leave=False, mininterval=2):
            batch = batch.to(self.device)
            with self._autocast():
                output = self.model(batch.points, batch.batch_index, batch.batch_size)
            pred = output.point_logits[:, 1:].argmax(dim=1) + 1
            scored = ~batch.is_fused
            confusion += confusion_matrix(pred[scored], batch.labels[scored], num_classes)
        self.model.train()
        return SegmentationMetrics.from_confusion(confusion, self.label_map.hard_class_ids())


def _describe(terms: dict[str, torch.Tensor]) -> str:
    return ", ".join(f"{k}={v.item():.4g}" for k, v in terms.items())
