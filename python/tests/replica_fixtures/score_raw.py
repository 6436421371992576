# @rawhttp: run() gets the request itself and answers with its own status and headers.
from cairn.serving import AMLResponse, rawhttp


def init():
    pass


@rawhttp
def run(request):
    if request.method == "GET":
        return AMLResponse({"args": request.args.to_dict(), "path": request.full_path}, 200, json_str=True)
    if request.get_data() == b"fail":
        return AMLResponse("backend down", 503)
    body = request.get_json()
    return AMLResponse(
        {"got": body, "client": request.headers.get("X-Client"), "method": request.method},
        201,
        {"X-Model": "raw, v2"},
        json_str=True,
    )
