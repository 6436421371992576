"""``azureml.train`` on Cairn: the ``Estimator`` of Azure ML v1."""
