"""`mft report` / `mft compare`: tables, plots and HTML from canned run files (tests/fixtures/report/).

The fixtures are small hand-written JSON files in exactly the shape the pipeline writes:
- arithmetic/: a reproduce directory with ours, ours_no_critic, single_ft and majority_ft runs (2 iterations;
  no star, no ours_no_summary; majority_ft has no iteration 0 and no `usage`; diversity for ours (all six
  metrics, with the per-agent KL from the base) and single_ft (consensus, agreement)).
- gsm8k/: a reproduce directory with ours and single_ft, no diversity files.
The expected tables below are written by hand from those numbers.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mft.cli import main
from mft.errors import MftError
from mft.report import build_report, load, methods_table, write_compare, write_report
from mft.report.document import table_markdown
from mft.report.series import accuracy_vs_diversity, kl_agent_series

FIXTURES = Path(__file__).parent.parent / "fixtures" / "report"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# From arithmetic/*/iter_*/eval/results.json: Base / Majority / Debate = ours iter_0 single / majority /
# debate (0.412±0.018, 0.456±0.0222, 0.498±0.0233); each method = its iter_2 debate reading:
# ours 0.576±0.0208, no_critic 0.541±0.0189, single 0.507±0.0236; but Majority FT = its iter_2 majority
# reading 0.50±0.0224 (its debate reading is 0.533), and Single-agent FT (no debate) = single's iter_2
# single reading 0.46±0.0223.
EXPECTED_ARITHMETIC = """\
| method | arithmetic |
|---|---:|
| Base | 41.2 ± 1.8 |
| Majority | 45.6 ± 2.2 |
| Debate | 49.8 ± 2.3 |
| Majority FT | 50.0 ± 2.2 |
| Ours | 57.6 ± 2.1 |
| Ours (no critics) | 54.1 ± 1.9 |
| Single-agent FT | 50.7 ± 2.4 |
| Single-agent FT (no debate) | 46.0 ± 2.2 |"""

# gsm8k: ours iter_0 0.652±0.021, 0.70±0.0207, 0.724±0.02; ours iter_2 0.768±0.0189;
# single iter_2 0.731±0.0198 (debate), 0.67±0.021 (single).
EXPECTED_COMPARE = """\
| method | arithmetic | gsm8k |
|---|---:|---:|
| Base | 41.2 ± 1.8 | 65.2 ± 2.1 |
| Majority | 45.6 ± 2.2 | 70.0 ± 2.1 |
| Debate | 49.8 ± 2.3 | 72.4 ± 2.0 |
| Majority FT | 50.0 ± 2.2 | n/a |
| Ours | 57.6 ± 2.1 | 76.8 ± 1.9 |
| Ours (no critics) | 54.1 ± 1.9 | n/a |
| Single-agent FT | 50.7 ± 2.4 | 73.1 ± 2.0 |
| Single-agent FT (no debate) | 46.0 ± 2.2 | 67.0 ± 2.1 |"""

EXPECTED_SINGLE_RUN = """\
| method | arithmetic |
|---|---:|
| Base | 41.2 ± 1.8 |
| Majority | 45.6 ± 2.2 |
| Debate | 49.8 ± 2.3 |
| Ours | 57.6 ± 2.1 |"""

DIVERSITY_PLOTS = ["consensus", "agreement", "embedding_dissimilarity", "held_out_nll", "kl_from_base", "kl"]


def copy_fixture(tmp: Path, name: str, as_name: str | None = None) -> Path:
    dst = tmp / (as_name or name)
    shutil.copytree(FIXTURES / name, dst)
    return dst


@pytest.fixture(scope="module")
def arith_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The arithmetic reproduce directory, copied and reported once for the tests that only read."""
    root = copy_fixture(tmp_path_factory.mktemp("report"), "arithmetic")
    write_report(root)
    return root


def _rows(table_md: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in table_md.splitlines()[2:]]


# -- the methods table ---------------------------------------------------------------------------------------
def test_methods_table_golden() -> None:
    study = load(FIXTURES / "arithmetic")
    assert table_markdown(methods_table([(study.task, study)])) == EXPECTED_ARITHMETIC


def test_report_md_contains_the_golden_table_and_says_how_it_was_measured(arith_report: Path) -> None:
    md = (arith_report / "report.md").read_text(encoding="utf-8")
    assert EXPECTED_ARITHMETIC + "\n" in md
    assert "last iteration" in md and "majority vote of the last round" in md


def test_rows_in_paper_order_with_pm_format_and_missing_methods_omitted() -> None:
    study = load(FIXTURES / "arithmetic")
    rows = _rows(table_markdown(methods_table([(study.task, study)])))
    labels = [r[0] for r in rows]
    assert labels == [
        "Base",
        "Majority",
        "Debate",
        "Majority FT",
        "Ours",
        "Ours (no critics)",
        "Single-agent FT",
        "Single-agent FT (no debate)",
    ]
    assert "STaR" not in labels and "Ours (no summary)" not in labels  # not in reproduce.json
    for row in rows:
        assert re.fullmatch(r"\d{1,3}\.\d ± \d{1,3}\.\d", row[1]), row


def test_all_rows_in_order_when_every_method_is_present(tmp_path: Path) -> None:
    """Add a star run and an ours_no_summary run (copies with other numbers) and check the full order."""
    root = copy_fixture(tmp_path, "arithmetic")
    for sub, method, summarize, debate in (("star", "star", True, 0.5), ("nosum", "ours", False, 0.56)):
        shutil.copytree(root / "single", root / sub)
        manifest = json.loads((root / sub / "manifest.json").read_text())
        manifest["config"].update(method=method, summarize=summarize)
        (root / sub / "manifest.json").write_text(json.dumps(manifest))
        res_path = root / sub / "iter_2" / "eval" / "results.json"
        res = json.loads(res_path.read_text())
        res["accuracy"]["debate"] = {"mean": debate, "se": 0.01, "n": 500}
        res_path.write_text(json.dumps(res))
    repro = json.loads((root / "reproduce.json").read_text())
    # keys listed in another order than the table's: the table still follows the paper
    repro["methods"] = {"ours_no_summary": "nosum", "star": "star", **repro["methods"]}
    (root / "reproduce.json").write_text(json.dumps(repro))
    study = load(root)
    rows = _rows(table_markdown(methods_table([(study.task, study)])))
    assert [r[0] for r in rows] == [
        "Base",
        "Majority",
        "Debate",
        "STaR",
        "Majority FT",
        "Ours",
        "Ours (no summary)",
        "Ours (no critics)",
        "Single-agent FT",
        "Single-agent FT (no debate)",
    ]
    assert rows[3][1] == "50.0 ± 1.0" and rows[6][1] == "56.0 ± 1.0"


def test_base_rows_come_from_ours_and_fall_back_when_ours_is_absent(tmp_path: Path) -> None:
    root = copy_fixture(tmp_path, "arithmetic")
    repro = json.loads((root / "reproduce.json").read_text())
    del repro["methods"]["ours"]
    repro["methods"]["star"] = "star_not_run_yet"  # a method whose directory has no run yet
    (root / "reproduce.json").write_text(json.dumps(repro))
    study = load(root)
    rows = {r[0]: r[1] for r in _rows(table_markdown(methods_table([(study.task, study)])))}
    assert "Ours" not in rows and "STaR" not in rows
    assert rows["Base"] == "41.2 ± 1.8"  # iteration 0 of the no-critic run (same base as ours)
    assert any("star_not_run_yet" in n for n in study.notes)
    md = (write_report(root)).read_text(encoding="utf-8")
    assert "star_not_run_yet/ has no run yet" in md


def test_single_run_table_and_summary_label(tmp_path: Path) -> None:
    run = copy_fixture(tmp_path, "arithmetic/ours", "ours")
    md = write_report(run).read_text(encoding="utf-8")
    assert EXPECTED_SINGLE_RUN + "\n" in md
    # the same run without summaries is the paper's "Ours (no summary)" row
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["config"]["summarize"] = False
    (run / "manifest.json").write_text(json.dumps(manifest))
    md = write_report(run).read_text(encoding="utf-8")
    assert EXPECTED_SINGLE_RUN.replace("| Ours |", "| Ours (no summary) |") + "\n" in md
    # a missing method is an "ours" run
    del manifest["config"]["method"]
    manifest["config"]["summarize"] = True
    (run / "manifest.json").write_text(json.dumps(manifest))
    assert EXPECTED_SINGLE_RUN + "\n" in write_report(run).read_text(encoding="utf-8")


def test_detail_sizes_and_cost_tables(arith_report: Path) -> None:
    md = (arith_report / "report.md").read_text(encoding="utf-8")
    # per-iteration details of Ours, with its diversity numbers
    assert "| 2 | 50.3 ± 1.9 | 53.8 ± 2.2 | 57.6 ± 2.1 | 500 | 0.800 ± 0.030 | 0.880 ± 0.020 |" in md
    # dataset sizes: generators, then critics with D_C- / D_C+
    assert "| iteration | gen_0 | gen_1 | gen_2 | critic_0 | critic_1 | critic_2 |" in md
    assert "| 1 | 120 | 110 | 100 | 80 (40 / 150) | 70 (35 / 160) | 60 (30 / 170) |" in md
    assert "| iteration | model |" in md and "| 1 | 300 |" in md  # single-model runs: one "model" column
    # cost: tokens from usage, n/a where an older run has none; seconds per stage from timings.json
    assert "| 0 (base) | 100,000 | - | - | - | 12.5 | 12.5 |" in md
    assert "| 1 | n/a | 41.0 | 0.5 | 32.0 | 21.0 | 94.5 |" in md
    assert "| total | 303,000 | 83.0 | 1.0 | 66.0 | 55.5 | 205.5 |" in md


# -- plots and html ------------------------------------------------------------------------------------------
def test_plots_are_pngs_for_accuracy_and_each_diversity_metric(arith_report: Path) -> None:
    md = (arith_report / "report.md").read_text(encoding="utf-8")
    names = ["accuracy", "dataset_sizes", "wall_time", "kl_from_base_agents", "accuracy_vs_diversity"]
    names += [f"diversity_{m}" for m in DIVERSITY_PLOTS]
    for name in names:
        png = (arith_report / "plots" / f"{name}.png").read_bytes()
        assert png.startswith(PNG_MAGIC), name
        assert len(png) > 5000, name  # a drawn figure, not an empty canvas
        assert f"](plots/{name}.png)" in md  # linked relatively
    assert sorted(p.name for p in (arith_report / "plots").iterdir()) == sorted(f"{n}.png" for n in names)


def test_no_diversity_files_means_no_diversity_plots(tmp_path: Path) -> None:
    root = copy_fixture(tmp_path, "gsm8k")
    md = write_report(root).read_text(encoding="utf-8")
    assert not list((root / "plots").glob("diversity_*"))
    assert "No `iter_<k>/diversity.json` files were found." in md


def test_html_is_self_contained(arith_report: Path) -> None:
    html = (arith_report / "report.html").read_text(encoding="utf-8")
    md = (arith_report / "report.md").read_text(encoding="utf-8")
    assert html.count('src="data:image/png;base64,') == md.count("](plots/") == 11
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*https?://""", html, re.I)
    assert "http://" not in html and "https://" not in html
    assert "<style>" in html and "<link" not in html and "<script" not in html
    assert "plots/" not in html  # nothing refers to files beside it
    assert '<td class="r">57.6 ± 2.1</td>' in html


def test_rendering_twice_is_byte_identical(tmp_path: Path) -> None:
    root = copy_fixture(tmp_path, "arithmetic")
    write_report(root)
    first = {
        p.relative_to(root): p.read_bytes()
        for p in [root / "report.md", root / "report.html", *sorted((root / "plots").iterdir())]
    }
    write_report(root)
    second = {
        p.relative_to(root): p.read_bytes()
        for p in [root / "report.md", root / "report.html", *sorted((root / "plots").iterdir())]
    }
    assert first[Path("report.md")] == second[Path("report.md")]
    assert first == second  # the PNGs and the HTML too (no timestamps or software tags)
    assert not [p for p in root.rglob("*") if p.name.endswith(".tmp")]  # temp files renamed away


def test_report_never_imports_torch(tmp_path: Path) -> None:
    root = copy_fixture(tmp_path, "gsm8k")
    code = (
        "import sys; from mft.report import write_report; "
        f"write_report({str(root)!r}); print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# -- compare -------------------------------------------------------------------------------------------------
def test_compare_two_tasks_gives_a_methods_x_tasks_table(tmp_path: Path) -> None:
    arith = copy_fixture(tmp_path, "arithmetic")
    gsm = copy_fixture(tmp_path, "gsm8k")
    out = tmp_path / "cmp"
    md_path = write_compare([arith, gsm], out)
    assert md_path == out / "compare.md"
    md = md_path.read_text(encoding="utf-8")
    assert EXPECTED_COMPARE + "\n" in md
    png = (out / "plots" / "compare_accuracy.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 5000
    html = (out / "compare.html").read_text(encoding="utf-8")
    assert "data:image/png;base64," in html and "https://" not in html and "http://" not in html


def test_compare_same_task_uses_directory_names(tmp_path: Path) -> None:
    a = copy_fixture(tmp_path, "arithmetic", "seed0")
    run = copy_fixture(tmp_path, "arithmetic/ours", "seed1")
    md = write_compare([a, run], tmp_path / "cmp").read_text(encoding="utf-8")
    assert "| method | seed0 | seed1 |" in md
    assert "| Majority FT | 50.0 ± 2.2 | n/a |" in md
    assert "| Ours | 57.6 ± 2.1 | 57.6 ± 2.1 |" in md


# -- bad input -----------------------------------------------------------------------------------------------
def _results(root: Path) -> Path:
    return root / "single" / "iter_2" / "eval" / "results.json"


@pytest.mark.parametrize(
    ("corrupt", "expected"),
    [
        (lambda p: p.write_text('{"iteration": 2, "accuracy": '), "not valid JSON"),
        (lambda p: p.write_text('{"iteration": 2, "problems": 500}'), "field 'accuracy' is missing"),
        (
            lambda p: p.write_text(
                json.dumps(
                    {"accuracy": {"single": {"mean": 0.5, "se": 0.1}, "majority": {"mean": 0.5, "se": 0.1}}}
                )
            ),
            "field 'accuracy.debate'",
        ),
        (
            lambda p: p.write_text(
                json.dumps(
                    {"accuracy": {r: {"mean": "high", "se": 0.1} for r in ("single", "majority", "debate")}}
                )
            ),
            "field 'accuracy.single.mean' is \"high\", not a number",
        ),
        (lambda p: p.write_text("[1, 2]"), "must be a JSON object"),
    ],
)
def test_bad_results_name_the_file_and_the_problem(tmp_path: Path, corrupt, expected: str) -> None:  # noqa: ANN001
    root = copy_fixture(tmp_path, "arithmetic")
    corrupt(_results(root))
    with pytest.raises(MftError) as exc:
        write_report(root)
    assert str(_results(root)) in str(exc.value) and expected in str(exc.value)
    assert exc.value.hint and "mft eval --iteration 2" in exc.value.hint
    assert not (root / "report.md").exists()  # nothing half-written


def test_not_a_run_directory(tmp_path: Path) -> None:
    with pytest.raises(MftError, match="does not exist"):
        load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MftError, match="is not a run directory or a reproduce directory"):
        load(tmp_path / "empty")
    bad = copy_fixture(tmp_path, "gsm8k", "badrepro")
    (bad / "reproduce.json").write_text('{"task": "gsm8k", "methods": ["ours"]}')
    with pytest.raises(MftError, match=r"reproduce\.json: field 'methods' must be a JSON object"):
        load(bad)


def test_cli_report_and_compare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = copy_fixture(tmp_path, "gsm8k")
    assert main(["report", str(root)]) == 0
    out = capsys.readouterr().out
    assert str(root / "report.md") in out
    assert main(["report", str(root), "--out", str(tmp_path / "elsewhere")]) == 0
    assert (tmp_path / "elsewhere" / "report.html").exists()
    assert main(["compare", str(root), str(FIXTURES / "arithmetic"), "--out", str(tmp_path / "c")]) == 0
    assert str(tmp_path / "c" / "compare.md") in capsys.readouterr().out


def test_cli_bad_input_is_one_line_with_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = copy_fixture(tmp_path, "arithmetic")
    _results(root).write_text("{not json")
    assert main(["report", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mft: error: ")
    assert str(_results(root)) in err and "not valid JSON" in err and "Traceback" not in err
    assert main(["compare", str(tmp_path / "missing"), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing does not exist" in err
    assert not (tmp_path / "c").exists()


def test_build_report_is_pure() -> None:
    """Building the document reads the fixture but writes nothing into it."""
    before = sorted(p.relative_to(FIXTURES) for p in FIXTURES.rglob("*"))
    doc = build_report(load(FIXTURES / "arithmetic"))
    assert set(doc.plots) >= {"plots/accuracy.png", "plots/diversity_kl.png"}
    assert sorted(p.relative_to(FIXTURES) for p in FIXTURES.rglob("*")) == before


def test_undefined_values_are_na_not_errors(tmp_path: Path) -> None:
    """diversity.json writes null for a metric without data, and se is null / NaN when n = 1."""
    root = copy_fixture(tmp_path, "arithmetic")
    div_path = root / "ours" / "iter_2" / "diversity.json"
    div = json.loads(div_path.read_text())
    div["kl"].update(mean=None, se=None)
    div["agreement"]["se"] = None
    div_path.write_text(json.dumps(div))
    md = write_report(root).read_text(encoding="utf-8")
    assert "| 2 | 50.3 ± 1.9 | 53.8 ± 2.2 | 57.6 ± 2.1 | 500 | 0.800 ± 0.030 | 0.880 ± n/a |" in md
    assert "| 0.280 ± 0.010 | 1.900 ± 0.100 | 0.090 ± 0.010 | n/a |" in md  # KL of iteration 2: no data
    assert (root / "plots" / "diversity_kl.png").read_bytes().startswith(PNG_MAGIC)  # iterations 0, 1


# -- diversity: accuracy vs diversity (the paper's Figure 4), KL from the base per agent (Figure 8) ------
def test_accuracy_vs_diversity_pairs_each_iterations_accuracy_with_its_diversity() -> None:
    study = load(FIXTURES / "arithmetic")
    nll = accuracy_vs_diversity(study, "held_out_nll")
    assert [s.label for s in nll] == ["Ours"]  # single_ft measured no likelihoods
    ours = study.run("ours")
    assert ours is not None
    assert nll[0].xs == [1.5, 1.7, 1.9] and nll[0].tags == ["0", "1", "2"]
    assert nll[0].ys == pytest.approx([100 * ours.iterations[k].accuracy["debate"].mean for k in (0, 1, 2)])
    assert nll[0].xerrs == [0.1, 0.1, 0.1]
    cons = accuracy_vs_diversity(study, "consensus")
    assert [s.label for s in cons] == ["Ours", "Single-agent FT"]
    assert cons[1].xs == [0.7, 0.78, 0.86]


def test_kl_from_base_per_agent_lines(tmp_path: Path) -> None:
    study = load(FIXTURES / "arithmetic")
    ours = study.run("ours")
    assert ours is not None
    lines = kl_agent_series(study, ours)
    assert [s.label for s in lines] == ["gen_0", "gen_1", "gen_2", "critic_0", "critic_1", "critic_2"]
    critic_2 = lines[-1]
    assert critic_2.xs == [0, 1, 2] and critic_2.ys == pytest.approx([0.0, 0.05 * 1.6, 0.09 * 1.6])
    md = write_report(copy_fixture(tmp_path, "arithmetic")).read_text(encoding="utf-8")
    assert "### KL from the base model per agent" in md and "### Accuracy vs diversity" in md


def test_a_diversity_file_of_the_older_definition_is_not_shown(tmp_path: Path) -> None:
    root = copy_fixture(tmp_path, "arithmetic")
    path = root / "ours" / "iter_2" / "diversity.json"
    old = json.loads(path.read_text())
    del old["version"]  # a round-1 file from before the final-round definition
    path.write_text(json.dumps(old))
    study = load(root)
    ours = study.run("ours")
    assert ours is not None
    assert ours.iterations[2].diversity == {} and ours.iterations[2].diversity_outdated
    md = write_report(root).read_text(encoding="utf-8")
    assert "older definition (round-1 metrics) for Ours: iteration 2" in md
    assert "| 2 | 50.3 ± 1.9 | 53.8 ± 2.2 | 57.6 ± 2.1 | 500 | n/a | n/a |" in md


# Each cell is the run's iter_<k>/eval/results.json in the row's reading; Majority FT has no iter_0 of its
# own, so its iteration 0 is the shared base (Ours' iter_0) in its reading, the majority vote (45.6); the
# fixture's Single-agent FT has an iter_0 of its own (48.0 debate, 40.0 single), which it keeps.
EXPECTED_PER_ITERATION = """\
| method | reading | iteration 0 (base) | iteration 1 | iteration 2 |
|---|---:|---:|---:|---:|
| Majority FT | majority | 45.6 ± 2.2 | 49.0 ± 2.2 | 50.0 ± 2.2 |
| Ours | debate | 49.8 ± 2.3 | 55.0 ± 2.2 | 57.6 ± 2.1 |
| Ours (no critics) | debate | 49.8 ± 2.3 | 53.0 ± 2.2 | 54.1 ± 1.9 |
| Single-agent FT | debate | 48.0 ± 2.2 | 51.2 ± 2.2 | 50.7 ± 2.4 |
| Single-agent FT (no debate) | single | 40.0 ± 2.2 | 45.0 ± 2.2 | 46.0 ± 2.2 |"""


def test_accuracy_per_iteration_table_reads_each_row_as_the_methods_table_does(arith_report: Path) -> None:
    from mft.report.tables import iterations_table

    table = iterations_table(load(FIXTURES / "arithmetic"))
    assert table is not None
    assert table_markdown(table) == EXPECTED_PER_ITERATION
    # the last column is the methods table's reading of each row
    last = {r[0]: r[-1] for r in _rows(EXPECTED_PER_ITERATION)}
    methods_rows = {r[0]: r[1] for r in _rows(EXPECTED_ARITHMETIC)}
    assert all(methods_rows[label] == value for label, value in last.items())
    md = (arith_report / "report.md").read_text(encoding="utf-8")
    assert EXPECTED_PER_ITERATION + "\n" in md


def test_majority_ft_is_read_by_its_majority_vote_and_single_ft_also_alone() -> None:
    from mft.report.series import accuracy_series
    from mft.report.tables import table_entries

    study = load(FIXTURES / "arithmetic")
    entries = table_entries(study)
    majority_ft, single_ft = study.run("majority_ft"), study.run("single_ft")
    assert majority_ft is not None and majority_ft.last is not None
    assert single_ft is not None and single_ft.last is not None
    maj = majority_ft.last.accuracy
    assert maj["majority"] != maj["debate"]  # the fixture tells the readings apart
    assert entries["majority_ft"] == ("Majority FT", maj["majority"])
    # its line in the accuracy plot is the same reading, the base's included
    line = accuracy_series(study, majority_ft, "Majority FT", "#000")
    assert study.base is not None
    readings = [study.base.accuracy["majority"]] + [
        it.accuracy["majority"] for it in majority_ft.iterations.values()
    ]
    assert line.ys == [100 * e.mean for e in readings]
    # Single-agent FT: its debate row, and the same model answering alone as a row of its own
    assert entries["single_ft"] == ("Single-agent FT", single_ft.last.accuracy["debate"])
    assert entries["single_ft_no_debate"] == (
        "Single-agent FT (no debate)",
        single_ft.last.accuracy["single"],
    )


def test_a_method_at_its_own_temperature_is_named_with_it(tmp_path: Path) -> None:
    """The paper's Fig. 10: Single-agent FT sampled at 2.0 beside Ours at 1.0. The report says so where it
    says which iterations are read, and that its iteration 0 is its own; at 1.0 it says neither."""
    root = copy_fixture(tmp_path, "arithmetic")
    md = write_report(root).read_text(encoding="utf-8")
    assert "temperature" not in md.lower()
    manifest_path = root / "single" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["config"]["temperature"] = 2.0
    manifest_path.write_text(json.dumps(manifest))
    md = write_report(root).read_text(encoding="utf-8")
    assert "Single-agent FT 2 (3 agents x 2 rounds, temperature 2)" in md
    assert "Single-agent FT's is its own base society's (3 agents x 2 rounds, temperature 2)." in md
    assert "Ours (no critics)'s" not in md  # the methods at 1.0 read the shared base
    # over seeds: the mean table's note says it
    seeds = tmp_path / "over-seeds"
    shutil.copytree(root, seeds / "seed_0")
    (seeds / "seeds.json").write_text(json.dumps({"seeds": {"0": "seed_0"}, "task": "arithmetic"}))
    md = write_report(seeds).read_text(encoding="utf-8")
    assert "Single-agent FT ran in its own setting: 3 agents x 2 rounds, temperature 2, from its own" in md
    assert md.count("its own setting") == 1
