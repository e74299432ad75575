"""`python -m training compare`: the model-comparison study.

Trains GAN (minimax), NS-GAN (log-D trick), CGAN, WGAN (weight clipping), WGAN-GP, cWGAN-GP,
AC-WGAN-GP and a VAE baseline with the same budget (generator steps; optimizer steps for the
VAE), the same seed and the same small networks, exports each one as a weights folder,
measures each with `evaluate_generator` (the code behind `python -m training evaluate`) and
writes into --out:

    report.md     one table (model, loss, conditional, steps, wall time, metrics) and a sample
                  grid per model, with the real-data reference row
    report.json   settings and every number
    curves.png    each model's training curves (d_loss and g_loss vs step; the VAE's loss terms)
    samples/      one PNG grid per model
    MODEL/run     the training run folder;  MODEL/weights  the exported generator

Budgets: the defaults take minutes on a GPU; on a CPU use a small one, e.g. `--steps 300`
(docs/compare.md has the measured time and the resulting table).
"""

from __future__ import annotations

import datetime as dt
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gancore.devices import hardware_description, resolve_device
from gancore.fileio import atomic_write_bytes, atomic_write_json
from gancore.files import METRICS_FILE
from gancore.images import encode_png
from gancore.weights import load_classifier, load_generator, update_metrics
from training.card import fmt
from training.curves import read_metrics
from training.data import ImageSet
from training.evaluate import DEFAULT_CLASSIFIER, evaluate_generator, reference_data, sample_grid
from training.export import export_run
from training.loop import train as train_gan
from training.recipe import Recipe
from training.vae import VAEObjective, export_vae, train_vae

REPORT_MD = "report.md"
REPORT_JSON = "report.json"
CURVES_FILE = "curves.png"


@dataclass(frozen=True)
class StudyModel:
    name: str
    description: str
    loss: str  # as shown in the table
    conditional: bool
    recipe: dict[str, Any] = field(default_factory=dict)  # Recipe fields (empty for the VAE)


# Optimiser settings follow each method's paper: DCGAN's Adam (2e-4, 0.5, 0.999) with one critic
# step for the GAN family, RMSprop 5e-5 with n_critic 5 and clip 0.01 for WGAN (Arjovsky et al.),
# Adam (1e-4, 0.5, 0.9) with n_critic 5 and lambda 10 for the WGAN-GP family (Gulrajani et al.).
_GAN = dict(n_critic=1, optimizer="adam", lr_g=2e-4, lr_d=2e-4, betas=(0.5, 0.999))
_WGAN_GP = dict(loss="wgan-gp", gp_lambda=10.0, n_critic=5, optimizer="adam", lr_g=1e-4, lr_d=1e-4,
                betas=(0.5, 0.9))
MODELS: dict[str, StudyModel] = {m.name: m for m in (
    StudyModel("gan", "GAN, minimax loss log(1 - D(G(z)))", "gan", False,
               dict(_GAN, loss="gan", conditional=False, conditioning="none")),
    StudyModel("ns-gan", "GAN, non-saturating loss -log D(G(z))", "ns-gan", False,
               dict(_GAN, loss="ns-gan", conditional=False, conditioning="none")),
    StudyModel("cgan", "conditional GAN, non-saturating loss, projection critic", "ns-gan", True,
               dict(_GAN, loss="ns-gan", conditional=True, conditioning="projection")),
    StudyModel("wgan", "WGAN, weight clipping 0.01, RMSprop 5e-5", "wgan", False,
               dict(loss="wgan", conditional=False, conditioning="none", optimizer="rmsprop",
                    lr_g=5e-5, lr_d=5e-5, n_critic=5, clip_value=0.01)),
    StudyModel("wgan-gp", "WGAN-GP, unconditional", "wgan-gp", False,
               dict(_WGAN_GP, conditional=False, conditioning="none")),
    StudyModel("cwgan-gp", "conditional WGAN-GP, projection critic", "wgan-gp", True,
               dict(_WGAN_GP, conditional=True, conditioning="projection")),
    StudyModel("acwgan-gp", "AC-WGAN-GP, auxiliary classifier on the critic", "wgan-gp + AC", True,
               dict(_WGAN_GP, conditional=True, conditioning="none", aux_classifier=True)),
    StudyModel("vae", "VAE, Bernoulli-like likelihood, decoder = the same generator", "ELBO", False),
)}


@dataclass
class StudySettings:
    out: Path
    models: list[str]
    steps: int = 2000
    batch_size: int = 64
    seed: int = 0
    g_width: int = 64
    d_width: int = 32
    latent_dim: int = 20
    ema_beta: float | None = None  # None: 1 - 10 / steps, capped at 0.999
    vae_lr: float = 1e-3
    n_per_class: int = 200
    tstr_epochs: int = 0
    classifier: Path = Path(DEFAULT_CLASSIFIER)
    data_dir: str | None = None
    device: str = "auto"
    threads: int = 0  # torch CPU threads (0: torch's default)
    progress: bool = False

    @property
    def ema(self) -> float:
        # Ties the EMA's horizon, 1 / (1 - beta), to a tenth of the budget. The loop's
        # own warm-up (loop.ema_decay) now gives short runs nearly the same horizon; this stays so
        # the study's settings, and docs/compare.md's table, keep their meaning.
        if self.ema_beta is not None:
            return self.ema_beta
        return max(0.0, min(0.999, 1.0 - 10.0 / self.steps))


def gan_recipe(model: StudyModel, s: StudySettings, dataset: str, image_size: int, channels: int) -> Recipe:
    return Recipe(
        name=f"compare-{model.name}", dataset=dataset, split="train", data_dir=s.data_dir,
        image_size=image_size, channels=channels, latent_dim=s.latent_dim,
        g_base_width=s.g_width, d_base_width=s.d_width, batch_size=s.batch_size, steps=s.steps,
        seed=s.seed, ema_beta=s.ema, lr_decay="none", log_every=max(1, s.steps // 100),
        checkpoint_every=s.steps, keep_checkpoints=1, samples_per_epoch=False, **model.recipe,
    ).validate()


def vae_recipe(s: StudySettings, dataset: str, image_size: int, channels: int) -> Recipe:
    """The VAE baseline's recipe: decoder width g_width, encoder width d_width, Adam at vae_lr
    with betas (0.9, 0.999), unconditional (see training.vae.VAE_RECIPE_FIELDS)."""
    return Recipe(
        name="compare-vae", dataset=dataset, split="train", data_dir=s.data_dir, image_size=image_size,
        channels=channels, conditional=False, latent_dim=s.latent_dim, g_base_width=s.g_width,
        d_base_width=s.d_width, lr_g=s.vae_lr, betas=(0.9, 0.999), steps=s.steps, batch_size=s.batch_size,
        seed=s.seed, log_every=max(1, s.steps // 100),
    ).validate()


def train_and_export(
    model: StudyModel, s: StudySettings, dataset: str, train: ImageSet, device: torch.device
) -> dict[str, Any]:
    """Train one model on `train` (loaded as `dataset`) into out/NAME/run, export it to
    out/NAME/weights; returns its report row."""
    run_dir, weights = s.out / model.name / "run", s.out / model.name / "weights"
    t0 = time.perf_counter()
    if model.name == "vae":
        recipe = vae_recipe(s, dataset, train.image_size, train.channels)
        objective = VAEObjective()
        vae_result = train_vae(recipe, run_dir, device, dataset=train, objective=objective)
        wall = time.perf_counter() - t0
        config = export_vae(vae_result, recipe, weights, hardware_description(device), objective)
        settings, train_seconds = config["recipe"], vae_result.train_seconds
    else:
        recipe = gan_recipe(model, s, dataset, train.image_size, train.channels)
        result = train_gan(recipe, run_dir, device=str(device), progress=s.progress, dataset=train)
        wall = time.perf_counter() - t0
        if result.interrupted:  # SIGINT/SIGTERM: the loop checkpointed; end the study here too
            raise KeyboardInterrupt
        export_run(run_dir, weights)
        settings, train_seconds = recipe.to_dict(), result.train_seconds
    return {"model": model.name, "description": model.description, "loss": model.loss,
            "conditional": model.conditional, "steps": s.steps, "wall_seconds": round(wall, 1),
            "train_seconds": round(train_seconds, 1), "settings": settings}


def plot_curves(rows: list[dict[str, Any]], out: Path, path: Path) -> None:
    """One panel per model: d_loss and g_loss vs step (the VAE: loss, recon and KL)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, len(rows))
    nrows = (len(rows) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 3 * nrows), squeeze=False)
    for ax, row in zip(axes.flat, rows, strict=False):
        metrics_path = out / row["model"] / "run" / METRICS_FILE
        records = read_metrics(metrics_path) if metrics_path.is_file() else []
        keys = ("loss", "recon", "kl") if row["model"] == "vae" else ("d_loss", "g_loss")
        plotted = False
        for key in keys:
            pts = [(r["step"], r[key]) for r in records if key in r]
            if pts:
                ax.plot(*zip(*pts, strict=True), label=key, linewidth=1)
                plotted = True
        ax.set_title(f"{row['model']} ({row['loss']})", fontsize=10)
        ax.set_xlabel("generator step" if row["model"] != "vae" else "step")
        if plotted:
            ax.legend(fontsize=8)
        else:  # a run whose metrics file is gone or empty: say so rather than draw blank axes
            ax.text(0.5, 0.5, "no metrics recorded", ha="center", va="center", transform=ax.transAxes, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(rows):]:
        ax.axis("off")
    fig.tight_layout()
    buf = io.BytesIO()  # rendered in memory, then written atomically: no half-written figure
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def markdown_table(rows: list[dict[str, Any]], reference: dict[str, Any]) -> str:
    header = ["model", "loss", "conditional", "steps", "wall time (s)", "cond. accuracy", "FID",
              "precision", "recall", "IS"]
    lines = ["| " + " | ".join(header) + " |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        m = r["metrics"]
        acc = fmt(m["conditional_accuracy"]) if r["conditional"] else "n/a"
        lines.append(f"| {r['model']} | {r['loss']} | {'yes' if r['conditional'] else 'no'} | {r['steps']} | "
                     f"{r['wall_seconds']:.1f} | {acc} | {fmt(m['fid'], 2)} | {fmt(m['precision'], 3)} | "
                     f"{fmt(m['recall'], 3)} | {fmt(m['inception_score'], 2)} |")
    lines.append(f"| *real data (reference)* | | | | | {fmt(reference['classifier_test_accuracy'])} | "
                 f"{fmt(reference['fid_floor'], 2)} | {fmt(reference['precision_floor'], 3)} | "
                 f"{fmt(reference['recall_floor'], 3)} | {fmt(reference['inception_score_real'], 2)} |")
    return "\n".join(lines)


def render_report(report: dict[str, Any]) -> str:
    s, rows, ref = report["settings"], report["models"], report["reference"]
    n = s["n_per_class"] * ref["num_classes"]
    parts = [
        "# Model comparison", "",
        f"Every model: {s['steps']} generator steps (optimizer steps for the VAE), batch {s['batch_size']}, "
        f"seed {s['seed']}, latent {s['latent_dim']}, generator/decoder width {s['g_width']}, "
        f"critic/encoder width {s['d_width']}, EMA beta {s['ema_beta']:.4f} (GANs), "
        f"trained on the `train` split on {report['hardware']}.",
        "",
        f"Metrics from `evaluate_generator` on {n} samples per model (seed {s['seed']}) against the test set, "
        f"in the feature space of `{s['classifier']}`. The last row is real data at the same n: "
        "the classifier's test accuracy, FID/precision/recall of real training images against the test "
        "set (the floor; the same real subsets serve every row) and the score of real test images. "
        "Conditional accuracy only exists for conditional models. The WGAN family takes n_critic = 5 "
        "critic batches per generator step; the GAN family and the VAE take one batch per step.",
        "",
        markdown_table(rows, ref),
        "",
        f"Command: `{report['command']}`; total {report['total_seconds']:.0f} s "
        f"(training {sum(r['wall_seconds'] for r in rows):.0f} s).",
        "",
        f"## Training curves\n\n![training curves]({CURVES_FILE})",
        "",
        "## Samples",
        "",
        "Conditional models: one row per class; unconditional ones: the first 100 samples.",
        "",
    ]
    for r in rows:
        parts += [f"### {r['model']}: {r['description']}", "", f"![{r['model']}]({r['samples']})", ""]
    return "\n".join(parts)


def run_study(s: StudySettings, command: str = "", log: Any = print, force: bool = False) -> dict[str, Any]:
    """Train, export and evaluate every model in s.models; write the report; return it. An --out
    that holds an earlier study's report.json is refused unless `force` (its report is replaced)."""
    unknown = [m for m in s.models if m not in MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(MODELS)}")
    if (s.out / REPORT_JSON).exists() and not force:
        raise FileExistsError(f"{s.out / REPORT_JSON} holds an earlier study, which this one would overwrite; "
                              "choose another --out, or pass --force to replace its report")
    taken = [str(s.out / m) for m in s.models if (s.out / m).exists()]
    if taken:
        raise FileExistsError(f"{', '.join(taken)} already exist; choose another --out or delete them")
    device = resolve_device(s.device)
    if s.threads:
        torch.set_num_threads(s.threads)
    t_start = time.perf_counter()
    clf = load_classifier(s.classifier, device)
    dataset, train, test = reference_data(clf, s.data_dir)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(s).items()}
    settings["ema_beta"] = s.ema
    report: dict[str, Any] = {
        "settings": settings, "command": command, "hardware": hardware_description(device),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "models": [], "reference": {}, "total_seconds": 0.0,
    }
    log(f"comparing {', '.join(s.models)}: {s.steps} steps, batch {s.batch_size}, seed {s.seed}, {device}")
    for name in s.models:
        model = MODELS[name]
        row = train_and_export(model, s, dataset, train, device)
        t0 = time.perf_counter()
        weights = s.out / name / "weights"
        gen = load_generator(weights, device)
        metrics, extras = evaluate_generator(gen, clf, train, test, s.n_per_class, s.seed,
                                             s.tstr_epochs if gen.conditional else 0, device)
        update_metrics(weights, metrics)
        samples = extras["samples"]
        if gen.conditional:
            grid = sample_grid(samples, s.n_per_class, len(gen.labels), counts=extras.get("counts"))
        else:  # class-free samples: ten rows of ten
            rows = max(1, min(10, samples.shape[0] // 10))
            grid = sample_grid(samples[: rows * 10], min(10, samples.shape[0]), rows)
        png = Path("samples") / f"{name}.png"
        atomic_write_bytes(s.out / png, encode_png(grid, smallest=True))
        row.update(samples=str(png), weights=str(weights), eval_seconds=round(time.perf_counter() - t0, 1),
                   metrics={k: v for k, v in metrics.items() if not k.startswith("classifier_")})
        report["models"].append(row)
        report["reference"] = {
            "num_classes": len(gen.labels),
            "classifier_test_accuracy": metrics["classifier_test_accuracy"],
            "fid_floor": metrics["fid_floor"], "precision_floor": metrics["precision_floor"],
            "recall_floor": metrics["recall_floor"], "inception_score_real": metrics["inception_score_real"],
        }
        m = metrics
        acc = fmt(m["conditional_accuracy"]) if gen.conditional else "n/a"
        log(f"  {name}: {row['wall_seconds']:.0f} s training, {row['eval_seconds']:.0f} s evaluation; "
            f"acc {acc}, FID {m['fid']:.2f} (floor {m['fid_floor']:.2f}), precision {m['precision']:.3f}, "
            f"recall {m['recall']:.3f}, IS {m['inception_score']:.2f}")
        report["total_seconds"] = round(time.perf_counter() - t_start, 1)
        atomic_write_json(s.out / REPORT_JSON, report)  # after every model: a partial study survives
    plot_curves(report["models"], s.out, s.out / CURVES_FILE)
    report["total_seconds"] = round(time.perf_counter() - t_start, 1)
    atomic_write_json(s.out / REPORT_JSON, report)
    atomic_write_bytes(s.out / REPORT_MD, render_report(report).encode())
    return report
