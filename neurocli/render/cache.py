"""What ``neurocli cache info`` shows: the cache folder, then one line an entry (its data
file, its kind, rows and size), as a table where it fits and a list where it does not."""

from __future__ import annotations

from rich.console import Group
from rich.text import Text

from neurocli.render.layout import Fitted, Prose, fixed_table, if_fits, name_line


def info_renderable(s: dict) -> Group:
    """``s`` is :func:`neurocli.cache.info`'s dict. Print it with :func:`neurocli.render.layout.show`."""
    n = len(s["entries"])
    head = Prose(f"cache: {s['dir']} ({'on' if s['enabled'] else 'off: NEUROCLI_CACHE=off'}); "
                 f"{n} entr{'y' if n == 1 else 'ies'}, {s['bytes'] / 1e6:.1f} MB")
    if not n:
        return Group(head)
    rows = [[Text(e["file"] or "(an unreadable entry)"), e.get("kind") or "?",
             "? rows" if e["rows"] is None else f"{e['rows']} rows", f"{e['bytes'] / 1e6:.1f} MB"]
            for e in s["entries"]]

    def table(console, width):
        return if_fits(console, width, fixed_table(["file", "kind", "rows", "size"], rows,
                                                   ["left", "left", "right", "right"], indent=2))

    def listed(console, width):  # a file name longer than the page folds, whole
        return Group(*[part for file, kind, n_rows, size in rows
                       for part in (Prose(file.plain, indent=2), name_line(f"{kind}, {n_rows}, {size}", 4))])

    return Group(head, Fitted(table, listed))
