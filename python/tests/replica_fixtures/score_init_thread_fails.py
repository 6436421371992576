# init() starts a (non-daemon) background thread, then fails: the replica must still exit.
import threading
import time


def init():
    threading.Thread(target=time.sleep, args=(3600,), name="score-py-helper").start()
    raise RuntimeError("no model for you")


def run(raw_data):
    return raw_data
