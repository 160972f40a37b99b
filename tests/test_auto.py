"""``auto`` (selection spec §5): components, the pool combination, graceful fallback, the fitted constants."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from transfersel.errors import InputError
from transfersel.metrics import get_metric, list_metrics
from transfersel.metrics.auto import (
    combine,
    component_scores,
    load_config,
    parse_component,
    standardise,
)
from transfersel.priors import PRIORS

NAMES = ["leep", "emms@16", "logme@16", "knn", "prior_params"]


@pytest.fixture(scope="module")
def pool_inputs(vectors) -> dict[str, dict]:
    """Four 'models' on one target: small_gauss's features cut to 8, 16, 32 and 64 columns."""
    v = vectors["small_gauss"]
    return {
        f"cut{k}": {"features": v["features"][:, :k], "labels": v["labels"], "prior": {"prior_params": k / 8}}
        for k in (8, 16, 32, 64)
    } | {"_shared": {"logits": v["logits"], "label_embeddings": v["label_embeddings"]}}


def _pool(pool_inputs, *, logits: bool, embeddings: bool, priors: bool = True, names=NAMES) -> dict:
    shared = pool_inputs["_shared"]
    out = {}
    for model, p in pool_inputs.items():
        if model.startswith("_"):
            continue
        out[model] = component_scores(
            p["features"],
            p["labels"],
            names,
            logits=shared["logits"] if logits else None,
            label_embeddings=shared["label_embeddings"] if embeddings else None,
            priors=p["prior"] if priors else None,
        )
    return out


def test_components_match_the_metrics(vectors):
    v = vectors["small_gauss"]
    got = component_scores(v["features"], v["labels"], ["logme", "knn"], logits=v["logits"])
    assert got["logme"] == get_metric("logme")(v["features"], v["labels"])
    assert got["knn"] == get_metric("knn")(v["features"], v["labels"])


def test_reduced_component_is_the_metric_on_pca_features(vectors):
    v = vectors["mid_gauss"]
    X = np.asarray(v["features"], dtype=np.float64)
    Xc = X - X.mean(axis=0)
    _, _, Vt = np.linalg.svd(Xc, full_matrices=False)
    expected = get_metric("hscore")(Xc @ Vt[:24].T, v["labels"])
    got = component_scores(v["features"], v["labels"], ["hscore@24"])["hscore@24"]
    assert got == pytest.approx(expected, rel=1e-6)


def test_auto_without_logits_or_embeddings_uses_the_rest_and_says_so(pool_inputs):
    weights = dict.fromkeys(NAMES, 1.0)
    full = combine(_pool(pool_inputs, logits=True, embeddings=True), weights=weights)
    assert full.used == tuple(NAMES) and not full.missing
    assert full.note == "auto used " + ", ".join(NAMES)

    bare = combine(_pool(pool_inputs, logits=False, embeddings=False), weights=weights)
    assert bare.used == ("logme@16", "knn", "prior_params")
    assert set(bare.missing) == {"leep", "emms@16"}
    assert "without leep, emms@16" in bare.note and "renormalised" in bare.note
    # renormalised: exactly auto with the missing components' weights removed
    rest = combine(_pool(pool_inputs, logits=True, embeddings=True), weights=dict.fromkeys(bare.used, 1.0))
    assert bare == pytest.approx(rest)
    assert all(math.isfinite(s) for s in bare.values())


def test_auto_without_priors_falls_back_to_the_metrics(pool_inputs):
    got = combine(
        _pool(pool_inputs, logits=True, embeddings=True, priors=False), weights=dict.fromkeys(NAMES, 1.0)
    )
    assert "prior_params" not in got.used and "without" in got.note and "prior_params" in got.note


def test_one_model_without_a_component_is_scored_on_the_rest(pool_inputs):
    pool = _pool(pool_inputs, logits=True, embeddings=True)
    pool["cut8"] = {k: v for k, v in pool["cut8"].items() if k != "leep"}  # e.g. a model without source head
    got = combine(pool, weights=dict.fromkeys(NAMES, 1.0))
    assert got.missing == {"leep": ["cut8"]} and "leep (for 1 model)" in got.note
    assert math.isfinite(got["cut8"])


def test_combine_on_a_pool_of_one_errors_clearly(pool_inputs):
    one = dict(list(_pool(pool_inputs, logits=True, embeddings=True).items())[:1])
    with pytest.raises(InputError, match="pool of candidate models and got 1"):
        combine(one, weights={"knn": 1.0})


def test_standardise_edge_cases():
    assert standardise([3.0, 3.0, 3.0]).tolist() == [0.5, 0.5, 0.5]
    assert standardise([1.0, 1.0], how="z").tolist() == [0.0, 0.0]
    r = standardise([2.0, math.nan, 1.0, 2.0])
    assert r[0] == r[3] == 0.75 and r[2] == 0.0 and math.isnan(r[1])
    with pytest.raises(InputError, match="unknown"):
        standardise([1.0, 2.0], how="minmax")


def test_parse_component():
    assert parse_component("logme@64") == ("logme", 64)
    assert parse_component("prior_params") == ("prior_params", None)
    with pytest.raises(InputError, match="PCA dimension d >= 1"):
        parse_component("logme@x")


def test_selection_constants_load():
    cfg = load_config()
    assert cfg.standardise in ("rank", "z") and cfg.weights and all(w > 0 for w in cfg.weights.values())
    known = {m.name for m in list_metrics(pool=None)} | set(PRIORS)
    assert {parse_component(c)[0] for c in cfg.components} <= known


def test_selection_file_errors_name_the_fix(tmp_path):
    bad = tmp_path / "selection.json"
    bad.write_text(json.dumps({"reduce": {}}))
    with pytest.raises(InputError, match="fit_auto.py"):
        load_config(bad)
    bad.write_text(json.dumps({"auto": {"weights": {"knn": -1}}}))
    with pytest.raises(InputError, match="positive"):
        load_config(bad)


def test_registered_pool_metric_degrades_and_says_what_it_used(pool_inputs):
    metric = get_metric("auto")
    assert metric.pool and list(metric.pool_weights) and "auto" not in {m.name for m in list_metrics()}
    cfg = load_config()
    shared = pool_inputs["_shared"]
    models = {k: p for k, p in pool_inputs.items() if not k.startswith("_")}
    full = {
        k: metric.components(
            p["features"],
            p["labels"],
            logits=shared["logits"],
            label_embeddings=shared["label_embeddings"],
            priors=p["prior"] | {"prior_input_size": 10.0, "prior_source_acc": 70.0},
        )
        for k, p in models.items()
    }
    bare = {k: metric.components(p["features"], p["labels"]) for k, p in models.items()}
    needs_more = {
        c
        for c in cfg.components
        if c.startswith("prior_")
        and c != "prior_feature_dim"
        or not c.startswith("prior_")
        and get_metric(parse_component(c)[0]).needs
    }
    def names(comps: dict) -> set[str]:  # a pool metric's parts are "ncti.nuc", ...: its name once
        return {c.split(".")[0] for c in comps}

    assert names(full["cut8"]) == set(cfg.components)
    assert names(bare["cut8"]) == set(cfg.components) - needs_more
    got = metric.combine(bare)
    assert set(got) == set(models) and got.note.startswith("auto used ")
    assert set(got.used) == set(cfg.components) - needs_more
    if needs_more:
        assert "without" in got.note and all(c in got.note for c in needs_more)
    with pytest.raises(InputError, match="at least 2 models"):
        metric.combine(dict(list(bare.items())[:1]))


def test_a_pool_metric_inside_auto_is_combined_over_the_pool_first(pool_inputs):
    """``ncti`` as a component of auto: its parts per model, combined over the pool by NCTI's own rule,
    then standardised like any other component."""
    from transfersel.metrics.auto import component_values

    pool = _pool(pool_inputs, logits=False, embeddings=False, names=["ncti", "knn"])
    models = list(pool)
    assert set(pool["cut8"]) == {"knn", "ncti.nuc", "ncti.sfda", "ncti.compact"}
    parts = {m: {k.split(".")[1]: v for k, v in pool[m].items() if k.startswith("ncti.")} for m in models}
    want = get_metric("ncti").combine(parts)
    assert component_values(pool, "ncti", models) == [want[m] for m in models]
    got = combine(pool, weights={"ncti": 1.0, "knn": 1.0}, how="z")
    z = (np.array([want[m] for m in models]) - np.mean(list(want.values()))) / np.std(list(want.values()))
    zk = standardise([pool[m]["knn"] for m in models], how="z")
    assert [got[m] for m in models] == pytest.approx(((z + zk) / 2).tolist())
    pool["cut8"] = {k: v for k, v in pool["cut8"].items() if k != "ncti.nuc"}  # an incomplete model
    assert math.isnan(component_values(pool, "ncti", models)[0]) and got.used == ("ncti", "knn")
    # a table of scores holds the pool score itself: it is read as it is, not looked for as parts
    scored = {m: {"ncti": want[m], "knn": pool[m]["knn"]} for m in models}
    assert component_values(scored, "ncti", models) == [want[m] for m in models]
    assert combine(scored, weights={"ncti": 1.0, "knn": 1.0}, how="z") == pytest.approx(got)


def test_metric_options_reach_the_components(vectors):
    v = vectors["wide_random"]  # N < D: LogME's padded evidence differs from the published value
    padded = component_scores(v["features"], v["labels"], ["logme"], options={"logme": {"variant": "padded"}})
    plain = component_scores(v["features"], v["labels"], ["logme"])
    assert padded["logme"] == get_metric("logme")(v["features"], v["labels"], variant="padded")
    assert padded["logme"] != plain["logme"]


def test_a_metric_inside_auto_and_by_itself_is_computed_once_per_model(vectors, monkeypatch):
    """rank -m all scores every metric and auto on one shared Inputs: each metric runs once, and its
    warnings are replayed for the second caller (here SFDA's saturation warning, N - C <= D)."""
    import dataclasses
    import warnings

    from transfersel import metrics
    from transfersel.errors import TransferabilityWarning
    from transfersel.metrics import check_inputs

    v = vectors["wide_random"]  # N = 300 < D = 512: SFDA is saturated and warns
    sfda = get_metric("sfda")
    calls = []
    counted = dataclasses.replace(sfda, fn=lambda inputs, **kw: calls.append(1) or sfda.fn(inputs, **kw))
    monkeypatch.setitem(metrics._REGISTRY, "sfda", counted)
    inputs = check_inputs(v["features"], v["labels"])
    with warnings.catch_warnings(record=True) as first:
        warnings.simplefilter("always")
        inside = component_scores(v["features"], v["labels"], ["sfda"])  # fresh inputs: its own run
        alone = get_metric("sfda").compute(inputs)
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        assert get_metric("auto").compute_components(inputs)["sfda"] == alone == inside["sfda"]
    assert len(calls) == 2  # once for the fresh inputs, once for ``inputs`` (alone and inside auto)
    said = [str(w.message) for w in first if issubclass(w.category, TransferabilityWarning)]
    replayed = [str(w.message) for w in again if issubclass(w.category, TransferabilityWarning)]
    assert any("sfda" in s for s in said) and any("sfda" in s for s in replayed)
