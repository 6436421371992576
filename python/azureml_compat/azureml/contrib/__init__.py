"""``azureml.contrib`` on Cairn: only ``azureml.contrib.services``, what scoring scripts import."""
