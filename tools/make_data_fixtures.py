#!/usr/bin/env python3
"""Generate the scikit-learn reference fixtures for the data/ and metrics tests.

Run from the repository root (needs numpy and scikit-learn >= 1.6):

    python3 tools/make_data_fixtures.py

It writes, deterministically (fixed seeds), into tests/fixtures/data/:

  auc_cases.json     binary ROC AUC cases: float32 scores, 0/1 labels, and
                     sklearn's roc_auc_score and roc_curve(drop_intermediate=False)
                     (fpr, tpr, thresholds without the leading +inf); random
                     scores, heavy ties, all-equal scores, perfect, inverted,
                     sizes 1..200, one-class cases (auc null).
  auc_multilabel.json  an [n, 11] case with one single-class column: per-label
                     AUCs (null where undefined) and their mean over the rest.
  group_kfold.json   sklearn GroupKFold(n_splits).split fold of every sample
                     for a skewed 300-sample / 57-patient list and small cases.

Floats are written by json (repr: shortest round-trip), so C++ reads back the
exact doubles. Scores are float32 values (as our engine produces them) and
sklearn is run on the float32 arrays.
"""
import json
import os

import numpy as np
import sklearn
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.model_selection import GroupKFold

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "data")


def f32_list(a):
    return [float(x) for x in np.asarray(a, dtype=np.float32).ravel()]


def auc_case(name, scores, labels):
    scores = np.asarray(scores, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    case = {"name": name, "scores": f32_list(scores), "labels": [int(v) for v in labels]}
    if len(np.unique(labels)) == 2:
        case["auc"] = float(roc_auc_score(labels, scores))
        fpr, tpr, thr = roc_curve(labels, scores, drop_intermediate=False)
        assert np.isinf(thr[0])
        case["fpr"] = [float(v) for v in fpr]
        case["tpr"] = [float(v) for v in tpr]
        case["thresholds"] = [float(v) for v in thr[1:]]
    else:
        case["auc"] = None
    return case


def make_auc_cases(rng):
    cases = []

    def labels_for(n, p=0.4):
        y = (rng.random(n) < p).astype(np.int64)
        if n >= 2 and y.min() == y.max():  # make both classes present
            y[0] = 1 - y[0]
        return y

    for n in (2, 3, 5, 17, 64, 200):
        cases.append(auc_case(f"random n={n}", rng.random(n), labels_for(n)))
    for n in (10, 50, 200):
        cases.append(auc_case(f"ties 1 decimal n={n}", np.round(rng.random(n), 1), labels_for(n)))
    cases.append(auc_case("ties 3 levels n=40", rng.integers(0, 3, 40) * 0.5, labels_for(40)))
    # Scores correlated with labels (a realistic model), with ties.
    y = labels_for(120, 0.2)
    cases.append(auc_case("informative rounded n=120", np.round(0.3 * y + rng.random(120), 2), y))
    cases.append(auc_case("all equal n=25 -> 0.5", np.full(25, 0.7), labels_for(25)))
    y = labels_for(30)
    cases.append(auc_case("perfect n=30", y * 0.5 + rng.random(30) * 0.4, y))
    cases.append(auc_case("inverted n=30", (1 - y) * 0.5 + rng.random(30) * 0.4, y))
    cases.append(auc_case("negative logits n=33", rng.normal(-3, 2, 33), labels_for(33)))
    cases.append(auc_case("two samples tied", [0.5, 0.5], [0, 1]))
    cases.append(auc_case("one sample", [0.3], [1]))
    cases.append(auc_case("only positives n=6", rng.random(6), np.ones(6, dtype=np.int64)))
    cases.append(auc_case("only negatives n=6", rng.random(6), np.zeros(6, dtype=np.int64)))
    return cases


def make_multilabel(rng):
    n, c = 60, 11
    y = (rng.random((n, c)) < 0.3).astype(np.int64)
    y[:, 0] = 0  # a single-class column: AUC undefined
    y[0, 1:] = 1
    y[1, 1:] = 0  # every other column has both classes
    scores = (0.4 * y + rng.random((n, c))).astype(np.float32)
    scores[:, 5] = np.round(scores[:, 5], 1)  # ties in one column
    per_label = []
    for j in range(c):
        if len(np.unique(y[:, j])) == 2:
            per_label.append(float(roc_auc_score(y[:, j], scores[:, j])))
        else:
            per_label.append(None)
    defined = [v for v in per_label if v is not None]
    return {"n": n, "scores": f32_list(scores), "labels": [int(v) for v in y.ravel()],
            "per_label": per_label, "mean": float(np.mean(defined)), "defined_labels": len(defined)}


def folds_of(groups, n_splits):
    fold = np.full(len(groups), -1, dtype=np.int64)
    X = np.zeros((len(groups), 1))
    for f, (_, test) in enumerate(GroupKFold(n_splits=n_splits).split(X, groups=groups)):
        fold[test] = f
    assert (fold >= 0).all()
    return [int(v) for v in fold]


def make_group_kfold(rng):
    cases = []
    # 57 patients with skewed sizes (a few with many studies, many with one or
    # two, at most 30), 300 samples, shuffled so groups are interleaved.
    patients = [f"p{rng.integers(0, 16**8):08x}" for _ in range(57)]
    weights = rng.pareto(1.2, 57) + 1.0
    sizes = np.clip(np.floor(weights / weights.sum() * 300), 1, 30).astype(int)
    while sizes.sum() < 300:
        k = int(rng.integers(0, 57))
        if sizes[k] < 30:
            sizes[k] += 1
    while sizes.sum() > 300:
        sizes[int(np.argmax(sizes))] -= 1
    groups = [p for p, s in zip(patients, sizes) for _ in range(s)]
    groups = [groups[i] for i in rng.permutation(len(groups))]
    for k in (5, 3):
        cases.append({"name": f"skewed 300/57 k={k}", "n_splits": k, "groups": groups,
                      "folds": folds_of(groups, k)})
    small = [
        ("sklearn docstring", ["0", "0", "2", "2", "3", "3"], 2),
        ("all singletons", [f"g{i:02d}" for i in range(10)], 3),
        ("equal sizes ties", ["b", "a", "c", "d", "a", "b", "c", "d"], 2),
        ("unicode and case", ["Zed", "alpha", "Ébert", "zed", "alpha", "Zed", "beta"], 2),
        ("k = n_groups", ["x", "y", "z", "x", "y", "x"], 3),
    ]
    for name, g, k in small:
        cases.append({"name": name, "n_splits": k, "groups": g, "folds": folds_of(g, k)})
    return cases


def dump(name, obj):
    path = os.path.join(OUT, name)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {os.path.relpath(path)} ({os.path.getsize(path)} bytes)")


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20210316)
    meta = {"generator": "tools/make_data_fixtures.py", "sklearn": sklearn.__version__,
            "numpy": np.__version__}
    dump("auc_cases.json", {"meta": meta, "cases": make_auc_cases(rng)})
    dump("auc_multilabel.json", {"meta": meta, **make_multilabel(rng)})
    dump("group_kfold.json", {"meta": meta, "cases": make_group_kfold(rng)})


if __name__ == "__main__":
    main()
