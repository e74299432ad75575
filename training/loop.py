"""The training loop: one function that owns the networks, optimizers, EMA, checkpoints,
sample grids and logs. Deterministic on CPU for a fixed seed, including across a resume.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gancore.devices import cpu_has_native_bf16, hardware_description, resolve_device
from gancore.fileio import atomic_write_bytes, atomic_write_json
from gancore.files import METRICS_FILE, RECIPE_FILE, SAMPLES_DIR, TENSORBOARD_DIR
from gancore.images import encode_png, make_grid, to_uint8
from gancore.networks import build_networks
from gancore.sampling import seeded_latents
from training import distributed as dist_utils
from training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from training.data import ImageSet, load_dataset
from training.losses import GANLoss, LossConfig
from training.pauses import StepClock
from training.recipe import Recipe


def format_duration(seconds: float) -> str:
    """3725 -> '1 h 02 min', 95 -> '1 min 35 s', 4.2 -> '4.2 s'."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def speed_report(step_seconds: float, measured_steps: int, step: int, total_steps: int, recipe: Recipe) -> str:
    """The line printed once the step time is known: step time, ETA, and how often progress is saved."""
    left = total_steps - step
    ckpt = f"every {recipe.checkpoint_every:,} steps (~{format_duration(recipe.checkpoint_every * step_seconds)})"
    if recipe.checkpoint_minutes > 0:
        ckpt += f" and every {recipe.checkpoint_minutes:g} min"
    logs = f"every {recipe.log_every:,} steps" + (f" or {recipe.log_seconds:g} s" if recipe.log_seconds > 0 else "")
    return (f"step time {step_seconds:.3g} s (measured over {measured_steps} step(s)): "
            f"{left:,} steps to go, ETA {format_duration(left * step_seconds)} "
            f"(the whole run of {total_steps:,} steps: {format_duration(total_steps * step_seconds)}); "
            f"checkpoints {ckpt}; metrics {logs}")


def check_same_data(state: dict, data: ImageSet, ckpt_path: Path) -> None:
    """A resumed run must see the classes its checkpoint learnt, in the same order: a class folder
    added, removed or renamed between two pieces would change the label ids under the weights.
    Other changes to the files (same classes) are said, not refused."""
    saved = state.get("labels")
    if saved is not None and list(saved) != list(data.class_names):
        raise RunFolderError(f"{ckpt_path.name} was trained on classes {', '.join(saved)}; the data now has "
                             f"{', '.join(data.class_names)}. Restore the data, or start a new run (another --out)")
    checksum = (state.get("dataset") or {}).get("checksum")
    if checksum and checksum != data.checksum:
        print(f"warning: the data's files differ from those {ckpt_path.name} was trained on (same classes); "
              "the run goes on with the files as they are now", file=sys.stderr)


def restore_noise(noise: torch.Generator, saved: list[torch.Tensor], rank: int) -> bool:
    """Continue the noise stream a checkpoint saved for this rank, if it was saved for a generator
    of this kind (its state's size differs between CPU and CUDA); False when there is none."""
    current = noise.get_state()
    if rank >= len(saved) or saved[rank].shape != current.shape:
        return False
    noise.set_state(saved[rank].to(current.device))
    return True


def emulated_bf16_warning(recipe: Recipe, device: torch.device, native_bf16: bool) -> str | None:
    """The warning for bf16 autocast on a CPU that would emulate it: the run still trains (the
    numbers are bf16's either way, so a run begun with bf16 elsewhere resumes the same), but each
    step takes several times an fp32 one, which nothing else would say until the ETA line."""
    if not recipe.bf16 or device.type != "cpu" or native_bf16:
        return None
    return ("warning: bf16=true on a CPU without native bf16 (no AVX512-BF16 or AMX in lscpu's flags): "
            "PyTorch emulates it, and a step takes several times as long as in fp32 (10x and more on an "
            "AVX2-only EPYC); for speed here, train with --set bf16=false")


class RunFolderError(RuntimeError):
    """A run folder that holds another run: never silently overwritten."""


def make_optimizer(recipe: Recipe, params, lr: float, device: torch.device | None = None) -> torch.optim.Optimizer:
    """The recipe's optimizer. On CUDA, Adam is the fused kernel (one launch per step for all
    parameters instead of several per tensor group); elsewhere torch's default (foreach)."""
    if recipe.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr)
    fused = device is not None and device.type == "cuda"
    return torch.optim.Adam(params, lr=lr, betas=(recipe.betas[0], recipe.betas[1]), fused=fused or None)


def ema_decay(beta: float, step: int) -> float:
    """The EMA's decay after `step` generator steps: min(beta, (1 + step) / (10 + step)).

    Without the warm-up the average starts at the untrained generator and beta 0.999 keeps 61%
    of it after 500 steps (37% after 1,000), so early samples and short runs' exports are mostly
    noise. With it the average covers about the last tenth of the steps until that reaches
    1 / (1 - beta) steps (step 8,990 for 0.999), and is plain beta after.
    """
    return min(beta, (1.0 + step) / (10.0 + step))


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, beta: float) -> None:
    ema_params: list[torch.Tensor] = list(ema.parameters())
    params: list[torch.Tensor] = list(model.parameters())
    if len(ema_params) != len(params):
        raise ValueError("the EMA and the model have different parameter lists")
    torch._foreach_lerp_(ema_params, params, 1.0 - beta)  # one multi-tensor op, not one per tensor
    ema_buffers, buffers = list(ema.buffers()), list(model.buffers())
    if ema_buffers:
        torch._foreach_copy_(ema_buffers, buffers)


# Recipe fields that shape the tensors a checkpoint holds (the networks, and the optimiser state):
# a resume that changes one cannot load the checkpoint, so it is refused with their names.
STATE_FIELDS = ("arch", "conditional", "latent_dim", "embed_dim", "g_base_width", "d_base_width", "conditioning",
                "aux_classifier", "d_norm", "image_size", "channels", "optimizer")


def check_same_shapes(old: dict, recipe: Recipe, where: str) -> None:
    """RunFolderError naming each STATE_FIELDS field whose value differs from the run's recorded
    recipe `old` (fields it does not record are not compared)."""
    new = recipe.to_dict()
    changed = [key for key in STATE_FIELDS if key in old and old[key] != new[key]]
    if not changed:
        return
    def text(value: Any) -> str:  # as --set takes it: dcgan, true, 32
        return value if isinstance(value, str) else json.dumps(value)

    was = ", ".join(f"{key}={text(old[key])}" for key in changed)
    now = ", ".join(f"{key}={text(new[key])}" for key in changed)
    restore = " ".join(f"--set {key}={text(old[key])}" for key in changed)
    raise RunFolderError(f"{where} was trained with {was}; this recipe has {now}, which its weights cannot load "
                         f"into. Pass {restore} to continue it, or use another --out")


def check_run_folder(run_dir: Path, recipe: Recipe, resume: bool) -> None:
    """Refuse to mix a different recipe into a run, or to overwrite a run without --resume."""
    recipe_path = run_dir / RECIPE_FILE
    # A folder counts as holding a run once it has logs or checkpoints: a recipe.json left by
    # a start that failed before training (bad data, say) does not block a plain rerun.
    has_run = (run_dir / METRICS_FILE).is_file() or latest_checkpoint(run_dir) is not None
    if has_run and not resume:
        raise RunFolderError(
            f"{run_dir} already holds a training run; pass --resume to continue it, "
            "or choose another --out"
        )
    if recipe_path.is_file() and has_run:
        try:
            old = json.loads(recipe_path.read_text())
        except (OSError, ValueError) as exc:
            raise RunFolderError(f"{recipe_path}: unreadable ({exc}); it records the run's recipe, so the run "
                                 "cannot be checked before resuming. Restore it, or use another --out") from None
        if not isinstance(old, dict):
            raise RunFolderError(f"{recipe_path}: not a recipe (a JSON object); restore it, or use another --out")
        if old.get("name") != recipe.name or old.get("loss") != recipe.loss or old.get("arch") != recipe.arch:
            raise RunFolderError(
                f"{run_dir} holds a run of recipe {old.get('name')!r} ({old.get('loss')}, "
                f"{old.get('arch')}); refusing to continue it as {recipe.name!r}. Use another --out."
            )
        if old.get("split", recipe.split) != recipe.split:  # e.g. a run begun before the recipe moved to train
            raise RunFolderError(
                f"{run_dir} holds a run on the {old['split']!r} split; refusing to continue it on "
                f"{recipe.split!r}. Pass --set split={old['split']} to continue it, or use another --out."
            )
        check_same_shapes(old, recipe, str(run_dir))


def trim_metrics(path: Path, step: int) -> int:
    """Keep only metrics.jsonl's records of steps up to `step` (the checkpoint a resume starts
    from): those after it belong to a timeline a kill lost, and the resumed run logs its own.
    A torn last line (killed mid-write) goes too. Rewritten atomically; returns lines dropped."""
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines(keepends=True)
    kept = [line.rstrip("\n") + "\n" for line in lines if (logged := _logged_step(line)) is not None and logged <= step]
    if kept != lines:
        atomic_write_bytes(path, "".join(kept).encode())
    return len(lines) - len(kept)


def _logged_step(line: str) -> int | None:
    """A metrics line's step, or None for a line that is not a whole record."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    step = record.get("step") if isinstance(record, dict) else None
    return step if isinstance(step, int) else None


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    total_steps: int
    interrupted: bool
    train_seconds: float


class _StopFlag:
    """SIGINT/SIGTERM set a flag; the loop checkpoints after the current step and returns. The
    handlers stay until that last checkpoint is written: a second Ctrl-C (or torchrun's SIGTERM
    after the first) would otherwise kill the process halfway through it."""

    def __init__(self) -> None:
        self.stop = False
        self.finishing = False  # the last checkpoint is being written: signals are only answered
        self._old: dict[int, Any] = {}

    def __enter__(self):
        handlers = {signal.SIGINT: self._handle, signal.SIGTERM: self._handle}
        for sig, handler in handlers.items():
            try:
                self._old[sig] = signal.signal(sig, handler)
            except ValueError:  # not the main thread: no handlers (tests, notebooks)
                pass
        return self

    def _handle(self, signum, frame) -> None:
        self.stop = True
        if self.finishing:  # os.write, not print: a handler can interrupt a print to stderr
            os.write(2, b"\nwriting the last checkpoint; the run stops once it is written\n")

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def train(
    recipe: Recipe,
    run_dir: str | Path,
    device: str = "auto",
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    dataset: ImageSet | None = None,
) -> TrainResult:
    """Train (or continue) a run. `stop_after` ends after that many steps in this call, as an
    interruption would (checkpoint written), which is how tests exercise resume."""
    recipe.validate()
    run_dir = Path(run_dir)
    dist = dist_utils.init(device)
    dev = resolve_device(device) if not dist.enabled else dist.device(device)
    refusal = None
    if dist.is_main:
        try:
            check_run_folder(run_dir, recipe, resume)
        except RunFolderError as exc:
            refusal = exc
    # every rank leaves when rank 0 refuses the folder (the others would wait at its barrier)
    if dist.any_flag(refusal is not None):
        raise refusal or RunFolderError(f"{run_dir}: refused by rank 0 (its message says why)")
    if dist.is_main:
        warning = emulated_bf16_warning(recipe, dev, cpu_has_native_bf16())
        if warning is not None:
            print(warning, file=sys.stderr)
    torch.manual_seed(recipe.seed)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = recipe.tf32
        torch.backends.cudnn.allow_tf32 = recipe.tf32
        torch.backends.cudnn.benchmark = True

    data = dataset or load_dataset(recipe.dataset, recipe.split, recipe.data_dir,
                                   recipe.image_size, recipe.channels, recipe.verify_data)
    num_classes = len(data.class_names)
    images = data.images.to(dev)  # (N, C, H, W) uint8, resident on the device
    targets = data.labels.to(dev)
    n_data = len(data)
    batches_per_epoch = max(1, n_data // (recipe.batch_size * dist.world_size))
    total_steps = recipe.total_steps(n_data, dist.world_size)  # epochs of the whole data, not of each process

    G, D, g_args = build_networks(recipe, num_classes, data.channels, data.image_size)
    G.to(dev)
    D.to(dev)
    memory_format = torch.channels_last if recipe.channels_last else None
    if memory_format is not None:
        G.to(memory_format=memory_format)  # type: ignore[call-overload]  # accepted at run time, absent from the stubs
        D.to(memory_format=memory_format)  # type: ignore[call-overload]
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    opt_g = make_optimizer(recipe, G.parameters(), recipe.lr_g, dev)
    opt_d = make_optimizer(recipe, D.parameters(), recipe.lr_d, dev)
    loss_fn = GANLoss(LossConfig.from_recipe(recipe))
    noise = torch.Generator(device=dev).manual_seed(recipe.seed * 1000 + dist.rank)

    step, train_seconds = 0, 0.0
    ckpt_path = latest_checkpoint(run_dir) if resume else None
    if ckpt_path is not None:
        state = load_checkpoint(ckpt_path, map_location="cpu")
        check_same_data(state, data, ckpt_path)
        check_same_shapes(state.get("recipe") or {}, recipe, ckpt_path.name)  # also without recipe.json
        G.load_state_dict(state["G"])
        D.load_state_dict(state["D"])
        G_ema.load_state_dict(state["G_ema"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        step, train_seconds = int(state["step"]), float(state["train_seconds"])
        if not restore_noise(noise, state["noise_rng"], dist.rank):
            # Written on another kind of device (a CPU generator's state is 5,056 bytes, a CUDA
            # one's 16), or by fewer processes: its noise stream cannot go on here, so this
            # process draws a new one, seeded from the step (the weights and optimisers resume).
            noise.manual_seed(recipe.seed * 1000 + dist.rank + 1_000_003 * step)
            print(f"warning: {ckpt_path.name} holds no noise-generator state for {dev.type} process "
                  f"{dist.rank}; reseeded, so from step {step} the run is not the one an uninterrupted "
                  f"run would be", file=sys.stderr)
        torch.set_rng_state(state["cpu_rng"])
        if dist.is_main:
            print(f"resumed {run_dir} from {ckpt_path.name} at step {step}/{total_steps}")
    # Only once the data loaded and the checkpoint was accepted: a failed start leaves no run
    # behind, and a refused resume leaves the recipe.json it was refused against.
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / RECIPE_FILE, recipe.to_dict())
    if resume and dist.is_main:  # without a checkpoint the run starts again at step 0
        trim_metrics(run_dir / METRICS_FILE, step)
    dist.barrier()

    conditional = recipe.conditional and num_classes > 0
    fixed_z = seeded_latents(recipe.seed + 12345, 10, recipe.latent_dim).to(dev)
    sample_rows = min(num_classes, 10) if conditional else 1
    sample_labels = torch.arange(sample_rows, device=dev).repeat_interleave(10)
    perm_cache: dict[int, torch.Tensor] = {}

    def batch(index: int) -> tuple[torch.Tensor, torch.Tensor]:
        # Batch `index` of the whole run: epoch e's order is a permutation seeded by (seed, e),
        # so any step can be reproduced after a resume without saving data-loader state.
        epoch, offset = divmod(index, batches_per_epoch)
        if epoch not in perm_cache:
            perm_cache.clear()
            gen = torch.Generator().manual_seed(recipe.seed * 100003 + epoch)
            perm_cache[epoch] = torch.randperm(n_data, generator=gen).to(dev)
        start = (offset * dist.world_size + dist.rank) * recipe.batch_size
        idx = perm_cache[epoch][start : start + recipe.batch_size]
        x = images[idx].float().div_(127.5).sub_(1.0)  # (B, C, H, W) in [-1, 1]
        if memory_format is not None:
            x = x.contiguous(memory_format=memory_format)
        return x, targets[idx]

    t_ckpt = time.monotonic()

    def checkpoint() -> None:
        nonlocal t_ckpt
        t_ckpt = time.monotonic()
        rng_states = dist.gather_rng(noise.get_state())  # a collective: every rank takes part
        if not dist.is_main:
            return
        state = {
            "step": step, "train_seconds": train_seconds, "recipe": recipe.to_dict(),
            # passes over the data as metrics.jsonl counts them (whole batches of every rank)
            "epochs": step * recipe.n_critic / batches_per_epoch,
            "g_args": g_args, "labels": data.class_names, "aliases": data.aliases,
            "dataset": {"name": data.name, "checksum": data.checksum, "size": n_data},
            "G": G.state_dict(), "D": D.state_dict(), "G_ema": G_ema.state_dict(),
            "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
            "noise_rng": rng_states,
            "cpu_rng": torch.get_rng_state(),
            "hardware": hardware_description(dev),
        }
        save_checkpoint(run_dir, step, state, recipe.keep_checkpoints)

    def sample_grid(epoch_label: str) -> None:
        if not dist.is_main:
            return
        with torch.no_grad():
            z = fixed_z.repeat(sample_rows, 1)
            out = G_ema(z, sample_labels if conditional else None)
        grid = make_grid(to_uint8(out.float().cpu()), nrow=10, padding=2)
        png = encode_png(grid, smallest=True)
        atomic_write_bytes(run_dir / SAMPLES_DIR / f"{epoch_label}.png", png)
        atomic_write_bytes(run_dir / SAMPLES_DIR / "latest.png", png)
        if tb is not None:
            tb.add_image("samples", grid, step)

    tb = None
    if dist.is_main:
        try:
            from torch.utils.tensorboard import SummaryWriter

            tb = SummaryWriter(str(run_dir / TENSORBOARD_DIR))
        except Exception:  # TensorBoard is optional
            tb = None

    autocast = torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=recipe.bf16)
    bar = None
    if progress and dist.is_main:
        from tqdm import tqdm

        bar = tqdm(total=total_steps, initial=step, desc=recipe.name, dynamic_ncols=True,
                   mininterval=1.0)
    sums: dict[str, torch.Tensor] = {}
    count = 0
    t_log = time.perf_counter()
    # The start-up speed line: timed from the end of this call's first step (which pays for
    # warm-up) over a few steps or about 10 s, whichever comes first.
    t_first: float | None = None
    speed_reported = False
    say = (lambda text: bar.write(text)) if bar is not None else print
    steps_this_call = 0
    interrupted = False
    metrics_path = run_dir / METRICS_FILE
    # The handlers stay until the last checkpoint is written (the clock leaves out pauses, SIGSTOP).
    with _StopFlag() as stop, StepClock() as clock:
        while step < total_steps:
            clock.step_began()
            lr_scale = 1.0 - step / total_steps if recipe.lr_decay == "linear" else 1.0
            for group in opt_g.param_groups:
                group["lr"] = recipe.lr_g * lr_scale
            for group in opt_d.param_groups:
                group["lr"] = recipe.lr_d * lr_scale
            G.train()
            D.train()
            # --- critic phase: n_critic batches of real data
            for i in range(recipe.n_critic):
                real, y = batch(step * recipe.n_critic + i)
                z = torch.randn(real.shape[0], recipe.latent_dim, generator=noise, device=dev)
                y_in = y if conditional else None
                with torch.no_grad(), autocast:
                    fake = G(z, y_in)
                with autocast:
                    d_loss, d_stats = loss_fn.critic_loss(D, real, fake.float(), y_in, noise)
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                dist.all_reduce_grads(D)
                opt_d.step()
                loss_fn.after_critic_step(D)
            # --- generator phase
            g_batch = recipe.g_batch_size or recipe.batch_size
            z = torch.randn(g_batch, recipe.latent_dim, generator=noise, device=dev)
            y_fake = (torch.randint(0, num_classes, (g_batch,), generator=noise, device=dev)
                      if conditional else None)
            D.requires_grad_(False)
            with autocast:
                fake = G(z, y_fake)
                g_loss, g_stats = loss_fn.generator_loss(D, fake, y_fake)
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            dist.all_reduce_grads(G)
            opt_g.step()
            D.requires_grad_(True)
            if recipe.ema_beta > 0:
                update_ema(G_ema, G, ema_decay(recipe.ema_beta, step))
            else:
                G_ema.load_state_dict(G.state_dict())
            step += 1
            steps_this_call += 1
            logs = step % recipe.log_every == 0 or step == total_steps or (
                recipe.log_seconds > 0 and time.perf_counter() - t_log >= recipe.log_seconds)
            if logs and dist.is_main and dev.type == "cuda":
                # The log below waits for the GPU anyway (float() of the losses): wait inside the
                # step's clock, or the kernels still queued then would be left out of train_seconds.
                # Rank 0 only: it alone logs (the others' t_log never moves) and records the time.
                torch.cuda.synchronize(dev)
            train_seconds += clock.step_ended()
            for key, val in {**d_stats, **g_stats}.items():
                sums[key] = sums.get(key, 0) + val.float()
            count += 1
            if bar is not None:
                bar.update(1)
            now = time.perf_counter()
            if dist.is_main and not speed_reported:
                if t_first is None:
                    t_first = now
                elif steps_this_call >= 6 or now - t_first >= 10.0 or step == total_steps:
                    say(speed_report((now - t_first) / (steps_this_call - 1), steps_this_call - 1, step,
                                     total_steps, recipe))
                    speed_reported = True
            if logs:
                if dist.is_main:
                    record = {k: round(float(v) / count, 6) for k, v in sums.items()}
                    record.update(step=step, epoch=round(step * recipe.n_critic / batches_per_epoch, 4),
                                  lr_g=recipe.lr_g * lr_scale, train_seconds=round(train_seconds, 2),
                                  steps_per_s=round(count / max(now - t_log - clock.take_paused(), 1e-9), 3))
                    with open(metrics_path, "a") as fh:
                        fh.write(json.dumps(record) + "\n")
                    if tb is not None:
                        for k, v in record.items():
                            tb.add_scalar(f"train/{k}", v, step)
                    if bar is not None:
                        bar.set_postfix(d=record.get("d_loss"), w=record.get("wdist"),
                                        gp=record.get("gp"), refresh=False)
                    t_log = now
                sums, count = {}, 0
            epoch_before = ((step - 1) * recipe.n_critic) // batches_per_epoch
            epoch_now = (step * recipe.n_critic) // batches_per_epoch
            if recipe.samples_per_epoch and epoch_now > epoch_before:
                sample_grid(f"epoch-{epoch_now:04d}")
            # Rank 0's clock decides a time-based checkpoint, so that every rank takes part in it.
            ckpt_by_time = (dist.is_main and recipe.checkpoint_minutes > 0
                            and time.monotonic() - t_ckpt >= recipe.checkpoint_minutes * 60)
            signalled = False
            if dist.syncs_flags_at(step) or step == total_steps:
                signalled, ckpt_by_time = dist.exchange_flags(step, stop.stop, ckpt_by_time)
            else:
                ckpt_by_time = False  # decided at the next step where the ranks agree
            if signalled or (stop_after is not None and steps_this_call >= stop_after):
                interrupted = step < total_steps
                break  # the checkpoint after the loop saves this step
            if (step % recipe.checkpoint_every == 0 or ckpt_by_time) and step < total_steps:
                checkpoint()
        stop.finishing = True
        checkpoint()
        sample_grid("final" if not interrupted else f"step-{step:09d}")
        if bar is not None:
            bar.close()
        if tb is not None:
            tb.close()
        if interrupted and dist.is_main:
            print(f"stopped at step {step}/{total_steps}; checkpoint written. Continue with --resume.")
        dist.shutdown()  # every rank keeps its handlers until all have written their part
    return TrainResult(run_dir, step, total_steps, interrupted, train_seconds)
