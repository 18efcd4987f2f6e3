"""The one trainer of m2s: student, teacher and distillation runs differ only in data and extra loss.

- ``student``: single scans; task loss (weighted CE + Lovász) on every labelled point.
- ``teacher``: the dataset appends M2SKD fused hard-class points (``fusion:`` in the YAML); the
  teacher learns on them too, their labels weighted by ``loss.fused_weight``; validation scores the
  scan's own points only.
- ``distill``: the model (the student) sees ``batch.student_view()``; an ``extra_loss`` module
  built by ``m2s_training.distill.build_distiller`` receives the full batch (fused points included,
  for the teacher), the student's output and the step, and returns named, weighted loss terms.
- ``m2skd``: the official M2SKD recipe: no separate teacher; the model sees the student view for
  its task loss, and the extra loss (``m2s_training.m2skd.JointM2skd``) runs the SAME model on the
  fused batch with gradients (teacher-view CE on changed labels, logit and affinity terms).

Runs under ``torchrun`` use DDP (gloo on CPU, nccl on CUDA); only rank 0 writes. ``OUT/last.pt``
holds everything needed to continue exactly (model, optimizer, scheduler, scaler, step, RNG, the
config it ran with); ``OUT/best.pt`` is the model with the best validation mIoU; ``OUT/final.pt`` the
model at the last step without the optimiser state (what the sim-to-real recipe ships); ``OUT/averaged.pt``
the mean of the last steps' weights (``optim.average_from``); ``OUT/config.yaml``
the config (``m2s-train --config OUT/config.yaml`` repeats the run). ``OUT/log.csv`` has one row per
logged value (step, epoch, split, name, value) and ``OUT/curves.png`` plots it.

Nothing here draws from the global RNG after setup: the data order comes from the sampler's
(seed, epoch), augmentation from (seed, epoch, sample), loader worker seeds and distillation
sampling from their own generators, so a resumed run repeats an uninterrupted one exactly.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml
from torch import nn
from tqdm import tqdm

from m2s_perception.checkpoint import read_checkpoint
from m2s_perception.models import ModelOutput, build_model
from m2s_training.atomic import remove_stale_temporaries, write_text_atomic
from m2s_training.averaging import WeightAverage, recalibrate_batch_norm
from m2s_training.checkpoint import save_checkpoint
from m2s_training.config import TrainConfig, check_resumable, config_to_dict, with_absolute_paths
from m2s_training.data.dataset import Batch, make_loader
from m2s_training.distributed import ResumableSampler, init_distributed, rank_device
from m2s_training.losses import SegmentationLoss, class_weights_from_counts
from m2s_training.metrics import SegmentationMetrics, confusion_matrix
from m2s_training.reporting import CsvLog, plot_curves
from m2s_training.run_setup import build_datasets, build_extra_loss, lr_factor
from m2s_training.seeding import rng_state, seed_everything, seeded_generator, set_rng_state

RUN_FILES = ("last.pt", "best.pt", "final.pt", "averaged.pt", "log.csv", "curves.png", "config.yaml")


class Trainer:
    def __init__(
        self,
        config: TrainConfig,
        data_root: str | Path,
        out_dir: str | Path,
        device: str = "auto",
        resume: bool = False,
    ):
        self.out_dir = Path(out_dir)
        self.last_path, self.best_path = self.out_dir / "last.pt", self.out_dir / "best.pt"
        if self.last_path.exists() and not resume:
            raise FileExistsError(
                f"{self.last_path} exists: pass --resume to continue that run, or choose another --out"
            )
        if resume and not self.last_path.exists():
            raise FileNotFoundError(f"--resume: no checkpoint {self.last_path} to resume from")
        self.config = config = with_absolute_paths(config)
        self.mode = config.train.mode
        self.label_map = config.load_label_map()
        if config.model.num_classes != self.label_map.num_classes:
            raise ValueError(
                f"model.num_classes is {config.model.num_classes}, the label map has {self.label_map.num_classes} "
                "classes; leave num_classes out of the YAML, it comes from the label map"
            )
        saved = read_checkpoint(self.last_path) if resume else None
        if saved is not None:
            check_resumable(saved, config, self.last_path)

        self.ddp = init_distributed("cuda" if device == "auto" and torch.cuda.is_available() else device)
        self.device = rank_device(device, self.ddp)
        if self.ddp.enabled and self.device.type == "cpu":
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // self.ddp.world_size))
        seed_everything(config.train.seed)
        self.use_amp = config.train.amp and self.device.type == "cuda"

        self.train_set, self.val_set = build_datasets(config, Path(data_root), self.label_map)
        self.sampler = ResumableSampler(
            self.train_set, self.ddp.world_size, self.ddp.rank, shuffle=True, seed=config.train.seed
        )
        self.steps_per_epoch = math.ceil(self.sampler.num_samples / config.data.batch_size)
        by_epochs = config.train.epochs * self.steps_per_epoch
        self.total_steps = min(by_epochs, config.train.max_steps) if config.train.max_steps else by_epochs

        self.model = build_model(config.model).to(self.device)
        self.class_weights = class_weights_from_counts(self.train_set.label_counts(), config.loss.class_weight_power)
        self.criterion = SegmentationLoss(self.class_weights, config.loss).to(self.device)
        self.extra_loss = build_extra_loss(
            config, self.model, self.label_map, self.class_weights, self.device, self.ddp
        )
        self.ddp_model: nn.Module = self.model
        if self.ddp.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp_model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        # the extra loss's trainable parameters (distillation adapters) are optimised with the model
        self.extra_params = []
        if self.extra_loss is not None:
            self.extra_params = [p for p in self.extra_loss.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            [*self.model.parameters(), *self.extra_params], lr=config.optim.lr, weight_decay=config.optim.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, self.total_steps, config.optim)
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.step, self.best_miou = 0, -1.0
        self.average = WeightAverage(self.model) if config.optim.average_from is not None else None
        self.average_after = int(self.total_steps * (config.optim.average_from or 0.0))
        if saved is not None:
            self._load_state(saved)
        self.log = None
        if self.ddp.is_main:
            for name in RUN_FILES:  # temporaries of writes a SIGKILL interrupted
                remove_stale_temporaries(self.out_dir / name)
            self.log = CsvLog(self.out_dir / "log.csv", self.step if resume else None)
            command = f"# m2s-train --config config.yaml --data {data_root} --out {self.out_dir} --device {device}\n"
            text = command + yaml.safe_dump(config_to_dict(config), sort_keys=False)
            write_text_atomic(self.out_dir / "config.yaml", text)

    # --- checkpoints ---

    def _trainer_state(self) -> dict[str, Any]:
        generator = getattr(self.extra_loss, "generator", None)
        return {
            "step": self.step,
            "best_miou": self.best_miou,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "extra_loss": self._extra_loss_trainable_state(),
            "extra_loss_rng": generator.get_state() if generator is not None else None,
            "average": self.average.state_dict() if self.average is not None else None,
            "rng": rng_state(),
            "config": config_to_dict(self.config),
            "mode": self.mode,
        }

    def _save(self, path: Path, with_state: bool, **meta: Any) -> None:
        save_checkpoint(
            path,
            self.model,
            self.config.model,
            class_names=self.label_map.class_names,
            training_state=self._trainer_state() if with_state else None,
            mode=self.mode,
            step=self.step,
            **meta,
        )

    def _extra_loss_trainable_state(self) -> dict[str, torch.Tensor] | None:
        """Only what the run optimises (adapters): a frozen teacher is rebuilt from its checkpoint."""
        if self.extra_loss is None:
            return None
        return {n: p.detach().cpu() for n, p in self.extra_loss.named_parameters() if p.requires_grad}

    def _load_state(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["training_state"]
        self.model.load_state_dict(checkpoint["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.extra_loss is not None and state["extra_loss"] is not None:
            params = dict(self.extra_loss.named_parameters())
            with torch.no_grad():
                for name, value in state["extra_loss"].items():
                    params[name].copy_(value)
        if state.get("extra_loss_rng") is not None:
            self.extra_loss.generator.set_state(state["extra_loss_rng"])
        if self.average is not None and state.get("average") is not None:
            self.average.load_state_dict(state["average"])
        self.step, self.best_miou = state["step"], state["best_miou"]
        set_rng_state(state["rng"])

    # --- training ---

    def _autocast(self):
        if self.use_amp:
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def loss_terms(self, batch: Batch) -> tuple[ModelOutput, dict[str, torch.Tensor]]:
        """Forward the model on what it may see and return every named loss term."""
        seen = batch.student_view() if self.mode in ("distill", "m2skd") else batch
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

    def _epoch_loader(self, epoch: int, from_start: bool = False) -> torch.utils.data.DataLoader:
        """The rest of ``epoch``'s batches, from where ``self.step`` left off (or all of them)."""
        self.sampler.set_epoch(epoch)
        done = 0 if from_start else self.step - epoch * self.steps_per_epoch
        self.sampler.start = done * self.config.data.batch_size
        self.train_set.set_epoch(epoch)
        return make_loader(
            self.train_set,
            self.config.data.batch_size,
            self.sampler,
            self.config.data.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=seeded_generator(self.config.train.seed, epoch),
        )

    def fit(self, stop_at_step: int | None = None) -> SegmentationMetrics | None:
        """Train to ``total_steps`` (or stop early at ``stop_at_step``, as an interrupted run would).

        Returns the last validation metrics (rank 0), None if no validation ran.
        """
        loop = self.config.train
        stop = min(self.total_steps, stop_at_step or self.total_steps)
        self.model.train()
        metrics, sums, count = None, {}, 0
        progress = tqdm(
            total=self.total_steps, initial=self.step, disable=not self.ddp.is_main, desc=self.mode, mininterval=2
        )
        started = time.monotonic()
        while self.step < stop:
            epoch = self.step // self.steps_per_epoch
            for batch in self._epoch_loader(epoch):
                _, terms = self.loss_terms(batch.to(self.device, non_blocking=True))
                loss = sum(terms.values())
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"step {self.step}: loss is {loss.item()} ({_describe(terms)})")
                self._optimise(loss)
                self.step += 1
                if self.average is not None and self.step > self.average_after:
                    self.average.update(self.model)
                for name, value in {**terms, "loss": loss}.items():
                    sums[name] = sums.get(name, 0.0) + value.detach()
                count += 1
                progress.update(1)
                if self.step % loop.log_every == 0 or self.step == stop:
                    means = {k: float(v) / count for k, v in sums.items()}
                    progress.set_postfix(loss=f"{means['loss']:.3f}")
                    self._log(epoch, "train", {**means, "lr": self.scheduler.get_last_lr()[0]})
                    sums, count = {}, 0
                end_of_epoch = self.step % self.steps_per_epoch == 0
                val_due = self.step % loop.val_every == 0 if loop.val_every else end_of_epoch
                if val_due or self.step == self.total_steps:
                    metrics = self._validate_and_keep_best(epoch) or metrics
                if self.step % loop.checkpoint_every == 0 or self.step == stop:
                    self._checkpoint()
                if self.step >= stop:
                    break
        progress.close()
        if self.ddp.is_main:
            minutes = (time.monotonic() - started) / 60
            print(f"{self.mode}: {self.step} steps in {minutes:.1f} min; best val mIoU {self.best_miou:.4f}")
        if self.step >= self.total_steps and self.ddp.is_main:
            # the last step's weights with what inference needs only (the last validation ran at this step)
            final = {"val_miou": metrics.miou} if metrics is not None else {}
            self._save(self.out_dir / "final.pt", with_state=False, **final)
        if self.average is not None and self.step >= self.total_steps:
            self._save_average()
        return metrics

    def _save_average(self) -> None:
        """OUT/averaged.pt: the averaged weights with batch-norm statistics measured for them."""
        if self.ddp.is_main:
            averaged = build_model(self.config.model).to(self.device)
            averaged.load_state_dict(self.model.state_dict())
            self.average.copy_to(averaged)
            batches = itertools.islice(self._epoch_loader(0, from_start=True), self.config.optim.average_bn_batches)

            def forward(model: nn.Module, batch: Batch) -> None:
                seen = batch.to(self.device)
                seen = seen.student_view() if self.mode in ("distill", "m2skd") else seen
                with self._autocast():
                    model(seen.points, seen.batch_index, seen.batch_size)

            recalibrate_batch_norm(averaged, batches, forward)
            metrics = self.validate(averaged)
            self._log(self.step // self.steps_per_epoch, "val_averaged", {"miou": metrics.miou})
            tqdm.write(f"averaged weights of steps {self.average_after + 1}–{self.step}: val mIoU {metrics.miou:.4f}")
            save_checkpoint(
                self.out_dir / "averaged.pt",
                averaged,
                self.config.model,
                class_names=self.label_map.class_names,
                mode=self.mode,
                step=self.step,
                val_miou=metrics.miou,
                averaged_steps=self.average.count,
            )
        self.ddp.barrier()

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
    def validate(self, model: nn.Module | None = None) -> SegmentationMetrics:
        """Val mIoU of the model (or ``model``; argmax over classes 1..C-1, as at inference); fused
        points unscored."""
        model = model or self.model
        model.eval()
        num_classes = self.config.model.num_classes
        confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=self.device)
        sampler = torch.utils.data.SequentialSampler(self.val_set)
        generator = seeded_generator(self.config.train.seed, self.step)
        loader = make_loader(
            self.val_set, self.config.data.batch_size, sampler, self.config.data.num_workers, generator=generator
        )
        for batch in tqdm(loader, desc="val", leave=False, mininterval=2):
            batch = batch.to(self.device)
            with self._autocast():
                output = model(batch.points, batch.batch_index, batch.batch_size)
            pred = output.point_logits[:, 1:].argmax(dim=1) + 1
            scored = ~batch.is_fused
            confusion += confusion_matrix(pred[scored], batch.labels[scored], num_classes)
        model.train()
        return SegmentationMetrics.from_confusion(confusion, self.label_map.hard_class_ids())


# --- helpers ----------------------------------------------------------------------------------------


def _describe(terms: dict[str, torch.Tensor]) -> str:
    return ", ".join(f"{k}={v.item():.4g}" for k, v in terms.items())
