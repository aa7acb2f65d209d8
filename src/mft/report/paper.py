"""The paper's reported accuracies, for the report's "paper vs this run" table.

Source: Subramaniam et al., "Multiagent Finetuning: Self Improvement with Diverse Reasoning Chains",
ICLR 2025, arXiv 2501.05707: Table 1 (main comparison), Table 2 (ablations), Table 4 (5 agents) and
Table 5 (Unique ID), transcribed from the paper's HTML rendering (arxiv.org/html/2501.05707). Each number
is the paper's accuracy in % with its standard error, over 500 test problems (GSM with GPT-3.5 in Table 1:
1000). A cell the paper does not report is absent, never filled in. Where Table 1 and Table 2 both report
Ours, Table 1's is kept (the two differ in some standard errors: Mistral arithmetic, GPT-3.5 GSM).

Table 7 (MMLU, LLaMA-3) and Table 3 (cooperative finetuning, GPT-3.5, 3 agents x 2 rounds: the base
society in the cooperative setting and after the method finetuned it, mft's rows Cooperative (base) and
Ours (cooperative)) are transcribed without standard errors: their rows have none. Not here: Table 6 (MATH
at every level: mft runs it with the math task's `levels: null`; its figures are not transcribed here).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mft import methods


@dataclass(frozen=True)
class PaperRow:
    table: str  # e.g. "Table 1"
    model: str  # the paper's name of the base model
    task: str  # mft's task name
    agents: int
    rounds: int
    method: str  # the paper's name of the row (`mft.methods.PAPER_NAMES` maps it to this project's row)
    mean: float  # accuracy in %
    se: float | None  # its standard error in % (None: the paper gives none)


# A run's base model is the paper's when its id matches (hub ids of the instruct models the paper names).
MODELS: dict[str, str] = {
    "GPT-3.5": r"gpt-3\.5",
    "Phi-3": r"phi-3",
    "Mistral": r"mistral-7b",
    "LLaMA-3": r"llama-3-8b",  # LLaMA-3 8B, not 3.1 or 3.2
}
TASKS = ("arithmetic", "gsm8k", "math")  # Tables 1, 2 and 4; Table 7 is MMLU

# Table 1 and 2 (3 agents x 2 rounds): method -> model -> (arithmetic, gsm8k, math), each (mean, se) or None
_T1: dict[str, dict[str, tuple[tuple[float, float] | None, ...]]] = {
    "Base": {
        "GPT-3.5": ((81.99, 0.99), (75.60, 1.36), (46.83, 2.25)),
        "Phi-3": ((88.30, 1.44), (81.20, 1.74), (45.60, 2.10)),
        "Mistral": ((10.80, 0.51), (35.60, 1.92), (16.60, 1.21)),
        "LLaMA-3": ((43.20, 2.22), (75.00, 1.94), (46.80, 2.23)),
    },
    "Majority": {
        "GPT-3.5": ((94.40, 1.03), (81.20, 1.24), (51.40, 2.23)),
        "Phi-3": ((91.80, 1.23), (81.80, 1.72), (47.20, 1.82)),
        "Mistral": ((14.80, 1.17), (41.80, 0.88), (16.80, 1.25)),
        "LLaMA-3": ((45.80, 2.23), (76.40, 1.90), (47.20, 2.23)),
    },
    "Debate": {
        "GPT-3.5": ((98.21, 0.54), (83.30, 1.18), (55.73, 2.21)),
        "Phi-3": ((96.20, 0.86), (84.40, 1.58), (53.40, 2.28)),
        "Mistral": ((19.60, 1.12), (52.60, 1.26), (18.20, 1.37)),
        "LLaMA-3": ((48.40, 2.24), (78.40, 1.44), (51.60, 2.23)),
    },
    "STaR": {  # no LLaMA-3 row in Table 1
        "GPT-3.5": ((98.38, 0.57), (83.60, 1.17), (53.00, 2.23)),
        "Phi-3": ((94.80, 0.99), (85.80, 1.21), (51.80, 2.06)),
        "Mistral": ((17.40, 0.97), (45.50, 1.54), (17.84, 1.23)),
    },
    "Majority FT": {
        "GPT-3.5": ((98.40, 0.56), (83.70, 1.17), (53.40, 2.23)),
        "Phi-3": ((93.80, 1.08), (82.20, 1.71), (48.60, 2.16)),
        "Mistral": ((16.40, 0.73), (44.60, 1.65), (18.91, 1.37)),
        "LLaMA-3": ((49.20, 2.24), (77.20, 1.87), (52.20, 2.23)),
    },
    "Ours": {
        "GPT-3.5": ((99.62, 0.28), (85.60, 1.11), (60.60, 2.18)),
        "Phi-3": ((99.40, 0.34), (88.60, 1.42), (58.80, 2.22)),
        "Mistral": ((22.60, 0.97), (58.40, 2.11), (22.50, 1.87)),
        "LLaMA-3": ((52.00, 2.24), (88.60, 1.77), (57.40, 2.21)),
    },
}
_T2: dict[str, dict[str, tuple[tuple[float, float] | None, ...]]] = {
    "Multiagent FT w/o summary": {
        "GPT-3.5": ((99.20, 0.40), (82.20, 1.72), (51.70, 2.24)),
        "Phi-3": ((98.80, 0.51), (84.40, 1.68), (55.00, 2.09)),
        "Mistral": ((21.80, 1.84), (56.00, 1.56), (20.20, 1.55)),
        "LLaMA-3": ((50.40, 2.24), (83.20, 1.67), (51.60, 2.23)),
    },
    "Multiagent FT w/o critic": {
        "GPT-3.5": ((99.20, 0.40), (83.80, 1.65), (50.80, 2.24)),
        "Phi-3": ((98.20, 0.62), (86.00, 1.58), (56.60, 2.22)),
        "Mistral": ((21.00, 1.82), (54.80, 1.60), (19.01, 1.59)),
        "LLaMA-3": ((48.60, 2.24), (82.20, 1.70), (50.50, 2.23)),
    },
    "Single-agent FT": {
        "GPT-3.5": ((99.00, 0.45), (83.60, 1.66), (56.80, 2.21)),
        "Phi-3": ((97.40, 0.71), (86.80, 1.51), (56.80, 2.21)),
        "Mistral": ((21.20, 1.83), (55.00, 2.22), (19.21, 1.69)),
        "LLaMA-3": ((48.00, 2.23), (84.40, 1.62), (52.40, 2.23)),
    },
    "Single-agent FT w/o debate": {
        "GPT-3.5": ((87.20, 1.49), (75.00, 1.93), (48.89, 2.23)),
        "Phi-3": ((92.20, 1.20), (83.60, 1.66), (50.20, 2.24)),
        "Mistral": ((17.71, 1.70), (51.20, 2.24), (17.22, 1.54)),
        "LLaMA-3": ((44.00, 2.22), (81.60, 1.73), (48.80, 2.24)),
    },
}
# Table 4 (5 agents x 2 rounds)
_T4: dict[str, dict[str, tuple[tuple[float, float] | None, ...]]] = {
    "Debate": {
        "GPT-3.5": ((99.40, 0.34), (85.40, 1.58), (58.20, 2.22)),
        "Phi-3": ((97.40, 0.71), (86.00, 1.55), (55.20, 2.22)),
    },
    "Majority FT": {
        "GPT-3.5": ((99.60, 0.28), (86.20, 1.54), (59.00, 2.19)),
        "Phi-3": ((95.80, 0.90), (84.80, 1.61), (53.20, 2.23)),
    },
    "Ours": {
        "GPT-3.5": ((100.00, 0.00), (88.20, 1.44), (62.80, 2.16)),
        "Phi-3": ((99.80, 0.20), (89.40, 1.38), (60.40, 2.19)),
    },
}
# Table 7 (LLaMA-3, MMLU, 3 agents x 2 rounds, finetuned on 500 problems, tested on 500 others): the
# accuracies as the paper states them, without standard errors
_T7 = {"Base": 60.4, "Majority": 61.8, "Debate": 65.8, "Majority FT": 63.4, "Ours": 68.8}
# Table 3 (GPT-3.5, 3 agents x 2 rounds, cooperative): row -> (arithmetic, gsm8k, math), without s.e.
_T3 = {"Cooperative (Base)": (96.6, 81.8, 53.6), "Cooperative (FT)": (98.8, 84.0, 56.4)}
# Table 5 (LLaMA-3, MATH, 3 agents x 2 rounds): Unique ID against the same run's Base, Debate and Ours
_T5 = {"Base": (46.80, 2.23), "Debate": (51.60, 2.23), "Unique ID": (50.80, 2.24), "Ours": (57.40, 2.21)}


def _rows() -> list[PaperRow]:
    out: list[PaperRow] = []
    for table, agents, data in (("Table 1", 3, _T1), ("Table 2", 3, _T2), ("Table 4", 5, _T4)):
        for method, per_model in data.items():
            for model, cells in per_model.items():
                for task, cell in zip(TASKS, cells, strict=True):
                    if cell is not None:
                        out.append(PaperRow(table, model, task, agents, 2, method, *cell))
    out += [PaperRow("Table 5", "LLaMA-3", "math", 3, 2, m, *c) for m, c in _T5.items() if m == "Unique ID"]
    out += [PaperRow("Table 7", "LLaMA-3", "mmlu", 3, 2, m, mean, None) for m, mean in _T7.items()]
    for method, means in _T3.items():
        out += [
            PaperRow("Table 3", "GPT-3.5", t, 3, 2, method, m, None)
            for t, m in zip(TASKS, means, strict=True)
        ]
    return out


ROWS: tuple[PaperRow, ...] = tuple(_rows())


def paper_model(model: str) -> str | None:
    """The paper's name of a run's base model, or None when the paper did not use it."""
    lowered = model.lower()
    return next((name for name, pattern in MODELS.items() if re.search(pattern, lowered)), None)


def matching_rows(model: str, task: str, agents: int, rounds: int) -> dict[str, PaperRow]:
    """The paper's rows for this setting (its model, task, N agents x M rounds), by this project's row key;
    a paper row with no counterpart here is left out."""
    name = paper_model(model)
    if name is None:
        return {}
    setting = (name, task, agents, rounds)
    return {
        methods.PAPER_NAMES[r.method]: r
        for r in ROWS
        if (r.model, r.task, r.agents, r.rounds) == setting and r.method in methods.PAPER_NAMES
    }
