"""Fixed words of the pages and emails, per site.language. Korean and English are provided;
any other language falls back to English."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

_STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "view_in_browser": "View in browser",
        "unsubscribe": "Unsubscribe",
        "more_papers": "{n} more papers on the web",
        "authors": "Authors",
        "votes": "Votes",
        "et_al": "et al.",
        "archive": "Archive",
        "papers": "{n} papers",
        "watch_video": "Watch video",
        "read_paper": "Read the paper",
        "subscribe": "Subscribe",
        "feed_rss": "RSS feed",
        "feed_atom": "Atom feed",
        "newer": "Newer",
        "older": "Older",
    },
    "ko": {
        "view_in_browser": "브라우저에서 보기",
        "unsubscribe": "구독 취소",
        "more_papers": "웹에서 논문 {n}편 더 보기",
        "authors": "저자",
        "votes": "추천",
        "et_al": "외",
        "archive": "지난 호",
        "papers": "논문 {n}편",
        "watch_video": "동영상 보기",
        "read_paper": "논문 읽기",
        "subscribe": "구독하기",
        "feed_rss": "RSS 피드",
        "feed_atom": "Atom 피드",
        "newer": "다음",
        "older": "이전",
    },
}


def strings(language: str) -> Mapping[str, str]:
    """The fixed words for a language tag such as "ko" or "en-US" (English if unknown)."""
    base = language.split("-")[0].lower()
    return MappingProxyType(_STRINGS.get(base, _STRINGS["en"]))
