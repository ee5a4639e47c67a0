"""docs/api.md's example is real: its Python block runs as written."""
import os
import re


def test_the_api_example_in_the_docs_runs(tmp_path, monkeypatch):
    doc = open(os.path.join(os.path.dirname(__file__), "..", "docs", "api.md")).read()
    block = re.search(r"```python\n(.*?)```", doc, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "docs/api.md", "exec"), {})
    assert (tmp_path / "m.nq").exists()
