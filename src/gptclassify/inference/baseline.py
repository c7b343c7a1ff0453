"""The cheap baseline a run should beat: TF-IDF of word 1-2-grams and a linear model of the run's
shape (a linear SVM for classes, one per label for label sets, ridge regression for numbers; for
pairs, the two texts' vectors side by side), trained on the same training split and scored on the
same split as the run. scikit-learn is an optional extra (`pip install "gptclassify[report]"`)."""

from __future__ import annotations

import time

import numpy as np

SKLEARN_MISSING = 'the TF-IDF baseline needs scikit-learn: pip install "gptclassify[report]"'


def tfidf_baseline(train: tuple[list, list], test: tuple[list, list], task: str, labels: list[str]) -> dict:
    """{"predicted": per test text (a class id, a 0/1 row, a number), "seconds": fit and predict}."""
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import Ridge
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.svm import LinearSVC

    started = time.perf_counter()
    (train_texts, train_y), (test_texts, _) = train, test
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    if train_texts and isinstance(train_texts[0], tuple):  # pairs: each member's vector, side by side
        vectorizer.fit([t for pair in train_texts for t in pair])
        features = lambda texts: hstack([vectorizer.transform([a for a, _ in texts]),  # noqa: E731
                                         vectorizer.transform([b for _, b in texts])]).tocsr()
        x_train, x_test = features(train_texts), features(test_texts)
    else:
        x_train, x_test = vectorizer.fit_transform(train_texts), vectorizer.transform(test_texts)
    y = np.asarray(train_y)
    if task == "multi-label":
        keep = y.sum(0) > 0  # a label no training text has is never predicted
        model = OneVsRestClassifier(LinearSVC()).fit(x_train, y[:, keep])
        predicted = np.zeros((x_test.shape[0], len(labels)))
        predicted[:, keep] = model.predict(x_test)
    elif task == "regression":
        predicted = Ridge(alpha=1.0).fit(x_train, y).predict(x_test)
    else:
        predicted = LinearSVC().fit(x_train, y).predict(x_test)
    return {"predicted": predicted, "seconds": time.perf_counter() - started}
