#!/usr/bin/env python3
"""LightGBM (and scikit-learn HistGradientBoosting) reference for the federated GBDT on wa_churn.

The rows are the pooled train / hold-out split of the 5-institution churn scenario of
tests/models.rs and tests/gbdt_reference.rs (Dirichlet alpha = 2, seed 0, 20 % stratified
hold-out per institution), exported by the Rust side. From the repository root:

    FEDSILO_CHURN_EXPORT_DIR=/tmp/churn-split cargo test --test gbdt_reference -- --ignored export_churn_split_for_lightgbm
    python3 benches/reference/lightgbm_churn.py /tmp/churn-split

Requirements: pip install lightgbm scikit-learn pandas

Settings matched to fedsilo's GbdtParams used by the test (n_trees 40, max_depth 4,
max_leaves 16 (default), learning_rate 0.1, max_bins 64, min_child_weight 1 (default),
lambda 1 (default), gamma 0 (default)):

    LightGBM                      fedsilo
    n_estimators=40               n_trees
    max_depth=4, num_leaves=16    max_depth, max_leaves (= 2^depth: leaf-wise growth is
                                  capped to the same complete depth-4 trees)
    learning_rate=0.1             learning_rate
    max_bin=64                    max_bins (+1 missing bin in both)
    min_sum_hessian_in_leaf=1     min_child_weight
    lambda_l2=1                   lambda
    min_gain_to_split=0           gamma
    min_data_in_leaf=1            (fedsilo has no row-count limit, only the hessian one)
    min_data_in_bin=1             (fedsilo's bins may hold any count)
    objective=binary, boost_from_average (default) = fedsilo's base score (global log-odds)
    no bagging, no feature sampling, missing values learned per split (NaN), both.

Binning differs: LightGBM picks its bin edges from the exact pooled values, fedsilo from
a 1024-bin fine histogram over mean +- 4 sd summed under secure aggregation.

Prints the hold-out AUC of each model and the library versions.
"""

import sys
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import sklearn
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score


def load(path: Path):
    df = pd.read_csv(path, dtype=np.float32)
    y = df.pop("label").to_numpy()
    # LightGBM refuses some characters in feature names; the columns keep their order.
    names = list(df.columns)
    df.columns = [f"f{i}" for i in range(len(names))]
    return df, y, names


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: lightgbm_churn.py DIR  (DIR holds train.csv and holdout.csv)")
    d = Path(sys.argv[1])
    xt, yt, names = load(d / "train.csv")
    xh, yh, names_h = load(d / "holdout.csv")
    assert names == names_h, "train and hold-out columns differ"
    print(
        f"train {len(yt)} rows ({int(yt.sum())} positive), "
        f"hold-out {len(yh)} rows ({int(yh.sum())} positive), {len(names)} features"
    )

    params = dict(
        objective="binary",
        n_estimators=40,
        max_depth=4,
        num_leaves=16,
        learning_rate=0.1,
        max_bin=64,
        min_sum_hessian_in_leaf=1.0,
        reg_lambda=1.0,
        reg_alpha=0.0,
        min_split_gain=0.0,
        min_data_in_leaf=1,
        min_data_in_bin=1,
        subsample=1.0,
        subsample_freq=0,
        colsample_bytree=1.0,
        deterministic=True,
        force_row_wise=True,
        num_threads=2,
        random_state=0,
        verbose=-1,
    )
    lgbm = lgb.LGBMClassifier(**params).fit(xt, yt)
    auc_lgb = roc_auc_score(yh, lgbm.predict_proba(xh)[:, 1])
    print(f"LightGBM {lgb.__version__}: hold-out AUC {auc_lgb:.4f}")

    hgb = HistGradientBoostingClassifier(
        max_iter=40,
        max_depth=4,
        max_leaf_nodes=16,
        learning_rate=0.1,
        max_bins=64,
        l2_regularization=1.0,
        min_samples_leaf=1,
        early_stopping=False,
        random_state=0,
    ).fit(xt, yt)
    auc_hgb = roc_auc_score(yh, hgb.predict_proba(xh)[:, 1])
    print(
        f"scikit-learn {sklearn.__version__} HistGradientBoostingClassifier: "
        f"hold-out AUC {auc_hgb:.4f}"
    )
    print(
        f"python {sys.version.split()[0]}, numpy {np.__version__}, pandas {pd.__version__}"
    )


if __name__ == "__main__":
    main()
