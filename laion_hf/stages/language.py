"""Selection by caption language: :class:`LanguageStage` keeps the rows whose ``language`` matches a selection.

LAION-400M kept English captions; LAION-5B split its pairs into 2B-en
(English), 2B-multi (another detected language) and 1B-nolang (no reliable
language, an empty code) - each a selection here.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from laion_hf.core.errors import UserError
from laion_hf.core.schema import resolve_columns
from laion_hf.core.stage import Stage, mark_dropped


@dataclass
class LanguageStage(Stage):
    """Mark rows outside a language selection with ``reason``.

    ``language_in``: keep these codes; ``language_not_in``: keep every other
    code; ``language_detected``: keep rows with (True) or without (False) a code.
    The conditions combine with AND. An empty or null code means "not detected".
    """

    language_in: tuple[str, ...] | None = None
    language_not_in: tuple[str, ...] | None = None
    language_detected: bool | None = None
    reason: str = "language"
    name: str = "language"

    def __call__(self, batch: pa.Table) -> pa.Table:
        column = resolve_columns(batch.column_names, ["language"])["language"]
        if column is None:
            raise UserError(f"stage {self.name}: selecting by language needs a language column (has: {', '.join(batch.column_names)})")
        codes = pc.fill_null(pc.cast(batch[column], pa.string()), "")
        keep = pa.array([True] * batch.num_rows)
        if self.language_in is not None:
            keep = pc.and_(keep, pc.is_in(codes, value_set=pa.array(self.language_in, pa.string())))
        if self.language_not_in is not None:
            keep = pc.and_(keep, pc.invert(pc.is_in(codes, value_set=pa.array(self.language_not_in, pa.string()))))
        if self.language_detected is not None:
            detected = pc.not_equal(codes, "")
            keep = pc.and_(keep, detected if self.language_detected else pc.invert(detected))
        return mark_dropped(batch, pc.invert(keep), self.reason)
