"""What the report and the comparison plot, from loaded studies: the lines, and the run chosen for a chart.

The plots module draws; this one decides which numbers a line has and which run a chart is about.
"""

from __future__ import annotations

from mft import methods
from mft.report import plots
from mft.report.load import Run, Study, with_base
from mft.report.tables import agent_order

# The paper's method and its ablations: the methods that finetune one model per agent, in the table's order
# (Ours first). The dataset-size chart and the comparison's accuracy plot are about the first one present.
OURS_FAMILY: tuple[str, ...] = tuple(m.key for m in methods.METHODS if m.slots != "one_model")


def ours_run(study: Study) -> Run | None:
    """The study's run of the paper's method (or, without one, of its first ablation present)."""
    return next((r for key in OURS_FAMILY for r in study.runs if r.key == key), None)


def accuracy_series(study: Study, run: Run, label: str, colour: str) -> plots.Series:
    """The run's accuracy in % per iteration (from the shared base on), ± 1 standard error, in the reading
    its table row shows (the debate; Majority FT's majority vote)."""
    its = with_base(run, study)
    acc = [it.accuracy[methods.reading_of(run.key)] for it in its.values()]
    return plots.Series(label, list(its), [100 * a.mean for a in acc], [100 * a.err for a in acc], colour)


def diversity_series(study: Study, metric: str) -> list[plots.Series]:
    """One line per run that measured `metric`, unscaled, ± 1 standard error."""
    series = []
    for i, r in enumerate(study.runs):
        if not any(metric in it.diversity for it in r.iterations.values()):
            continue  # a run without its own measurements gets no line (not even the shared base)
        its = {k: it.diversity[metric] for k, it in with_base(r, study).items() if metric in it.diversity}
        if its:
            series.append(
                plots.Series(
                    r.label,
                    list(its),
                    [e.mean for e in its.values()],
                    [e.err for e in its.values()],
                    plots.colour(r.key, i),
                )
            )
    return series


def kl_agent_series(study: Study, run: Run) -> list[plots.Series]:
    """The run's KL from the base model per agent (`gen_<n>`, `critic_<n>`), one line each, ± 1 s.e."""
    its = with_base(run, study)
    agents = sorted({a for it in its.values() for a in it.kl_agents}, key=agent_order)
    series = []
    for i, a in enumerate(agents):
        points = {k: it.kl_agents[a] for k, it in its.items() if a in it.kl_agents}
        series.append(
            plots.Series(
                a,
                list(points),
                [e.mean for e in points.values()],
                [e.err for e in points.values()],
                plots.colour(a, i),
            )
        )
    return series


def accuracy_vs_diversity(study: Study, metric: str) -> list[plots.XYSeries]:
    """Per run that measured `metric`: (diversity, debate accuracy in %) at each iteration, ± 1 s.e."""
    series = []
    for i, r in enumerate(study.runs):
        if not any(metric in it.diversity for it in r.iterations.values()):
            continue
        its = [it for it in with_base(r, study).values() if metric in it.diversity]
        series.append(
            plots.XYSeries(
                r.label,
                [it.diversity[metric].mean for it in its],
                [100 * it.accuracy["debate"].mean for it in its],
                [it.diversity[metric].err for it in its],
                [100 * it.accuracy["debate"].err for it in its],
                [str(it.k) for it in its],
                plots.colour(r.key, i),
            )
        )
    return series


def dynamics_series(study: Study) -> list[plots.Series]:
    """Per method with a multi-round test debate: the share of right round-1 answers turned wrong (solid) and
    of wrong ones turned right (dashed, same colour), in %, per iteration, iteration 0 from the shared base;
    no error bars."""
    out: list[plots.Series] = []
    for i, run in enumerate(study.runs):
        its = {k: it.changes for k, it in with_base(run, study).items() if it.changes is not None}
        if not its:
            continue
        c = plots.colour(run.key, i)
        broken = [100 * ch.broken for ch in its.values()]
        fixed = [100 * ch.fixed for ch in its.values()]
        out.append(plots.Series(f"{run.label}: right -> wrong", list(its), broken, [0.0] * len(its), c))
        out.append(plots.Series(f"{run.label}: wrong -> right", list(its), fixed, [0.0] * len(its), c, True))
    return out
