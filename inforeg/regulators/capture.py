"""The step's encoder inputs, for methods that run forwards of their own (AGM's masked
responses, MMPareto's unimodal gradient): forward pre-hooks on the encoders keep a reference to
the latest input of each (no copy), and `forward` runs an encoder on a tensor without the hooks
capturing it; `forward_detached_buffers` runs one on copies of its buffers, so its BatchNorm
running statistics (which the step's own graph has saved) stay untouched."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn
from torch.func import functional_call


class InputCapture:
    def __init__(
        self, encoders: Mapping[str, nn.Module] | None, modalities: Sequence[str], who: str
    ):
        if encoders is None or set(encoders) != set(modalities):
            raise ValueError(
                f"regulator.name: {who} runs forwards of its own on the encoders: build it with "
                "build_regulator(..., encoders=model.encoders)"
            )
        self.encoders = {m: encoders[m] for m in modalities}
        self.inputs: dict[str, Tensor] = {}
        self._on = True
        for m, enc in self.encoders.items():
            enc.register_forward_pre_hook(self._hook(m))

    def _hook(self, modality: str) -> Any:
        def capture(module: nn.Module, args: tuple[Any, ...]) -> None:
            if self._on and args and isinstance(args[0], Tensor):
                self.inputs[modality] = args[0]

        return capture

    def taken(self) -> dict[str, Tensor]:
        """The inputs of the last forward, each once (a second call without a forward fails)."""
        missing = [m for m in self.encoders if m not in self.inputs]
        if missing:
            raise ValueError(f"no encoder input captured for {missing} (loss() before a forward?)")
        out, self.inputs = self.inputs, {}
        return out

    @contextmanager
    def own_forwards(self) -> Iterator[None]:
        """Encoder calls inside are not captured."""
        self._on = False
        try:
            yield
        finally:
            self._on = True

    def forward_detached_buffers(self, modality: str, x: Tensor) -> Tensor:
        """The encoder on `x` with its own parameters and copies of its buffers (BatchNorm in
        train mode updates the copies), not captured."""
        enc = self.encoders[modality]
        buffers = {name: b.clone() for name, b in enc.named_buffers()}
        with self.own_forwards():
            out: Tensor = functional_call(enc, buffers, (x,))
        return out
