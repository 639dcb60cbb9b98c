"""The summary card and the compare HTML as a browser draws them (Debian's chromium, headless): the table is in the
rendered DOM and visibly drawn, and every character the pages show has a glyph in an installed font (a missing glyph
is drawn as the same box as a code point no font has). Skips when chromium is not installed (make system-deps)."""
from __future__ import annotations

import html as html_mod
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (make system-deps, or apt-get "
                                                         "install chromium)")
NO_FONT = "\U0010FFFD"  # a private-use code point: no font draws it, so it shows the missing-glyph box


def _chromium(args: list[str], timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--no-first-run", "--disable-extensions", *args], capture_output=True, text=True,
                          timeout=timeout)


def screenshot(page: Path, out: Path, size: str = "1400,1600") -> "Image":
    from PIL import Image

    p = _chromium([f"--window-size={size}", f"--screenshot={out}", page.resolve().as_uri()])
    assert out.exists(), p.stderr[-2000:]
    return Image.open(out).convert("L")


def dom(page: Path) -> str:
    return _chromium(["--dump-dom", page.resolve().as_uri()]).stdout


def visible_chars(page_html: str) -> set[str]:
    text = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", page_html, flags=re.S)
    text = re.sub(r"data:[^'\"]+", " ", text)
    text = html_mod.unescape(re.sub(r"<[^>]+>", " ", text))
    return {c for c in text if ord(c) > 127 and not c.isspace()}


def missing_glyphs(chars: set[str], tmp: Path) -> list[str]:
    """Draw each character in its own cell next to NO_FONT's box; a cell identical to the box has no glyph."""
    chars = sorted(chars)
    cells = [NO_FONT] + chars
    spans = "".join(f"<span style='display:inline-block;width:80px;height:80px'>{html_mod.escape(c)}</span>"
                    for c in cells)
    page = tmp / "glyphs.html"
    page.write_text("<!doctype html><html><head><meta charset='utf-8'></head><body style='margin:0;background:#fff'>"
                    f"<div style=\"font:56px 'DejaVu Sans',sans-serif;line-height:80px;white-space:nowrap\">{spans}"
                    "</div></body></html>")
    img = screenshot(page, tmp / "glyphs.png", f"{80 * len(cells) + 20},100")
    crop = lambda i: img.crop((80 * i, 0, 80 * i + 80, 80)).tobytes()
    box = crop(0)
    assert len(set(box)) > 1, "the missing-glyph box was not drawn: cannot tell missing glyphs"
    return [c for i, c in enumerate(chars, start=1) if crop(i) == box or len(set(crop(i))) == 1]


def _ink(img) -> float:
    hist = img.histogram()
    return 1.0 - sum(hist[230:]) / max(1, sum(hist))


def _check(page: Path, tmp: Path, rows: int) -> None:
    text = page.read_text()
    rendered = dom(page)
    assert "<table" in rendered and rendered.count("<tr") >= rows + 1  # header + rows, after the page's script ran
    shot = screenshot(page, tmp / f"{page.stem}.png")
    # the table is drawn: the page without it looks different
    bare = tmp / f"{page.stem}-no-table.html"
    bare.write_text(re.sub(r"<table.*?</table>", "", text, flags=re.S))
    assert shot.tobytes() != screenshot(bare, tmp / f"{page.stem}-no-table.png").tobytes()
    assert _ink(shot) > 0.01
    chars = visible_chars(text)
    assert not missing_glyphs(chars, tmp), f"no installed font draws: {missing_glyphs(chars, tmp)}"


def test_detector_finds_a_missing_glyph(tmp_path):
    assert missing_glyphs({"\U0010FFFC"}, tmp_path) == ["\U0010FFFC"]
    assert missing_glyphs({"✓", "±"}, tmp_path) == []


@pytest.mark.slow
def test_compare_html_renders(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_compare_report import make_sweep_store

    from pipeline.tracking import compare
    from mlflow.tracking import MlflowClient

    from pipeline.tracking import tracker as tracking

    outputs, _ = make_sweep_store(tmp_path)
    client = MlflowClient(tracking.local_uri(outputs))
    exp = client.get_experiment_by_name("demo")
    r = compare.report(client, [exp.experiment_id], "s1", tmp_path / "cmp", "demo: accuracy vs latency")
    _check(r["html"], tmp_path, len(r["rows"]))


@pytest.mark.slow
def test_summary_card_renders(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_card import _plot, _summary

    from pipeline.report import card

    png = tmp_path / "plot.png"
    _plot(png)
    page = tmp_path / "summary_card.html"
    page.write_text(card.card_html(_summary(), {"accuracy vs latency": str(png)}))
    _check(page, tmp_path, len(_summary().artifacts))


@pytest.fixture(scope="module")
def parent_card(tmp_path_factory):
    """A real run (a trained tiny model, its cross-format table from benchmark_formats, the profile stage) logged to a
    real MLflow store; the parent run's card and the names of everything logged beside it, downloaded back."""
    from mlflow.tracking import MlflowClient

    from conftest import compose_cfg
    from pipeline import app

    tmp = tmp_path_factory.mktemp("card")
    cfg = compose_cfg(["recipe=tiny_int8", "device=host", "stages.train.epochs=3", "stages.train.threads=1",
                       "stages.train.lr=0.01", "stages.benchmark.iterations=10", "stages.profile.type=profile",
                       "stages.formats.type=benchmark_formats", "stages.formats.inputs=[train]",
                       "stages.formats.candidates=[ort_per_channel_u8,openvino_fp32,openvino_int8]",
                       "stages.formats.iterations=10", "stages.formats.warmup=2"], tmp / "outputs")
    summary = app.run(cfg)
    client = MlflowClient(summary.mlflow["tracking_uri"])
    run_id = summary.mlflow["run_id"]
    names = {a.path for a in client.list_artifacts(run_id)}
    page = Path(client.download_artifacts(run_id, "summary_card.html", str(tmp)))
    md = Path(client.download_artifacts(run_id, "summary_card.md", str(tmp))).read_text()
    return summary, page, md, names, tmp


@pytest.mark.slow
def test_parent_run_card_shows_the_tradeoff_plot_and_the_cross_format_table(parent_card):
    summary, page, md, names, tmp = parent_card
    text = page.read_text()
    rendered = dom(page)
    assert 'class="formats"' in rendered and 'alt="accuracy vs latency and size"' in rendered
    assert "in every format this host runs" in rendered and "ort_per_channel_u8" in rendered
    shot = screenshot(page, tmp / "card.png", "1400,4000")
    assert _ink(shot) > 0.01
    # both are drawn: the page without either looks different
    for what, pattern in (("formats", r"<h2>[^<]*in every format this host runs</h2><table class='formats'>.*?</table>"),
                          ("plot", r"<h2>accuracy vs latency and size</h2><img [^>]*>")):
        bare = tmp / f"card-no-{what}.html"
        bare.write_text(re.sub(pattern, "", text, count=1, flags=re.S))
        assert bare.read_text() != text, what
        assert shot.tobytes() != screenshot(bare, tmp / f"card-no-{what}.png", "1400,4000").tobytes(), what
    assert not missing_glyphs(visible_chars(text), tmp)
    # the Markdown card's pictures are relative links to files logged beside it, one profile picture per model
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", md)
    assert links and all(link in names for link in links), (links, names)
    assert {"tradeoff.png", "profile_export.png", "profile_quantize.png"} <= names
    assert "top_layers.png" in names and "the 10 costliest layers" in md
