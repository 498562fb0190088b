"""FineTuneModule: the one training loop for every method. It orchestrates and holds no method logic.

training_step: label-only token-mean cross-entropy (``stateft.loss.lm_loss``). validation/test: the loss, then
predictions scored by the benchmark's metric: one decoding step (argmax over the vocabulary at the end of the
prompt) for GLUE, beam search for generation tasks. Checkpoints keep only the trainable tensors.
"""

from __future__ import annotations

import math
import time
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from torch import Tensor, nn

from stateft.generation import generate_batch
from stateft.loss import count_target_tokens, lm_loss
from stateft.vision.classify import classification_loss, is_image_batch
from stateft.vision.classify import evaluate_batch as evaluate_images


class FineTuneModule(L.LightningModule):
    """Wraps a backbone (`stateft.models.backbone`) after ``apply_method``; optimises the ``trainable`` parameters
    only.

    Args:
        model: the backbone with the method applied.
        trainable: the names ``apply_method`` returned (drive the optimiser and the checkpoints).
        optim: ``lr``, ``weight_decay``, ``betas``, ``eps``, ``warmup_ratio``, ``schedule`` (``conf/train.yaml``).
        task: the benchmark's ``stateft.data.task.Task`` (decoding settings and scorer).
        tokenizer: decodes predictions (``decode``, ``eos_id``).
        graphed_loss: optional `stateft.train_graph.GraphedLoss` for the training loss (``cuda_graph=true``).
    """

    def __init__(
        self,
        model: nn.Module,
        trainable: list[str],
        optim: dict[str, Any],
        task: Any,
        tokenizer: Any,
        graphed_loss: Any = None,
    ):
        super().__init__()
        self.model = model
        # cuda_graph=true: a stateft.train_graph.GraphedLoss replays the training forward/backward (same loss)
        self.graphed_loss = graphed_loss
        self.trainable = sorted(trainable)
        self.optim = dict(optim)
        self.task = task
        self.tokenizer = tokenizer
        self.strict_loading = False  # checkpoints hold the adapter only; the frozen base comes from the model config
        self.predictions: dict[str, list[dict[str, Any]]] = {"val": [], "test": []}
        self.metrics: dict[str, dict[str, float]] = {}
        self.examples_per_sec: dict[str, float] = {}  # the last evaluation loop's rate per stage (this device)
        self._eval_clock = time.perf_counter()  # set again when an evaluation loop starts
        self._pending: list[dict[str, Any]] = []
        self.epoch_losses: list[float] = []  # mean training loss of each epoch (printed at the end of a run)
        self._loss_sum, self._loss_count = 0.0, 0

    # ---- training ---------------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        if self.graphed_loss is not None:
            loss = self.graphed_loss(batch["input_ids"], batch["labels"])
        elif is_image_batch(batch):  # an image classifier (stateft.vision): cross-entropy of the class logits
            loss = classification_loss(self.model, batch)
        else:
            loss = lm_loss(self.model, batch["input_ids"], batch["labels"])
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch["labels"]))
        # a tensor sum: no device-to-host sync per step
        self._loss_sum, self._loss_count = self._loss_sum + loss.detach(), self._loss_count + 1
        if self.trainer.world_size > 1:
            # DDP averages gradients over devices; weight each device by its share of the global target tokens so
            # the update equals one device's token-mean over the same global batch.
            tokens = torch.tensor(_count_targets(batch), device=loss.device, dtype=torch.float32)
            total = self.all_gather(tokens).sum()
            loss = loss * tokens * self.trainer.world_size / total.clamp(min=1)
        return loss

    def on_train_epoch_end(self) -> None:
        if self._loss_count:
            self.epoch_losses.append(float(self._loss_sum) / self._loss_count)
        self._loss_sum, self._loss_count = 0.0, 0

    # ---- evaluation -------------------------------------------------------------------------------------------
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_validation_epoch_start(self) -> None:
        self._start_eval()

    def on_test_epoch_start(self) -> None:
        self._start_eval()

    def _start_eval(self) -> None:
        self._pending = []
        if self.device.type == "cuda":  # the clock starts when the training work queued before has run
            torch.cuda.synchronize(self.device)
        self._eval_clock = time.perf_counter()

    def on_validation_epoch_end(self) -> None:
        self._score("val")

    def on_test_epoch_end(self) -> None:
        self._score("test")

    def _eval_step(self, batch: dict[str, Any], stage: str) -> None:
        if is_image_batch(batch):  # an image classifier: the loss and the predicted classes from one forward
            loss, predictions = evaluate_images(self.model, batch)
            prompts = [None] * len(predictions)
        else:
            loss = lm_loss(self.model, batch["input_ids"], batch["labels"])
            prompts, predictions = batch["prompt_ids"], None
        # weighted by target tokens, so the epoch value is the token mean (as in training), not a mean of batch means
        tokens = max(_count_targets(batch), 1)
        self.log(f"{stage}/loss", loss, sync_dist=True, batch_size=tokens)
        predictions = self.predict(prompts) if predictions is None else predictions
        for prompt, example, text in zip(prompts, batch["examples"], predictions):
            self._pending.append({"prediction": text, "example": example, "prompt_ids": prompt})

    @torch.no_grad()
    def predict(self, prompts: list[list[int]]) -> list[str]:
        """Decoded predictions for token-id prompts: one argmax step (GLUE) or beam search (generation tasks)."""
        if not self.task.generative:
            # right-padded batch: a causal model's logits at each prompt's last position ignore the padding after it
            lengths = torch.tensor([len(p) for p in prompts], device=self.device)
            ids = torch.zeros(len(prompts), int(lengths.max()), dtype=torch.long, device=self.device)
            for row, prompt in enumerate(prompts):
                ids[row, : len(prompt)] = torch.tensor(prompt, device=self.device)
            hidden = self.model.hidden_states(ids)[torch.arange(len(prompts), device=self.device), lengths - 1]
            logits = self.model.lm_head(hidden)[:, : self.model.config.vocab_size]  # (b V)
            return [self.tokenizer.decode([int(t)]) for t in logits.argmax(-1)]
        # the whole batch decoded at once, each row as it would be alone (stateft.generation.generate_batch)
        outputs = generate_batch(
            self.model,
            prompts,
            max_new_tokens=self.task.max_new_tokens,
            num_beams=self.task.num_beams,
            eos_id=self.tokenizer.eos_id,
            batch_invariant=self.task.batch_invariant,
        )
        return [self.tokenizer.decode(tokens) for tokens in outputs]

    def _score(self, stage: str) -> None:
        # the evaluation loop's rate (loss, decoding, gathering; not the scoring): examples per second, this device's
        seconds = time.perf_counter() - self._eval_clock
        examples = len(self._pending)
        records = gather_records(self._pending)
        self._pending = []
        if not records:
            return
        scores = self.task.score([r["prediction"] for r in records], [r["example"] for r in records])
        self.predictions[stage] = records
        self.metrics[stage] = {f"{stage}/{k}": float(v) for k, v in scores.items()}
        self.examples_per_sec[stage] = examples / max(seconds, 1e-9)  # kept out of the metrics: it varies by run
        # every rank scored the same gathered predictions: no further reduction
        self.log_dict(self.metrics[stage], sync_dist=False, prog_bar=stage == "val")
        self.log(f"{stage}/examples_per_sec", self.examples_per_sec[stage], sync_dist=False)

    # ---- optimiser --------------------------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        from stateft.methods.compose import lr_groups

        params = dict(self.model.named_parameters())
        groups = []
        # one learning rate per part of a composition (method=compose), else one for all; decay split inside each
        for lr, names in lr_groups(self.model, self.trainable, self.optim["lr"]):
            decay = [params[n] for n in names if not getattr(params[n], "_no_weight_decay", False)]
            no_decay = [params[n] for n in names if getattr(params[n], "_no_weight_decay", False)]
            groups.append({"params": decay, "weight_decay": self.optim["weight_decay"], "lr": lr})
            groups.append({"params": no_decay, "weight_decay": 0.0, "lr": lr})
        # AdamW's moments take each parameter's dtype: fp32 adapters by default, bf16 under trainer.precision=bf16-true
        optimizer = torch.optim.AdamW(
            [g for g in groups if g["params"]],
            lr=self.optim["lr"],
            betas=tuple(self.optim.get("betas", (0.9, 0.999))),
            eps=self.optim.get("eps", 1e-8),
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(self.optim.get("warmup_ratio", 0.0) * total)
        schedule = self.optim.get("schedule", "linear")
        floor = self.optim.get("min_lr_ratio", 0.0)  # cosine: the last step's rate, as a fraction of lr

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            if schedule == "cosine":  # half a cosine from lr down to floor x lr (MambaPEFT's vision recipe)
                progress = min(1.0, (step - warmup) / max(1, total - warmup))
                return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
            return max(0.0, (total - step) / max(1, total - warmup)) if schedule == "linear" else 1.0

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---- checkpoints ------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        keep = {f"model.{n}" for n in self.trainable}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        # dropout (lora) draws from these: restoring them makes a resumed run repeat the uninterrupted one
        checkpoint["rng_states"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["rng_states"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        states = checkpoint.get("rng_states", {})
        if "torch" in states:
            torch.set_rng_state(states["torch"])
        if "cuda" in states and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"])


def _count_targets(batch: dict[str, Any]) -> int:
    """The batch's predicted targets: its label tokens, or its images."""
    return len(batch["labels"]) if is_image_batch(batch) else count_target_tokens(batch["labels"])


def gather_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """All ranks' prediction records, ordered by ``example["index"]`` (a no-op on one device)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        parts: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, records)
        records = [r for part in parts for r in part]
    return sorted(records, key=lambda r: r["example"].get("index", 0))
