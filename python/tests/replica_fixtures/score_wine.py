# The walkthrough's score.py, with cairn.serving's Model in place of azureml.core.model's and
# pickle in place of joblib (the model is a stdlib object, see linear_model.py).
import json
import pickle

from cairn.serving import Model


# Called when the service is loaded
def init():
    global model
    # Get the path to the registered model file and load it
    model_path = Model.get_model_path('wine_model')
    with open(model_path, 'rb') as f:
        model = pickle.load(f)


# Called when a request is received
def run(raw_data):
    # Get the input data as a list of rows
    data = json.loads(raw_data)['data']
    # Get a prediction from the model
    predictions = model.predict(data)
    # Return the predictions as any JSON serializable format
    return predictions
