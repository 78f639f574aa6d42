"""Train the demo model (iris, logistic regression) on a data set that ships inside scikit-learn."""

from __future__ import annotations

import argparse
from pathlib import Path


def train(path: Path) -> Path:
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(features, labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, path)
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path", type=Path, nargs="?", default=Path("var/models/iris.joblib"))
    print(train(parser.parse_args().path))
