"""A tiny picklable regression model (standard library only) standing in for the walkthrough's
scikit-learn wine model: ``predict(rows)`` is ``intercept + coef · row`` for each row."""


class LinearModel:
    def __init__(self, coef, intercept):
        self.coef = list(coef)
        self.intercept = intercept

    def predict(self, rows):
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            raise ValueError("expected a list of rows")
        out = []
        for row in rows:
            if len(row) != len(self.coef):
                raise ValueError(f"expected {len(self.coef)} features, got {len(row)}")
            out.append(self.intercept + sum(c * x for c, x in zip(self.coef, row)))
        return out
