"""The CLI as a new user meets it: help for every command and option, the quickstart."""

from __future__ import annotations

import re

import pytest



def test_help_explains_every_command(cli):
    import typer

    # Every command registered on the app, so a new command cannot slip by without help.
    group = typer.main.get_command(cli.app)
    commands = group.commands
    assert len(commands) >= 10
    top = " ".join(cli.ok("--help").stdout.split())
    assert "<bool>" not in top, top
    for name, command in commands.items():
        assert name in top
        assert (command.help or "").strip(), f"{name} has no help text"
        page = " ".join(cli.ok(name, "--help").stdout.split())
        assert "Usage" in page
        # flags take no value, so help must not suggest one (`--no-verify <bool>` once led users
        # to type `--no-verify true`); arguments appear by name, not as {name}
        assert "<bool>" not in page and "{" not in page.split("Usage:", 1)[1].split("╭", 1)[0], page
        for param in command.params:
            assert (getattr(param, "help", None) or "").strip(), f"{name}: {param.name} has no help text"
            if param.param_type_name == "option" and not getattr(param, "hidden", False):
                # the option's own long name appears on its help page (Typer may vendor click,
                # so the kind is read from the parameter, not from an isinstance check)
                option = max(param.opts, key=len)  # whole option names: --calib must not pass on --calib-samples
                assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", page), f"{name}: {param.opts} missing from --help"

    assert "alexnet-deploy" in cli.ok("--version").stdout


def test_help_paragraphs_wrap_at_the_terminal_width_not_at_the_sources(cli):
    """In an 80-column terminal every line of a description but a paragraph's last is nearly full.

    Typer keeps a docstring's own line breaks, which in a narrower terminal turned each source
    line into a long line and a short one ("...when the images are" / "an").
    """
    import typer

    described = [name for name, command in typer.main.get_command(cli.app).commands.items() if "\n\n" in (command.help or "")]
    assert len(described) >= 5
    for name in described:
        page = cli.runner.invoke(cli.app, [name, "--help"], env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"}).stdout
        body = page.split("Usage:", 1)[1].split("╭", 1)[0]
        paragraphs = [[]]
        for line in (raw.strip() for raw in body.splitlines()[1:]):
            if line:
                paragraphs[-1].append(line)
            elif paragraphs[-1]:
                paragraphs.append([])
        assert sum(map(len, paragraphs)) >= 3, page
        for paragraph in paragraphs:
            short = [line for line in paragraph[:-1] if len(line) < 55]
            assert not short, f"{name} --help breaks a paragraph early: {short}"


@pytest.mark.slow  # a full-size export
def test_quickstart_skip_training_makes_only_the_seeded_files(cli, tmp_path):
    # In-process: the default quickstart runs in a subprocess, as users run it (tests/optimize).
    target = tmp_path / "qs"
    result = cli.ok("quickstart", target, "--skip-training", "--json", "-")
    import json

    data = json.loads(result.stdout)
    assert {p.name for p in target.iterdir()} == {"alexnet.pth", "alexnet.onnx", "labels.txt", "samples"}
    assert "optimize" not in data and data["export"]["verification"]["passed"] is True
