"""The post's transformer: shapes, exact parameter counts, the last-position shortcut, and that it can learn."""

import pytest
import torch
import torch.nn.functional as F

from agents.transformer import SIZES, SplitSeqTransformer, TransformerConfig, config_for, count_parameters

torch.set_num_threads(1)

#: README's table; they span the post's ~18k to ~402k parameters.
EXPECTED_PARAMS = {"tiny": 17_980, "small": 59_152, "medium": 153_424, "large": 399_064}


def closed_form_params(c: TransformerConfig) -> int:
    """Embeddings, blocks (LN, qkv, proj, LN, MLP) and the head, counted by hand."""
    d, h = c.n_embd, c.mlp_ratio * c.n_embd
    block = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (d * h + h) + (h * d + d)
    return c.vocab * d + c.context * d + c.n_layer * block + 2 * d + (d * c.vocab + c.vocab)


@pytest.mark.parametrize("size", list(SIZES))
def test_parameter_counts_are_exact_and_span_the_posts_range(size):
    model = SplitSeqTransformer(size)
    assert count_parameters(model) == EXPECTED_PARAMS[size] == closed_form_params(SIZES[size])
    assert 17_000 <= EXPECTED_PARAMS[size] <= 402_000


@pytest.mark.parametrize("size", list(SIZES))
def test_shapes_of_logits_policy_view_and_features(size):
    model = SplitSeqTransformer(size).eval()
    x = torch.randint(0, 16, (5, 20))
    logits = model(x)
    assert logits.shape == (5, 16) and logits.dtype == torch.float32
    assert torch.equal(model.policy_logits(x), logits[:, 8:])
    assert model.features(x).shape == (5, SIZES[size].n_embd)


@pytest.mark.parametrize("size", ["tiny", "medium"])
def test_last_block_shortcut_equals_the_full_computation(size):
    """Only the last position is read out; computing just it in the last block changes nothing."""
    torch.manual_seed(0)
    model = SplitSeqTransformer(size).eval()
    x = torch.randint(0, 16, (64, 20))
    with torch.no_grad():
        h = model.drop(model.tok_emb(x) + model.pos_emb)
        for block in model.blocks:
            h = block(h)  # every position, every block
        full = model.head(model.ln_f(h[:, -1]))
        assert torch.allclose(model(x), full, atol=1e-5, rtol=0)


def test_attention_is_bidirectional_over_all_20_tokens():
    """Every context position influences the prediction (no causal mask hides any of them)."""
    torch.manual_seed(0)
    model = SplitSeqTransformer("tiny").eval()
    x = torch.randint(0, 16, (32, 20))
    emb = (model.tok_emb(x) + model.pos_emb).detach().requires_grad_(True)
    h = emb
    for i, block in enumerate(model.blocks):
        h = block(h, last_only=i == len(model.blocks) - 1)
    model.head(model.ln_f(h[:, -1])).sum().backward()
    assert (emb.grad.abs().sum(dim=(0, 2)) > 0).all()


def test_dropout_is_active_in_training_and_off_in_eval():
    torch.manual_seed(0)
    model = SplitSeqTransformer("tiny")
    assert model.cfg.dropout == 0.1
    x = torch.randint(0, 16, (8, 20))
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


def test_a_fixed_batch_can_be_overfit():
    """64 arbitrary (context, target) pairs are memorised: the eval-mode loss goes to about zero."""
    torch.manual_seed(0)
    model = SplitSeqTransformer("tiny")
    x = torch.randint(0, 16, (64, 20))
    y = torch.randint(0, 16, (64,))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(400):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        final = F.cross_entropy(model(x), y).item()
        acc = (model(x).argmax(-1) == y).float().mean().item()
    assert final < 0.05 and acc == 1.0


def test_bad_configs_and_inputs_are_rejected_with_clear_errors():
    with pytest.raises(ValueError, match="unknown size 'huge'"):
        SplitSeqTransformer("huge")
    with pytest.raises(ValueError, match="must divide"):
        TransformerConfig(n_head=3, n_embd=32)
    with pytest.raises(ValueError, match="dropout"):
        TransformerConfig(dropout=1.5)
    with pytest.raises(ValueError, match="n_layer"):
        TransformerConfig(n_layer=0)
    assert config_for(SIZES["tiny"]) is SIZES["tiny"]
    model = SplitSeqTransformer("tiny")
    with pytest.raises(ValueError, match=r"shape \(B, 20\)"):
        model(torch.zeros((2, 19), dtype=torch.long))
