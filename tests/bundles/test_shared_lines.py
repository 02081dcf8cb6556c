"""The two bundles' train.yaml share only lines that cannot live in the package (tests/bundles/shared_lines.py)."""

from __future__ import annotations

from shared_lines import DEFAULT, SHARED_LINE_REASONS, shared_lines


def test_every_shared_line_has_a_reason_to_stay():
    lines = shared_lines(*DEFAULT)
    unexplained = [line for line in lines if line not in SHARED_LINE_REASONS]
    assert not unexplained, (
        "configuration copied between the bundles' train.yaml: move it into crossmatch_ext.bundle (e.g. a shared "
        f"setting, crossmatch_ext.bundle.SHARED_SETTINGS) or give the reason in shared_lines.py: {unexplained}"
    )
    assert len(lines) <= 47


def test_the_count_finds_a_copied_line(tmp_path):
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("# a comment\nseed: 1\nshared: 2\n\n")
    second.write_text("other: 3\n  shared: 2\n# a comment\n")
    assert shared_lines(first, second) == ["shared: 2"]  # comments and blank lines do not count
