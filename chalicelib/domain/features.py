"""The features one ad is scored on: shared by training and inference.

Pure data and validation, no I/O, no third-party imports: `training/` imports
this module so the model is fitted on exactly what the Lambda sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

# Categories the marketplace uses today (the seeds' ads use small integers).
# An ad outside this range is "invalid features": a permanent failure.
MIN_CATEGORY = 0
MAX_CATEGORY = 99
MAX_IMAGES = 100
MAX_NAME_CHARS = 500
MAX_DESCRIPTION_CHARS = 10_000


class InvalidFeatures(ValueError):
    """The ad cannot be scored as it stands; retrying will not help."""


class HasAdFields(Protocol):
    """Anything that carries an ad's scoring fields: a stored ad, a request, a generated ad."""

    @property
    def is_verified_seller(self) -> bool: ...
    @property
    def images_qty(self) -> int: ...
    @property
    def category(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def description(self) -> str: ...


@dataclass(frozen=True, slots=True)
class AdFeatures:
    is_verified_seller: bool
    images_qty: int
    category: int
    name: str
    description: str

    @classmethod
    def of(cls, ad: HasAdFields) -> AdFeatures:
        return cls(
            is_verified_seller=ad.is_verified_seller,
            images_qty=ad.images_qty,
            category=ad.category,
            name=ad.name,
            description=ad.description,
        )

    def validate(self) -> AdFeatures:
        if not MIN_CATEGORY <= self.category <= MAX_CATEGORY:
            raise InvalidFeatures(
                f"category must be between {MIN_CATEGORY} and {MAX_CATEGORY}, got {self.category}"
            )
        if not 0 <= self.images_qty <= MAX_IMAGES:
            raise InvalidFeatures(f"images_qty must be between 0 and {MAX_IMAGES}, got {self.images_qty}")
        if not self.name.strip():
            raise InvalidFeatures("name must not be empty")
        if len(self.name) > MAX_NAME_CHARS:
            raise InvalidFeatures(f"name is longer than {MAX_NAME_CHARS} characters")
        if len(self.description) > MAX_DESCRIPTION_CHARS:
            raise InvalidFeatures(f"description is longer than {MAX_DESCRIPTION_CHARS} characters")
        return self
