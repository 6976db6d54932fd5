"""Training live from a stream: WebDataset shards (and `hf:<folder> --streaming`) give the SAE that training on the
same images from a folder, in the same order, gives; a corrupt sample is skipped and counted; a run interrupted
and resumed gives the uninterrupted run's SAE, bit for bit, with 0 and with 2 DataLoader workers."""

from __future__ import annotations

import io
import json
import re
import shutil
import signal
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sae_clip_plugin.cli.train import main as cli_main
from sae_clip_plugin.training import VisionSAETrainingRunner
from sae_clip_plugin.training.checkpoints import existing_checkpoints
from sae_clip_plugin.training.runner import TrainingInterrupted
from tests.training.test_training_exact_resume import _assert_bit_equal, _signal_in_step, _weights
from tests.training.test_training_runner import config

N_TARS, PER_TAR = 3, 16
CORRUPT_AFTER = 20  # a truncated png follows image 20 (in the second shard), in the tars only


def write_images_and_tars(root: Path, corrupt: bool = True) -> tuple[Path, Path]:
    """The same PNGs as a folder (img_000.png ...) and as N_TARS WebDataset shards (png + caption per key), in
    the same order; the tars also hold one truncated png. Returns (folder, tar folder)."""
    folder, tars = root / "folder", root / "tars"
    folder.mkdir(parents=True)
    tars.mkdir()
    rng = np.random.default_rng(0)
    for t in range(N_TARS):
        with tarfile.open(tars / f"shard-{t:05d}.tar", "w") as tar:
            for i in range(t * PER_TAR, (t + 1) * PER_TAR):
                buffer = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (40, 43, 3), dtype=np.uint8)).save(buffer, format="PNG")
                (folder / f"img_{i:03d}.png").write_bytes(buffer.getvalue())
                samples = [(f"img_{i:03d}", buffer.getvalue())]
                if corrupt and i == CORRUPT_AFTER:
                    samples.append((f"img_{i:03d}_bad", buffer.getvalue()[:100]))
                for key, data in samples:
                    for suffix, payload in (("png", data), ("txt", f"caption of {key}".encode())):
                        info = tarfile.TarInfo(f"{key}.{suffix}")
                        info.size = len(payload)
                        tar.addfile(info, io.BytesIO(payload))
    return folder, tars


RUN = dict(
    token_selection="all",
    train_batch_size_tokens=64,
    training_tokens=64 * 36,  # 2,304 tokens: 2.8 passes over 48 images x 17 tokens
    n_batches_in_buffer=4,
    harvest_batch_size=6,
    n_eval_images=10,
    architecture="topk",
    sae={"k": 8},
    lr_warm_up_steps=2,
)


def _train(tmp_path: Path, name: str, model, images: str, **overrides) -> VisionSAETrainingRunner:
    cfg = config(
        tmp_path,
        dataset_path=images,
        output_path=str(tmp_path / name / "out"),
        checkpoint_path=str(tmp_path / name / "ckpt"),
        **{**RUN, **overrides},
    )
    runner = VisionSAETrainingRunner(cfg, override_model=model)
    runner.run()
    return runner


def test_tar_shards_train_the_folder_sae_and_skip_the_corrupt_sample(model, tmp_path):
    folder, tars = write_images_and_tars(tmp_path)
    common = dict(shuffle_images=False)  # a stream cannot shuffle its images: the folder read in order
    from_folder = _train(tmp_path, "folder", model, str(folder), **common)
    streamed = _train(tmp_path, "stream", model, f"wds:{tars}/shard-{{00000..00002}}.tar", **common)
    cursor = streamed.provider.cursor  # the passes read (the norm estimate and the buffer draw ahead)
    assert cursor.epoch == from_folder.provider.order.epoch >= 2
    assert cursor.skipped == cursor.epoch + (cursor.images_this_pass > CORRUPT_AFTER)  # once per pass read
    assert streamed.stream_length == 48 and "length unknown in advance" in streamed.plan
    _assert_bit_equal(_weights(tmp_path / "stream" / "out"), _weights(tmp_path / "folder" / "out"))
    meta = json.loads((tmp_path / "stream" / "out" / "cfg.json").read_text())["metadata"]["dataset"]
    assert meta["type"] == "WebDatasetImages" and meta["n_shards"] == N_TARS and "shards" not in meta


def test_a_budget_of_too_many_passes_is_refused_when_the_first_pass_ends(model, tmp_path):
    """The length of a stream without sizes.json is known after one pass: 2.8 passes > --max-epochs 2."""
    _, tars = write_images_and_tars(tmp_path)
    with pytest.raises(ValueError, match=r"3 passes over your 48 images .* more than max_epochs=2"):
        _train(tmp_path, "s", model, f"wds:{tars}", max_epochs=2.0)


def test_hf_streaming_of_a_local_folder_trains_the_folder_sae(model, tmp_path):
    """`--images hf:<folder> --streaming`: datasets' own streaming reader (imagefolder), never the network."""
    folder, _ = write_images_and_tars(tmp_path, corrupt=False)
    local = (
        tmp_path / "hub" / "train"
    )  # datasets names the split after the folder (else after the path's words)
    local.mkdir(parents=True)
    for png in sorted(folder.iterdir()):
        (local / png.name).write_bytes(png.read_bytes())
    common = dict(shuffle_images=False, training_tokens=64 * 16)
    _train(tmp_path, "folder", model, str(folder), **common)
    streamed = _train(tmp_path, "stream", model, f"hf:{local.parent}", streaming=True, **common)
    assert streamed.stream.describe()["type"] == "HFStreamingImages"
    _assert_bit_equal(_weights(tmp_path / "stream" / "out"), _weights(tmp_path / "folder" / "out"))


@pytest.mark.parametrize("workers", [0, 2])
def test_interrupted_stream_run_resumes_to_the_same_sae(model, tmp_path, monkeypatch, workers):
    """Shard order shuffled per pass, 2 workers reading 2 and 1 shards: the resumed run continues each worker's
    shard at its sample and the workers' turn at the right one."""
    _, tars = write_images_and_tars(tmp_path)
    images = f"wds:{tars}"
    common = dict(num_workers=workers, checkpoint_every_tokens=64 * 7)
    whole = _train(tmp_path, "whole", model, images, **common)
    _signal_in_step(monkeypatch, 23, signal.SIGINT)
    with pytest.raises(TrainingInterrupted):
        _train(tmp_path, "cut", model, images, **common)
    saved = existing_checkpoints(tmp_path / "cut" / "ckpt")[-1]
    position = json.loads((saved / "provider_state.json").read_text())["provider"]["stream"]
    assert position["epoch"] >= 1 and position["n_slots"] == max(1, workers)  # a later pass, shuffled anew
    assert any(p is not None and p[1] > 0 for p in position["slots"])  # inside a shard
    if workers:  # (seeded) the turn resumes at the second worker, not at the one a DataLoader starts with
        assert position["next_slot"] == 1
    monkeypatch.undo()
    resumed = _train(tmp_path, "cut", model, images, resume_from_checkpoint="latest", **common)
    assert resumed.provider.skipped == whole.provider.skipped
    _assert_bit_equal(_weights(tmp_path / "cut" / "out"), _weights(tmp_path / "whole" / "out"))
    shutil.copytree(saved, tmp_path / "other" / "ckpt" / saved.name)
    with pytest.raises(ValueError, match="--num-workers of the checkpointed run"):
        _train(tmp_path, "other", model, images, resume_from_checkpoint="latest",
               **{**common, "num_workers": 1 if workers else 2})  # fmt: skip


def test_cli_streams_tar_shards_with_the_plan_and_the_sizing_from_sizes_json(tmp_path, capsys):
    """`sae-clip train --images 'DIR/shard-*.tar' --model toy`: the plan line says what bounds the run; the topk
    preset needs --training-tokens or a declared length (sizes.json), and then sizes as for the folder."""
    folder, tars = write_images_and_tars(tmp_path)
    base = ["train", "--model", "toy", "--hook", "blocks.1.hook_resid_post", "--device", "cpu",
            "--num-workers", "0"]  # fmt: skip
    pattern = str(tars / "shard-*.tar")
    assert cli_main([*base, "--preset", "topk", "--images", pattern, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "does not declare its length" in err and "--training-tokens" in err and "sizes.json" in err
    assert (
        cli_main(
            [*base, "--images", pattern, "--cache-path", str(tmp_path / "c"), "--out", str(tmp_path / "a")]
        )
        == 2
    )
    assert "drop --cache-path to train live from the stream" in capsys.readouterr().err

    (tars / "sizes.json").write_text(json.dumps({f"shard-{t:05d}.tar": PER_TAR for t in range(N_TARS)}))
    small = ["--preset", "topk", "--set", "sae.k=8", "--expansion-factor", "2", "--training-tokens", "1024",
             "--train-batch-size-tokens", "128", "--lr-warm-up-steps", "1", "--n-eval", "4",
             "--set", "n_batches_in_buffer=2", "--set", "n_batches_for_norm_estimate=2"]  # fmt: skip
    assert cli_main([*base, *small, "--images", str(folder), "--out", str(tmp_path / "f")]) == 0
    sized_folder = [line for line in capsys.readouterr().out.splitlines() if line.startswith("sized to")]
    assert cli_main([*base, *small, "--images", pattern, "--out", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if line.startswith("sized to")] == sized_folder
    assert "stream plan:" in out and "48 images declared" in out and f"({N_TARS} shards)" in out
    assert re.search(r"stream: \d+ images read in \d+ pass\(es\).*, [1-9]\d* corrupt samples skipped", out)
