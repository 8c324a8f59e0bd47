"""measures.internal: differential Op and Imp at a transformer's internal sites (docs/internal.md).

Closed forms on hand-built residual networks that implement the same protocol as the transformer, exact
zeros where a site contributes nothing, agreement with a brute-force finite-difference computation, the
invariances a user relies on, clear errors, and every way a trained model reaches it (checkpoint, SB3 zip).
"""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

import agents
from agents.transformer import SplitSeqTransformer, TransformerConfig
from measures import differential as D
from measures.internal import InternalModel, general_terms, site_measures, zero_sum_basis
from seqenv.sequence import natural_histories

torch.set_num_threads(1)

HIST = natural_histories(24, seed=5)
TINY2 = TransformerConfig(
    n_layer=2, n_head=2, n_embd=16, dropout=0.0
)  # every kind of site; C > 7 + 2 (LayerNorm)


def random_model(cfg=TINY2, seed=0, scale=0.5):
    """A transformer whose sublayers matter: weights far from the 0.02-std initialisation."""
    torch.manual_seed(seed)
    model = SplitSeqTransformer(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    return model.eval()


class ToyResidual(nn.Module):
    """One residual block with known Jacobians, implementing the same protocol as the transformer.

    The stream at the read-out position is ``x = e_19 + W mean(e_0..e_18)``; site ``block0.attn`` adds
    ``A = (k - 1) x`` (so the stream becomes ``k x``), site ``block0.mlp`` adds nothing. The head reads
    ``F = M x`` for the action logits and ``M' x`` for the even ones (their centred zero-sum coordinates).
    Hence ``J_g = M J'`` (A held fixed) and ``J_h = M K J'``: with ``W = 0`` or a scalar ``k``, ``C = K``.
    """

    def __init__(self, k, mix: bool, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        c = 7
        q = torch.as_tensor(zero_sum_basis())  # (8, 7): its columns span the zero-sum logits
        self.k = nn.Parameter(torch.as_tensor(k, dtype=torch.float64) * torch.ones(c, dtype=torch.float64))
        self.tok = nn.Parameter(torch.randn(16, c, generator=g, dtype=torch.float64))
        self.pos = nn.Parameter(torch.randn(20, c, generator=g, dtype=torch.float64))
        w = (
            torch.randn(c, c, generator=g, dtype=torch.float64)
            if mix
            else torch.zeros(c, c, dtype=torch.float64)
        )
        self.w = nn.Parameter(w)
        m_even, m_odd = (torch.randn(c, c, generator=g, dtype=torch.float64) for _ in range(2))
        self.head = nn.Parameter(torch.cat([q @ m_even, q @ m_odd]))  # (16, 7); F = q^T head x = M x
        self.m_odd = m_odd

    def internal_sites(self):
        return ["block0.attn", "block0.mlp"]

    def input_embeddings(self, idx):
        return self.tok[idx] + self.pos

    def logits_from_embeddings(self, emb, edits=None):
        edits = edits or {}
        x = emb[:, -1] + emb[:, :-1].mean(dim=1) @ self.w.T
        x = x + edits.get("block0.attn", lambda a: a)((self.k - 1) * x)
        x = x + edits.get("block0.mlp", lambda a: a)(torch.zeros_like(x))
        return x @ self.head.T


def by_site(df, site):
    return df[df.site == site].set_index("history")


# --- the transformer's sites ---------------------------------------------------------------------------


def manual_logits(model, emb, site, value):
    """The transformer computed by hand, every position through every block, with ``site`` at the last
    position replaced by ``value``: the semantics the docs state, independently of the model's own code."""
    x = emb
    for i, block in enumerate(model.blocks):
        h = block.attn(block.ln1(x))
        if site == f"block{i}.attn":
            h = torch.cat([h[:, :-1], value[:, None]], dim=1)
        x = x + h
        m = block.mlp(block.ln2(x))
        if site == f"block{i}.mlp":
            m = torch.cat([m[:, :-1], value[:, None]], dim=1)
        x = x + m
        if site == f"block{i}.resid":
            x = torch.cat([x[:, :-1], value[:, None]], dim=1)
    return model.head(model.ln_f(x[:, -1]))


def test_the_transformer_implements_the_protocol_without_changing_its_numbers():
    model = random_model()
    assert isinstance(model, InternalModel)
    assert SplitSeqTransformer("large").internal_sites() == [
        *("block0.attn", "block0.mlp", "block0.resid", "block1.attn", "block1.mlp", "block1.resid"),
        *("block2.attn", "block2.mlp"),
    ]
    x = torch.as_tensor(HIST)
    with torch.no_grad():
        emb = model.input_embeddings(x)
        assert torch.equal(model.logits_from_embeddings(emb), model(x))
        same = {s: (lambda a: a) for s in model.internal_sites()}
        assert torch.equal(model.logits_from_embeddings(emb, same), model(x))
        value = torch.randn(len(x), 16)
        for site in model.internal_sites():
            got = model.logits_from_embeddings(emb, {site: lambda a: value})
            torch.testing.assert_close(got, manual_logits(model, emb, site, value), rtol=1e-5, atol=1e-5)
            assert not torch.allclose(got, model(x), atol=1e-3)  # the edit does change the output
        with pytest.raises(
            ValueError, match=r"unknown internal site 'block2.attn'; expected one of \['block0"
        ):
            model.logits_from_embeddings(emb, {"block2.attn": lambda a: a})


# --- closed forms -------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [0.3, 0.9, 1.7, -0.5])
def test_uniform_damping_gives_the_spec_check_in_every_dimension(k):
    """SPEC §4's check, 7 times over: stream ``k x`` gives ``Op = -7 ln|k|``, ``Imp = 7(-ln|k| + k(k - 1))``,
    also when the other positions feed the stream (``C = k`` whatever ``J'``) and for the world output."""
    model = ToyResidual(k, mix=True)
    for output in ("policy", "world"):
        df = by_site(site_measures(model, HIST, output=output), "block0.attn")
        np.testing.assert_allclose(df.op, -7 * math.log(abs(k)), atol=1e-9)
        np.testing.assert_allclose(df.imp, 7 * (-math.log(abs(k)) + k * (k - 1)), atol=1e-9)
        assert not df.singular.any()


def test_per_direction_damping_sums_the_scalar_cases():
    ks = np.array([0.2, 0.5, 0.8, 1.0, 1.3, 2.0, -0.7])
    df = by_site(site_measures(ToyResidual(ks, mix=False), HIST), "block0.attn")
    np.testing.assert_allclose(df.op, -np.log(np.abs(ks)).sum(), atol=1e-9)
    np.testing.assert_allclose(df.imp, (-np.log(np.abs(ks)) + ks * (ks - 1)).sum(), atol=1e-9)
    # the log-determinants behind them: J_g = M S, J_h = M K S with S selecting the last position
    m = ToyResidual(ks, mix=False).m_odd.numpy()
    np.testing.assert_allclose(df.half_logdet_g, np.linalg.slogdet(m @ m.T)[1] / 2, atol=1e-9)
    np.testing.assert_allclose(df.half_logdet_h, df.half_logdet_g + np.log(np.abs(ks)).sum(), atol=1e-9)
    np.testing.assert_allclose(df.trace_hh, (ks**2).sum(), atol=1e-9)
    np.testing.assert_allclose(df.trace_gh, ks.sum(), atol=1e-9)


def test_a_site_that_adds_nothing_gives_zero_exactly():
    df = by_site(site_measures(ToyResidual(0.4, mix=True), HIST), "block0.mlp")
    assert (df.op == 0).all() and (df.imp == 0).all()


@pytest.mark.parametrize("site", ["block0.attn", "block0.mlp", "block1.attn", "block1.mlp"])
@pytest.mark.parametrize("output", ["policy", "world"])
def test_zeroed_output_projection_gives_op_and_imp_zero_exactly(site, output):
    model = random_model()
    block, part = site.split(".")
    layer = model.blocks[int(block[-1])]
    proj = layer.attn.proj if part == "attn" else layer.mlp[2]
    with torch.no_grad():
        proj.weight.zero_()
        proj.bias.zero_()
    df = site_measures(model, HIST, output=output)
    zero = df[df.site == site]
    assert (zero.op == 0).all() and (zero.imp == 0).all()
    if output == "policy":  # the other sites do contribute: the zeros are not trivial
        others = df[(df.site != site) & ~df.site.str.endswith("resid")]
        assert (others.op.abs() > 1e-6).all()


def test_a_residual_site_on_a_toy_with_no_bypass_is_reported_singular():
    """With ``W = 0`` the world output sees only the fixed action token: J = 0, Op undefined, not an error."""
    df = site_measures(ToyResidual(0.5, mix=False), HIST[:4], output="world")
    assert df.singular.all() and df.op.isna().all() and df.imp.isna().all()


# --- agreement with a brute-force computation ---------------------------------------------------------


def finite_difference_jacobian(fn, p, eps=1e-5):
    """``(dim F, dim P)`` central differences of ``fn: (B, T, C) -> (B, 7)`` at ``p`` ``(T, C)``."""
    n = p.numel()
    steps = eps * torch.eye(n, dtype=p.dtype).reshape(n, *p.shape)
    with torch.no_grad():
        return ((fn(p + steps) - fn(p - steps)) / (2 * eps)).T.numpy()


def brute_force(model, history, site, output):
    """Op, Imp of one (history, site) from central differences, built without measures.internal's code."""
    q = torch.as_tensor(zero_sum_basis(), dtype=torch.float64)
    idx = torch.as_tensor(history)[None]
    with torch.no_grad():
        p = (model.tok_emb(idx) + model.pos_emb)[0]
        action = int(model(idx)[0, 8:].argmax())
    if output == "world":  # context h[1:] + [8 + a]: shift the rows, swap the position embeddings
        pos = model.pos_emb.detach()
        last = (model.tok_emb.weight[8 + action] + pos[-1]).detach()

        def inputs(e):
            shifted = e[:, 1:] - pos[1:] + pos[:-1]
            return torch.cat([shifted, last.expand(len(e), 1, -1)], dim=1)

        cols = slice(0, 8)
    else:

        def inputs(e):
            return e

        cols = slice(8, 16)
    value = {}
    with torch.no_grad():
        model.logits_from_embeddings(inputs(p[None]), {site: lambda a: value.setdefault("a", a)})

    def f(e, edits=None):
        return model.logits_from_embeddings(inputs(e), edits)[:, cols] @ q

    j_h = finite_difference_jacobian(f, p)
    j_g = finite_difference_jacobian(lambda e: f(e, {site: lambda a: value["a"].expand_as(a)}), p)
    return D.op(j_g, j_h, "general"), D.imp(j_g, j_h, "general")


@pytest.mark.parametrize("output", ["policy", "world"])
def test_values_equal_a_finite_difference_computation(output):
    model = random_model().double()
    rows = HIST[:3]
    df = site_measures(model, rows, output=output)
    assert len(df) == 3 * 5
    for row in df.itertuples():
        op, imp = brute_force(model, rows[row.history], row.site, output)
        assert row.op == pytest.approx(op, abs=1e-4)
        assert row.imp == pytest.approx(imp, abs=1e-4)


def test_float32_model_agrees_with_its_float64_copy():
    """The Jacobians come in the model's dtype; float32 rounding moves Op by less than 1e-3 nats."""
    model = random_model()
    a = site_measures(model, HIST)
    b = site_measures(copy.deepcopy(model).double(), HIST)
    np.testing.assert_allclose(a.op, b.op, atol=1e-3)
    np.testing.assert_allclose(a.imp, b.imp, rtol=1e-4, atol=1e-3)  # Imp reaches hundreds of nats here


def test_general_terms_equal_measures_differential_row_by_row():
    rng = np.random.default_rng(0)
    j_g, j_h = rng.normal(size=(5, 7, 30)), rng.normal(size=(5, 7, 30))
    t = general_terms(j_g, j_h)
    for i in range(5):
        assert t["op"][i] == pytest.approx(D.op(j_g[i], j_h[i], "general"), abs=1e-12)
        assert t["imp"][i] == pytest.approx(D.imp(j_g[i], j_h[i], "general"), abs=1e-12)
    # orthogonal changes of basis of F (another zero-sum basis) and of P change nothing
    r_f = np.linalg.qr(rng.normal(size=(7, 7)))[0]
    r_p = np.linalg.qr(rng.normal(size=(30, 30)))[0]
    u = general_terms(r_f @ j_g @ r_p, r_f @ j_h @ r_p)
    for key in ("op", "imp", "trace_hh", "trace_gh"):
        np.testing.assert_allclose(u[key], t[key], atol=1e-10)


def test_singular_j_g_is_flagged_as_measures_differential_would_raise():
    rng = np.random.default_rng(1)
    j_h = rng.normal(size=(2, 7, 30))
    j_g = j_h.copy()
    j_g[1, 6] = j_g[1, 5]  # rank 6
    t = general_terms(j_g, j_h)
    assert list(t["singular"]) == [False, True] and np.isnan(t["op"][1]) and np.isnan(t["imp"][1])
    with pytest.raises(ValueError, match="singular"):
        D.op(j_g[1], j_h[1], "general")


# --- invariances and state ----------------------------------------------------------------------------


def test_results_do_not_depend_on_batch_size_order_or_site_subset():
    model = random_model()
    full = site_measures(model, HIST, batch_size=256)
    for bs in (1, 5):
        other = site_measures(model, HIST, batch_size=bs)
        np.testing.assert_allclose(other.op, full.op, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(other.imp, full.imp, rtol=1e-5, atol=1e-5)
    perm = np.random.default_rng(0).permutation(len(HIST))
    shuffled = site_measures(model, HIST[perm])
    for site in ("block0.mlp", "block1.attn"):
        a, b = by_site(full, site), by_site(shuffled, site)
        np.testing.assert_allclose(b.op.to_numpy(), a.op.to_numpy()[perm], rtol=1e-5, atol=1e-5)
    one = site_measures(model, HIST, sites="block0.resid")
    assert list(one.site.unique()) == ["block0.resid"]
    np.testing.assert_allclose(one.op.to_numpy(), by_site(full, "block0.resid").op.to_numpy(), atol=1e-5)


def test_layout_of_the_table():
    model = random_model()
    df = site_measures(model, HIST[:4], output="world")
    sites = ["block0.attn", "block0.mlp", "block0.resid", "block1.attn", "block1.mlp"]
    assert list(df.history) == [i for i in range(4) for _ in sites] and list(df.site) == sites * 4
    assert {
        "op",
        "imp",
        "half_logdet_g",
        "half_logdet_h",
        "trace_hh",
        "trace_gh",
        "cond_g",
        "singular",
    } <= set(df)
    np.testing.assert_allclose(df.op, df.half_logdet_g - df.half_logdet_h, atol=1e-12)
    np.testing.assert_allclose(df.imp, df.op + df.trace_hh - df.trace_gh, atol=1e-12)
    greedy = model(torch.as_tensor(HIST[:4]))[:, 8:].argmax(1).numpy()
    np.testing.assert_array_equal(df.action.to_numpy()[:: len(sites)], greedy)
    assert df.attrs == {"output": "world", "dim_f": 7, "dim_p": 20 * 16}


def test_model_state_is_restored_and_dropout_does_not_matter():
    model = random_model(TransformerConfig(n_layer=2, n_head=2, n_embd=16, dropout=0.3))
    ref = site_measures(model.eval(), HIST[:4])
    model.train()
    df = site_measures(model, HIST[:4])
    assert model.training and all(p.grad is None for p in model.parameters())
    np.testing.assert_array_equal(df.op, ref.op)


# --- errors -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"sites": "block2.attn"}, ValueError, r"unknown site 'block2.attn'.*block0.attn"),
        ({"sites": "block1.resid"}, ValueError, r"unknown site 'block1.resid'"),
        ({"sites": []}, ValueError, "non-empty"),
        ({"sites": ["block0.mlp", "block0.mlp"]}, ValueError, "listed twice"),
        ({"output": "value"}, ValueError, "output must be one of 'policy', 'world'; got 'value'"),
        ({"batch_size": 0}, ValueError, "batch_size must be an int >= 1, got 0"),
        ({"histories": HIST[:, :19]}, ValueError, r"shape \(\.\.\., 20\)"),
        ({"histories": HIST[0]}, ValueError, r"shape \(N, 20\)"),
        ({"histories": HIST[:0]}, ValueError, "N >= 1"),
        ({"histories": HIST.astype(float)}, TypeError, "integer array"),
        ({"histories": np.full((2, 20), 16)}, ValueError, "outside|0..15"),
        ({"histories": HIST[:, ::-1]}, ValueError, "end on an even position"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, error, match):
    args = {"histories": HIST[:2], **kwargs}
    with pytest.raises(error, match=match):
        site_measures(random_model(), **args)


@pytest.mark.parametrize("model", [nn.Linear(20, 8), lambda h: h, None])
def test_models_without_the_protocol_are_refused(model):
    with pytest.raises(TypeError, match="cannot read the internal sites of .*internal_sites"):
        site_measures(model, HIST[:2])


# --- every way a trained model reaches it -------------------------------------------------------------


def test_checkpoint_loaded_with_agents_gives_the_same_numbers(tmp_path):
    model = random_model(seed=3)
    agents.save_checkpoint(tmp_path / "m.pt", model, kind="pretrained", meta={"size": "custom", "seed": 3})
    policy = agents.load(tmp_path / "m.pt")
    a, b = site_measures(model, HIST), site_measures(policy, HIST)
    np.testing.assert_array_equal(a.op, b.op)
    np.testing.assert_array_equal(a.imp, b.imp)


def test_ppo_zip_uses_the_trained_action_head(tmp_path):
    from stable_baselines3 import PPO

    from agents.sb3 import TransformerPolicy, load_ppo, make_sb3_vec_env

    torch.manual_seed(0)
    ppo = PPO(
        TransformerPolicy,
        make_sb3_vec_env("ngood4", 2),
        policy_kwargs={"config": TINY2.to_dict()},
        n_steps=8,
        batch_size=16,
        device="cpu",
    )
    with torch.no_grad():  # PPO moves the action head away from the LM head's odd rows
        for p in ppo.policy.parameters():
            p.add_(0.5 * torch.randn_like(p))
    ppo.save(tmp_path / "p.zip")
    # the same network as a plain transformer whose odd-token head rows are the action head
    plain = SplitSeqTransformer(TINY2)
    plain.load_state_dict(ppo.policy.transformer.state_dict())
    with torch.no_grad():
        plain.head.weight[8:] = ppo.policy.action_net.weight
        plain.head.bias[8:] = ppo.policy.action_net.bias
    want = site_measures(plain, HIST)
    for loaded in (agents.load(tmp_path / "p.zip"), load_ppo(tmp_path / "p.zip"), ppo):
        for output in ("policy", "world"):
            got = site_measures(loaded, HIST, output=output)
            ref = want if output == "policy" else site_measures(plain, HIST, output="world")
            np.testing.assert_allclose(got.op, ref.op, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(got.imp, ref.imp, rtol=1e-5, atol=1e-5)
