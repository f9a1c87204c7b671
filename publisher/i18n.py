"""Fixed words of the pages and emails, per site.language. Korean and English are provided;
any other language falls back to English."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

_STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "view_in_browser": "View in browser",
        "unsubscribe": "Unsubscribe",
        "preferences": "Subscription settings",
        "more_papers": "{n} more papers on the web",
        "authors": "Authors",
        "votes": "Votes",
        "et_al": "et al.",
        "archive": "Archive",
        "papers": "{n} papers",
        "watch_video": "Watch video",
        "feed_rss": "RSS feed",
        "feed_atom": "Atom feed",
        "newer": "Newer",
        "older": "Older",
        # The archive's search, months and navigation (site.py, templates/site/).
        "search_label": "Search the archive",
        "search_none": "No paper matches.",
        "months": "By month",
        "latest_days": "Latest {n} days",
        "month_title": "{year}-{month:02d}",
        "nav_site": "Site",
        "nav_days": "Days",
        "nav_months": "Months",
        "nav_footer": "Archive and feeds",
        "read_full_day": "Read the whole day",
        "feed_json": "JSON feed",
        "more_papers_head": "More papers today",
        "sent_to": "This email was sent to {email}.",
        "summary_shortened": "Summaries are shortened today; the full text is on the web.",
        # The newsletter's landmarks and thumbnails (read by screen readers, shown when images
        # are blocked; the alt text must not repeat the title next to it).
        "email_papers_label": "Today's papers",
        "email_footer_label": "About this email",
        "thumbnail_alt": "Figure from the paper",
        "forwarded": "Forwarded to you? Subscribe",
        # `publisher report` (the operator's charts).
        "report_title": "report",
        "report_intro": "The last {days} days, made {generated}. No opens or clicks: publisher "
        "does not track readers.",
        "report_history": "Readers by status are shown as they are now; their history over time "
        "starts with the audit trail, which this release does not keep yet.",
        "report_status_title": "Readers by status",
        "report_status_active": "active",
        "report_status_pending": "pending",
        "report_status_unsubscribed": "unsubscribed",
        "report_status_bounced": "bounced",
        "report_status_removed": "removed",
        "report_readers": "readers",
        "report_joined_title": "New readers per day, by origin",
        "report_source_csv": "CSV",
        "report_source_web": "web signup",
        "report_source_cli": "command line",
        "report_sends_title": "Each digest: delivered, failed, and what readers did",
        "report_sent": "delivered",
        "report_failed": "failed",
        "report_bounced": "bounced",
        "report_complained": "complained",
        "report_unsubscribed": "unsubscribed within 7 days",
        "report_messages": "messages",
        "report_rates_title": "Bounce and complaint rates (dashed: 2% and 0.3%)",
        "report_bounce_rate": "bounces %",
        "report_complaint_rate": "complaints %",
        "report_speed_title": "Send duration and speed",
        "report_seconds": "seconds",
        "report_per_second": "messages/s",
        "report_causes_title": "Inbound reports by kind",
        "report_events": "reports",
        "subscribe_nav": "Subscribe",
        "subscribe_box": "Get each day's papers by email",
        # The web side (publisher serve) and its confirmation email.
        "subscribe_title": "Subscribe by email",
        "subscribe_intro": (
            "Get each day's digest in your inbox. We send a confirmation link "
            "first; nothing is sent until you click it."
        ),
        "email_label": "Email address",
        "name_label": "Name (optional)",
        "subscribe_button": "Subscribe",
        "invalid_email": "That does not look like an email address we can deliver to.",
        "check_inbox_title": "Check your inbox",
        "check_inbox_body": (
            "If the address can receive mail, a confirmation link is on its way. "
            "Click it to start your subscription; without a click nothing more is "
            "sent."
        ),
        "send_failed": "We could not send the confirmation email just now. Please try again later.",
        "too_many": "Too many requests from your network. Please try again later.",
        "unavailable": "This page is unavailable for a moment. Please try again in a minute.",
        "server_error": "Something went wrong on our side. Please try again later.",
        "too_large": "The request is too large.",
        "confirm_subject": "Confirm your subscription to {title}",
        "confirm_greeting": "Someone (hopefully you) asked to receive {title} at this address.",
        "confirm_action": "Confirm subscription",
        "confirm_ignore": (
            "If it was not you, ignore this email: you will not be subscribed and "
            "we will not write again."
        ),
        "confirm_question": "Receive {title} at {email}?",
        "expired_title": "This confirmation link has expired",
        "expired_body": "Confirmation links work for seven days. Subscribe again for a new one:",
        "confirmed_title": "Subscribed",
        "confirmed_body": "{email} will receive {title} from the next issue on.",
        "bad_link_title": "This link does not work",
        "bad_link_body": (
            "The link is incomplete, altered or expired. Copy the whole link from "
            "the email, or subscribe again."
        ),
        "unsubscribe_title": "Unsubscribe",
        "unsubscribe_question": "Stop sending {title} to {email}?",
        "unsubscribe_button": "Unsubscribe",
        "unsubscribed_title": "Unsubscribed",
        "unsubscribed_body": "{email} will receive no more emails from {title}.",
        "preferences_title": "Your subscription",
        "status_label": "Status",
        "status_active": "subscribed",
        "status_pending": "waiting for confirmation",
        "status_inactive": "not subscribed",
        "resubscribe_button": "Subscribe again",
        "download_data": "Download what is stored about this address (JSON)",
        "your_name_label": "Your name",
        "name_button": "Save name",
        "name_saved": "Your name is saved.",
        "delete_explain": (
            "Delete everything stored about this address. You will get no more emails; the "
            "address is kept only as a one-way fingerprint so that it is never added again "
            "without you."
        ),
        "delete_button": "Delete my data",
        "deleted_title": "Your data is deleted",
        "deleted_body": (
            "Everything stored about {email} is deleted, and {title} will not email it again. "
            "To come back, subscribe again."
        ),
        # Reader choice (publisher/topics.py): the footer line and the preferences form.
        "cadence_daily": "Daily",
        "cadence_weekly": "Weekly",
        "cadence_paused": "Paused",
        "all_topics": "all topics",
        "top_n": "top {n}",
        "all_papers": "every paper",
        "you_get": "You get: {line}.",
        "in_this_email": "In this email",
        "choice_title": "What you get",
        "cadence_label": "How often",
        "topics_label": "Topics (none ticked: every paper)",
        "max_label": "At most this many papers per email (0: all)",
        "save_choice": "Save",
        "choice_saved": "Saved. It applies from the next edition.",
        "invalid_choice": "That choice is not valid; nothing was changed.",
        "unsubscribe_alternatives": "Too much mail? You can also pause, or choose fewer papers.",
        "pause_button": "Pause instead (stay subscribed)",
        "choose_less": "Choose topics and how many papers",
        "weekly_button": "Switch to weekly (one email a week)",
        "on_day_page": "On the {date} page",
        "week_text": "Week {week} ({first} to {last})",
    },
    "ko": {
        "view_in_browser": "브라우저에서 보기",
        "unsubscribe": "구독 취소",
        "preferences": "구독 설정",
        "more_papers": "웹에서 논문 {n}편 더 보기",
        "authors": "저자",
        "votes": "추천",
        "et_al": "외",
        "archive": "지난 호",
        "papers": "논문 {n}편",
        "watch_video": "동영상 보기",
        "feed_rss": "RSS 피드",
        "feed_atom": "Atom 피드",
        "newer": "다음",
        "older": "이전",
        # The archive's search, months and navigation (site.py, templates/site/).
        "search_label": "지난 호 검색",
        "search_none": "찾는 논문이 없습니다.",
        "months": "월별 보기",
        "latest_days": "최근 {n}일",
        "month_title": "{year}년 {month}월",
        "nav_site": "사이트",
        "nav_days": "날짜 이동",
        "nav_months": "월 이동",
        "nav_footer": "지난 호와 피드",
        "read_full_day": "하루 전체 보기",
        "feed_json": "JSON 피드",
        "more_papers_head": "오늘의 다른 논문",
        "sent_to": "{email} 주소로 보낸 메일입니다.",
        "summary_shortened": "오늘은 요약을 줄였습니다. 전체 요약은 웹에서 볼 수 있습니다.",
        "email_papers_label": "오늘의 논문",
        "email_footer_label": "이 메일에 대하여",
        "thumbnail_alt": "논문 대표 그림",
        "forwarded": "전달받은 메일인가요? 구독하기",
        "report_title": "운영 보고서",
        "report_intro": "최근 {days}일, {generated} 작성. 열람·클릭은 세지 않습니다: publisher는 "
        "독자를 추적하지 않습니다.",
        "report_history": "상태별 독자 수는 지금의 값입니다. 시간에 따른 변화는 감사 기록과 함께 "
        "시작되며, 이 릴리스는 아직 감사 기록을 남기지 않습니다.",
        "report_status_title": "상태별 독자",
        "report_status_active": "구독 중",
        "report_status_pending": "확인 대기",
        "report_status_unsubscribed": "구독 취소",
        "report_status_bounced": "반송",
        "report_status_removed": "목록에서 삭제",
        "report_readers": "독자",
        "report_joined_title": "일별 신규 독자 (경로별)",
        "report_source_csv": "CSV",
        "report_source_web": "웹 가입",
        "report_source_cli": "명령줄",
        "report_sends_title": "호별 발송 결과와 독자 반응",
        "report_sent": "전달",
        "report_failed": "실패",
        "report_bounced": "반송",
        "report_complained": "스팸 신고",
        "report_unsubscribed": "7일 내 구독 취소",
        "report_messages": "메일",
        "report_rates_title": "반송률과 스팸 신고율 (점선: 2%와 0.3%)",
        "report_bounce_rate": "반송 %",
        "report_complaint_rate": "신고 %",
        "report_speed_title": "발송 시간과 속도",
        "report_seconds": "초",
        "report_per_second": "메일/초",
        "report_causes_title": "수신 보고 종류",
        "report_events": "보고",
        "subscribe_nav": "구독",
        "subscribe_box": "매일의 논문을 이메일로 받아 보세요",
        # The web side (publisher serve) and its confirmation email.
        "subscribe_title": "이메일로 구독하기",
        "subscribe_intro": (
            "매일의 요약을 메일함으로 받아 보세요. 먼저 확인 링크를 보내 드리며, "
            "링크를 누르기 전에는 아무것도 보내지 않습니다."
        ),
        "email_label": "이메일 주소",
        "name_label": "이름 (선택)",
        "subscribe_button": "구독하기",
        "invalid_email": "메일을 보낼 수 있는 이메일 주소가 아닌 것 같습니다.",
        "check_inbox_title": "메일함을 확인해 주세요",
        "check_inbox_body": (
            "메일을 받을 수 있는 주소라면 확인 링크가 발송되었습니다. 링크를 누르면 "
            "구독이 시작되며, 누르지 않으면 더 이상 메일을 보내지 않습니다."
        ),
        "send_failed": "지금은 확인 메일을 보낼 수 없습니다. 잠시 후 다시 시도해 주세요.",
        "too_many": "요청이 너무 많습니다. 잠시 후 다시 시도해 주세요.",
        "unavailable": "잠시 이 페이지를 쓸 수 없습니다. 1분쯤 뒤에 다시 시도해 주세요.",
        "server_error": "서버에 문제가 생겼습니다. 잠시 후 다시 시도해 주세요.",
        "too_large": "요청이 너무 큽니다.",
        "confirm_subject": "{title} 구독을 확인해 주세요",
        "confirm_greeting": (
            "누군가(아마도 본인께서) 이 주소로 {title}을(를) 받아 보겠다고 신청했습니다."
        ),
        "confirm_action": "구독 확인",
        "confirm_ignore": (
            "본인이 신청하지 않았다면 이 메일을 무시하세요. 구독되지 않으며 다시 "
            "메일을 보내지 않습니다."
        ),
        "confirm_question": "{email}(으)로 {title}을(를) 받으시겠어요?",
        "expired_title": "확인 링크가 만료되었습니다",
        "expired_body": "확인 링크는 7일 동안 유효합니다. 새 링크를 받으려면 다시 구독해 주세요:",
        "confirmed_title": "구독되었습니다",
        "confirmed_body": "다음 호부터 {email}(으)로 {title}을(를) 보내 드립니다.",
        "bad_link_title": "올바르지 않은 링크입니다",
        "bad_link_body": (
            "링크가 잘렸거나, 바뀌었거나, 만료되었습니다. 메일의 링크 전체를 "
            "복사하거나 다시 구독해 주세요."
        ),
        "unsubscribe_title": "구독 취소",
        "unsubscribe_question": "{email}(으)로 {title}을(를) 그만 보낼까요?",
        "unsubscribe_button": "구독 취소",
        "unsubscribed_title": "구독이 취소되었습니다",
        "unsubscribed_body": "{email}(으)로 더 이상 {title} 메일을 보내지 않습니다.",
        "preferences_title": "구독 설정",
        "status_label": "상태",
        "status_active": "구독 중",
        "status_pending": "확인 대기 중",
        "status_inactive": "구독하지 않음",
        "resubscribe_button": "다시 구독하기",
        "download_data": "이 주소에 대해 저장된 정보 내려받기 (JSON)",
        "your_name_label": "이름",
        "name_button": "이름 저장",
        "name_saved": "이름을 저장했습니다.",
        "delete_explain": (
            "이 주소에 대해 저장된 모든 정보를 삭제합니다. 더 이상 메일을 받지 않으며, 주소는 "
            "본인 없이 다시 추가되지 않도록 되돌릴 수 없는 지문으로만 남습니다."
        ),
        "delete_button": "내 정보 삭제",
        "deleted_title": "정보가 삭제되었습니다",
        "deleted_body": (
            "{email}에 대해 저장된 모든 정보를 삭제했으며, {title}은(는) 이 주소로 다시 메일을 "
            "보내지 않습니다. 다시 받으려면 새로 구독해 주세요."
        ),
        "cadence_daily": "매일",
        "cadence_weekly": "주간",
        "cadence_paused": "일시 중지",
        "all_topics": "모든 주제",
        "top_n": "상위 {n}편",
        "all_papers": "모든 논문",
        "you_get": "받는 내용: {line}",
        "in_this_email": "이번 호 목차",
        "choice_title": "받을 내용",
        "cadence_label": "받는 주기",
        "topics_label": "주제 (선택하지 않으면 모든 논문)",
        "max_label": "한 번에 받을 최대 논문 수 (0: 전부)",
        "save_choice": "저장",
        "choice_saved": "저장했습니다. 다음 호부터 적용됩니다.",
        "invalid_choice": "올바르지 않은 선택입니다. 아무것도 바꾸지 않았습니다.",
        "unsubscribe_alternatives": (
            "메일이 너무 많나요? 일시 중지하거나 받을 논문을 줄일 수도 있습니다."
        ),
        "pause_button": "대신 일시 중지하기 (구독 유지)",
        "choose_less": "주제와 논문 수 고르기",
        "weekly_button": "주간으로 바꾸기 (일주일에 한 번)",
        "on_day_page": "{date} 페이지에서 보기",
        "week_text": "{week} 주간 ({first} ~ {last})",
    },
}


def strings(language: str) -> Mapping[str, str]:
    """The fixed words for a language tag such as "ko" or "en-US" (English if unknown)."""
    base = language.split("-")[0].lower()
    return MappingProxyType(_STRINGS.get(base, _STRINGS["en"]))
