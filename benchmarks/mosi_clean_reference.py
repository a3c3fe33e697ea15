"""Reference accuracy on mosi-utterance-clean: frozen MiniLM sentence embeddings + logistic regression.

``MMFUSE_DATA_DIR=../shared/data .venv/bin/python benchmarks/mosi_clean_reference.py``

A context-free ``LogisticRegressionCV`` (scikit-learn, 5-fold CV over its default grid of C, chosen on the
training folds) is fitted per feature set on the training utterances and scored on the test utterances. Two
fits: on the 1,447 released training utterances (``train`` + ``val``, the issue's reference number) and on our
``train`` split only, scored on ``val`` too (validation here is clean, so it should track test). Audio is
standardised; the MiniLM embeddings are unit-norm and used as they are.
"""

from __future__ import annotations

import time

import numpy as np
from sklearn.linear_model import LogisticRegressionCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mmfuse.data import load_dataset


def _rows(views, modalities):  # one row per labelled utterance (step)
    xs, ys = [], []
    for view in views:
        for rec in view:
            keep = np.asarray(rec.label) >= 0
            xs.append(np.concatenate([rec.values[m] for m in modalities], axis=1)[keep])
            ys.append(np.asarray(rec.label)[keep])
    return np.concatenate(xs), np.concatenate(ys)


def _model(modalities):
    clf = LogisticRegressionCV(Cs=10, cv=5, max_iter=5000, scoring="accuracy")
    return clf if modalities == ["text"] else make_pipeline(StandardScaler(), clf)


def main() -> None:
    start = time.perf_counter()
    ds = load_dataset("mosi-utterance-clean")
    split = {s: ds.split(s) for s in ("train", "val", "test")}
    print("| features | fitted on | n fit | val accuracy | test accuracy |\n|---|---|---|---|---|")
    for mods in (["text"], ["audio"], ["audio", "text"]):
        x_te, y_te = _rows([split["test"]], mods)
        x_all, y_all = _rows([split["train"], split["val"]], mods)
        test = _model(mods).fit(x_all, y_all).score(x_te, y_te)
        print(f"| {' + '.join(mods)} | train + val | {len(y_all)} | - | {test:.3f} |")
        x_tr, y_tr = _rows([split["train"]], mods)
        clf = _model(mods).fit(x_tr, y_tr)
        val = clf.score(*_rows([split["val"]], mods))
        print(f"| {' + '.join(mods)} | train | {len(y_tr)} | {val:.3f} | {clf.score(x_te, y_te):.3f} |")
    _, y_test = _rows([split["test"]], ["audio"])
    print(f"\ntest majority rate: {max(np.mean(y_test), 1 - np.mean(y_test)):.3f}")
    print(f"wall time: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
