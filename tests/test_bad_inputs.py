"""Every case of the bad-input corpus (``tests/bad_inputs/corpus.py``) through the CLI: exit status 2, one line
naming the input, nothing left in ``--out``."""

from __future__ import annotations

import pytest
from bad_inputs.corpus import CASES

from tailor.cli import main as cli


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_refused_cleanly(name, tmp_path, capsys):
    work, out = tmp_path / "in", tmp_path / "out"
    work.mkdir()
    argv, culprit = CASES[name](work, out)
    capsys.readouterr()
    code = cli(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, f"exit {code}; stderr: {err[-800:]}"
    assert err.startswith("error:") and "\n" not in err, err
    assert culprit in err, f"{culprit!r} not named in: {err}"
    assert "Traceback" not in err
    assert not out.exists() or not any(out.iterdir()), f"left {sorted(p.name for p in out.rglob('*'))}"
