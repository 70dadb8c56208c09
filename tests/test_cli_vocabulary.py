"""One vocabulary across the ``amlhp`` sub-commands: the same option for the same thing,
every command in a help panel for its audience, no option given twice."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import typer.main

from amlhp.cli import PANELS, build_app

#: (long option, what must come with it): short forms and the names every command shares
SAME_THING = (
    ("--out", "-o"),
    ("--gateway", "-g"),
    ("--app-id", "--group"),
    ("--max-batch", "--batch-size"),
)
#: scoring threads are --score-threads wherever a command scores (``--workers`` elsewhere
#: counts processes)
SCORERS = ("worker", "bench score")


def _commands() -> Iterator[tuple[str, Any]]:
    def walk(cmd: Any, path: list[str]) -> Iterator[tuple[str, Any]]:
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                yield from walk(sub, [*path, name])
        else:
            yield " ".join(path), cmd

    yield from walk(typer.main.get_command(build_app()), [])


def _opts(param: Any) -> list[str]:
    return [*param.opts, *getattr(param, "secondary_opts", [])]


def test_the_same_thing_has_the_same_option_everywhere() -> None:
    wrong = [
        (path, name, needs)
        for path, cmd in _commands()
        for param in cmd.params
        for name, needs in SAME_THING
        if name in _opts(param) and needs not in _opts(param)
    ]
    assert wrong == []


def test_scoring_threads_are_score_threads() -> None:
    found = {path: [o for p in cmd.params for o in _opts(p)] for path, cmd in _commands()}
    assert all("--score-threads" in found[path] for path in SCORERS)


def test_no_command_takes_one_option_twice() -> None:
    for path, cmd in _commands():
        counts = Counter(o for p in cmd.params for o in _opts(p))
        assert [o for o, n in counts.items() if n > 1] == [], path


def test_every_top_level_command_is_in_an_audience_panel() -> None:
    root = typer.main.get_command(build_app())
    listed = [name for names in PANELS.values() for name in names]
    assert len(listed) == len(set(listed))
    assert sorted(listed) == sorted(root.commands)  # type: ignore[attr-defined]
