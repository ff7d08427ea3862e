"""Progress output: plain lines when the output is not a terminal."""
import io

from bayes_crl.progress import LineProgress, is_interactive, progress_bar


def test_line_progress_writes_one_line_per_step_of_every_percent():
    buf = io.StringIO()
    bar = LineProgress(1000, "SVI", every=5.0, file=buf)
    for _ in range(1000):
        bar.update(1)
    bar.set_postfix(loss="1.234")
    bar.close()
    lines = buf.getvalue().splitlines()
    assert len(lines) == 21  # 5 %, 10 %, ..., 100 %, then the closing line
    assert lines[0].startswith("SVI: 50/1000 (5 %)") and lines[-1].endswith("loss=1.234 done")
    assert "\r" not in buf.getvalue()


def test_total_can_grow_and_close_is_idempotent():
    buf = io.StringIO()
    bar = LineProgress(10, "x", every=50.0, file=buf)
    bar.update(5)
    bar.total += 10
    bar.update(10)
    bar.close()
    bar.close()
    out = buf.getvalue().splitlines()
    assert out[0].startswith("x: 5/10 (50 %)") and out[-1].startswith("x: 15/20 (75 %)") and len(out) == 2


def test_not_a_terminal_gives_plain_lines(monkeypatch):
    monkeypatch.setattr("sys.stderr", io.StringIO())  # output going to a file or a log, even under ``pytest -s``
    assert not is_interactive()
    assert isinstance(progress_bar(10, "SVI"), LineProgress)
