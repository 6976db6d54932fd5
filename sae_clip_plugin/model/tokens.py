"""Token selections: which positions of a hook's token axis something acts on (CLS is token 0, patches follow).

One type answers every form the package needs, so a selection means the same thing when an SAE is trained,
spliced in, evaluated or steered: positions (None = every token), a slice, a boolean mask, a count, and
sae_lens' `seqpos_slice`. `HookedViT.token_positions(tokens)` answers for a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

TOKEN_SELECTIONS = ("all", "cls", "patches")
TokenSpec = str | Sequence[int] | None  # None: every token


@dataclass(frozen=True)
class TokenSelection:
    """A named selection ('all', 'cls', 'patches') or explicit positions (negative ones count from the end)."""

    name: str | None = "all"
    given: tuple[int, ...] = ()

    @classmethod
    def parse(cls, tokens: TokenSpec | TokenSelection) -> TokenSelection:
        """From 'all' / 'cls' / 'patches' / a list of positions (None: 'all'); a clear error otherwise."""
        if isinstance(tokens, TokenSelection):
            return tokens
        if tokens is None:
            return cls("all")
        if isinstance(tokens, str):
            if tokens not in TOKEN_SELECTIONS:
                raise ValueError(
                    f"tokens must be one of {TOKEN_SELECTIONS} or a list of positions, got {tokens!r}"
                )
            return cls(tokens)
        given = tuple(int(p) for p in tokens)
        if not given:
            raise ValueError(
                "tokens is an empty list of positions; pass 'all', 'cls', 'patches' or some positions"
            )
        return cls(None, given)

    def positions(self, n_tokens: int, has_cls: bool = True) -> list[int] | None:
        """Sorted positions among `n_tokens`; None means every token. `has_cls=False` (a hook without CLS, such
        as hook_patch_embed): 'cls' and 'patches' name no / every position."""
        if self.name == "all":
            return None
        if self.name is not None:
            if not has_cls:
                if self.name == "cls":
                    raise ValueError(
                        "token selection 'cls' on a hook without a CLS token; use 'all' or 'patches'"
                    )
                return None
            return [0] if self.name == "cls" else list(range(1, n_tokens))
        bad = [p for p in self.given if not -n_tokens <= p < n_tokens]
        if bad:
            raise ValueError(
                f"token positions {bad} are out of range for a model with {n_tokens} tokens (0 is CLS)"
            )
        positions = sorted({p % n_tokens for p in self.given})
        return None if len(positions) == n_tokens else positions

    def all_positions(self, n_tokens: int, has_cls: bool = True) -> list[int]:
        """`positions`, with every token listed instead of None."""
        positions = self.positions(n_tokens, has_cls)
        return list(range(n_tokens)) if positions is None else positions

    def count(self, n_tokens: int, has_cls: bool = True) -> int:
        """Tokens per image the selection keeps (an SAE's context_size)."""
        return len(self.all_positions(n_tokens, has_cls))

    def slice(self, has_cls: bool = True) -> slice:
        """The named selection as a slice of the token axis (explicit positions have no slice form)."""
        if self.name is None:
            raise ValueError("explicit token positions have no slice form; use positions() or mask()")
        if self.name == "all" or not has_cls:
            return slice(None)
        return slice(0, 1) if self.name == "cls" else slice(1, None)

    def seqpos_slice(self, has_cls: bool = True) -> tuple[int | None, ...]:
        """sae_lens' metadata `seqpos_slice` for this selection (what `ActivationsStore.from_sae` slices)."""
        s = self.slice(has_cls)
        return (None,) if s == slice(None) else (s.start, s.stop)

    def mask(self, n_tokens: int, device: torch.device | str | None = None) -> torch.Tensor | None:
        """Boolean mask over the token axis, or None for every token."""
        positions = self.positions(n_tokens)
        if positions is None:
            return None
        mask = torch.zeros(n_tokens, dtype=torch.bool, device=device)
        mask[positions] = True
        return mask
