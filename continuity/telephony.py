"""The Twilio seam: the REST client, acknowledgement TwiML, callback URLs, signatures, errors."""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from twilio.twiml.voice_response import VoiceResponse

from continuity.errors import ConfigurationError, TelephonyError
from continuity.models import DutyOfficer, Language
from continuity.settings import Settings

log = logging.getLogger(__name__)

# Seconds the REST call may take; a create that times out is checked for before any retry.
REST_TIMEOUT_S = 10.0
# How long Twilio waits for the key press once the prompt has been spoken.
GATHER_TIMEOUT_S = 10
TWIML_MAX_CHARS = 4000  # Twilio refuses longer inline TwiML
STATUS_CALLBACK_EVENTS = ("initiated", "ringing", "answered", "completed")
ACK_DIGIT = "1"

PROMPT_VI = "Nhấn phím 1 để xác nhận."
PROMPT_EN = "Press 1 to acknowledge."
THANKS_VI = "Cảm ơn. Xác nhận của bạn đã được ghi nhận."
THANKS_EN = "Thank you. Your acknowledgement has been recorded."
NO_ACK_VI = "Không nhận được xác nhận. Chúng tôi sẽ gọi cán bộ trực tiếp theo."
NO_ACK_EN = "No acknowledgement received. We will call the next duty officer."

_LANG_CODE = {Language.VI: "vi-VN", Language.EN: "en-US"}

# 429 is "never processed and always safe to retry"; 5xx and transport errors may have created the
# call, which place_call rechecks through its reservation before dialling again.
_RETRYABLE_CODES = frozenset({20429})

VOICE_STATUS_PATH = "/twilio/voice/status"
VOICE_GATHER_PATH = "/twilio/voice/gather"
SMS_STATUS_PATH = "/twilio/sms/status"


class RebasedTwilioHttpClient(TwilioHttpClient):
    """Sends every request to another scheme and host; path, auth and encoding stay the client's."""

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        base = urlsplit(base_url)
        if base.scheme not in ("http", "https") or not base.netloc:
            raise TelephonyError(
                f"twilio_api_base must be an http(s) URL, got {base_url!r}", retryable=False
            )
        self._base = base
        if self.session is not None:
            # The sandbox is local: an HTTP(S)_PROXY from the environment must not capture it.
            self.session.trust_env = False

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        u = urlsplit(url)
        local = urlunsplit((self._base.scheme, self._base.netloc, u.path, u.query, ""))
        return super().request(method, local, *args, **kwargs)


# Values a deployment must replace: the settings' defaults and Twilio's test "from" number.
_PLACEHOLDER_SID = "AC00000000000000000000000000000000"
_TEST_FROM_NUMBER = "+15005550006"


def check_telephony(settings: Settings) -> None:
    """Refuse, at start-up, telephony settings that would fail the first duty call.

    "twilio" reaches the real api.twilio.com unless twilio_api_base names a proxy; in production
    its credentials must be real. "sandbox" needs the sandbox's address and is never production.
    """
    mode = settings.telephony
    if mode == "none":
        return
    if mode == "sandbox":
        if not settings.twilio_api_base:
            raise ConfigurationError(
                "CONTINUITY_TELEPHONY=sandbox needs CONTINUITY_TWILIO_API_BASE (the sandbox)"
            )
        if settings.production:
            raise ConfigurationError(
                "CONTINUITY_TELEPHONY=sandbox places no real calls; production needs twilio "
                "(or none, recorded in every incident)"
            )
        return
    if not settings.production:
        return
    placeholders = [
        name
        for name, bad in (
            ("CONTINUITY_TWILIO_ACCOUNT_SID", settings.twilio_account_sid == _PLACEHOLDER_SID),
            ("CONTINUITY_TWILIO_AUTH_TOKEN", not settings.twilio_auth_token.get_secret_value()),
            ("CONTINUITY_TWILIO_FROM_NUMBER", settings.twilio_from_number == _TEST_FROM_NUMBER),
        )
        if bad
    ]
    if placeholders:
        raise ConfigurationError(
            f"production telephony (twilio) still has placeholder {', '.join(placeholders)}; "
            "set the carrier's Twilio account, or CONTINUITY_TELEPHONY=none"
        )


def build_client(settings: Settings, *, timeout_s: float = REST_TIMEOUT_S) -> Client:
    """The real twilio Client; pointed at settings.twilio_api_base (the sandbox) when it is set."""
    http_client: TwilioHttpClient
    if settings.twilio_api_base:
        http_client = RebasedTwilioHttpClient(settings.twilio_api_base, timeout=timeout_s)
    else:
        # No max_retries: a retried POST /Calls.json would ring the officer twice.
        http_client = TwilioHttpClient(timeout=timeout_s)
    return Client(
        settings.twilio_account_sid,
        settings.twilio_auth_token.get_secret_value(),
        account_sid=settings.twilio_account_sid,
        http_client=http_client,
    )


# --- TwiML ---------------------------------------------------------------------------------


def _spoken_order(officer: DutyOfficer) -> list[Language]:
    return (
        [Language.EN, Language.VI]
        if officer.language == Language.EN
        else [Language.VI, Language.EN]
    )


def _voice(settings: Settings, lang: Language) -> str:
    return settings.voice_en if lang == Language.EN else settings.voice_vi


def ack_twiml(
    settings: Settings,
    *,
    officer: DutyOfficer,
    message_vi: str,
    message_en: str,
    gather_url: str,
    gather_timeout_s: int = GATHER_TIMEOUT_S,
) -> str:
    """The call's script: both languages (the officer's first), then wait for one key."""
    if not gather_url.startswith(("http://", "https://")):
        # Inline TwiML has no document URL to resolve a relative action against.
        raise TelephonyError(f"gather action must be absolute, got {gather_url!r}", retryable=False)
    text = {
        Language.VI: f"{message_vi} {PROMPT_VI}".strip(),
        Language.EN: f"{message_en} {PROMPT_EN}".strip(),
    }
    vr = VoiceResponse()
    gather = vr.gather(
        num_digits=1,
        timeout=gather_timeout_s,
        method="POST",
        action=gather_url,
        action_on_empty_result=True,
    )
    for lang in _spoken_order(officer):
        gather.say(text[lang], language=_LANG_CODE[lang], voice=_voice(settings, lang))
    twiml = str(vr)
    if len(twiml) > TWIML_MAX_CHARS:
        raise TelephonyError(
            f"call script is {len(twiml)} characters; Twilio accepts at most {TWIML_MAX_CHARS}",
            retryable=False,
        )
    return twiml


def gather_reply_twiml(settings: Settings, *, acknowledged: bool) -> str:
    """What the officer hears after pressing a key (or nothing): a short word, then hang up."""
    vr = VoiceResponse()
    vi, en = (THANKS_VI, THANKS_EN) if acknowledged else (NO_ACK_VI, NO_ACK_EN)
    vr.say(vi, language=_LANG_CODE[Language.VI], voice=settings.voice_vi)
    vr.say(en, language=_LANG_CODE[Language.EN], voice=settings.voice_en)
    vr.hangup()
    return str(vr)


def empty_twiml() -> str:
    return str(VoiceResponse())


# --- callback URLs and nonces --------------------------------------------------------------


def callback_nonce(
    settings: Settings, *, kind: str, incident_id: str, ref: str, row_id: int
) -> str:
    """A per-reservation nonce; derived, so a retried activity rebuilds the very same URLs."""
    msg = f"continuity-callback|{kind}|{incident_id}|{ref}|{row_id}".encode()
    key = settings.twilio_auth_token.get_secret_value().encode()
    return hmac.new(key, msg, hashlib.sha256).hexdigest()[:24]


def nonce_matches(
    settings: Settings, nonce: str, *, kind: str, incident_id: str, ref: str, row_id: int
) -> bool:
    expected = callback_nonce(settings, kind=kind, incident_id=incident_id, ref=ref, row_id=row_id)
    return hmac.compare_digest(expected, nonce)


def _public(settings: Settings, path: str, query: list[tuple[str, str]]) -> str:
    return f"{settings.public_base_url.rstrip('/')}{path}?{urlencode(query)}"


def voice_status_url(settings: Settings, *, incident_id: str, attempt: int, nonce: str) -> str:
    return _public(
        settings,
        VOICE_STATUS_PATH,
        [("incident", incident_id), ("attempt", str(attempt)), ("nonce", nonce)],
    )


def voice_gather_url(settings: Settings, *, incident_id: str, attempt: int, nonce: str) -> str:
    return _public(
        settings,
        VOICE_GATHER_PATH,
        [("incident", incident_id), ("attempt", str(attempt)), ("nonce", nonce)],
    )


def sms_status_url(settings: Settings, *, incident_id: str, key: str, nonce: str) -> str:
    return _public(
        settings, SMS_STATUS_PATH, [("incident", incident_id), ("key", key), ("nonce", nonce)]
    )


# --- webhook signatures --------------------------------------------------------------------


def public_url(settings: Settings, *, path: str, raw_query: str) -> str:
    """The URL Twilio called, rebuilt from the configured public base; never from Host headers."""
    return settings.public_base_url.rstrip("/") + path + (f"?{raw_query}" if raw_query else "")


def validate_twilio_signature(
    settings: Settings, *, path: str, raw_query: str, form_multidict: Any, signature: str | None
) -> bool:
    """True only for a request signed with our auth token over exactly this URL and form.

    form_multidict must keep repeated keys (Starlette's FormData does; dict() does not).
    """
    token = settings.twilio_auth_token.get_secret_value()
    if not signature or not token:
        return False
    url = public_url(settings, path=path, raw_query=raw_query)
    return bool(RequestValidator(token).validate(url, form_multidict or {}, signature))


# --- errors --------------------------------------------------------------------------------


def _telephony_error(message: str, *, retryable: bool, code: int | None) -> TelephonyError:
    err = TelephonyError(message, retryable=retryable)
    err.twilio_code = code  # type: ignore[attr-defined]  # read back through twilio_code()
    return err


def twilio_code(e: BaseException) -> int | None:
    """The Twilio error code (21211, 20429, ...) a TelephonyError came from, if any."""
    return getattr(e, "twilio_code", None)


def translate_error(e: Exception, *, action: str) -> TelephonyError:
    """One TelephonyError for whatever the twilio client or its transport raised."""
    if isinstance(e, TwilioRestException | TwilioServiceException):
        status = int(e.status or 0)
        code = int(e.code) if e.code is not None else status
        detail = e.msg if isinstance(e, TwilioRestException) else (e.detail or e.title)
        retryable = code in _RETRYABLE_CODES or status == 429 or status >= 500
        return _telephony_error(
            f"twilio {action}: HTTP {status}, code {code}: {detail}", retryable=retryable, code=code
        )
    if isinstance(e, requests.Timeout | requests.ConnectionError):
        return _telephony_error(
            f"twilio {action}: {type(e).__name__}: unreachable or timed out",
            retryable=True,
            code=None,
        )
    # A body the client could not parse, a bad parameter: retrying changes nothing.
    return _telephony_error(
        f"twilio {action}: {type(e).__name__}: {e}".splitlines()[0], retryable=False, code=None
    )


@contextmanager
def twilio_errors(action: str) -> Iterator[None]:
    """Translate TwilioException and transport errors into TelephonyError, once, at the boundary."""
    try:
        yield
    except (TwilioException, requests.RequestException) as e:
        raise translate_error(e, action=action) from e


__all__ = [
    "ACK_DIGIT",
    "GATHER_TIMEOUT_S",
    "REST_TIMEOUT_S",
    "STATUS_CALLBACK_EVENTS",
    "RebasedTwilioHttpClient",
    "ack_twiml",
    "build_client",
    "check_telephony",
    "callback_nonce",
    "empty_twiml",
    "gather_reply_twiml",
    "nonce_matches",
    "public_url",
    "sms_status_url",
    "translate_error",
    "twilio_code",
    "twilio_errors",
    "validate_twilio_signature",
    "voice_gather_url",
    "voice_status_url",
]
