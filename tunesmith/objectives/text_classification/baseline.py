"""The classical baseline every fine-tuned classifier is reported against.

TF-IDF (word 1-2 grams + char 2-4 grams, so short noisy texts still get features) and a
logistic regression, fit on the same train split the transformer saw. A transformer that
cannot beat this is a red flag: too little data, broken labels, or a training bug.
"""

from __future__ import annotations

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline


def fit_baseline(texts: list[str], y: np.ndarray, seed: int = 42) -> Pipeline:
    """Fit TF-IDF + logistic regression on `texts` with class ids `y`."""
    features = FeatureUnion(
        [
            ("word", TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True)),
            (
                "char",
                TfidfVectorizer(
                    analyzer="char_wb", ngram_range=(2, 4), min_df=1, sublinear_tf=True
                ),
            ),
        ]
    )
    model = Pipeline(
        [("tfidf", features), ("clf", LogisticRegression(max_iter=1000, C=4.0, random_state=seed))]
    )
    model.fit(texts, y)
    return model


def baseline_proba(model: Pipeline, texts: list[str], n_classes: int) -> np.ndarray:
    """Class probabilities as an (n, n_classes) array, zero for classes unseen in training."""
    proba = np.zeros((len(texts), n_classes))
    proba[:, model.classes_] = model.predict_proba(texts)
    return proba
