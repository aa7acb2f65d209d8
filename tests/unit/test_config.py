from __future__ import annotations

from pathlib import Path

import pytest

from mft.cli import main
from mft.config import ConfigError, DebateConfig, load_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates(path: Path) -> None:
    from mft.cli.commands import config_class_for

    load_config(config_class_for(path), path)
    assert main(["validate", str(path)]) == 0


def test_overrides_win(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("agents: 5\nrounds: 3\n")
    cfg = load_config(DebateConfig, f, {"rounds": 4, "seed": None})
    assert (cfg.agents, cfg.rounds, cfg.seed) == (5, 4, 0)


@pytest.mark.parametrize(
    "text, needle",
    [
        ("agents: -1\n", "field 'agents'"),
        ("agnets: 3\n", "field 'agnets': unknown setting"),
        ("top_p: lots\n", "field 'top_p'"),
        ("agents: [3\n", "invalid YAML"),
        ("- 1\n- 2\n", "mapping"),
        ("task: gsm9k\n", "field 'task'"),
    ],
)
def test_bad_config_is_one_clear_line(tmp_path: Path, capsys, text: str, needle: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        load_config(DebateConfig, f)
    assert main(["debate", "--config", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mft: error:") and str(f) in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_bad_flag_value_names_field(capsys) -> None:
    assert main(["debate", "--agents", "0"]) == 2
    assert "field 'agents'" in capsys.readouterr().err


def test_missing_config_file(capsys) -> None:
    assert main(["debate", "--config", "nope.yaml"]) == 2
    assert "nope.yaml does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_opens_with_the_command_that_runs_it(path: Path) -> None:
    from mft.cli.commands import config_class_for
    from mft.cli.parser import build_parser
    from mft.config import RunConfig

    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# Run: mft "), first
    argv = first.removeprefix("# Run: mft ").split()
    args = build_parser().parse_args(argv)  # a real command line of this CLI
    assert args.config == Path("configs") / path.name
    expected = ("run", "reproduce") if config_class_for(path) is RunConfig else ("debate",)
    assert args.command in expected


def test_every_setting_is_in_exactly_one_help_section() -> None:
    from mft.config import RunConfig
    from mft.config_flags import SECTIONS

    listed = [name for fields in SECTIONS.values() for name in fields]
    assert len(listed) == len(set(listed))
    assert set(DebateConfig.model_fields) | set(RunConfig.model_fields) == set(listed)


def test_every_settings_help_is_its_description(capsys: pytest.CaptureFixture[str]) -> None:
    """argparse formats help text with %: a description with a literal one ("about 30% slower") is shown as
    written, not as a dump of the option."""
    import re

    from mft.config import RunConfig

    with pytest.raises(SystemExit) as exit_:
        main(["run", "--help"])
    assert exit_.value.code == 0
    out = re.sub(r"\s+", " ", capsys.readouterr().out)
    assert " object at 0x" not in out
    for name, info in RunConfig.model_fields.items():
        if info.description and "%" in info.description:
            assert re.sub(r"\s+", " ", info.description) in out, name


def test_choices_come_from_the_registries() -> None:
    from mft.backends import BACKENDS
    from mft.config import RunConfig
    from mft.methods import METHODS
    from mft.tasks import TASKS

    def choices(cls: type, name: str) -> tuple[str, ...]:
        import typing

        return typing.get_args(cls.model_fields[name].annotation)

    assert choices(DebateConfig, "task") == TASKS and choices(DebateConfig, "backend") == BACKENDS
    assert choices(RunConfig, "backend") == BACKENDS  # every backend finetunes (its `objectives`)
    assert set(choices(RunConfig, "method")) == {m.run_as for m in METHODS}


def test_the_old_critic_mix_name_is_one_line_with_its_new_value(tmp_path: Path, capsys) -> None:
    from mft.config import RunConfig

    f = tmp_path / "old.yaml"
    f.write_text("critic_positive_fraction: 0.25\n")
    with pytest.raises(ConfigError, match="critic_corrected_share: 0.75"):
        load_config(RunConfig, f)
    assert main(["run", "--config", str(f)]) == 2
    err = capsys.readouterr().err
    assert "critic_positive_fraction" in err and len(err.strip().splitlines()) == 1


def test_a_mapping_setting_is_a_flag_that_replaces_the_files_mapping(tmp_path: Path, capsys) -> None:
    """`--method-temperatures single_ft=1.5` (the Fig. 10 sweep's one setting) and the task's options on the
    command line: the values read as YAML, a list's commas kept in it; a malformed item is one line."""
    from mft.cli.commands import _run_config as run_config
    from mft.cli.parser import build_parser

    f = tmp_path / "c.yaml"
    f.write_text("method_temperatures: {single_ft: 2.0, star: 0.7}\n")
    argv = ["reproduce", "--config", str(f), "--method-temperatures", "single_ft=1.5, ours=1"]
    argv += ["--task-options", "levels=[4, 5],strict=true,name=x"]
    cfg = run_config(build_parser().parse_args(argv))
    assert cfg.method_temperatures == {"single_ft": 1.5, "ours": 1.0}  # the file's star: 0.7 is gone
    assert cfg.task_options == {"levels": [4, 5], "strict": True, "name": "x"}
    assert run_config(build_parser().parse_args(["reproduce", "--config", str(f)])).method_temperatures == {
        "single_ft": 2.0,
        "star": 0.7,
    }
    for bad, needle in (("single_ft", "is not KEY=VALUE"), ("=2", "is not KEY=VALUE"), ("a=[1", "not YAML")):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["reproduce", "--method-temperatures", bad])
        err = capsys.readouterr().err
        assert "--method-temperatures" in err and needle in err and "Traceback" not in err


def test_mft_run_of_one_method_samples_at_its_own_temperature_as_reproduce_does(tmp_path: Path) -> None:
    """`mft run --method single_ft` with `method_temperatures: {single_ft: 2.0}` is the run `mft reproduce`
    makes of that method (temperature 2.0); a method it does not name keeps `temperature`."""
    from mft.cli.commands import _one_method_config
    from mft.cli.parser import build_parser
    from mft.pipeline.reproduce import method_configs

    f = tmp_path / "c.yaml"
    f.write_text("method_temperatures: {single_ft: 2.0, ours_no_summary: 0.5}\ntemperature: 0.8\n")

    def run_cfg(*flags: str):  # noqa: ANN202
        return _one_method_config(build_parser().parse_args(["run", "--config", str(f), *flags]))

    reproduced = method_configs(run_cfg(), ["single_ft", "ours_no_summary", "star"])
    assert run_cfg("--method", "single_ft").temperature == reproduced["single_ft"].temperature == 2.0
    assert run_cfg("--no-summarize").temperature == reproduced["ours_no_summary"].temperature == 0.5
    assert run_cfg("--method", "star").temperature == reproduced["star"].temperature == 0.8
    assert run_cfg().temperature == 0.8  # Ours, not named
