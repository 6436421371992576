"""``azureml.contrib.services`` on Cairn: the modules Azure's scoring-script docs import,

    from azureml.contrib.services.aml_request import AMLRequest, rawhttp
    from azureml.contrib.services.aml_response import AMLResponse

re-exporting ``cairn.serving`` (the one implementation, which the replica worker checks with
``isinstance``). Like Azure's, this package itself exports nothing; the two modules do.
"""
