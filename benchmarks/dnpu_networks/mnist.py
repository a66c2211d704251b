"""MNIST with 10 DNPU nodes (Ruiz Euler et al. 2021), on the bundled surrogate.

Network::

    Flatten -> Linear(784, 10*m, bias=False) -> [BatchNorm1d(10*m), recipe "ours"]
            -> DNPU(SurrogateProcessor(bundled), n_nodes=10, m inputs per node)
            -> logits = logit_scale * (10 node currents in nA)  [+ class bias, recipe "ours"]

Node k takes linear outputs k*m .. k*m+m-1. ``m = 3``: inputs on e0, e3, e4,
controls e1, e2, e5, e6 (learnable); ``m = 7``: every activation electrode
is an input, the node has no controls (only the linear layer learns).
``data_range`` maps the linear outputs onto each input electrode's range
[-1.2, 0.6] V (outside it the voltage saturates). The baseline ("relu")
replaces the DNPU layer by ReLU -> Linear(10*m, 10): the same linear
front end with a 30 (m=3) or 70 (m=7) unit hidden layer.

Recipes (any value can be overridden by its flag):

``paper`` (the issue text): Adam, learning rate 1e-3, batch 64, constant
    rate, weight decay 0.1 on the linear layer only (Adam's L2 form,
    ``torch.optim.Adam(weight_decay=0.1)`` on that parameter group),
    data range [-1, 1], logits = the currents in nA (scale 1), no noise.
``ours``: AdamW (decoupled weight decay 0.1 on the linear layer), one-cycle
    schedule (peak 1e-2 for the linear weights, linear warm-up 10%, cosine
    down), batch 128, BatchNorm1d (affine) before the DNPU so each input
    fills its data range, data range [-2, 2] (two standard deviations), a
    learnable logit scale (init 0.1 per nA) and class bias, surrogate output
    noise (its test RMSE, 3.2 nA) during training; evaluation without noise.

Data: the 55k/5k/10k split of :func:`inmaterio.data.mnist.mnist_splits`
(seed 0), pixels in [-0.5, 0.5]. Model selection: the epoch with the best
validation accuracy; the test set is evaluated once, with those weights.

Training: ``--trainer own`` (default) is a plain loop (per-step LR schedule,
validation accuracy each epoch, checkpoint after every epoch in
``<out>/runs/<tag>/checkpoint.pt`` (not kept in git), so a rerun of the same
command resumes); ``--trainer gd`` uses :func:`inmaterio.training.gd.train_gd`
(constant rate only; its end-of-epoch pass over the whole training set is
included in its epoch time). Each run writes ``<out>/results/<tag>.json``
(kept in git) and the report (``<out>/RESULTS.md``, confusion matrices and
learning curves as PNG) is rebuilt from all result files after every run.
Runs are one process each, with ``--threads`` torch threads (no executor:
one training is not split into trials).

Commands (repository root; data in $INMATERIO_MNIST_DIR or --data-dir)::

    # the whole table, run after run (each resumes if interrupted), then the report: about an hour on 2 cores
    python benchmarks/dnpu_networks/mnist.py --data-dir ../shared/data/mnist --suite
    # its runs one by one
    python benchmarks/dnpu_networks/mnist.py --data-dir ../shared/data/mnist --inputs-per-node 3 --recipe paper --epochs 30
    python benchmarks/dnpu_networks/mnist.py --data-dir ../shared/data/mnist --inputs-per-node 7 --recipe paper --epochs 30
    python benchmarks/dnpu_networks/mnist.py --data-dir ../shared/data/mnist --inputs-per-node 3 --recipe ours --epochs 30
    python benchmarks/dnpu_networks/mnist.py --data-dir ../shared/data/mnist --inputs-per-node 7 --recipe ours --epochs 30
    python benchmarks/dnpu_networks/mnist.py --data-dir ../shared/data/mnist --inputs-per-node 3 --recipe paper --model relu --epochs 30
    python benchmarks/dnpu_networks/mnist.py --data-dir ../shared/data/mnist --inputs-per-node 7 --recipe paper --model relu --epochs 30
    python benchmarks/dnpu_networks/mnist.py --data-dir ../shared/data/mnist --inputs-per-node 3 --recipe ours --model relu --epochs 30
    python benchmarks/dnpu_networks/mnist.py --data-dir ../shared/data/mnist --inputs-per-node 7 --recipe ours --model relu --epochs 30
    # one epoch through train_gd, to compare epoch times
    python benchmarks/dnpu_networks/mnist.py --data-dir ../shared/data/mnist --inputs-per-node 3 --recipe paper --epochs 1 --trainer gd
    # only rebuild the report from the result files
    python benchmarks/dnpu_networks/mnist.py --report-only
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from inmaterio import __version__
from inmaterio.data.mnist import mnist_splits
from inmaterio.fileio import atomic_path, atomic_write_json, atomic_write_text
from inmaterio.nn.dnpu import DNPU
from inmaterio.processors import SurrogateProcessor
from inmaterio.surrogate import load_default_surrogate
from inmaterio.training.losses import cross_entropy
from inmaterio.training.metrics import accuracy, confusion_matrix

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "mnist"
INPUTS = {3: ("e0", "e3", "e4"), 7: ("e0", "e1", "e2", "e3", "e4", "e5", "e6")}
N_NODES = 10
PAPER = {("dnpu", 3): 94.7, ("dnpu", 7): 96.1, ("relu", 3): 94.5, ("relu", 7): 96.0}

#: The runs of the table (``--suite``): every recipe for both node sizes, the ReLU baselines, one train_gd epoch.
SUITE: list[list[str]] = [
    [*what, "--epochs", "1" if "gd" in what else "30"]
    for what in (
        ["--inputs-per-node", "3", "--recipe", "ours"],
        ["--inputs-per-node", "7", "--recipe", "ours"],
        ["--inputs-per-node", "3", "--recipe", "paper"],
        ["--inputs-per-node", "7", "--recipe", "paper"],
        ["--inputs-per-node", "3", "--recipe", "paper", "--model", "relu"],
        ["--inputs-per-node", "7", "--recipe", "paper", "--model", "relu"],
        ["--inputs-per-node", "3", "--recipe", "ours", "--model", "relu"],
        ["--inputs-per-node", "7", "--recipe", "ours", "--model", "relu"],
        ["--inputs-per-node", "3", "--recipe", "paper", "--trainer", "gd"],
    )
]

RECIPES: dict[str, dict[str, Any]] = {
    "paper": dict(
        optimizer="adam", lr=1e-3, control_lr=1e-3, batch_size=64, schedule="constant", weight_decay=0.1,
        batch_norm=False, data_range=1.0, logit_scale=1.0, learn_scale=False, noise=False,
    ),
    "ours": dict(
        optimizer="adamw", lr=1e-2, control_lr=1e-2, batch_size=128, schedule="onecycle", weight_decay=0.1,
        batch_norm=True, data_range=2.0, logit_scale=0.1, learn_scale=True, noise=True,
    ),
}


class Logits(nn.Module):
    """``scale * current_na + bias``: currents (nA) to logits; scale and bias fixed or learnable."""

    def __init__(self, scale: float, learnable: bool, n_classes: int = N_NODES) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(scale)), requires_grad=learnable)
        self.bias = nn.Parameter(torch.zeros(n_classes), requires_grad=learnable)

    def forward(self, current_na: torch.Tensor) -> torch.Tensor:
        return self.scale * current_na + self.bias


def build_model(args: argparse.Namespace, processor: SurrogateProcessor | None) -> nn.Module:
    m = args.inputs_per_node
    torch.manual_seed(args.seed)
    layers: list[nn.Module] = [nn.Flatten(), nn.Linear(784, N_NODES * m, bias=False)]
    if args.model == "relu":
        return nn.Sequential(*layers, nn.ReLU(), nn.Linear(N_NODES * m, N_NODES))
    if args.batch_norm:
        layers.append(nn.BatchNorm1d(N_NODES * m))
    d = args.data_range
    layers.append(DNPU(processor, N_NODES, INPUTS[m], (-d, d), seed=args.seed))
    layers.append(Logits(args.logit_scale, args.learn_scale))
    return nn.Sequential(*layers)


def make_optimizer(model: nn.Module, args: argparse.Namespace) -> torch.optim.Optimizer:
    """Weight decay on the linear layer (the first Linear) only; controls and the rest without."""
    linear = model[1].weight
    groups = [{"params": [linear], "weight_decay": args.weight_decay, "lr": args.lr, "name": "linear"}]
    rest = [p for p in model.parameters() if p.requires_grad and p is not linear]
    controls = [p for n, p in model.named_parameters() if p.requires_grad and n.endswith("controls")]
    others = [p for p in rest if not any(p is c for c in controls)]
    if controls:
        groups.append({"params": controls, "weight_decay": 0.0, "lr": args.control_lr, "name": "controls"})
    if others:
        groups.append({"params": others, "weight_decay": 0.0, "lr": args.lr, "name": "other"})
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[args.optimizer]
    return cls(groups)


def lr_factor(schedule: str, step: int, total: int) -> float:
    """Multiplier of the base learning rates at optimiser step ``step`` of ``total``."""
    if schedule == "constant":
        return 1.0
    t = min(step / max(total, 1), 1.0)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * t))
    warm = 0.1  # onecycle: linear warm-up from 4% over 10% of the steps, then cosine down to 0.01%
    if t < warm:
        return 0.04 + 0.96 * t / warm
    return 1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * (t - warm) / (1 - warm)))


def evaluate(model: nn.Module, processor: SurrogateProcessor | None, x: torch.Tensor, chunk: int = 5000) -> torch.Tensor:
    """Logits ``(n, 10)`` in eval mode, without gradients and without output noise."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            if processor is not None:
                with processor.noise_off():
                    return torch.cat([model(x[i : i + chunk]) for i in range(0, len(x), chunk)])
            return torch.cat([model(x[i : i + chunk]) for i in range(0, len(x), chunk)])
    finally:
        model.train(was)


def train_own(model, processor, data, args, run_dir: Path) -> dict[str, Any]:
    """Mini-batch loop with per-step schedule, per-epoch checkpoint and resume; keeps the best-val-accuracy weights."""
    opt = make_optimizer(model, args)
    base_lrs = [g["lr"] for g in opt.param_groups]
    n = len(data.x_train)
    steps_per_epoch = math.ceil(n / args.batch_size)
    total = steps_per_epoch * args.epochs
    generator = torch.Generator().manual_seed(args.seed)
    history: list[dict[str, Any]] = []
    best = {"val_accuracy": -1.0, "epoch": 0, "state": None}
    ckpt = run_dir / "checkpoint.pt"
    identity = {k: v for k, v in vars(args).items() if k not in ("out", "threads", "report_only", "trainer", "data_dir")}
    if ckpt.exists():
        saved = torch.load(ckpt, weights_only=True)
        if saved["identity"] != identity:
            sys.exit(f"checkpoint {ckpt} was made with other settings: {saved['identity']}; use another --out or delete it")
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        generator.set_state(saved["generator"])
        history, best = saved["history"], saved["best"]
        print(f"resuming {run_dir.name} after epoch {len(history)}")
    step = len(history) * steps_per_epoch
    for epoch in range(len(history) + 1, args.epochs + 1):
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=generator)
        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))  # noise / dropout draws
        model.train()
        total_loss = 0.0
        for start in range(0, n, args.batch_size):
            idx = perm[start : start + args.batch_size]
            f = lr_factor(args.schedule, step, total)
            for g, lr in zip(opt.param_groups, base_lrs):
                g["lr"] = lr * f
            loss = cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                for mod in model.modules():
                    if isinstance(mod, DNPU):
                        mod.constrain()
            total_loss += float(loss.detach()) * len(idx)
            step += 1
        train_s = time.perf_counter() - t0
        val_logits = evaluate(model, processor, data.x_val)
        val_acc = float(accuracy(val_logits, data.y_val))
        row = {
            "epoch": epoch,
            "train_loss": total_loss / n,
            "val_loss": float(cross_entropy(val_logits, data.y_val)),
            "val_accuracy": val_acc,
            "lr_factor": lr_factor(args.schedule, step, total),
            "train_s": train_s,
            "time_s": time.perf_counter() - t0,
        }
        history.append(row)
        if val_acc > best["val_accuracy"]:
            best = {"val_accuracy": val_acc, "epoch": epoch, "state": {k: v.clone() for k, v in model.state_dict().items()}}
        with atomic_path(ckpt) as tmp:
            torch.save(
                {"identity": identity, "model": model.state_dict(), "optimizer": opt.state_dict(),
                 "generator": generator.get_state(), "history": history, "best": best, "inmaterio_version": __version__},
                tmp,
            )
        print(
            f"epoch {epoch:3d}  loss {row['train_loss']:.4f}  val loss {row['val_loss']:.4f}  "
            f"val acc {100 * val_acc:.2f}%  ({train_s:.1f} s train, {row['time_s']:.1f} s epoch)",
            flush=True,
        )
    model.load_state_dict(best["state"])
    return {"history": history, "best_epoch": best["epoch"]}


def train_with_gd(model, processor, data, args, run_dir: Path) -> dict[str, Any]:
    """The same training through train_gd (constant rate; model selection by its validation loss)."""
    from inmaterio.training.gd import GDConfig, train_gd

    if args.schedule != "constant":
        sys.exit("--trainer gd has no per-step learning-rate schedule; use --schedule constant or --trainer own")
    config = GDConfig(
        optimizer=args.optimizer, learning_rate=args.lr, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
    )
    result = train_gd(
        model, cross_entropy, data.x_train, data.y_train, config,
        optimizer=lambda _params: make_optimizer(model, args),
        validation=(data.x_val, data.y_val),
        directory=run_dir,
        metrics={"val_accuracy": lambda out, y: float(accuracy(out, y))},
    )
    history = [dict(h, train_s=None) for h in result.history]
    for h in history:
        print(f"epoch {h['epoch']:3d}  loss {h['train_loss']:.4f}  val acc {100 * h['val_accuracy']:.2f}%  ({h['time_s']:.1f} s)")
    return {"history": history, "best_epoch": result.best_epoch}


def run_tag(args: argparse.Namespace, overrides: list[str]) -> str:
    tag = f"{args.model}-m{args.inputs_per_node}-{args.recipe}"
    if args.trainer == "gd":
        tag += "-gd"
    return tag + "".join(f"-{o}" for o in overrides)


# ---------------------------------------------------------------------------------------- report


def _md_confusion(cm: list[list[int]]) -> str:
    lines = ["| true \\ predicted | " + " | ".join(str(j) for j in range(len(cm))) + " |"]
    lines.append("| --- " * (len(cm) + 1) + "|")
    for i, row in enumerate(cm):
        lines.append(f"| **{i}** | " + " | ".join(f"**{v}**" if i == j else str(v) for j, v in enumerate(row)) + " |")
    return "\n".join(lines)


def write_report(out: Path) -> None:
    from matplotlib.figure import Figure

    from inmaterio.plots import save_figure

    results = []
    for f in sorted((out / "results").glob("*.json")):
        results.append(json.loads(f.read_text()))
    if not results:
        print(f"no result files in {out / 'results'}: the report was not written")
        return
    lines = [
        "# MNIST with 10 DNPUs",
        "",
        "Generated by `benchmarks/dnpu_networks/mnist.py` (see its docstring and `../../README.md`).",
        "Test accuracy on the 10,000 MNIST test images with the weights of the best validation epoch",
        "(55k training / 5k validation, seed 0); evaluated on the surrogate without output noise.",
        "Epoch times: wall time of the training pass over 55,000 images (`train s/epoch`) and of the whole",
        "epoch with its evaluation (`epoch s`), median over the run, one process with `threads` torch threads;",
        "the machine is a shared 2-core VM, so times vary with the other users' load.",
        "",
        "| network | inputs/node | recipe | trainer | epochs (best) | val acc | **test acc** | paper | train s/epoch | epoch s | threads | run |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    order = {"dnpu": 0, "relu": 1}
    results.sort(key=lambda r: (r["inputs_per_node"], order[r["model"]], r["recipe"], r["tag"]))
    for r in results:
        h = r["history"]
        train_s = [x["train_s"] for x in h if x.get("train_s") is not None]
        lines.append(
            f"| {r['model']} | {r['inputs_per_node']} | {r['recipe']} | {r['trainer']} | {len(h)} ({r['best_epoch']}) "
            f"| {100 * r['val_accuracy']:.2f}% | **{100 * r['test_accuracy']:.2f}%** | "
            f"{PAPER[(r['model'], r['inputs_per_node'])]}% | "
            f"{np.median(train_s) if train_s else float('nan'):.1f} | {np.median([x['time_s'] for x in h]):.1f} | "
            f"{r['threads']} | `{r['tag']}` |"
        )
    lines += ["", "## Commands", ""]
    for r in results:
        lines.append(f"- `{r['tag']}` ({r['wall_s'] / 60:.1f} min wall, started {r['started']}): `{r['command']}`")
        lines.append(f"  settings: {json.dumps(r['settings'], sort_keys=True)}")
    best_by_m: dict[int, dict] = {}
    for r in results:
        if r["model"] == "dnpu" and r["trainer"] == "own":
            m = r["inputs_per_node"]
            if m not in best_by_m or r["val_accuracy"] > best_by_m[m]["val_accuracy"]:
                best_by_m[m] = r
    for m, r in sorted(best_by_m.items()):
        lines += ["", f"## Confusion matrix, {m} inputs per node (`{r['tag']}`, test {100 * r['test_accuracy']:.2f}%)", ""]
        lines.append(_md_confusion(r["confusion"]))
        lines.append("")
        lines.append(f"![confusion m={m}](confusion_m{m}.png)")
        cm = np.array(r["confusion"])
        fig = Figure(figsize=(5, 4.3), layout="constrained")
        ax = fig.subplots()
        im = ax.imshow(np.log10(cm + 1), cmap="viridis")
        for i in range(10):
            for j in range(10):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=6, color="white" if i != j else "black")
        ax.set_xticks(range(10))
        ax.set_yticks(range(10))
        ax.set_xlabel("predicted digit")
        ax.set_ylabel("true digit")
        ax.set_title(f"10 DNPUs, {m} inputs/node: test {100 * r['test_accuracy']:.2f}%", fontsize=9)
        fig.colorbar(im, ax=ax, label="log10(count + 1)")
        save_figure(fig, out / f"confusion_m{m}.png")
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    for r in results:
        h = r["history"]
        ep = [x["epoch"] for x in h]
        (line,) = ax_acc.plot(ep, [100 * x["val_accuracy"] for x in h], label=r["tag"])
        ax_loss.plot(ep, [x["train_loss"] for x in h], color=line.get_color(), label=f"{r['tag']} train")
        ax_loss.plot(ep, [x["val_loss"] for x in h], color=line.get_color(), linestyle=":")
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy (solid train, dotted validation)")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("validation accuracy / %")
    ax_acc.set_ylim(88, 100)
    ax_acc.legend(fontsize=6)
    save_figure(fig, out / "learning_curves.png")
    lines += ["", "## Learning curves", "", "![learning curves](learning_curves.png)", ""]
    atomic_write_text(out / "RESULTS.md", "\n".join(lines) + "\n")
    print(f"report written to {out / 'RESULTS.md'}")


# ------------------------------------------------------------------------------------------ main


def parse(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help="MNIST directory (default: $INMATERIO_MNIST_DIR)")
    p.add_argument("--inputs-per-node", type=int, choices=(3, 7), default=3)
    p.add_argument("--recipe", choices=tuple(RECIPES), default="paper")
    p.add_argument("--model", choices=("dnpu", "relu"), default="dnpu", help="relu: the 30/70-hidden-unit baseline")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trainer", choices=("own", "gd"), default="own")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--suite", action="store_true",
                   help="run every run of the table (SUITE) in turn with --data-dir, --threads, --seed and --out, then the report")
    over = p.add_argument_group("recipe overrides (default: the recipe's value)")
    over.add_argument("--optimizer", choices=("adam", "adamw"))
    over.add_argument("--lr", type=float)
    over.add_argument("--control-lr", type=float)
    over.add_argument("--batch-size", type=int)
    over.add_argument("--schedule", choices=("constant", "cosine", "onecycle"))
    over.add_argument("--weight-decay", type=float)
    over.add_argument("--batch-norm", type=int, choices=(0, 1))
    over.add_argument("--data-range", type=float, help="data range (-d, d) mapped onto each input electrode's range")
    over.add_argument("--logit-scale", type=float, help="logits per nA")
    over.add_argument("--learn-scale", type=int, choices=(0, 1))
    over.add_argument("--noise", type=int, choices=(0, 1), help="surrogate output noise (test RMSE) while training")
    args = p.parse_args(argv)
    overrides = []
    for key, value in RECIPES[args.recipe].items():
        given = getattr(args, key)
        if given is None:
            setattr(args, key, value)
        else:
            given = type(value)(given)
            setattr(args, key, given)
            if given != value:
                overrides.append(f"{key.replace('_', '')}{given:g}" if not isinstance(given, str) else given)
    return args, overrides


def main(argv: list[str] | None = None) -> None:
    args, overrides = parse(argv)
    if args.report_only:
        write_report(args.out)
        return
    if args.suite:
        common = ["--threads", str(args.threads), "--seed", str(args.seed)]
        if args.out != DEFAULT_OUT:
            common += ["--out", str(args.out)]
        if args.data_dir is not None:
            common = ["--data-dir", str(args.data_dir), *common]
        for k, run in enumerate(SUITE, 1):
            print(f"--- suite run {k} of {len(SUITE)}: {' '.join(run)}", flush=True)
            main([*run, *common])
        return
    command = "python " + " ".join(shlex.quote(a) for a in [str(Path(sys.argv[0]))] + (sys.argv[1:] if argv is None else argv))
    torch.set_num_threads(args.threads)
    started = time.strftime("%Y-%m-%d %H:%M")
    t_start = time.perf_counter()
    data = mnist_splits(args.data_dir, seed=0)
    processor = None
    if args.model == "dnpu":
        processor = SurrogateProcessor(load_default_surrogate())
        if args.noise:
            processor.set_noise()
    model = build_model(args, processor)
    tag = run_tag(args, overrides)
    run_dir = args.out / "runs" / tag
    run_dir.mkdir(parents=True, exist_ok=True)
    result_path = args.out / "results" / f"{tag}.json"
    print(f"run {tag}: {model}")
    trainer = train_own if args.trainer == "own" else train_with_gd
    outcome = trainer(model, processor, data, args, run_dir)
    test_logits = evaluate(model, processor, data.x_test)
    val_logits = evaluate(model, processor, data.x_val)
    test_acc = float(accuracy(test_logits, data.y_test))
    cm = confusion_matrix(test_logits.argmax(-1), data.y_test, 10)
    settings = {k: getattr(args, k) for k in RECIPES[args.recipe]} if args.model == "dnpu" else {
        k: getattr(args, k) for k in ("optimizer", "lr", "batch_size", "schedule", "weight_decay")
    }
    result = {
        "tag": tag,
        "model": args.model,
        "inputs_per_node": args.inputs_per_node,
        "recipe": args.recipe,
        "trainer": args.trainer,
        "settings": settings,
        "best_epoch": outcome["best_epoch"],
        "val_accuracy": float(accuracy(val_logits, data.y_val)),
        "test_accuracy": test_acc,
        "confusion": cm.tolist(),
        "history": outcome["history"],
        "command": command,
        "started": started,
        "wall_s": time.perf_counter() - t_start,
        "threads": args.threads,
        "inmaterio_version": __version__,
        "torch_version": torch.__version__,
    }
    result_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(result_path, result)
    print(f"{tag}: test accuracy {100 * test_acc:.2f}% (best epoch {outcome['best_epoch']}, val {100 * result['val_accuracy']:.2f}%)")
    write_report(args.out)


if __name__ == "__main__":
    main()
