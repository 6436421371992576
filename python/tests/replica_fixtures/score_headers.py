# A run() that asks for the request headers.
def init():
    pass


def run(data, request_headers):
    return {"data": data, "client": request_headers.get("x-client")}
