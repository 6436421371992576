# A run() that asks for the request headers.
def init():
    pass


def run(data, request_headers):
    return {
        "data": data,
        "client": request_headers.get("x-client"),
        "Client": request_headers["X-Client"],
        "has": "x-ms-client-request-id" in request_headers,
        "keys": sorted(request_headers),
    }
