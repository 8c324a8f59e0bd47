"""The post's model: an encoder-only transformer over the 20-token context predicting the next token.

Everything in one file, in the spirit of nanoGPT's ``model.py``: a config dataclass, a pre-LayerNorm
encoder block with bidirectional (unmasked) self-attention through ``F.scaled_dot_product_attention``,
and a head on the last position giving 16 next-token logits. The policy view is the 8 odd-token logits.

For :mod:`measures.internal` the model also exposes its internal sites (``internal_sites``,
``input_embeddings``, ``logits_from_embeddings``): a site's value at the read-out (last) position can be
read or replaced by an *edit*, a function of that value, without changing the numbers of ``forward``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from seqenv.sequence import CONTEXT, N_OUT, VOCAB

#: An edit of an internal site: the site's value at the read-out position ``(B, C)`` -> what is used instead.
Edit = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TransformerConfig:
    """Shape of a :class:`SplitSeqTransformer`.

    :param n_layer: encoder blocks.
    :param n_head: attention heads per block (must divide ``n_embd``).
    :param n_embd: width of the residual stream.
    :param mlp_ratio: hidden width of each MLP as a multiple of ``n_embd``.
    :param dropout: dropout on embeddings, attention output and MLP output (the post: 0.1).
    :param context: tokens in the input (20).
    :param vocab: token vocabulary (16).
    """

    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 32
    mlp_ratio: int = 4
    dropout: float = 0.1
    context: int = CONTEXT
    vocab: int = VOCAB

    def __post_init__(self) -> None:
        for name in ("n_layer", "n_head", "n_embd", "mlp_ratio", "context", "vocab"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"TransformerConfig.{name} must be a positive int, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_head={self.n_head} must divide n_embd={self.n_embd}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict:
        return asdict(self)


#: The four sizes of the experiment; parameter counts in README (from :func:`count_parameters`).
SIZES: dict[str, TransformerConfig] = {
    "tiny": TransformerConfig(n_layer=1, n_head=2, n_embd=36),
    "small": TransformerConfig(n_layer=2, n_head=4, n_embd=48),
    "medium": TransformerConfig(n_layer=3, n_head=4, n_embd=64),
    "large": TransformerConfig(n_layer=3, n_head=4, n_embd=104),
}


def config_for(size: str | TransformerConfig) -> TransformerConfig:
    """The config of a named size, or ``size`` itself if it already is a config."""
    if isinstance(size, TransformerConfig):
        return size
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; expected one of {list(SIZES)}")
    return SIZES[size]


class SelfAttention(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.dropout = cfg.dropout
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """Attention output for every position, or (``last_only``) for the last position only, ``(B, 1, C)``."""
        b, t, c = x.shape
        hs = c // self.n_head
        if last_only:  # keys and values from every position, a query from the last one only
            kv = F.linear(x, self.qkv.weight[c:], self.qkv.bias[c:]).view(b, t, 2, self.n_head, hs)
            k, v = kv.permute(2, 0, 3, 1, 4)
            q = F.linear(x[:, -1:], self.qkv.weight[:c], self.qkv.bias[:c]).view(b, 1, self.n_head, hs)
            q, t = q.transpose(1, 2), 1
        else:
            q, k, v = self.qkv(x).view(b, t, 3, self.n_head, hs).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.resid_drop(self.proj(y.transpose(1, 2).reshape(b, t, c)))


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.n_embd)
        self.attn = SelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.n_embd, cfg.mlp_ratio * cfg.n_embd),
            nn.GELU(),
            nn.Linear(cfg.mlp_ratio * cfg.n_embd, cfg.n_embd),
            nn.Dropout(cfg.dropout),
        )

    def forward(
        self, x: torch.Tensor, last_only: bool = False, edits: Mapping[str, Edit] | None = None
    ) -> torch.Tensor:
        """``(B, T, C) -> (B, T, C)``, or ``(B, 1, C)`` for the last position only (the same numbers).

        :param edits: ``{"attn" | "mlp" | "resid": edit}``: replace what the attention or MLP adds to the
            residual stream, or the stream after the block, at the last position by ``edit(value)``.
        """
        h = self.attn(self.ln1(x), last_only)
        if edits:
            h = _edit_last(h, edits.get("attn"))
        x = (x[:, -1:] if last_only else x) + h
        if not edits:
            return x + self.mlp(self.ln2(x))
        x = x + _edit_last(self.mlp(self.ln2(x)), edits.get("mlp"))
        return _edit_last(x, edits.get("resid"))


def _edit_last(t: torch.Tensor, edit: Edit | None) -> torch.Tensor:
    """``t`` ``(B, T, C)`` with its last position replaced by ``edit(t[:, -1])`` (``t`` itself without an edit)."""
    if edit is None:
        return t
    return torch.cat([t[:, :-1], edit(t[:, -1]).unsqueeze(1)], dim=1)


class SplitSeqTransformer(nn.Module):
    """Encoder-only transformer: ``(B, 20)`` token ids -> ``(B, 16)`` next-token logits.

    :param cfg: a :class:`TransformerConfig` or the name of one of :data:`SIZES`.
    """

    def __init__(self, cfg: TransformerConfig | str = "tiny"):
        super().__init__()
        self.cfg = config_for(cfg)
        c = self.cfg
        self.tok_emb = nn.Embedding(c.vocab, c.n_embd)
        self.pos_emb = nn.Parameter(torch.zeros(c.context, c.n_embd))
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layer))
        self.ln_f = nn.LayerNorm(c.n_embd)
        self.head = nn.Linear(c.n_embd, c.vocab)
        self.apply(self._init_weights)
        nn.init.normal_(self.pos_emb, std=0.02)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def set_dropout(self, p: float) -> SplitSeqTransformer:
        """Set every dropout rate (embeddings, attention, residual, MLP) to ``p``; returns the model."""
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        for m in self.modules():
            if isinstance(m, nn.Dropout):
                m.p = p
            elif isinstance(m, SelfAttention):
                m.dropout = p
        return self

    def features(self, idx: torch.Tensor) -> torch.Tensor:
        """The final (layer-normed) residual stream at the last position, ``(B, n_embd)``."""
        if idx.dim() != 2 or idx.shape[1] != self.cfg.context:
            raise ValueError(f"expected token ids of shape (B, {self.cfg.context}), got {tuple(idx.shape)}")
        return self.features_from_embeddings(self.tok_emb(idx) + self.pos_emb)

    def features_from_embeddings(
        self, emb: torch.Tensor, edits: Mapping[str, Edit] | None = None
    ) -> torch.Tensor:
        """:meth:`features` from the input embeddings ``(B, T, C)`` (token + position), with optional site edits.

        :param edits: ``{site: edit}`` for sites of :meth:`internal_sites`; ``edit`` maps the site's value at
            the read-out position ``(B, C)`` to what is used instead (other positions stay as they are).
        """
        per_block = self._edits_per_block(edits)
        x = self.drop(emb)
        # Only the last position is read out, so the last block computes only it (same result, less work).
        for i, block in enumerate(self.blocks):
            x = block(x, i == len(self.blocks) - 1, per_block[i])
        return self.ln_f(x[:, -1])

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Next-token logits ``(B, 16)`` for contexts ``idx`` of shape ``(B, 20)``."""
        return self.head(self.features(idx))

    def policy_logits(self, idx: torch.Tensor) -> torch.Tensor:
        """The policy view: logits of the odd tokens 8..15, i.e. of actions 0..7, ``(B, 8)``."""
        return self.forward(idx)[:, N_OUT:]

    # measures.internal's InternalModel protocol
    def internal_sites(self) -> list[str]:
        """``block{l}.attn``, ``block{l}.mlp`` for every block and ``block{l}.resid`` below the last one."""
        n = self.cfg.n_layer
        return [
            f"block{i}.{part}"
            for i in range(n)
            for part in ("attn", "mlp", "resid")
            if part != "resid" or i < n - 1
        ]

    def input_embeddings(self, idx: torch.Tensor) -> torch.Tensor:
        """Token plus position embeddings ``(B, T, C)`` of token ids ``(B, T)`` (before dropout)."""
        if idx.dim() != 2 or idx.shape[1] != self.cfg.context:
            raise ValueError(f"expected token ids of shape (B, {self.cfg.context}), got {tuple(idx.shape)}")
        return self.tok_emb(idx) + self.pos_emb

    def logits_from_embeddings(
        self, emb: torch.Tensor, edits: Mapping[str, Edit] | None = None
    ) -> torch.Tensor:
        """Next-token logits ``(B, 16)`` from input embeddings ``(B, T, C)``, with optional site edits."""
        return self.head(self.features_from_embeddings(emb, edits))

    def _edits_per_block(self, edits: Mapping[str, Edit] | None) -> list[dict[str, Edit] | None]:
        per_block: list[dict[str, Edit] | None] = [None] * self.cfg.n_layer
        if not edits:
            return per_block
        valid = self.internal_sites()
        for name, edit in edits.items():
            if name not in valid:
                raise ValueError(f"unknown internal site {name!r}; expected one of {valid}")
            block, part = name.split(".")
            i = int(block[len("block") :])
            per_block[i] = {**(per_block[i] or {}), part: edit}
        return per_block


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
