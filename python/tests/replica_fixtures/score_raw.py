# @rawhttp: run() gets the request itself and answers with its own status and headers. Imported
# the way Azure's docs write it (azureml.contrib.services), which Cairn maps onto cairn.serving.
from azureml.contrib.services.aml_request import AMLRequest, rawhttp
from azureml.contrib.services.aml_response import AMLResponse


def init():
    pass


@rawhttp
def run(request):
    assert isinstance(request, AMLRequest), type(request)
    if request.method == "GET":
        args = request.args  # what Flask scripts do with request.args
        return AMLResponse({"args": dict(args), "all": args.to_dict(flat=False), "k": args["k"],
                            "n": args.get("n", -1, type=int), "path": request.full_path}, 200, json_str=True)
    if request.get_data() == b"fail":
        return AMLResponse("backend down", 503)
    body = request.get_json()
    return AMLResponse(
        {"got": body, "client": request.headers.get("X-Client"), "method": request.method},
        201,
        {"X-Model": "raw, v2"},
        json_str=True,
    )
