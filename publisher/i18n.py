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
        "more_papers_head": "More papers today",
        "sent_to": "This email was sent to {email}.",
        "summary_shortened": "Summaries are shortened today; the full text is on the web.",
        "newsletter_intro": "{n} papers today",
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
        "more_papers_head": "오늘의 다른 논문",
        "sent_to": "{email} 주소로 보낸 메일입니다.",
        "summary_shortened": "오늘은 요약을 줄였습니다. 전체 요약은 웹에서 볼 수 있습니다.",
        "newsletter_intro": "오늘의 논문 {n}편",
    },
}


def strings(language: str) -> Mapping[str, str]:
    """The fixed words for a language tag such as "ko" or "en-US" (English if unknown)."""
    base = language.split("-")[0].lower()
    return MappingProxyType(_STRINGS.get(base, _STRINGS["en"]))
