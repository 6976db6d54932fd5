"""Image datasets with class and group labels: CelebA, Waterbirds, typographic sets (RTA-100, PAINT, SCAM, generated).

Every loader returns a `LabelledImageDataset` whose items are `(image, label, group)`.
"""

from .celeba import (
    attribute_value_names,
    celeba_group_prompts,
    load_celeba,
    read_celeba_attributes,
    read_celeba_partition,
)
from .fonts import DEFAULT_FONT, find_system_fonts, load_font, resolve_fonts
from .image_folder import load_image_folder, load_labelled_images
from .labelled import DEFAULT_TEMPLATE, LabelledImageDataset
from .scam import SCAM_HUB_NAME, SCAM_TYPES, load_scam
from .typo_generator import (
    AttackParams,
    TypographicConfig,
    TypographicGenerator,
    make_typographic_dataset,
    prepare_image,
    render_text,
    write_typographic_set,
)
from .typographic import (
    TYPOGRAPHIC_TEMPLATE,
    TypographicName,
    format_typographic_name,
    load_paint_typographic,
    load_rta100,
    load_typographic_folder,
    parse_typographic_name,
)
from .waterbirds import load_waterbirds

__all__ = [
    "DEFAULT_FONT",
    "DEFAULT_TEMPLATE",
    "SCAM_HUB_NAME",
    "SCAM_TYPES",
    "TYPOGRAPHIC_TEMPLATE",
    "AttackParams",
    "LabelledImageDataset",
    "TypographicConfig",
    "TypographicGenerator",
    "TypographicName",
    "attribute_value_names",
    "celeba_group_prompts",
    "find_system_fonts",
    "format_typographic_name",
    "load_celeba",
    "load_font",
    "load_image_folder",
    "load_labelled_images",
    "load_paint_typographic",
    "load_rta100",
    "load_scam",
    "load_typographic_folder",
    "load_waterbirds",
    "make_typographic_dataset",
    "parse_typographic_name",
    "prepare_image",
    "read_celeba_attributes",
    "read_celeba_partition",
    "render_text",
    "resolve_fonts",
    "write_typographic_set",
]
