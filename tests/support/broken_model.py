"""A scikit-learn-shaped model whose predict raises an error no backend maps (for tests)."""


class ExplodingModel:
    n_features_in_ = 2

    def predict(self, rows):
        raise TypeError("the model's own code failed")
