"""`cairn demo`, the project's main job, end to end: the binary starts its own throw-away server,
runs the walkthrough's Python (compiled into the binary) through the ``azureml`` layer, and ends
with the prediction, the run's metrics and the studio URL. A second run reuses the environment
cache; a bad interpreter is refused with a message naming it."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from conftest import ROOT, _CAIRN_VARS

BINARY = Path(os.environ.get("CAIRN_BIN") or ROOT / os.environ.get("CARGO_TARGET_DIR", "target") / "debug" / "cairn")


def demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in _CAIRN_VARS}
    env.update(
        HOME=str(tmp_path / "home"),
        CAIRN_UV=str(ROOT / ".venv-tools" / "bin" / "uv"),
        UV_CACHE_DIR=os.environ.get("UV_CACHE_DIR") or str(ROOT / ".cache" / "uv"),
    )
    return subprocess.run([str(BINARY), "demo", "--exit", *args], env=env, capture_output=True, text=True,
                          timeout=900, stdin=subprocess.DEVNULL)


def test_demo_runs_the_walkthrough_to_a_prediction_and_reuses_its_environment(tmp_path):
    cache = tmp_path / "envs"
    first = demo(tmp_path, "--env-cache", str(cache), "--work-dir", str(tmp_path / "one"))
    assert first.returncode == 0, first.stdout[-3000:] + "\nSTDERR:\n" + first.stderr[-5000:]
    out = first.stdout
    # The walkthrough's own prints, in its order, then the summary.
    steps = ["1.0.0+cairn", "Uploaded 1 files", "Compute target created", "wine-experiment-env defined.",
             "Experiment created", "RMSE is", "Status: Completed", "wine_model\twine_model:1\t1",
             "wine-service: Healthy", "200 [", "== Done in", "prediction for the walkthrough's sample: [",
             "studio: http://127.0.0.1:"]
    at = [out.find(s) for s in steps]
    assert all(i >= 0 for i in at), [s for s, i in zip(steps, at) if i < 0]
    assert at == sorted(at), "the steps are printed out of order"
    prediction = float(re.search(r"sample: \[([0-9.]+)\]", out).group(1))
    assert 3.0 <= prediction <= 8.0
    rmse = float(re.search(r"rmse = ([0-9.]+)", out).group(1))
    assert 0.3 < rmse < 1.5
    assert "(built)" in out  # the first run built the environment into the cache ...
    assert any(p.is_dir() for p in cache.iterdir())

    second = demo(tmp_path, "--env-cache", str(cache), "--work-dir", str(tmp_path / "two"))
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "(cached)" in second.stdout and "(built)" not in second.stdout  # ... the second one reused it
    # The throw-away servers are gone: nothing listens on the first run's URL any more.
    url = re.search(r"server at (http://\S+)", out).group(1)
    import urllib.request
    try:
        urllib.request.urlopen(url + "/healthz", timeout=2)
        raise AssertionError("the demo's server still answers after the demo ended")
    except OSError:
        pass


def test_demo_refuses_an_unusable_python_before_starting_anything(tmp_path):
    result = demo(tmp_path, "--python", "/nonexistent/python3", "--work-dir", str(tmp_path / "w"))
    assert result.returncode != 0
    assert "cannot run /nonexistent/python3" in result.stderr
    assert not (tmp_path / "w" / "server").exists()
