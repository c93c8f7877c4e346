"""What labbuilder prints is printed as it is: no emoji (`:ab:` inside a MAC), no markup
(`[bold]` in a name), no highlighting, in commands, names and addresses."""

from __future__ import annotations

import re

from click.testing import CliRunner

from labbuilder.cli.main import main
from labbuilder.cli.tools import console
from labbuilder.compile.plan import compile_plan
from labbuilder.observe.checks import Result
from labbuilder.present.tables import results_table
from labbuilder.spec.load import load
from labbuilder.spec.resolve import build_model
from tests.conftest import LABS

MAC = re.compile(r"\b(?:[0-9a-f]{2}:){5}[0-9a-f]{2}\b")


def test_plan_prints_every_mac_as_planned_even_with_ab_inside():
    lab = build_model(load(str(LABS / "flannel.yaml"))).lab
    planned = {mac for _, op in compile_plan(lab).ops() for mac in MAC.findall(op.describe())}
    assert any(":ab:" in mac for mac in planned), "the flannel plan is the one with `:ab:` in a MAC"
    result = CliRunner().invoke(main, ["plan", str(LABS / "flannel.yaml")])
    assert result.exit_code == 0, result.output
    assert set(MAC.findall(result.output)) == planned
    assert "🆎" not in result.output


def test_markup_in_user_text_is_printed_literally(capsys):
    row = Result("[bold]grade[/bold] :ab: [red]x", "reach", "pod/a → pod/b", True, "e6:ab:75:00:00:01")
    console.print(results_table([row]))
    console.print("[bold]not bold[/bold] :ab:")
    out = capsys.readouterr().out
    assert "[bold]grade[/bold] :ab: [red]x" in out and "e6:ab:75:00:00:01" in out
    assert "[bold]not bold[/bold] :ab:" in out and "🆎" not in out
    assert "\x1b[" not in out  # no colour codes when not on a terminal
