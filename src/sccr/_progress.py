"""Progress bars: one per stage, on a terminal only unless asked."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def resolve_progress(progress: bool | None) -> bool:
    """``None`` means: show bars when standard error is a terminal."""
    if progress is None:
        return bool(getattr(sys.stderr, "isatty", lambda: False)())
    return bool(progress)


def stage_bar(desc: str, total: int, enabled: bool) -> tqdm:
    """A bar for one stage of ``total`` steps (disabled bars cost nothing)."""
    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, unit="chunk")
