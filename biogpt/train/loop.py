"""The training loop: optimizer steps with gradient accumulation, periodic validation that keeps
and saves the best model, early stopping, a time budget, and resumable checkpoints."""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from ..config import STUDIO_KEY
from ..devices import device_description
from .card import write_model_card
from .checkpoints import CheckpointFolder, save_model_folder, state_without_tied
from .config import TrainConfig, TrainError
from .optim import lr_factor, make_optimizer
from .tasks import Task

# What run() returns after --stop-at-step: the loop ended as a crash would end it (tests resume).
SIMULATED_CRASH = "interrupted"


class Progress:
    """A tqdm bar on a terminal (if tqdm is installed), otherwise plain lines on stdout."""

    def __init__(self, mode: str, total: int, initial: int):
        self.bar = None
        if mode == "bar" or (mode == "auto" and sys.stderr.isatty()):
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)
            except ImportError:
                self.bar = None

    def update(self, step: int, text: str, force: bool) -> None:
        if self.bar is not None:
            if text:
                self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(step - self.bar.n)  # tqdm redraws at most every mininterval
        elif force:
            print(f"step {step}: {text}", flush=True)

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Trainer:
    def __init__(self, config: TrainConfig, task: Task, model, tokenizer, device: torch.device, out: Path,
                 log: Callable[[str], None]):
        self.config, self.task, self.model, self.tokenizer, self.device, self.out, self.log = (
            config, task, model, tokenizer, device, out, log)
        self.checkpoint = CheckpointFolder(Path(config.checkpoint_dir) if config.checkpoint_dir else out / "checkpoint")
        self.optimizer = make_optimizer(model, config, device)
        batches = math.ceil(task.num_train_items() / config.batch_size)
        self.steps_per_epoch = max(1, batches // config.grad_accum)
        self.total_steps = math.ceil(config.epochs * self.steps_per_epoch) if config.epochs else 10**12
        if config.max_steps:
            self.total_steps = min(self.total_steps, config.max_steps)
        if self.total_steps >= 10**12:
            raise TrainError("give --epochs or --max-steps")
        self.warmup = config.warmup_steps if config.warmup_steps is not None else int(0.06 * self.total_steps)
        self.eval_every = config.eval_every or self.steps_per_epoch
        self.save_every = config.save_every or self.eval_every
        self.budget_s = config.max_minutes * 60 if config.max_minutes else None
        self.state = {"step": 0, "epoch": 0, "batch": 0, "elapsed": 0.0, "best": None, "best_step": 0, "bad_evals": 0,
                      "tokens": 0, "last_eval_step": -1}
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_metrics: dict | None = None
        self.history_path = out / "train_log.jsonl"

    def autocast(self):
        if self.config.bf16:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def write_log(self, record: dict) -> None:
        with open(self.history_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    # ----- checkpoints -----

    def save_checkpoint(self) -> None:
        counters = {**self.state, "best_metrics": self.best_metrics, "task_extra": self.task.studio_extra()}
        self.checkpoint.save(self.model, self.optimizer, self.best_state, counters, self.config.resume_relevant(),
                             self.device)

    def remove_checkpoint(self) -> None:
        self.checkpoint.remove()

    def try_resume(self) -> bool:
        folder = self.checkpoint.folder
        state = self.checkpoint.read_state()
        if state is None:
            self.log(f"--resume: no checkpoint in {folder}; starting from scratch")
            return False
        saved = json.loads(state["args"])
        changed = {k: (saved.get(k), v) for k, v in self.config.resume_relevant().items() if saved.get(k) != v}
        if changed:
            self.log(f"warning: resuming with different settings than the checkpoint: {changed}")
        counters, best_state = self.checkpoint.restore(state, self.model, self.optimizer, self.device)
        self.best_metrics = counters.pop("best_metrics")
        task_extra = counters.pop("task_extra")
        if "threshold" in task_extra:
            self.task.threshold = task_extra["threshold"]
        self.state.update(counters)
        if best_state is not None:
            self.best_state = best_state
        self.log(f"resumed from {folder} at step {self.state['step']} (epoch {self.state['epoch']}, batch {self.state['batch']})")
        return True

    # ----- evaluation and best model -----

    def evaluate(self) -> bool:
        """Evaluate on validation; on improvement keep and save the model. True = patience exhausted."""
        self.model.eval()
        metrics = self.task.evaluate(self.model, "valid", self.autocast)
        self.model.train()
        step = self.state["step"]
        self.state["last_eval_step"] = step
        value = metrics[self.task.metric]
        best = self.state["best"]
        improved = best is None or (value > best if self.task.greater_is_better else value < best)
        self.write_log({"step": step, "epoch": self.state["epoch"], "elapsed_s": round(self.state["elapsed"], 2),
                        "valid": dict(metrics), "improved": improved})
        self.progress.write(f"eval step {step}: {self.task.headline(metrics)}" + ("  (best so far, saved)" if improved else ""))
        if improved:
            self.state.update(best=value, best_step=step, bad_evals=0)
            self.best_metrics = dict(metrics)
            self.task.on_best(metrics)
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in state_without_tied(self.model).items()}
            self.model.config.extra[STUDIO_KEY] = self.task.studio_extra()
            save_model_folder(self.model, self.tokenizer, self.out, self.config.save_torch_dtype)
            self.write_card_provisional()
        else:
            self.state["bad_evals"] += 1
        return bool(self.config.patience) and self.state["bad_evals"] >= self.config.patience

    def write_card_provisional(self) -> None:
        info = self.card_info("training in progress (best validation checkpoint so far)", {"valid": self.best_metrics})
        write_model_card(self.out, self.task, self.model, info)

    def card_info(self, status: str, metrics: dict) -> dict:
        config = self.config
        return {
            "status": status, "metrics": metrics, "save_dtype": config.save_dtype,
            "data_files": [str(p) for p in (config.train + (config.valid or []) + (config.test or []))],
            "train_files": list(config.train), "valid_files": list(config.valid or []),
            "test_files": list(config.test or []), "valid_percent": config.valid_percent,
            "train_on_dev": bool(config.train_on_dev),
            "init": config.init or "random initialisation (from scratch)", "steps": self.state["step"],
            "epochs_done": self.state["step"] / self.steps_per_epoch, "best_step": self.state["best_step"],
            "stop_reason": getattr(self, "stop_reason", "running"), "wall_s": time.time() - config.started,
            "train_s": self.state["elapsed"], "device_name": device_description(self.device), "command": config.command,
        }

    # ----- the loop -----

    def run(self) -> str:
        """Train; SIGINT or SIGTERM (e.g. from `timeout`) ends training early but still saves and evaluates."""
        import signal
        import threading

        def interrupt(signum, frame):
            raise KeyboardInterrupt

        previous = {}
        if threading.current_thread() is threading.main_thread():
            # Installed explicitly: a background job starts with SIGINT ignored.
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, interrupt)
        try:
            return self._run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _run(self) -> str:
        config = self.config
        self.model.train()
        self._start_time = time.time() - self.state["elapsed"]
        # The loss and token counts since the last logged line.
        self._last_log_time, self._tokens_since = time.time(), 0
        self._loss_sum = torch.zeros((), device=self.device)
        self._loss_count = 0
        self.log(f"training: {self.total_steps} steps max ({self.steps_per_epoch} per epoch, batch {config.batch_size} x "
                 f"{config.grad_accum} accumulation), warmup {self.warmup}, eval every {self.eval_every} steps"
                 + (f", budget {config.max_minutes} min" if self.budget_s else ""))
        self.progress = Progress(config.progress, self.total_steps, self.state["step"])
        stop = None
        try:
            while stop is None:
                stop = self._train_epoch()
            if stop == SIMULATED_CRASH:
                return stop
        except KeyboardInterrupt:
            stop = "interrupted (SIGINT/SIGTERM): finishing with the best model so far"
            self.progress.write(stop)
        self.progress.close()
        if self.state["last_eval_step"] != self.state["step"] and (not stop.startswith("interrupted") or self.best_state is None):
            self.evaluate()
        self.state["elapsed"] = time.time() - self._start_time
        if config.keep_checkpoint:
            self.save_checkpoint()
        self.stop_reason = stop
        self.log(f"training stopped: {stop}; best validation {self.task.metric} {self.state['best']} "
                 f"at step {self.state['best_step']}")
        return stop

    def _train_epoch(self) -> str | None:
        """The rest of the current epoch (all of it, unless resumed mid-epoch); the reason to stop, if any."""
        accumulate = self.config.grad_accum
        epoch = self.state["epoch"]
        batches = self.task.epoch_batches(epoch)
        usable = (len(batches) // accumulate) * accumulate  # a last partial accumulation is skipped
        stop = None
        while self.state["batch"] < usable and stop is None:
            lr = self._optimizer_step(batches)
            self._report_step(epoch, lr)
            stop = self._after_step()
        if stop is None and self.state["batch"] >= usable:
            self.state["epoch"] += 1
            self.state["batch"] = 0
            if usable == 0:
                raise TrainError("fewer training batches than --grad-accum")
        return stop

    def _optimizer_step(self, batches: list[list[int]]) -> float:
        """Forward and backward over --grad-accum batches, then one scheduled AdamW step; returns its learning rate."""
        config, model = self.config, self.model
        step_tokens = 0
        for _ in range(config.grad_accum):
            inputs, tokens = self.task.make_batch(batches[self.state["batch"]], self.device)
            self.state["batch"] += 1
            with self.autocast():
                loss = model(**inputs).loss
            (loss / config.grad_accum).backward()
            self._loss_sum += loss.detach().float()
            self._loss_count += 1
            step_tokens += tokens
        if config.clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
        step = self.state["step"]
        self.state["elapsed"] = time.time() - self._start_time
        # Under a time budget the schedule follows whichever is further along, steps or time, so
        # the learning rate has decayed when the budget ends.
        progress = step / self.total_steps
        if self.budget_s:
            progress = max(progress, self.state["elapsed"] / self.budget_s)
        lr = config.lr * lr_factor(step, self.warmup, progress, config.schedule, config.min_lr_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state["step"] = step + 1
        self.state["tokens"] += step_tokens
        self._tokens_since += step_tokens
        return lr

    def _report_step(self, epoch: int, lr: float) -> None:
        """A log line (and train_log.jsonl record) on the first step, every --log-seconds and every --log-every."""
        config, step = self.config, self.state["step"]
        now = time.time()
        if step == 1 or now - self._last_log_time >= config.log_seconds or (config.log_every and step % config.log_every == 0):
            mean_loss = (self._loss_sum / max(self._loss_count, 1)).item()
            rate = self._tokens_since / max(now - self._last_log_time, 1e-9)
            text = f"loss {mean_loss:.4f} lr {lr:.2e} {rate:,.0f} tok/s epoch {epoch}"
            self.progress.update(step, text, force=True)
            self.write_log({"step": step, "epoch": epoch, "loss": round(mean_loss, 5), "lr": lr,
                            "tokens_per_s": round(rate), "elapsed_s": round(self.state["elapsed"], 2)})
            self._loss_sum.zero_()
            self._loss_count, self._tokens_since, self._last_log_time = 0, 0, now
        else:
            self.progress.update(step, "", force=False)

    def _after_step(self) -> str | None:
        """Validation, the stop rules and checkpoints after a step; the reason to stop, if any."""
        config, step = self.config, self.state["step"]
        stop = None
        if step % self.eval_every == 0 and self.evaluate():
            stop = f"early stopping: no improvement in {config.patience} evaluations"
        self.state["elapsed"] = time.time() - self._start_time
        if stop is None and step >= self.total_steps:
            stop = f"reached {self.total_steps} steps"
        if stop is None and self.budget_s and self.state["elapsed"] >= self.budget_s:
            stop = f"time budget of {config.max_minutes} min used"
        crash_now = bool(config.stop_at_step) and step >= config.stop_at_step
        if (self.save_every > 0 and step % self.save_every == 0) or crash_now:
            self.save_checkpoint()
        if crash_now and stop is None:
            self.progress.close()
            self.log(f"--stop-at-step {config.stop_at_step}: stopping as if interrupted (checkpoint saved)")
            return SIMULATED_CRASH
        return stop
