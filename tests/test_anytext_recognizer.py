"""The recipe of AnyText's own line recognizer (``zoo/anytext.py``): the curriculum sampler and its aligned start
(framewise targets from the renderer's layout), which takes CTC off its plateau (issue #23, items 3 and 4). A
training check that the start lowers CTC below the plateau needs ~100 steps of the full network (~45 s on one
thread); it is measured in docs/anytext.md, not run here."""

from __future__ import annotations

from tailor.methods.anytext.glyphs import LINE_W, line_image
from tailor.world.font import CHARSET
from zoo.anytext import CURRICULUM, clean_batch, frame_targets, recognizer_phase


def test_frame_targets_put_each_character_on_a_column_of_its_ink():
    texts = ["A", "CAT", "OPEN 24", "ABCDEFGHIJ", "WWWWWWWWWWWW"]
    ft = frame_targets(texts, 24)
    for t, row in zip(texts, ft):
        cols = row.nonzero().flatten().tolist()
        assert [CHARSET[k - 1] for k in row[cols].tolist()] == [c for c in t if c != " "]
        ink = line_image(t).sum(0).reshape(24, LINE_W // 24).sum(1)
        assert all(ink[c] > 0 for c in cols) and len(set(cols)) == len(cols)


def test_curriculum_goes_align_then_short_then_long_ctc():
    c = CURRICULUM
    assert recognizer_phase(0) == ("align", c["align_longest"])
    assert recognizer_phase(c["align"] - 1)[0] == "align"
    assert recognizer_phase(c["align"]) == ("ctc", c["short"])
    assert recognizer_phase(c["longer"]) == ("ctc", c["longest"])
    x, texts = clean_batch(12, 5, 0, 3)
    assert x.shape == (12, 3, 24, LINE_W) and all(1 <= len(t) <= 3 for t in texts)
    assert clean_batch(12, 5, 0, 3)[1] == texts and clean_batch(12, 5, 1, 3)[1] != texts  # a function of (seed, step)
