# The walkthrough's inference script. Its only change: `Model` comes from Cairn's runtime
# (`cairn.serving`), which resolves a registered model's files the way Azure ML's
# `azureml.core.model.Model.get_model_path` does.
import json
import joblib
import numpy as np
from cairn.serving import Model

# Called when the service is loaded
def init():
    global model
    # Get the path to the registered model file and load it
    model_path = Model.get_model_path('wine_model')
    model = joblib.load(model_path)

# Called when a request is received
def run(raw_data):
    # Get the input data as a numpy array
    data = np.array(json.loads(raw_data)['data'])
    # Get a prediction from the model
    predictions = model.predict(data)
    # Return the predictions as any JSON serializable format
    return predictions.tolist()
