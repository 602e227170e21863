"""The kit's own workflow: a feature step and a model, neither of ramp-workflow's.

`features.py` defines `Features` (fit on the training rows, then transform any rows);
`model.py` defines `get_model()`, a scikit-learn classifier fitted on the features.
test_submission takes the fold (ramp-workflow passes it when the third parameter is
named `fold`): it is None for the test rows.
"""

import os

import numpy as np
from rampwf.utils.importing import import_module_from_source


class FeaturesThenModel:
    def __init__(self, workflow_element_names=('features', 'model')):
        self.element_names = list(workflow_element_names)

    def _load(self, module_path, index):
        name = self.element_names[index]
        return import_module_from_source(
            os.path.join(module_path, name + '.py'), name, sanitize=True)

    def train_submission(self, module_path, X, y, train_is=None):
        if train_is is None:
            train_is = slice(None, None, None)
        features = self._load(module_path, 0).Features()
        X_train = features.fit(X[train_is], y[train_is]).transform(X[train_is])
        model = self._load(module_path, 1).get_model()
        model.fit(X_train, y[train_is])
        return features, model

    def test_submission(self, trained_model, X, fold):
        features, model = trained_model
        proba = model.predict_proba(features.transform(X))
        return np.asarray(proba, dtype=np.float64)
