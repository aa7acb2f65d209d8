"""Tasks over datasets (files or the Hugging Face hub), and the custom task for any JSONL file.

`DatasetTask` is the shared machinery of gsm8k, math and custom: find the rows (a file, a directory of
files, a {"train": ..., "test": ...} mapping, or a hub dataset), validate every row at load() -- a missing
field or an unparseable gold answer is one `MftError` naming the file, the 1-based line (or row) and the
field, before any model work -- then draw the split.

Splits. A source with official train/test splits (the hub datasets; a directory whose files are named or
filed under `train*` / `test*`; a mapping) gives train problems from train and test problems from test. A
single pool (one file, or a directory without split names) is divided into two disjoint pools by a keyed
hash of the question text and the split seed, exactly like `arithmetic.pool_of`, so train and test never
share a problem whatever their sizes. Within a pool, duplicate questions are dropped (first kept), the
pool is shuffled with a generator seeded by (task, seed, split), and the first `n` are returned: a smaller
split is a prefix of a larger one. `problem_hashes()` is a digest of exactly what was drawn, for manifests.

`CustomTask` runs the method on a user's JSONL without code: field names, answer type (number / latex /
exact string / multiple-choice letter) and optionally the prompt are settings.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mft.errors import MftError
from mft.records import Problem
from mft.tasks.answers import (
    answer_is_spans,
    boxed_spans,
    first_math_span,
    last_boxed,
    latex_equal,
    require_math_verify,
    strip_math_delimiters,
)
from mft.tasks.base import Task

DATA_SUFFIXES = (".jsonl", ".json", ".parquet")
DEFAULT_SIZE = 500  # the paper's 500 train + 500 test problems
SPLITS = ("train", "test")

DataSource = str | Path | Mapping[str, str | Path]


class BadGold(Exception):
    """A row's gold answer cannot be parsed (reason in the message). Turned into an MftError or a skip."""


@dataclass(frozen=True)
class Row:
    """One dataset row and where it came from."""

    where: str  # for messages: "data/x.jsonl, line 3" / "openai/gsm8k (main) train row 3"
    key: str  # basis of the problem id, unique within the source: "x.jsonl:3" / "train-2"
    data: dict[str, Any] = field(repr=False)


def pool_of_text(text: str, seed: int) -> str:
    """Which pool ('train' or 'test') a problem text belongs to, for this split seed."""
    digest = hashlib.blake2b(f"{seed}:{text.strip()}".encode(), digest_size=8).digest()
    return "test" if digest[0] % 2 == 0 else "train"


def problem_hashes(problems: Sequence[Problem]) -> str:
    """sha256 over the problems' (id, question, answer), in order: what a run manifest records."""
    h = hashlib.sha256()
    for p in problems:
        h.update(json.dumps([p.id, p.question, p.answer], ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


# -- reading files -----------------------------------------------------------------------------------------


def _short(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def read_rows(path: Path, key_prefix: str) -> list[Row]:
    """Rows of one .jsonl / .json / .parquet file; an unreadable file or line is an MftError naming it."""
    suffix = path.suffix.lower()
    rows: list[Row] = []
    if suffix == ".jsonl":
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise MftError(f"{path}: cannot read the file ({_short(exc)})") from exc
        # split on "\n" only: str.splitlines() would also cut at U+2028 etc., which JSON strings may hold
        for i, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise MftError(
                    f"{path}, line {i}: not valid JSON ({exc.msg})", hint="each line must be one JSON object"
                ) from exc
            if not isinstance(obj, dict):
                raise MftError(
                    f"{path}, line {i}: expected a JSON object, got {type(obj).__name__}",
                    hint="each line must be one JSON object with the task's fields",
                )
            rows.append(Row(f"{path}, line {i}", f"{key_prefix}:{i}", obj))
    elif suffix == ".json":
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise MftError(f"{path}: cannot read the file ({_short(exc)})") from exc
        except json.JSONDecodeError as exc:
            raise MftError(f"{path}, line {exc.lineno}: not valid JSON ({exc.msg})") from exc
        items = obj if isinstance(obj, list) else [obj]
        for i, item in enumerate(items, start=1):
            where = f"{path}, item {i}" if isinstance(obj, list) else str(path)
            if not isinstance(item, dict):
                raise MftError(f"{where}: expected a JSON object, got {type(item).__name__}")
            rows.append(Row(where, f"{key_prefix}:{i}" if isinstance(obj, list) else key_prefix, item))
    elif suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise MftError("reading parquet files needs pyarrow", hint="pip install pyarrow") from exc
        try:
            records = pq.read_table(path).to_pylist()
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types; one message for people
            raise MftError(f"{path}: cannot read the parquet file ({_short(exc)})") from exc
        for i, rec in enumerate(records, start=1):
            rows.append(Row(f"{path}, row {i}", f"{key_prefix}:{i}", rec))
    else:
        raise MftError(
            f"{path}: unsupported file type {path.suffix!r}", hint=f"use one of {', '.join(DATA_SUFFIXES)}"
        )
    if not rows:
        raise MftError(
            f"{path}: the file has no rows (empty file)", hint="point the task at a file with data"
        )
    return rows


_SPLIT_TOKEN = re.compile(r"[-_.\s]+")


def _split_label(rel: Path) -> str | None:
    """'train' / 'test' when a path names its split (a folder `train/`, a file `train-0000.parquet`,
    `gsm8k_test.jsonl`), else None."""
    labels = set()
    for part in (*rel.parts[:-1], rel.name[: -len(rel.suffix)] if rel.suffix else rel.name):
        tokens = {t.lower() for t in _SPLIT_TOKEN.split(part)}
        labels |= tokens & set(SPLITS)
    if len(labels) > 1:
        raise MftError(f"{rel}: the path names both 'train' and 'test'", hint="rename it to name one split")
    return labels.pop() if labels else None


def _data_files(path: Path) -> list[Path]:
    if not path.exists():
        raise MftError(
            f"data path {path} does not exist",
            hint=f"give an existing file or directory ({', '.join(DATA_SUFFIXES)})",
        )
    if path.is_file():
        if path.suffix.lower() not in DATA_SUFFIXES:
            raise MftError(
                f"{path}: unsupported file type {path.suffix!r}",
                hint=f"use one of {', '.join(DATA_SUFFIXES)}",
            )
        return [path]
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file()
        and p.suffix.lower() in DATA_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    if not files:
        raise MftError(f"{path}: no data files in the directory", hint=f"expected {', '.join(DATA_SUFFIXES)}")
    return files


@dataclass
class Source:
    """Resolved local data: files per official split, or one pool of files."""

    label: str
    pool: list[tuple[Path, str]] = field(default_factory=list)  # (file, key prefix)
    splits: dict[str, list[tuple[Path, str]]] = field(default_factory=dict)

    @property
    def official(self) -> bool:
        return bool(self.splits)


def resolve_source(data: DataSource) -> Source:
    if isinstance(data, Mapping):
        unknown = set(data) - set(SPLITS)
        if unknown or set(data) != set(SPLITS):
            raise MftError(
                f"data mapping must have exactly the keys 'train' and 'test', got {sorted(data)}",
                hint="give one file (it is split by hash) or a mapping {'train': PATH, 'test': PATH}",
            )
        src = Source(label=f"train={data['train']}, test={data['test']}")
        for split in SPLITS:
            root = Path(data[split])
            for f in _data_files(root):
                key = f.name if f == root else f.relative_to(root).as_posix()
                src.splits.setdefault(split, []).append((f, f"{split}/{key}"))
        return src
    root = Path(data)
    files = _data_files(root)
    if root.is_file():
        return Source(label=str(root), pool=[(root, root.name)])
    labelled = [(f, _split_label(f.relative_to(root))) for f in files]
    found = {label for _, label in labelled if label}
    if found == set(SPLITS):
        src = Source(label=str(root))
        for f, label in labelled:
            if label is None:
                raise MftError(
                    f"{f}: cannot tell which split this file belongs to (other files name 'train' / 'test')",
                    hint="name it train*/test* or move it out of the directory",
                )
            src.splits.setdefault(label, []).append((f, f.relative_to(root).as_posix()))
        return src
    return Source(label=str(root), pool=[(f, f.relative_to(root).as_posix()) for f in files])


# -- the shared dataset task -------------------------------------------------------------------------------


class DatasetTask(Task):
    """A task whose problems come from dataset rows. Subclasses set the fields and implement `parse_gold`.

    After `load()`: `skipped` is the number of rows of the drawn split's pool skipped for an unparseable
    gold answer (`skip_bad_gold=True`), `skipped_rows` where they were, and `load_info` a small dict
    (source, split, seed, sizes, skipped, problem hash) for the run manifest; `loads[split]` keeps the
    last one of each split.
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
        return {}

    def problem_id(self, row: Row) -> str:
        return row.key

    @property
    def schema(self) -> str:
        return f"fields {self.question_field!r}, {self.answer_field!r}"

    # -- loading -------------------------------------------------------------------------------------------
    def problem_hashes(self, problems: Sequence[Problem]) -> str:
        return problem_hashes(problems)

    def field_value(self, row: Row, name: str) -> Any:
        if name not in row.data or row.data[name] is None:
            present = ", ".join(sorted(str(k) for k in row.data)) or "none"
            raise MftError(
                f"{row.where}: missing field {name!r} (the row has: {present})",
                hint=f"every row needs {self.schema}",
            )
        return row.data[name]

    def question_text(self, row: Row) -> str:
        value = self.field_value(row, self.question_field)
        if not isinstance(value, str) or not value.strip():
            raise MftError(
                f"{row.where}: field {self.question_field!r} must be non-empty text, got {value!r:.60}",
                hint="fix or remove that row",
            )
        return value.strip()

    def _hub_rows(self, split: str) -> list[Row]:
        assert self.hub_name is not None
        try:
            import datasets
        except ImportError as exc:  # pragma: no cover - datasets is a dependency
            raise MftError(
                "loading from the hub needs the 'datasets' package", hint="pip install datasets"
            ) from exc
        rows: list[Row] = []
        for config in self.hub_configs:
            label = self.hub_name + (f" ({config})" if config else "")
            try:
                ds = datasets.load_dataset(self.hub_name, config, split=split)
            except Exception as exc:  # noqa: BLE001 - offline, missing, renamed...: one message for people
                raise MftError(
                    f"could not load dataset {label!r} split {split!r} from the Hugging Face hub "
                    f"({_short(exc)})",
                    hint="run once with internet access (the download is cached), or pass a local "
                    f"JSONL/parquet file with {self.schema} (data=PATH / --data PATH)",
                ) from exc
            prefix = f"{split}-{config}" if config else split
            for i, rec in enumerate(ds):
                rows.append(Row(f"{label} {split} row {i + 1}", f"{prefix}-{i}", dict(rec)))
        if not rows:
            raise MftError(f"dataset {self.hub_name!r} split {split!r} has no rows")
        return rows

    def _rows(self, split: str) -> tuple[list[Row], bool, str]:
        """(rows to validate, whether they are the official split, source label)."""
        if self.data is None:
            if self.hub_name is None:
                raise MftError(f"task {self.name!r} needs a data file", hint="pass data=PATH / --data PATH")
            configs = ",".join(c for c in self.hub_configs if c) or "default"
            return self._hub_rows(split), True, f"hub:{self.hub_name}[{configs}]"
        src = resolve_source(self.data)
        files = src.splits[split] if src.official else src.pool
        rows = [row for path, prefix in files for row in read_rows(path, prefix)]
        return rows, src.official, src.label

    def load(self, split: str, n: int | None = None, seed: int = 0) -> list[Problem]:
        if split not in SPLITS:
            raise MftError(f"unknown split {split!r}", hint="use 'train' or 'test'")
        if n is not None and n < 0:
            raise MftError(f"number of problems must be >= 0, got {n}")
        rows, official, label = self._rows(split)
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
            in_pool = official or pool_of_text(question, seed) == split
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
            if not in_pool:
                continue
            pid = self.problem_id(row)
            if pid in seen_ids:
                raise MftError(
                    f"{row.where}: problem id {pid!r} repeats {seen_ids[pid]}", hint="ids must be unique"
                )
            seen_ids[pid] = row.where
            if question in seen_questions:
                duplicates += 1
                continue
            seen_questions.add(question)
            meta = {"source": row.where, **self.row_meta(row)}
            candidates.append(Problem(id=pid, question=question, answer=gold, split=split, meta=meta))
        if n is not None and n > len(candidates):
            raise MftError(
                f"{label}: only {len(candidates)} {split} problems available for task {self.name!r}, "
                f"asked for {n}",
                hint=f"ask for at most {len(candidates)} (--limit)",
            )
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
            "problem_hashes": problem_hashes(problems),
        }
        return problems


# -- the custom task ---------------------------------------------------------------------------------------

ANSWER_TYPES = ("number", "latex", "exact", "choice")

PROMPTS = {
    # Du et al. 2023's prompts (number: GSM8K; choice: their multiple-choice prompt), latex: the MATH prompt.
    "number": "Can you solve the following math problem? {question} Explain your reasoning. Your final "
    "answer should be a single numerical number, in the form \\boxed{answer}, at the end of your response.",
    "latex": "Can you solve the following math problem? {question} Explain your reasoning. Your final answer "
    "should be in the form \\boxed{answer}, at the end of your response.",
    "exact": "Can you answer the following question? {question} Explain your reasoning. Your final answer "
    "should be in the form \\boxed{answer}, at the end of your response.",
    "choice": "Can you answer the following question as accurately as possible? {question} Explain your "
    "answer, putting the answer in the form (X) at the end of your response.",
}


def normalize_text(s: str) -> str:
    """Exact-string answers: unwrap \\text{}, drop quotes/markdown/end punctuation, casefold, one space."""
    s = strip_math_delimiters(s)
    s = re.sub(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}", r"\1", s)
    s = s.strip().strip("\"'`*_").strip()
    s = s.rstrip(".!?;:,").strip()
    return re.sub(r"\s+", " ", s).casefold()


class CustomTask(DatasetTask):
    """Any JSONL (or .json / .parquet, or a train/test directory) with a question and an answer field.

    Settings: `question_field`, `answer_field`, `answer_type` (number | latex | exact | choice), `id_field`
    (optional; default ids are file:line), `prompt` (optional; must contain `{question}`), `choices` (the
    letters allowed for answer_type=choice), `strict` (number only: no last-number fallback), `timeout_s`
    (latex only). The version records a digest of the settings that change prompts or scoring.
    """

    name = "custom"

    def __init__(
        self,
        data: DataSource | None = None,
        *,
        question_field: str = "question",
        answer_field: str = "answer",
        answer_type: str = "number",
        id_field: str | None = None,
        prompt: str | None = None,
        choices: str = "ABCDE",
        strict: bool = False,
        timeout_s: float = 5.0,
        skip_bad_gold: bool = False,
    ) -> None:
        super().__init__(data, skip_bad_gold=skip_bad_gold)
        if data is None:
            raise MftError("the custom task needs a data file", hint="pass data=PATH / --data PATH")
        if answer_type not in ANSWER_TYPES:
            raise MftError(
                f"unknown answer type {answer_type!r}", hint=f"choose one of: {', '.join(ANSWER_TYPES)}"
            )
        template = PROMPTS[answer_type] if prompt is None else prompt
        if "{question}" not in template:
            raise MftError("the custom prompt must contain '{question}'", hint="e.g. 'Solve: {question}'")
        letters = "".join(dict.fromkeys(c.upper() for c in choices if c.isalpha()))
        if answer_type == "choice" and not letters:
            raise MftError(f"choices must be letters, got {choices!r}", hint="e.g. choices='ABCD'")
        self.question_field = question_field
        self.answer_field = answer_field
        self.answer_type = answer_type
        self.id_field = id_field
        self.prompt = template
        self.choices = letters
        self.strict = strict
        self.timeout_s = timeout_s
        settings = [question_field, answer_field, answer_type, template, letters, strict]
        digest = hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:8]
        self.version = f"1-{answer_type}-{digest}"
        if answer_type == "latex":
            require_math_verify()
        if answer_type == "number":
            from mft.tasks.gsm8k import NumberAnswers

            self._numbers = NumberAnswers(strict=strict)
        letter_set = re.escape(self.choices) if self.choices else "A-Z"
        self._choice_paren = re.compile(rf"\(\s*([{letter_set}])\s*\)")
        self._choice_alone = re.compile(rf"^\(?\s*([{letter_set}])\s*(?:\)|[.,:;]|$)")

    @property
    def schema(self) -> str:
        return f"fields {self.question_field!r}, {self.answer_field!r}" + (
            f", {self.id_field!r}" if self.id_field else ""
        )

    def problem_id(self, row: Row) -> str:
        if self.id_field is None:
            return row.key
        return str(self.field_value(row, self.id_field))

    def parse_gold(self, value: Any, row: Row) -> str:
        if self.answer_type == "number":
            return self._numbers.parse_gold(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            raise BadGold("empty or not text")
        if self.answer_type == "latex":
            boxed = last_boxed(value)
            gold = strip_math_delimiters(boxed if boxed is not None else value)
            if not gold:
                raise BadGold("empty answer")
            return gold
        if self.answer_type == "exact":
            gold = value.strip()
            if not normalize_text(gold):
                raise BadGold("empty answer")
            return gold
        letter = self._letter(value.strip())
        if letter is None:
            raise BadGold(f"not one of the letters {self.choices}")
        return letter

    def question_prompt(self, problem: Problem) -> str:
        return self.prompt.replace("{question}", problem.question)

    def _letter(self, text: str) -> str | None:
        text = strip_math_delimiters(re.sub(r"\\(?:text|textbf|mathrm)\{([^{}]*)\}", r"\1", text)).strip()
        m = self._choice_alone.match(text.upper() if len(text) <= 4 else text)
        return m.group(1) if m else None

    def extract_answer(self, response: str) -> str | None:
        if self.answer_type == "number":
            return self._numbers.extract(response)
        if self.answer_type == "latex":
            from mft.tasks.math_task import extract_latex_answer

            return extract_latex_answer(response)
        if self.answer_type == "exact":
            boxed = last_boxed(response)
            if boxed is not None:
                return boxed.strip() or None
            spans = answer_is_spans(response)
            if spans:
                return first_math_span(spans[-1]) or None
            return None
        # choice: \boxed{B}, then 'answer is (B)' / 'answer: B', then the last '(B)'
        for span in reversed(boxed_spans(response)):
            letter = self._letter(span)
            if letter:
                return letter
        for span in reversed(answer_is_spans(response)):
            paren = self._choice_paren.search(span)
            if paren:
                return paren.group(1)
            letter = self._letter(span)
            if letter:
                return letter
        hits = self._choice_paren.findall(response)
        return hits[-1] if hits else None

    def is_equivalent(self, a: str | None, b: str | None) -> bool:
        if a is None or b is None:
            return False
        if self.answer_type == "number":
            return self._numbers.equal(a, b)
        if self.answer_type == "latex":
            return latex_equal(a, b, self.timeout_s)
        if self.answer_type == "exact":
            na = normalize_text(a)
            return bool(na) and na == normalize_text(b)
        la, lb = self._letter(a), self._letter(b)
        return la is not None and la == lb
