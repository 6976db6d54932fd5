"""VisionSAETrainingRunner: sae_lens' SAETrainer / MultiSAETrainer fed with HookedViT activations.

Shaped like sae_lens' SyntheticSAERunner: build the data provider and the training SAE(s), hand
them to sae_lens' trainer, save the result in sae_lens' format. What this adds is vision-specific:
image sources, token selection, the disk cache, SAE metadata per docs/conventions.md, and the
vision evaluation at every checkpoint (sae_lens runs its evaluator only with wandb on).
"""

from __future__ import annotations

import json
import logging
import shutil
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from sae_clip_plugin.atomic import atomic_write_json, honour_umask, make_temp_dir, replace_files
from sae_clip_plugin.locking import folder_lock
from sae_clip_plugin.training.cache import (
    MANIFEST,
    ActivationDiskCache,
    CacheMismatchError,
    images_digest,
    write_activation_cache,
)
from sae_clip_plugin.training.checkpoints import (
    resolve_resume,
    restore,
    write_data_position,
)
from sae_clip_plugin.training.config import VisionSAERunnerConfig
from sae_clip_plugin.training.distributed import Ranks
from sae_clip_plugin.training.evaluate import evaluate_on_activations
from sae_clip_plugin.training.feed import TrainerFeed, interrupts_between_steps, signals_ignored
from sae_clip_plugin.training.harvest import ActivationHarvester
from sae_clip_plugin.training.metadata import vision_metadata
from sae_clip_plugin.training.output import (
    TEMP_PREFIX,
    check_layout,
    check_output_location,
    remove_stale_temporaries,
    rescue_weights,
)
from sae_clip_plugin.training.provider import ActivationProvider
from sae_clip_plugin.training.sizing import describe
from sae_clip_plugin.training.sources import ImageSource, SubsetSource, image_source, validate_source
from sae_clip_plugin.training.stream_provider import StreamActivationProvider, first_activations
from sae_clip_plugin.training.stream_setup import check_stream_config, open_stream, sizing_images, stream_plan
from sae_clip_plugin.training.streaming import StreamingImages, is_stream_spec
from sae_clip_plugin.training.tokens import HookGeometry
from sae_clip_plugin.training.trainer_setup import (
    NonFiniteTrainingError,
    build_trainer,
    guard_steps,
    run_name,
    show_progress_by_tokens,
)
from sae_clip_plugin.training.verdict import check_epochs

logger = logging.getLogger(__name__)

RUNNER_CONFIG_FILENAME = "runner_cfg.json"  # sae_lens' RUNNER_CFG_FILENAME, so its upload carries it
EVAL_LOG_FILENAME = "eval_log.json"
# what a saved SAE folder holds that this package wrote (overwrite replaces these, nothing else)
SAE_OWN_FILES = (
    "cfg.json",
    "sae_weights.safetensors",
    "sparsity.safetensors",
    RUNNER_CONFIG_FILENAME,
    "runner_config.json",
    EVAL_LOG_FILENAME,
)  # fmt: skip (runner_config.json: the name before sae_lens')


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C or SIGTERM; the message says where the checkpoint is and how to resume."""

    def __init__(self, message: str, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def check_finite_weights(sae: Any, name: str) -> None:
    """Refuse to save an SAE with a non-finite parameter (it would load and give NaN everywhere)."""
    bad = [p for p, t in sae.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise NonFiniteTrainingError(
            f"the SAE for {name} has non-finite weights ({', '.join(bad)}); it was not saved. Check the images for "
            "NaN/inf pixels and lower lr"
        )


class VisionSAETrainingRunner:
    """`VisionSAETrainingRunner(cfg).run()` trains, checkpoints, evaluates and saves the SAE(s).

    `override_model` / `override_source` replace what `cfg.model_name` / `cfg.dataset_path` name (the
    config then no longer reproduces the run alone, as in sae_lens' runners).
    """

    def __init__(
        self,
        cfg: VisionSAERunnerConfig,
        override_model: Any = None,
        override_source: Any = None,
    ) -> None:
        self.cfg = cfg
        self._model = override_model
        self._override_source = override_source
        self.device = cfg.resolved_device
        self.source: ImageSource | None = None
        self.eval_source: ImageSource | None = None
        self.cache: ActivationDiskCache | None = None
        self.harvester: ActivationHarvester | None = None
        self.geometry: dict[str, dict[str, Any]] = {}
        self.model_cfg: dict[str, Any] = {}
        self.dataset_info: dict[str, Any] = {}
        self.eval_acts: dict[str, torch.Tensor] = {}
        self.saes: dict[str, Any] = {}
        self.trainer: Any = None
        self.provider: ActivationProvider | None = None
        self.feed: TrainerFeed | None = None
        self.eval_log: list[dict[str, Any]] = []
        self._set_up = False
        self.sizing: str | None = None  # what the topk preset chose from the data, in words
        # a streamed image set (stream_provider.py): read live, pass after pass, never listed nor stored
        self.stream: StreamingImages | None = None
        self.stream_length: int | None = None  # its images per pass when it declares them
        self.plan: str | None = None  # for a stream: what bounds the run, in words
        # the processes sharing the harvest (None: torch.distributed's initialised group, else this one alone)
        self.ranks: Ranks | None = None

    # ------------------------------------------------------------------------------------------
    # setup: every check runs here, before any harvesting or training

    @property
    def model(self) -> Any:
        if self._model is None:
            from sae_clip_plugin.model.hooked_vit import HookedViT

            self._model = HookedViT.from_pretrained(
                self.cfg.model_name,
                fold_ln=self.cfg.fold_ln,
                center_writing_weights=self.cfg.center_writing_weights,
                dtype=getattr(torch, self.cfg.model_dtype),
                device=self.cfg.model_device or self.device,
            )
        return self._model

    def _source_spec(self) -> Any:
        return self._override_source if self._override_source is not None else self.cfg.dataset_path

    def _make_source(self) -> ImageSource:
        cfg, spec = self.cfg, self._source_spec()
        if isinstance(spec, str) and not spec:
            raise ValueError(
                "no images: set dataset_path (a folder, 'hf:<hub name>', a save_to_disk folder or a registered name such as 'toy')"
            )
        return image_source(
            spec,
            split=cfg.dataset_split,
            image_column=cfg.image_column,
            max_images=cfg.max_images,
            seed=cfg.seed,
        )

    def _ready_cache(self) -> ActivationDiskCache | None:
        """A finished cache usable without loading the model: same spec, hooks, token selection, images.

        With no dataset configured the cache alone defines the images; with one, its image list must
        be the cache's (checked without the model), else CacheMismatchError.
        """
        cfg = self.cfg
        if (
            cfg.cached_activations_path is None
            or self._model is not None
            or cfg.eval_holdout
            or not (Path(cfg.cached_activations_path) / MANIFEST).is_file()
        ):
            return None
        cache = ActivationDiskCache(cfg.cached_activations_path)
        c = cache.config
        if not (
            cache.complete
            and c["model_spec"] is not None
            and c["model_spec"] == cfg.model_name
            and c["token_selection"] == cfg.token_selection
            and set(cfg.hook_names) <= set(c["hook_names"])
            and c["storage_dtype"] == cfg.cache_dtype
        ):
            return None
        spec = self._source_spec()
        if not (isinstance(spec, str) and not spec):
            ids = self._make_source().image_ids()
            if len(ids) != c["n_images"] or images_digest(ids) != c["images_sha256"]:
                raise CacheMismatchError(
                    f"the activation cache at {cache.path} holds {c['n_images']} other images than the {len(ids)} "
                    f"of dataset {cfg.dataset_path!r}; use another cached_activations_path, delete it, or set dataset_path='' to train "
                    "on the cached images alone"
                )
        return cache

    def setup(self) -> None:
        """Load what is needed and check every input; `run` calls it when it was not called before."""
        if self._set_up:
            return
        cfg = self.cfg
        self._check_output()
        streamed = self._streamed()
        cache = None if streamed else self._ready_cache()
        if cache is not None:  # train from the cache alone
            self.cache = cache
            self.geometry = {name: cache.geometry[name] for name in cfg.hook_names}
            self.model_cfg = cache.manifest["model"]
            self.dataset_info = cache.manifest["dataset"]
        elif streamed:
            self._load_stream()
        else:
            self._load_images()
        context = next(iter(self.geometry.values()))["context_size"]
        if streamed:  # unknown (None) unless the stream declares it
            n_images = self.stream_length
        else:
            n_images = len(self.source) if self.source is not None else cache.n_images  # type: ignore[union-attr]
        sizing_n = sizing_images(cfg, n_images, context, self._stream_name()) if streamed else n_images
        sized, chosen = cfg.sized_to(sizing_n, context, max(g["d_in"] for g in self.geometry.values()))
        self.cfg = cfg = sized  # the topk preset: what the user did not set follows the data
        # shown when something visible was sized (lr_end, dead_feature_window alone are derived, not shown)
        if any(v is not None for v in chosen.values()):
            self.sizing = describe(chosen, sizing_n, context, streamed=streamed and n_images is None)
            logger.info(self.sizing)
        if n_images is not None:  # a stream of unknown length: checked when its first pass ends
            check_epochs(cfg.training_tokens, n_images, context, cfg.max_epochs, warn=self.sizing is None)
        if self.stream is not None:
            self.plan = stream_plan(self.stream, n_images, context, cfg)
            logger.info(self.plan)
        cfg.resume_from_checkpoint = resolve_resume(cfg.checkpoint_path, cfg.resume_from_checkpoint)
        # the SAEs' initialisation depends on the seed alone, however much of the global RNG was used before
        device = torch.device(self.device)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(cfg.seed)
            self._build_saes()
        self._set_up = True

    def _streamed(self) -> bool:
        """Whether --images names a stream; the settings a stream cannot honour are refused here."""
        spec = self._source_spec()
        if not is_stream_spec(spec, self.cfg.streaming):
            if self.cfg.streaming:
                raise ValueError(
                    f"--streaming reads hf:<hub name> (or a local folder as hf:<path>) or WebDataset shards, not "
                    f"{spec!r}; drop --streaming to read it as a list"
                )
            return False
        check_stream_config(self.cfg, spec)
        return True

    def _stream_name(self) -> str:
        assert self.stream is not None
        return str(self.stream.describe().get("spec") or self.stream.name)

    def _load_harvester(self) -> None:
        cfg, model = self.cfg, self.model
        self.harvester = ActivationHarvester(
            model,
            cfg.hook_names,
            cfg.token_selection,
            batch_size=cfg.harvest_batch_size,
            num_workers=cfg.num_workers,
            autocast=cfg.autocast_model,
        )
        self.geometry = {name: g.to_dict() for name, g in self.harvester.geometry.items()}
        self.model_cfg = model.cfg.to_dict()

    def _load_stream(self) -> None:
        """The model, the harvester and the stream (opened, not read: its length is what it declares)."""
        self._load_harvester()
        self.stream = open_stream(self.cfg, self._source_spec())
        self.stream.with_transform(self.stream.transform or self.model.preprocess)
        self.stream_length = self.stream.declared_length()
        self.dataset_info = {**self.stream.describe(), "n_images": self.stream_length}

    def _load_images(self) -> None:
        """The model, the harvester and the (checked) image source: what a harvest needs."""
        if self._streamed():  # (with a cache path, _streamed refuses a stream with the fix)
            raise ValueError(
                "a streamed image set is trained on live: use sae-clip train without --cache-path"
            )
        cfg, model = self.cfg, self.model
        self._load_harvester()
        self.source = self._make_source()
        self.source.set_transform(self.source.transform or model.preprocess)
        validate_source(self.source, model.cfg.image_size, n_channels=model.cfg.n_channels)
        if cfg.eval_holdout:
            n = len(self.source)
            if n <= cfg.n_eval_images:
                raise ValueError(
                    f"eval_holdout keeps the last n_eval_images={cfg.n_eval_images} of {n} images out of "
                    "training, leaving none to train on; lower n_eval_images or add images"
                )
            self.eval_source = SubsetSource(self.source, range(n - cfg.n_eval_images, n))
            self.source = SubsetSource(self.source, range(n - cfg.n_eval_images))
        self.dataset_info = self.source.describe()

    def harvest(self, ranks: Ranks | None = None) -> ActivationDiskCache:
        """Only the activation cache at cached_activations_path (`sae-clip harvest`); the ranks of a torchrun
        job share its shards and write the same cache as one process."""
        if self.cfg.cached_activations_path is None:
            raise ValueError("a harvest writes an activation cache: pass --cache-path DIR")
        if self.harvester is None:
            self._load_images()
        self.cache = self._write_cache(ranks)
        return self.cache

    def _write_cache(self, ranks: Ranks | None = None) -> ActivationDiskCache:
        cfg = self.cfg
        assert self.harvester is not None and self.source is not None
        return write_activation_cache(
            cfg.cached_activations_path,  # type: ignore[arg-type]
            self.model,
            self.source,
            cfg.hook_names,
            cfg.token_selection,
            storage_dtype=cfg.cache_dtype,
            shard_images=cfg.cache_shard_images,
            harvester=self.harvester,
            ignore_free_space=cfg.ignore_free_space,
            ranks=ranks or self.ranks,
        )

    def _output_targets(self) -> list[Path]:
        return [self.output_dir(h) for h in self.cfg.hook_names]

    def _check_output(self) -> None:
        """Refuse an unwritable or mixed-layout output folder, and replacing a saved SAE unless overwrite_output."""
        hooks, targets = self.cfg.hook_names, self._output_targets()
        check_layout(Path(self.cfg.output_path), hooks, SAE_OWN_FILES)
        check_output_location(targets)  # writable now, not only after hours of training
        held = [t for t in targets if any((t / name).exists() for name in SAE_OWN_FILES)]
        if held and not self.cfg.overwrite_output:
            raise FileExistsError(
                f"output_path {held[0]} already holds a saved SAE; choose another output_path or set "
                "overwrite_output=True (only the SAE's own files are replaced: "
                f"{', '.join(SAE_OWN_FILES)})"
            )

    def _build_saes(self) -> None:
        from sae_lens.registry import get_sae_training_class
        from sae_lens.saes.sae import SAEMetadata

        cfg = self.cfg
        _, cfg_cls = get_sae_training_class(cfg.architecture)
        kwargs = cfg.sae_kwargs()  # names and types checked by cfg.validate()
        for name, geom in self.geometry.items():
            d_sae = cfg.d_sae or cfg.expansion_factor * geom["d_in"]
            arch_kwargs = dict(kwargs)
            if cfg.architecture == "matryoshka_batchtopk" and not arch_kwargs.get("matryoshka_widths"):
                arch_kwargs["matryoshka_widths"] = [w for w in (d_sae // 16, d_sae // 4) if w > 0] + [d_sae]
            k = arch_kwargs.get("k")
            if k is not None and k > d_sae:
                raise ValueError(
                    f"k={k} exceeds d_sae={d_sae} for hook {name}; lower sae.k or raise expansion_factor"
                )
            sae_cfg = cfg_cls(
                d_in=geom["d_in"],
                d_sae=d_sae,
                dtype=cfg.sae_dtype,
                device=self.device,
                apply_b_dec_to_input=cfg.apply_b_dec_to_input,
                normalize_activations=cfg.normalize_activations,
                decoder_init_norm=cfg.decoder_init_norm,
                metadata=SAEMetadata(
                    **vision_metadata(self.model_cfg, geom, self.dataset_info, model_spec=cfg.model_name)
                ),
                **arch_kwargs,
            )
            sae_cls = get_sae_training_class(cfg.architecture)[0]
            self.saes[name] = sae_cls(sae_cfg).to(self.device)

    # ------------------------------------------------------------------------------------------
    # data

    def _prepare_data(self) -> None:
        cfg = self.cfg
        common = dict(
            train_batch_size_tokens=cfg.train_batch_size_tokens,
            buffer_tokens=cfg.n_batches_in_buffer * cfg.train_batch_size_tokens,
            mix_fraction=cfg.activations_mixing_fraction,
            shuffle=cfg.shuffle_images,
            seed=cfg.seed,
            keep_snapshots=cfg.prefetch_batches + 4,  # the data position as of any batch still in flight
        )
        n_eval = cfg.n_eval_images
        if self.stream is not None:
            assert self.harvester is not None
            self.eval_acts = first_activations(self.harvester, self.stream, n_eval)
            self.provider = StreamActivationProvider(
                self.harvester, self.stream, on_pass_end=self._stream_pass_ended, **common
            )
            return
        if cfg.cached_activations_path is not None and self.cache is None:
            self.cache = self._write_cache()
        if self.eval_source is not None:
            assert self.harvester is not None
            batches = list(self.harvester.iter_batches(self.eval_source))
            self.eval_acts = {name: torch.cat([b[name] for b in batches]) for name in cfg.hook_names}
        if self.cache is not None:
            self.provider = ActivationProvider.from_cache(
                self.cache, hook_names=cfg.hook_names, chunk_images=cfg.cache_chunk_images, **common
            )
            if not self.eval_acts:
                self.eval_acts = self.cache.read_images(0, min(n_eval, self.cache.n_images), cfg.hook_names)
        else:
            assert self.harvester is not None and self.source is not None
            self.provider = ActivationProvider.from_harvester(
                self.harvester, self.source, chunk_images=cfg.cache_chunk_images, **common
            )
            if not self.eval_acts:
                subset = SubsetSource(self.source, range(min(n_eval, len(self.source))))
                batches = list(self.harvester.iter_batches(subset))
                self.eval_acts = {name: torch.cat([b[name] for b in batches]) for name in cfg.hook_names}

    def _stream_pass_ended(self, n_images: int) -> None:
        """A pass over the stream ended: its length is known now, so the budget's passes are checked."""
        context = next(iter(self.geometry.values()))["context_size"]
        self.stream_length = self.stream_length or n_images
        check_epochs(self.cfg.training_tokens, n_images, context, self.cfg.max_epochs)

    # ------------------------------------------------------------------------------------------
    # training

    @property
    def _multi(self) -> bool:
        return len(self.saes) > 1

    def _trainers(self) -> dict[str, Any]:
        """hook name -> the per-SAE sae_lens SAETrainer."""
        if self._multi:
            return dict(self.trainer.trainers)
        return {next(iter(self.saes)): self.trainer}

    def _guard_steps(self) -> None:
        """Stop at the first non-finite batch or loss (sae_lens would train on and save a NaN SAE)."""
        guard_steps(self._trainers(), self.cfg.cached_activations_path if self.cache else None)

    def _build_trainer(self, data_provider: Any) -> None:
        evaluator = self._multi_wandb_evaluator if self._multi else self._wandb_evaluator
        self.trainer = build_trainer(
            self.cfg, self.device, self.saes, data_provider, evaluator, self._save_checkpoint
        )
        show_progress_by_tokens(self.trainer)

    def _resume(self) -> None:
        path = Path(self.cfg.resume_from_checkpoint)  # type: ignore[arg-type]
        done = restore(path, self.trainer, self._trainers(), self.provider, self.cfg.train_batch_size_tokens)
        log = Path(self.cfg.checkpoint_path or path.parent) / EVAL_LOG_FILENAME
        if log.is_file():
            self.eval_log = [r for r in json.loads(log.read_text()) if r.get("n_training_samples", 0) <= done]
        logger.info("resumed from %s at %d training tokens", path, done)

    def run(self) -> Any:
        """Train; returns the trained TrainingSAE (one hook) or {hook: TrainingSAE}.

        The output folder is locked for the whole run: a second run on the same output_path is refused (naming
        this one) instead of both printing "saved to" with one of them silently gone.
        """
        self.setup()
        with folder_lock(self.cfg.output_path, "SAE output folder"):
            remove_stale_temporaries(self._output_targets())  # a killed save's leftovers
            return self._run_locked()

    def _run_locked(self) -> Any:
        # whatever draws from torch's global RNG starts from the seed, whether setup() ran just now or earlier (the
        # CLI checks every input first); the data stream has its own seeded generators: seeded runs repeat exactly
        torch.manual_seed(self.cfg.seed)
        self._prepare_data()
        wandb_run = self._init_wandb()
        self._build_trainer(self.provider)
        self._guard_steps()
        if self.cfg.resume_from_checkpoint is not None:
            self._resume()  # sets the provider's position before anything is drawn from it
        prefetch = None
        batches: Any = self.provider
        if self.cfg.prefetch_batches > 0:
            from sae_lens.training.prefetch import PrefetchingIterator

            batches = prefetch = PrefetchingIterator(self.provider, prefetch=self.cfg.prefetch_batches)  # type: ignore[arg-type]
        self.feed = TrainerFeed(batches, consumed=self.provider.batches_served)
        self.trainer.data_provider = self.feed
        try:
            with self._interruptible():
                result = self.trainer.fit()
        finally:
            if prefetch is not None:
                prefetch.close()
        self._save_outputs()
        if wandb_run is not None:
            import wandb

            wandb.finish()
        return result

    def _init_wandb(self) -> Any:
        if not self.cfg.logger.log_to_wandb:
            return None
        import wandb

        return wandb.init(
            project=self.cfg.logger.wandb_project,
            entity=self.cfg.logger.wandb_entity,
            config=self.cfg.to_dict(),
            name=self.cfg.logger.run_name or run_name(self.cfg),
        )

    @contextmanager
    def _interruptible(self):
        """Ctrl-C / SIGTERM save a checkpoint (as sae_lens' LM runner does) before stopping; taken between steps
        (see `feed`), so the checkpoint continues the run exactly."""
        from sae_lens.training._interruption import InterruptedException

        assert self.feed is not None
        try:
            with interrupts_between_steps(self.feed):
                yield
        except (KeyboardInterrupt, InterruptedException) as err:
            how = "SIGTERM" if isinstance(err, InterruptedException) else "Ctrl-C"
            exit_code = 130 if how == "Ctrl-C" else 143
            done = self.trainer.n_training_samples
            if self.cfg.checkpoint_path is None or done == 0:
                why = "no checkpoint_path is set, so nothing was saved: set --checkpoint-path to be able to resume"
                raise TrainingInterrupted(
                    f"interrupted ({how}) after {done} training tokens; "
                    + (why if done else "nothing was trained yet: run the same command again"),
                    exit_code=exit_code,
                ) from err
            logger.warning("interrupted: saving a checkpoint at %d tokens", done)
            with signals_ignored():  # a second Ctrl-C / SIGTERM must not break the checkpoint being written
                self.trainer.save_checkpoint(checkpoint_name=str(done))
            raise TrainingInterrupted(
                f"interrupted ({how}) after {done} training tokens; checkpoint saved at "
                f"{Path(self.cfg.checkpoint_path) / str(done)}. Resume with the same command plus "
                "--resume-from-checkpoint latest (the resumed run trains on the same batches as an uninterrupted one)",
                exit_code=exit_code,
            ) from err

    # ------------------------------------------------------------------------------------------
    # checkpoints and evaluation

    def evaluate(
        self, saes: dict[str, Any] | None = None, scalers: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Vision metrics per hook on the eval images, in raw model units.

        By default the training SAEs with their trainers' activation scalers; pass `saes` (and
        `scalers`, None meaning identity) to evaluate others, e.g. the saved inference SAEs.
        """
        trainers = self._trainers() if self.trainer is not None else {}
        if saes is None:
            saes = self.saes
            scalers = {name: t.activation_scaler for name, t in trainers.items()}
        out: dict[str, Any] = {}
        for name, sae in saes.items():
            geometry = HookGeometry(
                **{
                    k: self.geometry[name][k]
                    for k in ("hook_name", "token_selection", "n_tokens", "has_cls", "d_in")
                }
            )
            metrics = evaluate_on_activations(
                sae, self.eval_acts[name], geometry.token_kinds, activation_scaler=(scalers or {}).get(name)
            )
            if name in trainers and trainers[name].n_training_steps > 0:
                metrics["dead_fraction_train"] = float(trainers[name].dead_neurons.float().mean())
                metrics["dead_window_train_steps"] = self.cfg.dead_feature_window
            out[name] = metrics
        return out

    def _record(self, kind: str, metrics: dict[str, Any], where: Path | None) -> dict[str, Any]:
        record = {
            "kind": kind,
            "n_training_samples": self.trainer.n_training_samples,
            "n_training_steps": self.trainer.n_training_steps,
            "path": str(where) if where is not None else None,
            "metrics": metrics,
        }
        self.eval_log.append(record)
        if self.cfg.checkpoint_path is not None:
            atomic_write_json(Path(self.cfg.checkpoint_path) / EVAL_LOG_FILENAME, self.eval_log)
        return record

    def _save_checkpoint(self, checkpoint_path: Path | None) -> None:
        """Called by sae_lens after it wrote the SAE and trainer state: add ours, evaluate, log."""
        if checkpoint_path is None:
            return
        atomic_write_json(checkpoint_path / RUNNER_CONFIG_FILENAME, self.cfg.to_dict())
        for written in [checkpoint_path, *checkpoint_path.rglob("*")]:  # sae_lens' files are 0600 otherwise
            honour_umask(written)
        assert self.provider is not None and self.feed is not None
        # the batches trained on (a prefetching thread may have drawn more)
        write_data_position(checkpoint_path, self.provider, self.feed.consumed)
        self._record("checkpoint", self.evaluate(), checkpoint_path)

    def _wandb_evaluator(self, sae: Any, data_provider: Any, activation_scaler: Any) -> dict[str, Any]:
        name = next(iter(self.saes))
        metrics = self.evaluate({name: sae}, {name: activation_scaler})[name]
        return {f"vision/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}

    def _multi_wandb_evaluator(
        self,
        saes: dict[str, Any],
        data_provider: Any,
        activation_scalers: dict[str, Any],
        hook_names: dict[str, str],
    ) -> dict[str, Any]:
        results = self.evaluate(saes, activation_scalers)
        return {
            f"{name}/vision/{k}": v
            for name, m in results.items()
            for k, v in m.items()
            if isinstance(v, (int, float))
        }

    # ------------------------------------------------------------------------------------------
    # output

    def output_dir(self, hook_name: str) -> Path:
        out = Path(self.cfg.output_path)
        return out / hook_name if len(self.cfg.hook_names) > 1 else out  # per-hook folders for several hooks

    def _save_outputs(self) -> None:
        """Each SAE in sae_lens' inference format, written to a temp folder, evaluated, then renamed."""
        from sae_lens import SAE
        from sae_lens.constants import SPARSITY_FILENAME

        final: dict[str, Any] = {}
        trainers = self._trainers()
        for name, sae in self.saes.items():
            target = self.output_dir(name)
            target.mkdir(parents=True, exist_ok=True)
            try:  # inside the target: on its file system (a mount point as --out), hidden from SAE discovery
                tmp = make_temp_dir(target, prefix=TEMP_PREFIX)
            except OSError as err:
                self._rescue(name, sae, err)
            try:
                import sae_lens

                sae.cfg.metadata.sae_lens_version = sae_lens.__version__
                sae.cfg.metadata.runner_config = (
                    self.cfg.to_dict()
                )  # travels with the SAE wherever cfg.json goes
                check_finite_weights(sae, name)
                sae.save_inference_model(tmp)
                save_file({"sparsity": trainers[name].log_feature_sparsity}, tmp / SPARSITY_FILENAME)
                atomic_write_json(tmp / RUNNER_CONFIG_FILENAME, self.cfg.to_dict())
                loaded = SAE.load_from_disk(tmp, device=self.device)
                final[name] = self.evaluate({name: loaded}, {})[name]  # what users will load, as they load it
                atomic_write_json(
                    tmp / EVAL_LOG_FILENAME, [*self.eval_log, self._final_record(name, final[name], target)]
                )
                # only the SAE's own files: a cache or checkpoints inside stay; cfg.json last (never a mixed folder)
                replace_files(tmp, target, last=(SAE_OWN_FILES[0],))
            except OSError as err:  # full disk, read-only, removed folder: keep the weights somewhere
                self._rescue(name, sae, err)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        self._record("final", final, Path(self.cfg.output_path))

    def _rescue(self, name: str, sae: Any, err: OSError) -> None:
        """The final save failed: write the trained weights where possible and say where (never lose the run)."""
        cfg_json = json.dumps(sae.cfg.to_dict(), default=str)
        places = [Path(self.cfg.checkpoint_path) if self.cfg.checkpoint_path else None, Path.cwd()]
        where = rescue_weights(dict(sae.state_dict()), cfg_json, name, places)
        kept = f"the trained weights were saved to {where}" if where else "no place took the trained weights"
        raise OSError(
            f"saving the SAE for {name} to {self.output_dir(name)} failed ({err.strerror or err}); {kept} "
            "(sae_weights.safetensors + cfg.json of the training SAE); free space or fix the output folder, then "
            "copy them there"
        ) from err

    def _final_record(self, name: str, metrics: dict[str, Any], target: Path) -> dict[str, Any]:
        return {
            "kind": "final",
            "n_training_samples": self.trainer.n_training_samples,
            "n_training_steps": self.trainer.n_training_steps,
            "path": str(target),
            "metrics": {name: metrics},
        }


def train_vision_sae(cfg: VisionSAERunnerConfig | dict[str, Any], **overrides: Any) -> Any:
    """Convenience: `train_vision_sae({"dataset": ..., "hook_name": ...})`."""
    if isinstance(cfg, dict):
        cfg = VisionSAERunnerConfig.from_dict({**cfg, **overrides})
    elif overrides:
        cfg = replace(cfg, **overrides)
    return VisionSAETrainingRunner(cfg).run()
