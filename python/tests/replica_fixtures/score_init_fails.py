def init():
    with open("/nonexistent/wine_model/1/model.pkl", "rb") as f:
        f.read()


def run(raw_data):
    return raw_data
