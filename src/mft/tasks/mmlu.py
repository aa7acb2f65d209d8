"""MMLU (Hendrycks et al. 2021): four-choice questions in 57 subjects, as the paper's Table 7 uses them.

Sources, one pool each (MMLU's test questions), divided into the train and test pools by `base.pool_of`
keyed by the question text and the split seed, so the 500 training and 500 test problems are disjoint:
- the hub dataset `cais/mmlu`, config `all`, split `test` (fields `question`, `subject`, `choices`, `answer`
  as an index), through `datasets`;
- local files in that layout (JSONL, JSON or parquet), with `--data`: the questions of the `test` files
  where the data has train/test files (MMLU's own test questions), else every row;
- the original release's CSV files (`data/test/<subject>_test.csv`, no header: question, A, B, C, D, the
  answer letter), with `--data` naming the directory (its `test/` folder where it has one) or one file;
  the subject comes from the file name.
A problem's question lists its choices as Du et al.'s MMLU prompt does ("...: A) x, B) y, C) z, D) w"),
and its `meta` records its subject. The prompts are Du et al.'s (`gen_mmlu.py`), character for character;
answers are read by `choice.ChoiceAnswers` (Du et al. read the last "(X)"; this reads that and more).
Du et al. drew 100 questions by picking a subject file, then a row; this shuffles the whole pool (every
question equally likely), and reads every CSV row (their `pd.read_csv` took each file's first row as a
header).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from mft.errors import MftError
from mft.records import Problem
from mft.tasks.base import paper_summarize_prompt
from mft.tasks.choice import ChoiceAnswers
from mft.tasks.dataset import DatasetTask
from mft.tasks.sources import DataSource, Row, hub_rows, read_rows, resolve_source

ANSWER_FORM = "Put your answer in the form (X) at the end of your response."
QUESTION = (
    "Can you answer the following question as accurately as possible? {question} Explain your answer, "
    "putting the answer in the form (X) at the end of your response."
)
DEBATE_PREFIX = "These are the solutions to the problem from other agents: "
DEBATE_ITEM = "\n\n One agent solution: ```{response}```"
DEBATE_SUFFIX = (
    "\n\n Using the reasoning from other agents as additional advice, can you give an updated answer? "
    "Examine your solution and that other agents step by step. " + ANSWER_FORM
)
# Du et al. have no summary variant: their debate prompt with the summary (the paper's framing) in place of
# the solutions
SUMMARY_DEBATE = "Here is a summary of solutions from several other agents: {summary}" + DEBATE_SUFFIX
SELF_CHECK = (
    "Can you double check that your answer is correct. Put your final answer in the form (X) at the end of "
    "your response."
)


class MMLUTask(DatasetTask):
    """MMLU. `data`: None (the hub) or local files (module docstring)."""

    name = "mmlu"
    version = "1"
    question_field = "question"
    answer_field = "answer"
    hub_name = "cais/mmlu"
    hub_configs = ("all",)
    max_new_tokens = 2048  # the paper's response budget with open models

    def __init__(self, data: DataSource | None = None, *, skip_bad_gold: bool = False) -> None:
        super().__init__(data, skip_bad_gold=skip_bad_gold)
        self.answers = ChoiceAnswers("ABCD")

    @property
    def schema(self) -> str:
        return "fields 'question', 'choices' (four texts), 'answer' (an index or a letter), 'subject'"

    # -- rows -------------------------------------------------------------------------------------------
    def _rows(self, split: str) -> tuple[list[Row], bool, str]:
        """Every split reads the same pool (MMLU's test questions); `load` divides it by `pool_of`."""
        if self.data is None:
            return (
                hub_rows(self.hub_name or "", self.hub_configs, "test", self.schema),
                False,
                "hub:cais/mmlu",
            )
        path = Path(str(self.data)) if not isinstance(self.data, dict) else None
        if path is not None and (path.suffix == ".csv" or (path.is_dir() and any(path.rglob("*.csv")))):
            return _csv_rows(path), False, str(path)
        src = resolve_source(self.data)
        files = src.splits["test"] if src.official else src.pool
        return [row for file, prefix in files for row in read_rows(file, prefix)], False, src.label

    def _options(self, row: Row) -> list[str]:
        options = self.field_value(row, "choices")
        if not isinstance(options, list) or len(options) != 4:
            raise MftError(
                f"{row.where}: field 'choices' must list the 4 options, got {options!r:.60}",
                hint="an MMLU row has four choices, in letter order",
            )
        return [str(o) for o in options]

    def question_text(self, row: Row) -> str:
        return self.answers.render(super().question_text(row), self._options(row))

    def parse_gold(self, value: Any, row: Row) -> str:
        return self.answers.parse_gold(value, len(self._options(row)))

    def row_meta(self, row: Row) -> dict[str, Any]:
        return {"subject": str(row.data.get("subject") or "")}

    # -- prompts and scoring -------------------------------------------------------------------------------
    def question_prompt(self, problem: Problem) -> str:
        return QUESTION.replace("{question}", problem.question)

    def debate_prompt(self, problem: Problem, other_responses: list[str]) -> str:
        if not other_responses:
            return SELF_CHECK
        return (
            DEBATE_PREFIX
            + "".join(DEBATE_ITEM.replace("{response}", r) for r in other_responses)
            + DEBATE_SUFFIX
        )

    def summarize_prompt(self, problem: Problem, other_responses: list[str]) -> str:
        return paper_summarize_prompt(other_responses)

    def summary_debate_prompt(self, problem: Problem, summary: str) -> str:
        return SUMMARY_DEBATE.replace("{summary}", summary)

    def extract_answer(self, response: str) -> str | None:
        return self.answers.extract(response)

    def is_equivalent(self, a: str | None, b: str | None) -> bool:
        return a is not None and b is not None and a.strip().upper() == b.strip().upper()


def _csv_rows(path: Path) -> list[Row]:
    """The original release's CSV rows (no header): question, four choices, the answer letter."""
    if path.is_dir():
        root = path / "test" if (path / "test").is_dir() else path
        files = sorted(root.rglob("*.csv"))
    else:
        files = [path]
    rows = []
    for file in files:
        subject = file.stem.removesuffix("_test").removesuffix("_val").removesuffix("_dev")
        try:
            with file.open(encoding="utf-8", newline="") as f:
                records = list(csv.reader(f))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise MftError(
                f"{file}: cannot read it as CSV ({exc})", hint="MMLU's CSV files are UTF-8"
            ) from exc
        for i, rec in enumerate(records, start=1):
            if len(rec) != 6:
                raise MftError(
                    f"{file}, line {i}: {len(rec)} columns, not 6",
                    hint="MMLU's CSV rows are: question, A, B, C, D, answer letter (no header)",
                )
            data = {"question": rec[0], "choices": rec[1:5], "answer": rec[5], "subject": subject}
            rows.append(Row(f"{file}, line {i}", f"{file.name}:{i}", data, file.name))
    if not rows:
        raise MftError(
            f"{path}: no MMLU CSV rows found", hint="point --data at MMLU's data/ directory or a CSV"
        )
    return rows
