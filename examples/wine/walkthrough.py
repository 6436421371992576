"""The Azure ML walkthrough (../shared/seed/azureml-walkthrough.md, steps 1–15) run against Cairn
through the ``azureml`` compatibility layer, near-verbatim: only the connection differs (Azure's
subscription, resource group and tenant are accepted and ignored; the server is ``CAIRN_URL`` /
``CAIRN_TOKEN``, ``cairn login`` or the local one), the environments pin the packages of the
walkthrough's era its ``train.py`` needs, and the prediction is posted with ``urllib``.

Run it from an empty folder (it writes ``winedata/`` and ``winecode/`` there)::

    PYTHONPATH=$REPO/python:$REPO/python/azureml_compat python $REPO/examples/wine/walkthrough.py

``python/tests_sdk/test_walkthrough.py`` runs it end to end against a fresh server.
"""

import os
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent

if not os.path.exists("winedata"):
    shutil.copytree(HERE / "winedata", "winedata")

# -- Create the Azure ML workspace --------------------------------------------------------
import azureml.core

print(azureml.core.VERSION)
from azureml.core import Workspace
from azureml.core.authentication import InteractiveLoginAuthentication

sid = "00000000-0000-0000-0000-000000000000"
forced_interactive_auth = InteractiveLoginAuthentication(tenant_id="11111111-1111-1111-1111-111111111111")
ws = Workspace.create(name='azureml_workspace',
                      subscription_id=sid,
                      resource_group='rgazureml',
                      create_resource_group=True,
                      location='centralus'
                      )

# -- Upload data into the Azure ML Workspace ----------------------------------------------
ds = ws.get_default_datastore()
ds.upload(src_dir='./winedata', target_path='winedata', overwrite=True, show_progress=True)
print('Done')

# -- Create the code folder ---------------------------------------------------------------
folder_training_script = './winecode'
os.makedirs(folder_training_script, exist_ok=True)
shutil.copy(HERE / "walkthrough" / "train.py", os.path.join(folder_training_script, "train.py"))  # the %%writefile cell

# -- Create the Compute Cluster -----------------------------------------------------------
from azureml.core.compute import AmlCompute
from azureml.core.compute import ComputeTarget

compute_name = os.environ.get("AML_COMPUTE_CLUSTER_NAME", "cpucluster")
min_nodes = os.environ.get("AML_COMPUTE_CLUSTER_MIN_NODES", 0)
max_nodes = os.environ.get("AML_COMPUTE_CLUSTER_MAX_NODES", 1)
vm_size = os.environ.get("AML_COMPUTE_CLUSTER_SKU", "STANDARD_D2_V2")
provisioning_config = AmlCompute.provisioning_configuration(
    vm_size=vm_size, min_nodes=min_nodes, max_nodes=max_nodes)
compute_target = ComputeTarget.create(ws, compute_name, provisioning_config)
print('Compute target created')

# -- Create the Compute Environment -------------------------------------------------------
from azureml.core import Environment
from azureml.core.conda_dependencies import CondaDependencies

wine_env = Environment("wine-experiment-env")
wine_env.python.user_managed_dependencies = False
wine_env.docker.enabled = False
# The walkthrough lists scikit-learn only (Azure's base image had pandas and the rest); its
# train.py needs the Python, NumPy and scikit-learn of its era: np.float (removed in NumPy
# 1.24) and a float max_depth (refused since scikit-learn 1.1, which has no 3.11 wheels).
wine_packages = CondaDependencies.create(
    python_version='3.10', conda_packages=['scikit-learn<1.1', 'numpy<1.24', 'pandas', 'joblib'])
wine_env.python.conda_dependencies = wine_packages
print(wine_env.name, 'defined.')
wine_env.register(workspace=ws)

# -- Create the Estimator -----------------------------------------------------------------
from azureml.train.estimator import Estimator

script_params = {
    '--data-folder': ds.as_mount(),
    '--max-depth': 10
}
registered_env = Environment.get(ws, 'wine-experiment-env')
estimator = Estimator(source_directory=folder_training_script,
                      script_params=script_params,
                      compute_target=compute_target,
                      environment_definition=registered_env,
                      entry_script='train.py')

# -- Create the Experiment and Run --------------------------------------------------------
from azureml.core import Experiment

experiment = Experiment(workspace=ws, name="wine_expt")
print('Experiment created')
run = experiment.submit(config=estimator)
run.wait_for_completion(show_output=True)

# -- get the result -----------------------------------------------------------------------
metrics = run.get_metrics()
print(metrics)

# -- Register the Model -------------------------------------------------------------------
model = run.register_model(model_name='wine_model',
                           model_path='outputs/wine_model.pkl',
                           tags={'area': "wine", 'type': "sklearn"},
                           description="quality wine")
print(model.name, model.id, model.version, sep='\t')

# -- Create the Inference Script (the %%writefile cell) ------------------------------------
shutil.copy(HERE / "walkthrough" / "score.py", os.path.join(folder_training_script, "score.py"))

# -- Create the Inference Dependencies ------------------------------------------------------
from azureml.core.conda_dependencies import CondaDependencies

# The walkthrough adds only "scikit-learn"; the pickled model needs the versions it was
# trained with (the same pins as the training environment, whose venv is then reused).
myenv = CondaDependencies.create(
    python_version='3.10', conda_packages=['scikit-learn<1.1', 'numpy<1.24', 'pandas', 'joblib'])
env_file = './winecode/env.yml'
with open(env_file, "w") as f:
    f.write(myenv.serialize_to_string())
print("Saved dependency info in", env_file)

# -- Create the Inference Config ------------------------------------------------------------
from azureml.core.model import InferenceConfig

classifier_inference_config = InferenceConfig(runtime="python",
                                              source_directory='./winecode',
                                              entry_script="score.py",
                                              conda_file="env.yml")

# -- Create the Inference Clusters ------------------------------------------------------------
from azureml.core.compute import ComputeTarget, AksCompute

cluster_name = 'aks-cluster'
compute_config = AksCompute.provisioning_configuration(cluster_purpose=AksCompute.ClusterPurpose.DEV_TEST)
production_cluster = ComputeTarget.create(ws, cluster_name, compute_config)
production_cluster.wait_for_completion(show_output=True)

# -- Deploy the Model in the Inference Cluster -------------------------------------------------
from azureml.core.webservice import AksWebservice

classifier_deploy_config = AksWebservice.deploy_configuration(cpu_cores=1,
                                                              memory_gb=1)
from azureml.core.model import Model

model = ws.models['wine_model']
service = Model.deploy(workspace=ws,
                       name='wine-service',
                       models=[model],
                       inference_config=classifier_inference_config,
                       deployment_config=classifier_deploy_config,
                       deployment_target=production_cluster)
service.wait_for_deployment(show_output=True)

endpoint = service.scoring_uri
print(endpoint)

# -- Get the predictions ----------------------------------------------------------------------
primary_key, secondary_key = service.get_keys()

import json
import urllib.request  # the walkthrough uses requests; the test venv has only the stdlib

x_new = [[7.3, 0.65, 0, 1.2, 0.065, 15, 21, 0.9946, 3.39, 0.47, 10]]
json_data = json.dumps({"data": x_new})
request_headers = {"Content-Type": "application/json",
                   "Authorization": "Bearer " + primary_key}
request = urllib.request.Request(endpoint, data=json_data.encode(), headers=request_headers)
with urllib.request.urlopen(request) as response:
    predictions = json.loads(response.read())
print(response.status, predictions)

