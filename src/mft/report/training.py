"""The report's "Training signal" section: what an objective measured while it trained (GRPO's reward, KL to
its reference and the share of groups without a signal), per optimizer step and per iteration, beside the
iteration's test accuracy.

Read when the run is loaded (`curves.read_curves`: each agent's `train_stats.json`); a run whose objective
records no curves (SFT, DPO) has no such section.
"""

from __future__ import annotations

from statistics import fmean

from mft.report import plots
from mft.report.curves import Curves
from mft.report.document import Document, Heading, Para, Table
from mft.report.load import Run, Study

NOTE = (
    "From each agent's `train_stats.json`. Reward: the mean reward of the replies sampled in a batch (1 for "
    "a reply whose answer is the training debate's consensus; no ground truth), first and last sampled "
    "batch of the iteration, averaged over the agents of a role; KL: the mean per-token KL of the trained "
    "replies to the reference; no signal: the share of the groups whose replies all earned the same reward "
    "(left out of the loss). Test accuracy: the debate of the society the iteration produced."
)
MEASURES = {"reward": "mean reward of a sampled batch", "kl": "KL to the reference per token"}


def _role(slot: str) -> str:
    return "critics" if slot.startswith("critic_") else "generators"


def _mean_curve(per_slot: list[list[float]]) -> list[float]:
    """Step by step mean over the agents (each as long as its own finetune; the shorter end first)."""
    longest = max(len(c) for c in per_slot)
    return [fmean(c[i] for c in per_slot if i < len(c)) for i in range(longest)]


def training_section(doc: Document, study: Study) -> None:
    runs = [(r, r.training) for r in study.runs if r.training]
    if not runs:
        return
    doc.blocks.append(Heading(2, "Training signal"))
    doc.blocks.append(Para(NOTE))
    for run, curves in runs:
        doc.blocks.append(Heading(3, run.label))
        doc.blocks.append(_table(run, curves))
        for measure, title in MEASURES.items():
            lines = _lines(curves, measure)
            if lines:
                doc.add_plot(
                    f"{run.key}_{measure}",
                    plots.step_plot(lines, f"{run.label}: {title}", measure),
                    f"{run.label}: {title}, per optimizer step of each iteration (mean over a role's agents)",
                )


def _table(run: Run, curves: Curves) -> Table:
    header = ["iteration", "role", "reward (first batch)", "reward (last batch)", "KL (last)", "no signal"]
    rows = []
    for k, slots in sorted(curves.items()):
        for role in ("generators", "critics"):
            mine = [c for s, c in slots.items() if _role(s) == role and c.get("reward")]
            if not mine:
                continue
            first = fmean(c["reward"][0] for c in mine)
            last = fmean(c["reward"][-1] for c in mine)
            kl = fmean(c["kl"][-1] for c in mine if c.get("kl")) if any(c.get("kl") for c in mine) else None
            skipped = fmean(fmean(c["skipped_groups"]) for c in mine if c.get("skipped_groups"))
            rows.append(
                [
                    str(k),
                    role,
                    f"{first:.3f}",
                    f"{last:.3f}",
                    "n/a" if kl is None else f"{kl:.4f}",
                    f"{skipped:.0%}",
                ]
            )
    accuracy = {k: it.accuracy.get("debate") for k, it in run.iterations.items()}
    for row in rows:
        est = accuracy.get(int(row[0]))
        row.append("n/a" if est is None else f"{100 * est.mean:.1f}")
    return Table([*header, "test debate accuracy (%)"], rows)


def _lines(curves: Curves, measure: str) -> list[plots.Series]:
    out: list[plots.Series] = []
    for i, (k, slots) in enumerate(sorted(curves.items())):
        for role in ("generators", "critics"):
            mine = [c[measure] for s, c in slots.items() if _role(s) == role and c.get(measure)]
            if mine:
                ys = _mean_curve(mine)
                colour = plots.colour("", i)
                out.append(
                    plots.Series(
                        f"iteration {k} {role}", list(range(1, len(ys) + 1)), ys, [0.0] * len(ys), colour,
                        dashed=role == "critics",
                    )
                )  # fmt: skip
    return out
