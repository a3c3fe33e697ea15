"""How far MOSI-utterance's validation split (carved from train) overstates test accuracy, per modality.

``MMFUSE_DATA_DIR=../shared/data .venv/bin/python benchmarks/mosi_contamination.py``

A logistic regression (scikit-learn, standardised features, C=1) is fitted per modality on the training
utterances and scored on the validation and test utterances. The released features were learned on the
training videos, so validation (training videos held out from our training split) scores near 1 while test
(unseen speakers) does not: the README's "Results on MOSI-utterance" quotes this table.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mmfuse.data import load_dataset


def _rows(view, modalities):  # one row per labelled utterance (step)
    xs, ys = [], []
    for rec in view:
        keep = np.asarray(rec.label) >= 0
        xs.append(np.concatenate([rec.values[m] for m in modalities], axis=1)[keep])
        ys.append(np.asarray(rec.label)[keep])
    return np.concatenate(xs), np.concatenate(ys)


def main() -> None:
    ds = load_dataset("mosi-utterance")
    splits = {s: ds.split(s) for s in ("train", "val", "test")}
    print("| features | val accuracy | test accuracy |\n|---|---|---|")
    for mods in [*([m] for m in ds.modalities), list(ds.modalities)]:
        x_tr, y_tr = _rows(splits["train"], mods)
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000)).fit(x_tr, y_tr)
        scores = [clf.score(*_rows(splits[s], mods)) for s in ("val", "test")]
        print(f"| {' + '.join(mods)} | {scores[0]:.3f} | {scores[1]:.3f} |")
    _, y_test = _rows(splits["test"], list(ds.modalities))
    print(f"\ntest majority rate: {max(np.mean(y_test), 1 - np.mean(y_test)):.3f}")


if __name__ == "__main__":
    main()
