"""A Content-Security-Policy header on every response.

Django 5.2 has no built-in CSP. The pages serve their scripts and styles from /static/ and use no
inline script, inline style or `eval`, so the policy allows only the site's own origin; a page
that breaks that rule fails in the browser (and in tests/browser/test_csp.py), not silently.
The policy is a setting (`CONTENT_SECURITY_POLICY`), the same in development and production,
so what passes on a laptop passes in a deployment.
"""

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        policy = getattr(settings, "CONTENT_SECURITY_POLICY", "")
        if policy and "Content-Security-Policy" not in response.headers:
            response.headers["Content-Security-Policy"] = policy
        return response
