# One script with several behaviours, chosen by the request body, to drive the replica's edge cases.
import json
import os
import time

calls = 0


def init():
    global calls
    calls = 0


def run(raw_data):
    global calls
    calls += 1
    if raw_data == "boom":
        return 1 / 0
    if raw_data == "exit":
        raise SystemExit(4)
    if raw_data == "calls":
        return calls
    if raw_data == "string":
        return "a plain string"
    if raw_data == "dumped":
        return json.dumps({"a": 1})
    if raw_data == "unencodable":
        return {1, 2}
    if raw_data.startswith("wait:"):
        # Blocks until the test creates the file: a run() that is busy for as long as the test wants.
        path = raw_data[len("wait:"):]
        while not os.path.exists(path):
            time.sleep(0.005)
        return "released"
    return {"echo": raw_data}
