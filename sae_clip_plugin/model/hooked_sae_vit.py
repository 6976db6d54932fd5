"""HookedSAEViT: a HookedViT that hosts sae_lens SAEs, with the API of sae_lens' HookedSAETransformer.

An SAE is spliced by swapping the HookPoint at its `metadata.hook_name` for sae_lens' `_SAEWrapper`
(via sae_lens' `set_deep_attr`), so the SAE's own hooks appear under the spliced hook's name
(`blocks.9.hook_resid_post.hook_sae_acts_post`). A transcoder (metadata hook_name_out) sits at its output hook,
fed by its input hook, as in sae_lens, and writes its whole forward. Unlike sae_lens, which only warns, a splice
that cannot be right (unknown hook, d_in mismatch, another model or geometry) raises ValueError.
"""

from __future__ import annotations

import copy
import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from sae_lens import SAE
from sae_lens.analysis.hooked_sae_transformer import get_deep_attr, set_deep_attr
from transformer_lens.ActivationCache import ActivationCache
from transformer_lens.hook_points import HookPoint

from sae_clip_plugin.model.config import HookedViTConfig
from sae_clip_plugin.model.hooked_vit import OPTIONAL_HOOKS, HookedViT
from sae_clip_plugin.model.sae_splice import (
    ViTSAEWrapper,
    check_sae_metadata,
    sae_token_selection,
    transcoder_output_hook,
)
from sae_clip_plugin.model.text import TextTower
from sae_clip_plugin.model.tokens import TokenSelection, TokenSpec

SAEs = SAE[Any] | Sequence[SAE[Any]]

# hooks whose second axis is not the token axis even when its length happens to match
_NON_TOKEN_HOOKS = ("hook_attn_scores", "hook_pattern")


class HookedSAEViT(HookedViT):
    """HookedViT plus `add_sae` / `reset_saes` / `run_with_saes` / `saes()` as in sae_lens.

    Each SAE acts on the tokens its metadata `token_selection` names (`all`, `cls`, `patches`)
    unless `tokens=` overrides it; other positions pass through untouched, with or without the
    error term. As in sae_lens the SAE still encodes every position of the hook (its cache entries
    are [batch, n_tokens, ...]), only the selected positions flow on.
    """

    def __init__(
        self, cfg: HookedViTConfig, text: TextTower | None = None, preprocess: Callable | None = None
    ):
        super().__init__(cfg, text=text, preprocess=preprocess)
        self._acts_to_saes: dict[str, ViTSAEWrapper] = {}
        self._original_hook_points: dict[str, HookPoint] = {}  # restored by reset, permanent hooks included
        self._hook_shapes: dict[str, tuple[int, ...]] = {}  # per-example shapes, measured once

    @classmethod
    def from_hooked_vit(cls, model: HookedViT) -> HookedSAEViT:
        """A HookedSAEViT copy of an existing HookedViT (same weights, settings, dtype and device)."""
        text = _copy_module(model.text)
        new = cls(dataclasses.replace(model.cfg), text=text, preprocess=model._preprocess)
        for flag in OPTIONAL_HOOKS:
            setattr(new.tl_cfg, flag, getattr(model.tl_cfg, flag))
        reference = model.embed.W_E
        new.to(dtype=model.cfg.torch_dtype, device=reference.device)
        new.load_state_dict(model.state_dict())
        return new.train(model.training)

    # ----------------------------------------------------------------------------------------
    # attaching and removing SAEs

    @property
    def acts_to_saes(self) -> dict[str, SAE[Any]]:
        """Hook name -> the SAE spliced there."""
        return {name: wrapper.sae for name, wrapper in self._acts_to_saes.items()}

    def add_sae(
        self,
        sae: SAE[Any],
        use_error_term: bool | None = None,
        tokens: TokenSpec = None,
        check_model: bool = True,
    ) -> None:
        """Splice `sae` at its `metadata.hook_name`, replacing any SAE already there, until reset.

        use_error_term: add back x - sae(x) so the model's output is unchanged unless the SAE's
            hooks are edited (None: the SAE's own `use_error_term`).
        tokens: "all" | "cls" | "patches" | positions; default the SAE's metadata token_selection,
            else "all".
        check_model: refuse an SAE whose metadata model_name / weight processing differ from the
            model's (geometry and width are always checked).
        """
        name = self._check_sae_hook(sae)
        check_sae_metadata(sae, self.cfg, name, check_model)
        device, sae_device = self.embed.W_E.device, sae.W_dec.device
        if sae_device != device:
            raise ValueError(
                f"the SAE for {name!r} is on {sae_device} but the model is on {device}; call sae.to({str(device)!r})"
            )
        shape = self._hook_shape(name)
        z_reshaped = sae.cfg.reshape_activations == "hook_z" and len(shape) >= 2
        width = shape[-2] * shape[-1] if z_reshaped else shape[-1]
        if sae.cfg.d_in != width:
            raise ValueError(
                f"the SAE for {name!r} has d_in={sae.cfg.d_in} but that hook's activations are {width} wide "
                f"(shape [batch, {', '.join(map(str, shape))}]); attach it to a hook of width {sae.cfg.d_in} "
                "or use an SAE trained on this model"
            )
        output_hook = transcoder_output_hook(sae)
        if output_hook is not None:
            out_shape = self._hook_shape(output_hook)
            d_out = getattr(sae.cfg, "d_out", sae.W_dec.shape[-1])
            if out_shape[:-1] != shape[:-1] or out_shape[-1] != d_out:
                raise ValueError(
                    f"the transcoder {name!r} -> {output_hook!r} writes {d_out} features per token but that hook's "
                    f"activations are [batch, {', '.join(map(str, out_shape))}]; use a transcoder trained on this model"
                )
        positions = self._positions(sae, name, shape, tokens)
        effective = sae.use_error_term if use_error_term is None else use_error_term
        wrapper = ViTSAEWrapper(
            sae, use_error_term=effective, positions=positions, n_tokens=self.cfg.n_tokens
        )
        point = output_hook or name
        current = get_deep_attr(self, point)
        if name in self._acts_to_saes:
            self._uninstall(name)
        elif not isinstance(current, HookPoint):
            raise ValueError(
                f"{point!r} is a {type(current).__name__}, not a HookPoint; cannot splice an SAE there"
            )
        self._install(name, wrapper)
        self.setup()

    def _install(self, name: str, wrapper: ViTSAEWrapper) -> None:
        """Put `wrapper` at its hook (a transcoder's: its output hook, fed by a hook at its input hook `name`)."""
        point = wrapper.output_hook or name
        self._original_hook_points[name] = get_deep_attr(self, point)
        set_deep_attr(self, point, wrapper)
        if wrapper.output_hook:  # a torch hook, not a transformer_lens one: reset_hooks() must not remove it
            wrapper.capture_handle = get_deep_attr(self, name).register_forward_hook(
                lambda module, args, output: wrapper.capture_input(output)
            )
        self._acts_to_saes[name] = wrapper

    def _uninstall(self, name: str) -> None:
        wrapper = self._acts_to_saes.pop(name)
        set_deep_attr(self, wrapper.output_hook or name, self._original_hook_points.pop(name))
        if wrapper.capture_handle is not None:
            wrapper.capture_handle.remove()
            wrapper.capture_handle = None

    @property
    def _splice_points(self) -> list[str]:
        """The hooks SAE wrappers sit at now (a transcoder's output hook, else the SAE's own hook)."""
        return [wrapper.output_hook or name for name, wrapper in self._acts_to_saes.items()]

    def reset_saes(self, act_names: str | Sequence[str] | None = None) -> None:
        """Remove the SAEs at `act_names` (default: all), putting the original HookPoints back."""
        names = (
            [act_names]
            if isinstance(act_names, str)
            else list(self._acts_to_saes if act_names is None else act_names)
        )
        missing = [n for n in names if n not in self._acts_to_saes]
        if missing:
            raise ValueError(f"no SAE is spliced at {missing}; spliced hooks: {sorted(self._acts_to_saes)}")
        for name in names:
            self._reset_sae(name)
        self.setup()

    def _reset_sae(self, name: str, previous: ViTSAEWrapper | None = None) -> None:
        if name in self._acts_to_saes:
            self._uninstall(name)
        if previous is not None:
            self._install(name, previous)

    @contextmanager
    def saes(
        self,
        saes: SAEs = (),
        reset_saes_end: bool = True,
        use_error_term: bool | None = None,
        tokens: TokenSpec = None,
        check_model: bool = True,
    ) -> Iterator[HookedSAEViT]:
        """Splice `saes` for the duration of the block, then restore exactly what was spliced before."""
        saes = [saes] if isinstance(saes, SAE) else list(saes)
        restore: list[tuple[str, ViTSAEWrapper | None]] = []
        try:
            for sae in saes:
                name = self._check_sae_hook(sae)
                previous = self._acts_to_saes.get(name)
                self.add_sae(sae, use_error_term=use_error_term, tokens=tokens, check_model=check_model)
                restore.append((name, previous))
            yield self
        finally:
            if reset_saes_end:
                for name, previous in reversed(restore):
                    self._reset_sae(name, previous)
                self.setup()

    # ----------------------------------------------------------------------------------------
    # running with SAEs (sae_lens' signatures, plus tokens / check_model)

    def run_with_saes(
        self,
        *model_args: Any,
        saes: SAEs = (),
        reset_saes_end: bool = True,
        use_error_term: bool | None = None,
        tokens: TokenSpec = None,
        check_model: bool = True,
        **model_kwargs: Any,
    ) -> torch.Tensor:
        """One forward pass with `saes` spliced (removed afterwards unless reset_saes_end=False)."""
        with self.saes(saes, reset_saes_end, use_error_term, tokens, check_model):
            return self(*model_args, **model_kwargs)

    def run_with_cache_with_saes(
        self,
        *model_args: Any,
        saes: SAEs = (),
        reset_saes_end: bool = True,
        use_error_term: bool | None = None,
        tokens: TokenSpec = None,
        check_model: bool = True,
        return_cache_object: bool = True,
        remove_batch_dim: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, ActivationCache | dict[str, torch.Tensor]]:
        """run_with_cache with `saes` spliced; SAE activations are cached as `<hook>.hook_sae_acts_post` etc."""
        with self.saes(saes, reset_saes_end, use_error_term, tokens, check_model):
            return self.run_with_cache(
                *model_args,
                return_cache_object=return_cache_object,
                remove_batch_dim=remove_batch_dim,
                **kwargs,
            )

    def run_with_hooks_with_saes(
        self,
        *model_args: Any,
        saes: SAEs = (),
        reset_saes_end: bool = True,
        use_error_term: bool | None = None,
        tokens: TokenSpec = None,
        check_model: bool = True,
        fwd_hooks: Sequence[tuple[str | Callable, Callable]] = (),
        bwd_hooks: Sequence[tuple[str | Callable, Callable]] = (),
        reset_hooks_end: bool = True,
        clear_contexts: bool = False,
        **model_kwargs: Any,
    ) -> torch.Tensor:
        """run_with_hooks with `saes` spliced, so hooks can edit e.g. `<hook>.hook_sae_acts_post`."""
        with self.saes(saes, reset_saes_end, use_error_term, tokens, check_model):
            return self.run_with_hooks(
                *model_args,
                fwd_hooks=list(fwd_hooks),
                bwd_hooks=list(bwd_hooks),
                reset_hooks_end=reset_hooks_end,
                clear_contexts=clear_contexts,
                **model_kwargs,
            )

    # ----------------------------------------------------------------------------------------
    # checks

    def check_hook_names(self, names: Iterable[str]) -> None:
        """As HookedViT, plus a pointer to the SAE's hooks when a name is currently spliced."""
        names = list(names)
        spliced = self._splice_points if hasattr(self, "_acts_to_saes") else []
        for name in names:
            if name in spliced:
                raise ValueError(
                    f"an SAE is spliced at {name!r}, so it is no longer a plain hook: use {name}.hook_sae_input "
                    f"(what enters the SAE) or {name}.hook_sae_output (what flows on), or reset_saes({name!r}) first"
                )
        super().check_hook_names(names)

    def _check_sae_hook(self, sae: SAE[Any]) -> str:
        if not isinstance(sae, SAE):
            raise TypeError(f"expected a sae_lens SAE, got {type(sae).__name__}")
        meta = sae.cfg.metadata
        name = meta.hook_name
        if not name:
            raise ValueError(
                "the SAE has no metadata.hook_name; set sae.cfg.metadata.hook_name to the hook it reads"
            )
        output_hook = transcoder_output_hook(sae)
        wanted = {name} | ({output_hook} if output_hook else set())
        for key, wrapper in self._acts_to_saes.items():
            used = {key} | ({wrapper.output_hook} if wrapper.output_hook else set())
            if key != name and used & wanted:  # the same key is a replacement
                raise ValueError(
                    f"{sorted(used & wanted)[0]!r} is already read or written by the SAE spliced at {key!r}; "
                    f"reset_saes({key!r}) first"
                )
        current = self._acts_to_saes.get(name)
        spliced_here = {name, current.output_hook} if current is not None else set()
        HookedViT.check_hook_names(
            self, sorted(wanted - spliced_here)
        )  # raises ValueError naming close matches
        return name

    def _positions(
        self, sae: SAE[Any], name: str, shape: tuple[int, ...], tokens: TokenSpec
    ) -> list[int] | None:
        n_tokens = self.cfg.n_tokens
        if len(shape) >= 2 and shape[0] == n_tokens and not name.endswith(_NON_TOKEN_HOOKS):
            return TokenSelection.parse(sae_token_selection(sae, n_tokens, name, tokens)).positions(n_tokens)
        selection = tokens if tokens is not None else sae.cfg.metadata.get("token_selection") or "all"
        allowed = ("all", "cls") if len(shape) == 1 else ("all",)  # a pooled vector comes from CLS
        if not isinstance(selection, str) or selection not in allowed:
            raise ValueError(
                f"hook {name!r} has no token axis (activations [batch, {', '.join(map(str, shape))}]), so an SAE "
                f"there cannot select tokens ({selection!r}); pass tokens='all'"
            )
        return None

    def _hook_shape(self, name: str) -> tuple[int, ...]:
        if name not in self._hook_shapes:
            self._hook_shapes.update(self._probe_hook_shapes())
        if name not in self._hook_shapes:
            raise ValueError(
                f"hook {name!r} does not fire in a forward pass of this model; choose another hook"
            )
        return self._hook_shapes[name]

    @torch.no_grad()
    def _probe_hook_shapes(self) -> dict[str, tuple[int, ...]]:
        """Measure every hook's per-example shape with one batch-1 pass (user hooks silenced)."""
        inside = tuple(f"{name}." for name in self._splice_points)
        names = list(
            dict.fromkeys([n for n in self.hook_dict if not n.startswith(inside)] + self._splice_points)
        )
        shapes: dict[str, tuple[int, ...]] = {}

        def recorder(name: str) -> Callable:
            return lambda module, args: shapes.__setitem__(name, tuple(args[0].shape[1:]))

        handles = [get_deep_attr(self, n).register_forward_pre_hook(recorder(n)) for n in names]
        w = self.embed.W_E
        pixels = torch.zeros(
            1, self.cfg.n_channels, self.cfg.image_size, self.cfg.image_size, dtype=w.dtype, device=w.device
        )
        try:
            with self._silenced_hook_points():
                self(pixels)
        finally:
            for handle in handles:
                handle.remove()
        return shapes

    @contextmanager
    def _silenced_hook_points(self) -> Iterator[None]:
        """Keep user hooks from seeing the probe pass (their torch hook dicts are swapped out and back)."""
        saved = [(hp, hp._forward_hooks) for hp in self.modules() if isinstance(hp, HookPoint)]
        try:
            for hp, _ in saved:
                hp._forward_hooks = OrderedDict()
            yield
        finally:
            for hp, hooks in saved:
                hp._forward_hooks = hooks


def _copy_module(module: torch.nn.Module | None) -> torch.nn.Module | None:
    return None if module is None else copy.deepcopy(module)
