"""The training loop every method (and finetuning) shares.

One step: read a batch of raw uint8 clips (DataLoader workers only read the store), move
it to the device, let the method augment and compute its loss under autocast, step the
optimiser and schedule. Everything random in a step is seeded by (seed, step, rank), and
the data order by (seed, epoch), so a run resumed from a checkpoint continues exactly as
the uninterrupted run would have.

Checkpoints (model, optimiser, schedule, loss scaler, step) are written every
``checkpoint_every`` steps, at the end, and when SIGTERM or Ctrl-C arrives (after the
step in flight). Losses stay on the device until the next log or checkpoint (reading one
makes the host wait for the device); a non-finite one then stops the run with a clear error
naming its step, and the last checkpoint, always from a finite state, is kept.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import signal
import threading
import time

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from vssl_cli.data.batches import EpochBatches
from vssl_cli.data.dataset import ClipDataset, collate_clips
from vssl_cli.data.readers import reader_options
from vssl_cli.engine import device as dev
from vssl_cli.engine.run import RunDir
from vssl_cli.errors import VsslError
from vssl_cli.methods.base import Method

log = logging.getLogger("vssl")


@dataclasses.dataclass
class TrainResult:
    steps: int
    epochs: float
    metrics: dict
    device: str


def build_optimizer(params, config: dict) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for p in params:
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)    # no decay on BN and biases
    groups = [{"params": decay, "weight_decay": config["weight_decay"]},
              {"params": no_decay, "weight_decay": 0.0}]
    name, lr = config["optimizer"], config["lr"]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=config["momentum"], nesterov=True)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr)
    return torch.optim.AdamW(groups, lr=lr)


def lr_factor(step: int, total: int, warmup: int, config: dict) -> float:
    """Linear warm-up, then cosine to zero, steps at milestones, or constant."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    if config["schedule"] == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    if config["schedule"] == "step":
        return config["step_gamma"] ** sum(progress >= m for m in config["step_milestones"])
    return 1.0


class StopRequest:
    """SIGTERM/SIGINT set a flag; the loop checkpoints after the current step and stops.
    A second signal interrupts at once."""

    def __init__(self):
        self.requested = False
        self._old = {}

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("stopping after this step (checkpoint first); signal again to abort")

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def _step_seed(seed: int, step: int, rank: int) -> int:
    return ((seed * 1_000_003 + step) * 1_009 + rank) % (1 << 63)


def _step_generator(device: torch.device, seed: int, step: int, rank: int) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(_step_seed(seed, step, rank))
    return gen


@contextlib.contextmanager
def peers_lost_in_one_line(d, last_saved, run):
    """Under DDP a process that dies (killed, its node lost) breaks the others' next
    collective with a transport error; say what happened in one line. The run's partial
    folder keeps its last checkpoint: a rerun, or torchrun --max-restarts, resumes."""
    try:
        yield
    except RuntimeError as e:
        text = str(e)
        if d.world == 1 or not (isinstance(e, torch.distributed.DistError) or any(
                s in text for s in ("gloo", "NCCL", "Connection reset", "Connection closed"))):
            raise
        raise VsslError(f"lost another training process (a worker or node stopped); the "
                        f"last checkpoint (step {last_saved()}) is kept: rerun, or let "
                        "torchrun --max-restarts restart the group, to resume",
                        run.partial if run else None) from None


def shared_augmentation(device: torch.device, seed: int, step: int, d
                        ) -> contextlib.AbstractContextManager:
    """Under DDP, augmentations drawn for the global batch from one generator seeded as
    rank 0's (data/augment.py ``global_batch``): N processes then augment every clip as
    one process training the global batch does. Alone: nothing changes."""
    if d.world == 1:
        return contextlib.nullcontext()
    from vssl_cli.data.augment import global_batch
    return global_batch(_step_generator(device, seed, step, 0), d.rank, d.world)


def read_losses(unread: list, window: dict[str, list[float]], last_saved: int, run) -> None:
    """Bring the losses of the steps since the last read to the host in one transfer, into
    ``window``; stop at the first that is not finite. Reading them every step would make
    the host wait for the device at each step (the next batch's copy and launches then
    wait too); reading at each log and checkpoint lets a non-finite step train on until
    then, but never into a checkpoint."""
    on_device = {(step, k): v for step, _, parts in unread for k, v in parts.items()
                 if isinstance(v, torch.Tensor)}
    tensors = [loss for _, loss, _ in unread] + list(on_device.values())
    values = torch.stack([t.float().reshape(()) for t in tensors]).tolist()
    losses, read = values[:len(unread)], dict(zip(on_device, values[len(unread):]))
    for (step, _, parts), loss in zip(unread, losses):
        if not math.isfinite(loss):
            saved = f"the last good checkpoint (step {last_saved}) is kept"
            raise VsslError(f"loss became {loss} at step {step}; stopped, {saved}; try a "
                            "lower --lr or --set clip_grad=1", run.partial if run else None)
        window.setdefault("loss", []).append(loss)
        for k, v in parts.items():
            window.setdefault(k, []).append(read.get((step, k), v))
    unread.clear()


def _to_device(batch: dict, device: torch.device) -> dict:
    nb = device.type == "cuda"
    return {**batch, "clips": [c.to(device, non_blocking=nb) for c in batch["clips"]],
            "labels": batch["labels"].to(device, non_blocking=nb)}


def _loader(dataset: ClipDataset, sampler: EpochBatches, workers: int, cuda: bool):
    kwargs = {"persistent_workers": True, "prefetch_factor": 4} if workers else {}
    return DataLoader(dataset, batch_sampler=sampler, num_workers=workers,
                      collate_fn=collate_clips, pin_memory=cuda, **reader_options(workers),
                      **kwargs)


def ddp_options(method: Method) -> dict:
    """How the method is wrapped for DDP: the search for parameters without a gradient
    only for a config that leaves some (``Method.leaves_parameters_unused``: TeG-PS, an
    ablation that switches a term off); buffers (memory banks) kept in step by the
    methods' own all-gather, not broadcast from rank 0 (the same seed builds them equal
    on every rank)."""
    import inspect
    sync = ("forward_sync_buffers" if "forward_sync_buffers" in
            inspect.signature(DistributedDataParallel).parameters else "broadcast_buffers")
    return {"find_unused_parameters": method.leaves_parameters_unused(), sync: False}


@contextlib.contextmanager
def closing_workers(loader: DataLoader):
    """Shut the loader's persistent worker processes down however the loop ends (an error
    in a worker included): left to the interpreter's exit, they leak semaphores and say so
    on stderr."""
    try:
        yield
    finally:
        iterator = getattr(loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()


def train(method: Method, dataset: ClipDataset, config: dict, run: RunDir | None,
          progress=None, on_log=None) -> TrainResult:
    """Train ``method`` in place (see the module docstring). ``run`` is None on ranks > 0.

    ``progress``: a tqdm-like bar (total set here); ``on_log``: called with each metrics
    record (rank 0).
    """
    d = dev.dist_from_env()
    device = dev.resolve_device(config["device"], d.local_rank)
    dev.init_distributed(d, device)
    sampler = EpochBatches(len(dataset), config["batch_size"], config["seed"], d.rank, d.world)
    spe = sampler.steps_per_epoch
    if spe == 0:
        raise VsslError(f"batch size {config['batch_size']} is larger than the "
                        f"{len(dataset)} training videos; lower --batch-size")
    total = config["max_steps"] or config["epochs"] * spe
    warmup = round(config["warmup_epochs"] * spe)

    method.to(device)
    cuda = device.type == "cuda"
    if cuda and config["channels_last"]:
        method.to(memory_format=torch.channels_last_3d)
        method.channels_last = True
    if d.world > 1:
        method.gather = dev.gather_with_grad
        if cuda and config["sync_bn"]:
            method = torch.nn.SyncBatchNorm.convert_sync_batchnorm(method)
        elif config["sync_bn"]:                  # CPU: torch's SyncBatchNorm is GPU-only
            from vssl_cli.engine.sync_bn import convert
            method = convert(method)
    if config["compile"]:
        method.encoder.compile()
    model = (DistributedDataParallel(method, device_ids=[device] if cuda else None,
                                     **ddp_options(method)) if d.world > 1 else method)
    optimizer = build_optimizer(method.parameters(), config)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total, warmup, config))
    amp_dtype = dev.autocast_dtype(config["amp"], device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    step, wall_before = 0, 0.0        # wall_before: training time of the sessions resumed
    state = run.load_checkpoint() if run is not None else None
    if d.world > 1:                    # every rank resumes from rank 0's checkpoint
        holder = [state]
        torch.distributed.broadcast_object_list(holder, src=0)
        state = holder[0]
    if state is not None:
        try:
            method.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            schedule.load_state_dict(state["schedule"])
            scaler.load_state_dict(state["scaler"])
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            raise VsslError("the checkpoint does not fit this model and configuration: "
                            f"{str(e).strip().splitlines()[0][:200]}",
                            run.checkpoint_path if run else None) from None
        step = int(state["step"])
        wall_before = float(state.get("wall_s", 0.0))
        if run is not None:
            run.trim_log(step)
            log.info("resuming from step %d of %d", step, total)

    def checkpoint():
        if run is not None:
            run.save_checkpoint({"step": step, "model": method.state_dict(),
                                 "optimizer": optimizer.state_dict(),
                                 "schedule": schedule.state_dict(),
                                 "scaler": scaler.state_dict(), "config": config,
                                 "wall_s": wall_before + time.perf_counter() - t_start})
            run.refresh_curves(f"{config['method']} ({config['backbone']}), step {step} "
                               f"of {total}")

    if progress is not None:
        progress.reset(total=total)
        progress.update(step)
    if run is not None:
        run.open_trackers(step)
    loader = _loader(dataset, sampler, dev.loader_workers(config["workers"], device), cuda)
    autocast = (torch.autocast("cuda", dtype=amp_dtype) if amp_dtype
                else contextlib.nullcontext())
    window: dict[str, list[float]] = {}
    unread: list[tuple[int, torch.Tensor, dict]] = []   # steps whose losses stay on the device
    clips_in_window = 0
    last = {}
    t_window, data_wait, t_start, start_step = time.perf_counter(), 0.0, time.perf_counter(), step
    last_saved = step
    method.train()
    with StopRequest() as stop, closing_workers(loader), \
            peers_lost_in_one_line(d, lambda: last_saved, run):
        if step < total:                    # one pass: the sampler spans epoch boundaries
            sampler.start(step, total)
            t_fetch = time.perf_counter()
            for batch in loader:
                data_wait += time.perf_counter() - t_fetch
                batch = _to_device(batch, device)
                gen = _step_generator(device, config["seed"], step, d.rank)
                # Draws from the global RNG too (Dropout in finetuning's head): a resumed run
                # must make the same ones.
                torch.manual_seed(_step_seed(config["seed"], step, d.rank))
                method.progress = step / max(1, total)      # for schedules inside losses
                with autocast, shared_augmentation(device, config["seed"], step, d):
                    loss, parts = model(batch, gen)
                unread.append((step + 1, dev.mean_over_processes(loss.detach().float()), parts))
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if config["clip_grad"] > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(method.parameters(), config["clip_grad"])
                scaler.step(optimizer)
                scaler.update()
                schedule.step()
                step += 1
                clips_in_window += sum(c.shape[0] for c in batch["clips"]) * d.world
                if progress is not None:
                    progress.update(1)
                log_now = step % config["log_every"] == 0 or step == total or stop.requested
                save_now = (step % config["checkpoint_every"] == 0 or step == total
                            or stop.requested)
                if log_now or save_now:      # a checkpoint only after finite losses
                    read_losses(unread, window, last_saved, run)
                if log_now:
                    now = time.perf_counter()
                    last = {"step": step, "epoch": round(step / spe, 3),
                            **{k: sum(v) / len(v) for k, v in window.items()},
                            "lr": schedule.get_last_lr()[0],
                            "clips_per_s": clips_in_window / max(now - t_window, 1e-9),
                            "data_wait": data_wait / max(now - t_window, 1e-9)}
                    if cuda:               # peak so far: what the GPU must hold for this run
                        last["gpu_mem_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
                    window, t_window, data_wait, clips_in_window = {}, now, 0.0, 0
                    if run is not None:
                        run.log(last)
                    if on_log is not None:
                        on_log(last)
                    if progress is not None:
                        progress.set_postfix(loss=f"{last['loss']:.3f}",
                                             clips_s=f"{last['clips_per_s']:.1f}")
                if save_now:
                    checkpoint()
                    last_saved = step
                if stop.requested:
                    break
                t_fetch = time.perf_counter()
        dev.barrier()
        if stop.requested:
            raise KeyboardInterrupt
    if step == start_step and run is not None and not run.has_checkpoint():
        checkpoint()                   # zero-step runs (random init) still leave one
    wall = time.perf_counter() - t_start
    metrics = {"steps": step, "epochs": round(step / spe, 3), "steps_per_epoch": spe,
               "train_videos": len(dataset), "world_size": d.world,
               "wall_s": round(wall_before + wall, 2), "wall_s_this_session": round(wall, 2)}
    if last:
        metrics.update({"final_loss": last["loss"], "clips_per_s": last["clips_per_s"]})
    return TrainResult(step, step / spe, metrics, str(device))
