"""Plan before spending: the bytes a harvest will write per hook, against the free space of the cache's disk.

Why: ViT-B/32 on ImageNet-1k at three layers is ~550 GB of activations; a harvest that fills the disk after
hours is refused before it starts instead, with the numbers and the flag that overrides.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

OVERRIDE_FLAG = "--ignore-free-space"
ITEM_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


class NotEnoughSpaceError(OSError):
    """The cache would not fit on its disk."""


@dataclass(frozen=True)
class HarvestPlan:
    """What a harvest will write: images still to harvest, tokens per image, bytes per hook, free bytes."""

    n_images: int
    context_size: int
    d_in: dict[str, int]
    free_bytes: int
    storage_dtype: str

    @property
    def bytes_per_hook(self) -> dict[str, int]:
        item = ITEM_BYTES[self.storage_dtype]
        return {hook: self.n_images * self.context_size * d * item for hook, d in self.d_in.items()}

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes_per_hook.values())

    @property
    def fits(self) -> bool:
        return self.total_bytes <= self.free_bytes

    def lines(self) -> list[str]:
        """The plan in words, one line per hook and one for the total against the free space."""
        per = [
            f"  {hook}: {self.n_images} images x {self.context_size} tokens x "
            f"{self.d_in[hook]} d_in x {self.storage_dtype} = {human_bytes(n)}"
            for hook, n in self.bytes_per_hook.items()
        ]
        return [
            "harvest plan:",
            *per,
            f"  total {human_bytes(self.total_bytes)} to write, {human_bytes(self.free_bytes)} free",
        ]


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError  # pragma: no cover


def free_bytes(path: str | Path) -> int:
    """Free bytes on the file system that holds `path` (its nearest existing parent when it is not made yet)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def plan_harvest(
    path: str | Path, n_images: int, context_size: int, d_in: dict[str, int], storage_dtype: str
) -> HarvestPlan:
    """The bytes `n_images` more images take at each hook (Arrow adds a few offsets per image on top)."""
    return HarvestPlan(
        n_images=n_images,
        context_size=context_size,
        d_in=dict(d_in),
        free_bytes=free_bytes(path),
        storage_dtype=storage_dtype,
    )


def check_plan(plan: HarvestPlan, path: str | Path, ignore_free_space: bool = False) -> None:
    """Refuse a harvest that does not fit, unless told to go ahead."""
    if plan.fits or ignore_free_space:
        return
    raise NotEnoughSpaceError(
        f"the activation cache at {path} needs {human_bytes(plan.total_bytes)} but its disk has "
        f"{human_bytes(plan.free_bytes)} free; free space, put the cache elsewhere (--cache-path), cache fewer hooks "
        f"or images, use --cache-dtype float16, or pass {OVERRIDE_FLAG} to start anyway"
    )
