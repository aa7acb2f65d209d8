"""The shared machinery of the dataset tasks (gsm8k, math, custom): validate rows, then draw a split.

`DatasetTask` gets rows from `sources` (a file, a directory of files, a {"train": ..., "test": ...} mapping,
or a hub dataset) and validates every row at load() -- a missing field or an unparseable gold answer is one
`MftError` naming the file, the 1-based line (or row) and the field, before any model work -- then draws the
split.

Splits. A source with official train/test splits gives train problems from train and test problems from
test. A single pool (one file, or a directory without split names) is divided into two disjoint pools by
`base.pool_of` keyed by the question text, the same keyed split as arithmetic's, so train and test never
share a problem whatever their sizes. Within a pool, duplicate questions are dropped (first kept), the pool
is shuffled with a generator seeded by (task, seed, split), and the first `n` are returned: a smaller split
is a prefix of a larger one.
"""

from __future__ import annotations

import random
from typing import Any

from mft.errors import MftError
from mft.records import Problem
from mft.tasks.base import SPLITS, BadGold, PoolTooSmall, Task, pool_of
from mft.tasks.sources import DataSource, Row, hub_rows, read_rows, resolve_source

DEFAULT_SIZE = 500  # the paper's 500 train + 500 test problems


class DatasetTask(Task):
    """A task whose problems come from dataset rows. Subclasses set the fields and implement `parse_gold`.

    After `load()`: `skipped` is the number of rows of the drawn split's pool skipped for an unparseable
    gold answer (`skip_bad_gold=True`), `skipped_rows` where they were, and `load_info` a small dict
    (source, split, seed, sizes, skipped) for the run manifest; `loads[split]` keeps the last one of each
    split. The drawn problems are not in it: a run's manifest records a hash of each
    (`records.problem_hashes`).
    """

    question_field: str = "question"
    answer_field: str = "answer"
    # Hub source (None: this task only reads local data). Configs None = the dataset's default config.
    hub_name: str | None = None
    hub_configs: tuple[str | None, ...] = (None,)

    def __init__(self, data: DataSource | None = None, *, skip_bad_gold: bool = False) -> None:
        self.data = data
        self.skip_bad_gold = skip_bad_gold
        self.skipped = 0
        self.skipped_rows: list[str] = []
        self.load_info: dict[str, Any] = {}  # of the last load()
        self.loads: dict[str, dict[str, Any]] = {}  # of the last load() of each split

    # -- hooks ---------------------------------------------------------------------------------------------
    def parse_gold(self, value: Any, row: Row) -> str:
        """The gold answer (canonical text) from the answer field's value; raise BadGold(reason) if none."""
        raise NotImplementedError

    def keep(self, row: Row) -> bool:
        """Whether a (valid) row is a candidate problem at all (e.g. MATH's level filter)."""
        return True

    def row_meta(self, row: Row) -> dict[str, Any]:
        """Extra Problem.meta from a row (e.g. MATH's level and subject), kept for per-group reports."""
        return {}

    def problem_id(self, row: Row) -> str:
        """The problem's id: by default where the row is (file:line / split-row), stable across runs."""
        return row.key

    @property
    def schema(self) -> str:
        """The fields a row needs, in words: for error hints that say how to fix a file."""
        return f"fields {self.question_field!r}, {self.answer_field!r}"

    # -- loading -------------------------------------------------------------------------------------------
    # with official splits, refuse an id found in both (custom data: a user's files may share a problem)
    ids_unique_across_splits: bool = False

    def _ids(self, split: str) -> dict[str, str]:
        """Problem id -> where, for every row of an official split (its first row of each question)."""
        rows, _, _ = self._rows(split)
        out: dict[str, str] = {}
        seen: set[str] = set()
        for row in rows:
            question = self.question_text(row)
            if self.keep(row) and question not in seen:
                seen.add(question)
                out.setdefault(self.problem_id(row), row.where)
        return out

    def field_value(self, row: Row, name: str) -> Any:
        """Field `name` of `row`; a missing or null field is an MftError naming the row and what it has."""
        if name not in row.data or row.data[name] is None:
            present = ", ".join(sorted(str(k) for k in row.data)) or "none"
            raise MftError(
                f"{row.where}: missing field {name!r} (the row has: {present})",
                hint=f"every row needs {self.schema}",
            )
        return row.data[name]

    def question_text(self, row: Row) -> str:
        """The row's question, stripped (the text that keys its pool and de-duplicates it); must be text."""
        value = self.field_value(row, self.question_field)
        if not isinstance(value, str) or not value.strip():
            raise MftError(
                f"{row.where}: field {self.question_field!r} must be non-empty text, got {value!r:.60}",
                hint="fix or remove that row",
            )
        return value.strip()

    def _rows(self, split: str) -> tuple[list[Row], bool, str]:
        """(rows to validate, whether they are the official split, source label)."""
        if self.data is None:
            if self.hub_name is None:
                raise MftError(f"task {self.name!r} needs a data file", hint="pass data=PATH / --data PATH")
            configs = ",".join(c for c in self.hub_configs if c) or "default"
            rows = hub_rows(self.hub_name, self.hub_configs, split, self.schema)
            return rows, True, f"hub:{self.hub_name}[{configs}]"
        src = resolve_source(self.data)
        files = src.splits[split] if src.official else src.pool
        rows = [row for path, prefix in files for row in read_rows(path, prefix)]
        return rows, src.official, src.label

    def load(self, split: str, n: int | None = None, seed: int = 0) -> list[Problem]:
        """`n` problems of `split` (None: up to DEFAULT_SIZE), after validating every row read (see the
        module docstring for how the split is drawn); records what was drawn in `load_info`/`loads`."""
        if split not in SPLITS:
            raise MftError(f"unknown split {split!r}", hint="use 'train' or 'test'")
        if n is not None and n < 0:
            raise MftError(f"number of problems must be >= 0, got {n}")
        rows, official, label = self._rows(split)
        other_split = SPLITS[1 - SPLITS.index(split)]
        other_ids = self._ids(other_split) if official and self.ids_unique_across_splits else {}
        candidates: list[Problem] = []
        skipped: list[str] = []
        seen_questions: set[str] = set()
        seen_ids: dict[str, str] = {}
        duplicates = 0
        for row in rows:
            # every row read is validated, whichever pool it falls in: errors surface at the first load
            question = self.question_text(row)
            value = self.field_value(row, self.answer_field)
            if not self.keep(row):  # filtered out (e.g. MATH level): its gold answer is never needed
                continue
            # keyed by the question text, already stripped by question_text()
            in_pool = official or pool_of(question, seed) == split
            try:
                gold = self.parse_gold(value, row)
            except BadGold as bad:
                if not self.skip_bad_gold:
                    raise MftError(
                        f"{row.where}: cannot parse the gold answer in field {self.answer_field!r} ({bad}): "
                        f"{str(value)[-80:]!r}",
                        hint="fix or remove that row, or skip such rows (skip_bad_gold=True)",
                    ) from None
                if in_pool:
                    skipped.append(row.where)
                continue
            if question in seen_questions:  # the same question again: the first row is the problem
                duplicates += int(in_pool)
                continue
            seen_questions.add(question)
            # ids are unique over every row read, both pools: no id can name a train and a test problem
            pid = self.problem_id(row)
            if pid in seen_ids:
                raise MftError(
                    f"{row.where}: problem id {pid!r} repeats {seen_ids[pid]}",
                    hint="ids must be unique in the whole data (train and test alike): change one of them",
                )
            seen_ids[pid] = row.where
            if official and self.ids_unique_across_splits and pid in other_ids:
                raise MftError(
                    f"{row.where}: problem id {pid!r} is also in the {other_split} split ({other_ids[pid]})",
                    hint="a problem belongs to one split only: remove it from one of them (or change its id)",
                )
            if not in_pool:
                continue
            meta = {"source": row.where, **self.row_meta(row)}
            candidates.append(Problem(id=pid, question=question, answer=gold, split=split, meta=meta))
        if n is not None and n > len(candidates):
            raise PoolTooSmall(label, split, len(candidates), n, self.name)
        random.Random(f"{self.name}:{seed}:{split}").shuffle(candidates)
        problems = candidates[: min(DEFAULT_SIZE, len(candidates)) if n is None else n]
        self.skipped = len(skipped)
        self.skipped_rows = skipped
        self.load_info = self.loads[split] = {
            "task": self.name,
            "task_version": self.version,
            "source": label,
            "official_splits": official,
            "split": split,
            "split_seed": seed,
            "pool_size": len(candidates),
            "n": len(problems),
            "skipped_bad_gold": len(skipped),
            "duplicate_questions": duplicates,
        }
        return problems
