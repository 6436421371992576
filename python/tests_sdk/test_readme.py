"""The README's Python example runs as written (against the test server, from the repository root)."""

from __future__ import annotations

from conftest import ROOT


def test_readme_python_example(connected, monkeypatch, capsys):
    text = (ROOT / "README.md").read_text()
    start = text.index("```python\nfrom cairn import")
    code = text[start + len("```python\n") : text.index("```", start + 10)]
    monkeypatch.chdir(ROOT)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["run"].get_status() == "Completed"
    assert set(namespace["run"].get_metrics()) == {"max depth", "rmse"}
    assert "RMSE is" in capsys.readouterr().out
    service = namespace["service"]
    assert service.state == "Healthy"
    prediction = service.run({"data": [[7.3, 0.65, 0, 1.2, 0.065, 15, 21, 0.9946, 3.39, 0.47, 10]]})
    assert len(prediction) == 1 and 3.0 <= prediction[0] <= 8.0
    service.delete()
