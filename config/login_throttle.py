"""Password guessing is slowed to a few tries per account and address.

Every failed password login (the login page, the admin's login, anything that calls
`authenticate`) counts against the pair (username, client address) in Django's cache, for
LOGIN_FAILURE_WINDOW seconds. Once LOGIN_FAILURE_LIMIT failures are counted, a POST to a login
page is answered 429 with Retry-After, without checking the password, until the window ends;
a successful login clears the count. Keyed on the pair, an attacker cannot lock a user out from
another address, and one address cannot try many passwords on one account.

The count lives in the default cache: with several server processes that cache must be shared
(RANKLOOP_CACHE_URL, a Redis URL), or each process counts on its own.
"""

import hashlib
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse

LOGIN_PATHS = ("/accounts/login/", "/admin/login/")


def _key(username: str, address: str) -> str:
    digest = hashlib.sha256(f"{username.strip().lower()}\x00{address}".encode()).hexdigest()
    return f"login-failures:{digest}"


def _address(request: HttpRequest | None) -> str:
    # REMOTE_ADDR, not X-Forwarded-For: a client writes that header itself. Behind a proxy,
    # the proxy must set REMOTE_ADDR (gunicorn --forwarded-allow-ips).
    return "" if request is None else str(request.META.get("REMOTE_ADDR", ""))


def failures(username: str, address: str) -> int:
    return int(cache.get(_key(username, address), 0))


def _count_failure(
    sender: Any, credentials: dict[str, Any], request: Any = None, **kw: Any
) -> None:
    username = str(credentials.get("username", ""))
    key = _key(username, _address(request))
    window = settings.LOGIN_FAILURE_WINDOW
    if cache.add(key, 1, timeout=window):
        return
    try:
        cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.add(key, 1, timeout=window)


def _clear_failures(sender: Any, request: HttpRequest, user: Any, **kw: Any) -> None:
    cache.delete(_key(user.get_username(), _address(request)))


class LoginThrottleMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        user_login_failed.connect(_count_failure, dispatch_uid="rankloop-login-failures")
        user_logged_in.connect(_clear_failures, dispatch_uid="rankloop-login-clear")

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method == "POST" and request.path in LOGIN_PATHS:
            username = request.POST.get("username", "")
            if failures(username, _address(request)) >= settings.LOGIN_FAILURE_LIMIT:
                minutes = max(1, round(settings.LOGIN_FAILURE_WINDOW / 60))
                response = HttpResponse(
                    f"Too many failed logins for this account from your address. "
                    f"Try again in {minutes} minute{'s' if minutes != 1 else ''}.",
                    status=429,
                    content_type="text/plain; charset=utf-8",
                )
                response["Retry-After"] = str(settings.LOGIN_FAILURE_WINDOW)
                return response
        return self.get_response(request)
