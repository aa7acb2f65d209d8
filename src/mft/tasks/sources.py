"""Where a dataset task's rows come from: local files (a file, a directory, a train/test mapping) or the hub.

Reading is separate from validating (`dataset.DatasetTask`): this module only turns a source into `Row`s,
each carrying where it came from (file and 1-based line, or hub split and row) so that any later error can
name it. An unreadable file or line is an `MftError` naming it here, before any row is interpreted.

A source has official splits when it is a {"train": ..., "test": ...} mapping, a directory whose files are
named or filed under `train*` / `test*`, or the hub; otherwise it is one pool, split by `base.pool_of`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mft.errors import MftError
from mft.tasks.base import SPLITS

DATA_SUFFIXES = (".jsonl", ".json", ".parquet")

DataSource = str | Path | Mapping[str, str | Path]


@dataclass(frozen=True)
class Row:
    """One dataset row and where it came from."""

    where: str  # for messages: "data/x.jsonl, line 3" / "openai/gsm8k (main) train row 3"
    key: str  # basis of the problem id, unique within the source: "x.jsonl:3" / "train-2"
    data: dict[str, Any] = field(repr=False)
    file: str = ""  # the file's key (its path relative to the given directory: "x.jsonl"); "" for the hub


# -- reading files -----------------------------------------------------------------------------------------


def _short(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _read_utf8(path: Path) -> str:
    """A text data file's contents; unreadable, or not UTF-8 (naming the first bad line), is an MftError."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise MftError(f"{path}: cannot read the file ({_short(exc)})") from exc
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise MftError(
            f"{path}, line {line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at byte {exc.start})",
            hint="save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8, or your editor's 'save with "
            "encoding')",
        ) from None


def read_rows(path: Path, key_prefix: str) -> list[Row]:
    """Rows of one .jsonl / .json / .parquet file; an unreadable file or line is an MftError naming it."""
    suffix = path.suffix.lower()
    rows: list[Row] = []
    if suffix == ".jsonl":
        text = _read_utf8(path)
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
            rows.append(Row(f"{path}, line {i}", f"{key_prefix}:{i}", obj, key_prefix))
    elif suffix == ".json":
        try:
            obj = json.loads(_read_utf8(path))
        except json.JSONDecodeError as exc:
            raise MftError(f"{path}, line {exc.lineno}: not valid JSON ({exc.msg})") from exc
        items = obj if isinstance(obj, list) else [obj]
        for i, item in enumerate(items, start=1):
            where = f"{path}, item {i}" if isinstance(obj, list) else str(path)
            if not isinstance(item, dict):
                raise MftError(f"{where}: expected a JSON object, got {type(item).__name__}")
            rows.append(
                Row(where, f"{key_prefix}:{i}" if isinstance(obj, list) else key_prefix, item, key_prefix)
            )
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
            rows.append(Row(f"{path}, row {i}", f"{key_prefix}:{i}", rec, key_prefix))
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
        """Whether the data has its own train/test files (else one pool, split by `base.pool_of`)."""
        return bool(self.splits)


def resolve_source(data: DataSource) -> Source:
    """Which files `data` names, per official split or as one pool; a bad path or layout is an MftError.

    Resolved before any file is read, so a mapping with wrong keys or a directory mixing split-named and
    unnamed files fails at once, naming the problem.
    """
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


# -- the hub -----------------------------------------------------------------------------------------------


def hub_rows(name: str, configs: tuple[str | None, ...], split: str, schema: str) -> list[Row]:
    """Rows of split `split` of hub dataset `name`, every config in turn (None: the default config).

    `schema` (the fields a task needs) goes into the hint for a local file when the hub is unreachable.
    """
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - datasets is a dependency
        raise MftError(
            "loading from the hub needs the 'datasets' package", hint="pip install datasets"
        ) from exc
    rows: list[Row] = []
    for config in configs:
        label = name + (f" ({config})" if config else "")
        try:
            ds = datasets.load_dataset(name, config, split=split)
        except Exception as exc:  # noqa: BLE001 - offline, missing, renamed...: one message for people
            raise MftError(
                f"could not load dataset {label!r} split {split!r} from the Hugging Face hub ({_short(exc)})",
                hint="run once with internet access (the download is cached), or pass a local "
                f"JSONL/parquet file with {schema} (data=PATH / --data PATH)",
            ) from exc
        prefix = f"{split}-{config}" if config else split
        for i, rec in enumerate(ds):
            rows.append(Row(f"{label} {split} row {i + 1}", f"{prefix}-{i}", dict(rec)))
    if not rows:
        raise MftError(f"dataset {name!r} split {split!r} has no rows")
    return rows
