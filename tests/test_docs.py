"""The generated references are current, complete, and linked; the example notebooks match their generator."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen_docs = load_script("gen_docs")


@pytest.mark.parametrize("path, render", [(gen_docs.CONFIG_MD, gen_docs.render_configuration),
                                          (gen_docs.MAGICS_MD, gen_docs.render_magics)],
                         ids=["configuration.md", "magics.md"])
def test_generated_docs_are_current(path: Path, render) -> None:
    current = path.read_text(encoding="utf-8") if path.is_file() else ""
    assert current == render(), (f"{path.relative_to(REPO)} is stale (the config fields or the magics changed). "
                                 f"Regenerate it with `{gen_docs.REGENERATE}` and commit the result.")


def test_every_config_field_has_a_meaning_and_a_row() -> None:
    from jupyter_ft.config import SECTIONS

    assert gen_docs.missing_meanings() == [], "add metadata help (config.schema._doc) to these fields"
    text = gen_docs.CONFIG_MD.read_text(encoding="utf-8")
    for name, cls in SECTIONS.items():
        section = text.split(f"## {name}\n", 1)[1].split("\n## ", 1)[0]
        for f in dataclasses.fields(cls):
            row = next((line for line in section.splitlines() if line.startswith(f"| `{f.name}` |")), None)
            assert row is not None, f"{name}.{f.name} missing from docs/configuration.md"
            cells = [c.strip() for c in row.strip("|").split(" | ")]
            assert len(cells) == 4 and all(cells), row  # field, type, default, meaning


def test_configuration_doc_shows_auto_gpu_defaults() -> None:
    text = gen_docs.CONFIG_MD.read_text(encoding="utf-8")
    assert re.search(r"\| `optimizer` \| string \| `auto` \| .*paged_adamw_8bit.* CUDA", text)
    assert re.search(r"\| `gradient_checkpointing` \| bool or string \| `auto` \|", text)


def test_magics_doc_covers_every_magic_with_its_options() -> None:
    from jupyter_ft.magics import FineTuneMagics

    text = gen_docs.MAGICS_MD.read_text(encoding="utf-8")
    for kind, table in FineTuneMagics.magics.items():
        for name in table:
            assert f"`%{name}`" in text or f"`%%{name}`" in text, name
    assert "%%finetune [--name NAME] [--wait] [--dry-run]" in text and "--max-new-tokens" in text


def test_check_mode_reports_staleness(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(gen_docs, "CONFIG_MD", tmp_path / "configuration.md")
    monkeypatch.setattr(gen_docs, "MAGICS_MD", tmp_path / "magics.md")
    monkeypatch.setattr(gen_docs, "ROOT", tmp_path)
    assert gen_docs.main(["--check"]) == 1  # missing files are stale
    assert gen_docs.main([]) == 0 and gen_docs.main(["--check"]) == 0
    (tmp_path / "magics.md").write_text("old")
    assert gen_docs.main(["--check"]) == 1


def test_readme_links_the_docs_and_its_screenshots_exist() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for doc in ("docs/configuration.md", "docs/magics.md", "docs/troubleshooting.md"):
        assert f"]({doc}" in readme, f"README does not link {doc}"
        assert (REPO / doc).is_file()
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", readme):
        assert (REPO / image).is_file(), f"README shows {image}, which does not exist"
    troubleshooting = (REPO / "docs" / "troubleshooting.md").read_text(encoding="utf-8")
    for anchor in ("no-gpu", "out-of-memory", "widgets-not-showing", "colab", "offline-hub"):
        assert f"(#{anchor})" in troubleshooting


def test_example_notebooks_match_their_generator() -> None:
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "make_notebooks.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_notebook_cell_ids_are_deterministic() -> None:
    make_notebooks = load_script("make_notebooks")
    first = {name: [c.id for c in make_notebooks.build(name).cells] for name in make_notebooks.NOTEBOOKS}
    again = {name: [c.id for c in make_notebooks.build(name).cells] for name in make_notebooks.NOTEBOOKS}
    assert first == again
    for ids in first.values():
        assert len(ids) == len(set(ids))
