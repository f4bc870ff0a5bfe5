"""The time-conditioned ReLU MLP of JiT's toy experiment (Li & He, arXiv 2511.13720, Sec. 3.3, Fig. 2)."""

from __future__ import annotations

from torch import Tensor, nn

from zoo.nets.embeddings import LabelEmbedding, TimestepEmbedding, batch_time


class MLP(nn.Module):
    """``depth`` linear layers (``dim -> hidden -> ... -> hidden -> dim``) with ReLU between, for vector data.

    JiT's toy denoiser is this net with ``hidden = 256``, ``depth = 5``. The condition
    ``c = t_emb (+ y_emb)`` (width ``hidden``) is added to the pre-activation of every hidden layer.

    ``forward(x, t, y=None, return_hidden=False)``: ``x`` ``[B, dim]``, ``t`` float ``[B]`` (embedded
    as ``1000 t``), ``y`` long ``[B]`` or None. Returns ``[B, dim]``, or ``(out, hiddens)`` with the
    ``[B, hidden]`` ReLU output of each hidden layer (``num_blocks = depth - 1``). With
    ``num_classes > 0``, ``y`` None or negative is the null class; an unconditional net ignores ``y``.
    """

    def __init__(self, dim: int, hidden: int = 256, depth: int = 5, num_classes: int = 0) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"net.depth={depth}: the MLP needs at least 2 layers (one hidden layer)")
        if num_classes < 0:
            raise ValueError(f"net.num_classes={num_classes}: use 0 (unconditional) or the number of classes")
        self.dim, self.num_classes = dim, num_classes
        self.input_shape = (dim,)
        self.num_blocks = depth - 1
        self.time_embed = TimestepEmbedding(hidden)
        self.label_embed = LabelEmbedding(num_classes, hidden) if num_classes else None
        self.hidden_layers = nn.ModuleList(
            nn.Linear(dim if i == 0 else hidden, hidden) for i in range(depth - 1)
        )
        self.output = nn.Linear(hidden, dim)

    def forward(
        self, x: Tensor, t: Tensor, y: Tensor | None = None, return_hidden: bool = False
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(
                f"input of shape {tuple(x.shape)}: this net was built for B x {self.dim}; "
                "build it with net.dim matching the data"
            )
        c = self.time_embed(batch_time(t, len(x)))
        if self.label_embed is not None:
            c = c + self.label_embed(y, len(x))
        hiddens = []
        h = x
        for layer in self.hidden_layers:
            h = nn.functional.relu(layer(h) + c)
            hiddens.append(h)
        out = self.output(h)
        return (out, hiddens) if return_hidden else out
