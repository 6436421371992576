# The walkthrough's train.py, with `from cairn import Run` in place of `from azureml.core import Run`
# (the Azure ML compatibility layer, issue 6, will run the original unchanged).
import argparse
import os

import joblib
import numpy as np
import pandas as pd
from sklearn.model_selection import cross_val_score
from sklearn.tree import DecisionTreeRegressor

from cairn import Run

parser = argparse.ArgumentParser()
parser.add_argument('--data-folder', type=str, dest='data_folder', help='data folder mounting point')
parser.add_argument('--max-depth', type=float, dest='max_depth', default=5, help='max depth')
args = parser.parse_args()

data_folder = os.path.join(args.data_folder, 'winedata')
print('Data folder:', data_folder)

wine_data = pd.read_csv(os.path.join(data_folder, 'winequality_red.csv'))

X = wine_data.drop(columns=["quality"])
y = wine_data["quality"]

max_depth = int(args.max_depth)
clf = DecisionTreeRegressor(random_state=0, max_depth=max_depth)
rmse = np.mean(np.sqrt(-cross_val_score(clf, X, y, scoring="neg_mean_squared_error", cv=5)))
print('RMSE is', rmse)

run = Run.get_context()
run.log('max depth', float(args.max_depth))
run.log('rmse', float(rmse))

os.makedirs('outputs', exist_ok=True)
clf.fit(X, y)
joblib.dump(value=clf, filename='outputs/wine_model.pkl')

run.complete()
