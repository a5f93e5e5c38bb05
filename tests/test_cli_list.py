import json

import convnext
from convnext.cli import main


def test_list_counts_every_model(capsys):
    assert main(["list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in rows] == convnext.list_models()
    assert all(row["params"] > 0 and row["gmacs"] > 0 for row in rows)
    assert main(["list", "convnext_t*"]) == 0
    out = capsys.readouterr().out
    assert "28,589,128" in out and "4.46" in out  # ConvNeXt-T: exact params, GMACs at 224


def test_list_json_and_pattern(capsys):
    assert main(["list", "convnext_tiny", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == [{"name": "convnext_tiny", "params": 28_589_128, "gmacs": rows[0]["gmacs"]}]
    assert abs(rows[0]["gmacs"] - 4.4555) < 1e-3


def test_list_unknown_pattern_is_one_error_line(capsys):
    assert main(["list", "resnet*"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no model matches" in err
