"""Nothing is wired to the walkthrough's one example: a random-forest regressor and a classifier
returning probabilities, trained through ``azureml.*`` in an Estimator's own environment (built
from ``conda_packages``, with today's scikit-learn), logging their own metric names."""

from __future__ import annotations


from conftest import ROOT, unique

SCRIPT = '''
import argparse, os
import joblib
import numpy as np
import pandas as pd
from azureml.core import Run
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

parser = argparse.ArgumentParser()
parser.add_argument("--data-folder")
parser.add_argument("--kind", choices=["forest", "classifier"])
parser.add_argument("--trees", type=int, default=20)
args = parser.parse_args()
data = pd.read_csv(os.path.join(args.data_folder, "wine", "winequality_red.csv"))
X, y = data.drop(columns=["quality"]), data["quality"]
run = Run.get_context()
X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
if args.kind == "forest":
    model = RandomForestRegressor(n_estimators=args.trees, random_state=0).fit(X_train, y_train)
    run.log("forest_rmse", float(np.sqrt(np.mean((model.predict(X_test) - y_test) ** 2))))
    run.log("trees", args.trees)
else:
    good = (y >= 6).astype(int)
    model = LogisticRegression(max_iter=2000).fit(X_train, good.loc[X_train.index])
    probabilities = model.predict_proba(X_test[:3])[:, 1]
    run.log("accuracy", float(model.score(X_test, good.loc[X_test.index])))
    run.log_list("p_good_first_3", [float(p) for p in probabilities])
os.makedirs("outputs", exist_ok=True)
joblib.dump(model, os.path.join("outputs", args.kind + ".pkl"))
'''


def test_forest_and_classifier_through_estimators(connected, tmp_path):
    from azureml.core import Experiment, Workspace
    from azureml.core.compute import AmlCompute, ComputeTarget
    from azureml.train.estimator import Estimator

    ws = Workspace.create(unique("variants"), show_output=False)
    ds = ws.get_default_datastore()
    ds.upload(src_dir=str(ROOT / "examples/wine/winedata"), target_path="wine", show_progress=False)
    cluster = ComputeTarget.create(ws, "cpu2", AmlCompute.provisioning_configuration(max_nodes=2))
    code = tmp_path / "code"
    code.mkdir()
    (code / "fit.py").write_text(SCRIPT)
    experiment = Experiment(ws, "variants")
    runs = {}
    for kind in ("forest", "classifier"):
        estimator = Estimator(source_directory=str(code), entry_script="fit.py", compute_target=cluster,
                              script_params={"--data-folder": ds.as_download(), "--kind": kind, "--trees": 15},
                              conda_packages=["scikit-learn", "pandas", "joblib"])
        runs[kind] = experiment.submit(estimator)  # both queue at once: two nodes
    for run in runs.values():
        run.wait_for_completion()

    forest = runs["forest"].get_metrics()
    assert set(forest) == {"forest_rmse", "trees"} and forest["trees"] == 15
    assert 0 < forest["forest_rmse"] < 1.5
    classifier = runs["classifier"].get_metrics()
    assert set(classifier) == {"accuracy", "p_good_first_3"}
    assert 0.5 < classifier["accuracy"] <= 1
    assert len(classifier["p_good_first_3"]) == 3 and all(0 <= p <= 1 for p in classifier["p_good_first_3"])
    assert "outputs/forest.pkl" in runs["forest"].get_file_names()
    assert "outputs/classifier.pkl" in runs["classifier"].get_file_names()
    # The two estimators have equal packages, so they share one anonymous environment version.
    assert runs["forest"].get_details()["environment"] == runs["classifier"].get_details()["environment"]
