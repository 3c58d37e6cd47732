"""Router through the real extension."""

from __future__ import annotations

import pytest

from rqueue._rqueue import Router
from rqueue.exceptions import ConfigurationError


def test_router_default_queue_when_nothing_matches() -> None:
    router = Router([], default_queue="default")
    assert router.route("tasks.add") == ("default", "", "default", None)


def test_router_exact_glob_regex() -> None:
    router = Router(
        [
            ("exact", "tasks.add", "math", None, None, None),
            ("glob", "video.*", "video", "media", "video.key", 3),
            ("regex", r"img\.(resize|crop)", "images", None, None, None),
        ]
    )
    assert router.route("tasks.add") == ("math", "", "math", None)
    assert router.route("video.encode") == ("video", "media", "video.key", 3)
    assert router.route("img.crop")[0] == "images"
    assert router.route("img.cropped")[0] == "celery"


def test_router_first_match_wins() -> None:
    router = Router(
        [
            ("glob", "tasks.*", "by-glob", None, None, None),
            ("exact", "tasks.add", "by-exact", None, None, None),
        ]
    )
    assert router.route("tasks.add")[0] == "by-glob"


def test_router_rule_without_queue_uses_default() -> None:
    router = Router([("exact", "a", None, None, None, 1)], default_queue="dq")
    assert router.route("a") == ("dq", "", "dq", 1)


@pytest.mark.parametrize(
    ("rule", "needle"),
    [
        (("regex", "a(", "q", None, None, None), "a("),
        (("glob", "a[", "q", None, None, None), "a["),
        (("fuzzy", "a", "q", None, None, None), "fuzzy"),
        (("exact", "a", "q", None, None, 10), "priority"),
    ],
)
def test_router_invalid_rule_raises_configuration_error(rule: tuple, needle: str) -> None:
    with pytest.raises(ConfigurationError, match=__import__("re").escape(needle)):
        Router([rule])
