"""docs/quickstart.ipynb runs top to bottom in a fresh kernel (so it never rots) and shows what it says it shows."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "quickstart.ipynb"


def _text(cell) -> str:
    """Every output of a cell as text (plain and HTML representations, streams)."""
    parts = []
    for output in cell.get("outputs", []):
        parts.append(output.get("text", ""))
        data = output.get("data", {})
        parts += [data.get("text/plain", ""), data.get("text/html", "")]
    return "\n".join(parts)


@pytest.mark.slow
def test_the_quickstart_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")  # jupyter_core's path migration warning, not cropmon's
    monkeypatch.setenv("MPLBACKEND", "Agg")
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), "commit it clean"
    client = NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": tmp_path}})
    client.execute()
    cells = {tag: cell for cell in notebook.cells for tag in cell.get("metadata", {}).get("tags", [])}
    errors = [_text(c) for c in notebook.cells if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    assert not errors, errors
    assert "field_id" in _text(cells["analyse"]) and "majority_crop_label" in _text(cells["analyse"])
    assert "agreement_ci_high" in _text(cells["worst"])
    assert "certain" in _text(cells["underperforming"])
    report = cells["report"]["outputs"][0]["data"]["text/html"]
    assert report.startswith("<div class='cropmon-report'>") and "<nav class='toc'" in report
    assert "derivation" in _text(cells["plan"]) and "reason" in _text(cells["picks"])
    compared = _text(cells["compare"])
    assert "Spring Barley" in compared and "better" in compared
