"""Who may reach what: every URL pattern the resolver knows, tried as each role and as an
anonymous visitor; other users' objects (IDOR); what annotators and researchers can read about
other people; CSRF on session requests; the login rate limit; no default credentials.

A URL added anywhere (another app, a new admin page outside the admin site's wrapper) fails
`test_every_url_pattern_is_classified` until it gets a row in ACCESS below.
"""

import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import cache
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from annotation.pseudonyms import pseudonym_map
from tests.hardening.world import PASSWORD, World, build_world, token_client

pytestmark = pytest.mark.django_db


class Access(Enum):
    PUBLIC = "anyone, signed in or not"
    SIGNED_IN = "any signed-in user"
    ANNOTATOR = "annotators and admins"
    RESEARCHER = "researchers and admins"
    STAFF = "admins only"
    NOBODY = "nobody: the admin refuses even admins (read-only models)"


@dataclass(frozen=True)
class Rule:
    access: Access
    method: str = "get"
    # The URL to request; `{mine}`, `{snapshot}` and the like come from the World.
    example: str = ""


# Every URL pattern, as the resolver spells it (prefixes joined), and who may use it. Patterns
# under admin/ are the admin site's: `AdminSite.admin_view` makes each one staff-only, and the
# walk below checks that it really is, pattern by pattern.
ACCESS: dict[str, Rule] = {
    "": Rule(Access.PUBLIC, example="/"),  # redirects to /annotate/
    "healthz": Rule(Access.PUBLIC, example="/healthz"),
    "readyz": Rule(Access.PUBLIC, example="/readyz"),
    "accounts/login/": Rule(Access.PUBLIC, example="/accounts/login/"),
    "accounts/logout/": Rule(Access.PUBLIC, "post", "/accounts/logout/"),
    "annotate/": Rule(Access.ANNOTATOR, example="/annotate/"),
    "annotate/next/": Rule(Access.ANNOTATOR, example="/annotate/next/"),
    "api/schema/": Rule(Access.SIGNED_IN, example="/api/schema/"),
    "api/docs/": Rule(Access.SIGNED_IN, example="/api/docs/"),
    "api/v1/assignments/next/": Rule(Access.ANNOTATOR, example="/api/v1/assignments/next/"),
    "api/v1/assignments/<int:assignment_id>/ranking/": Rule(
        Access.ANNOTATOR, "post", "/api/v1/assignments/{mine}/ranking/"
    ),
    "api/v1/assignments/<int:assignment_id>/skip/": Rule(
        Access.ANNOTATOR, "post", "/api/v1/assignments/999999/skip/"
    ),
    "api/v1/batches/": Rule(Access.RESEARCHER, example="/api/v1/batches/"),
    "api/v1/prompts/": Rule(Access.RESEARCHER, example="/api/v1/prompts/"),
    "api/v1/rankings/": Rule(Access.RESEARCHER, example="/api/v1/rankings/"),
    "api/v1/comparisons/": Rule(Access.RESEARCHER, example="/api/v1/comparisons/"),
    "api/v1/exports/<slug:kind>.<slug:fmt>": Rule(
        Access.RESEARCHER, example="/api/v1/exports/comparisons.jsonl"
    ),
    "api/v1/snapshots/": Rule(Access.RESEARCHER, example="/api/v1/snapshots/"),
    "api/v1/snapshots/create/": Rule(Access.RESEARCHER, "post", "/api/v1/snapshots/create/"),
    "api/v1/snapshots/<int:snapshot_id>/": Rule(
        Access.RESEARCHER, example="/api/v1/snapshots/{snapshot}/"
    ),
    "api/v1/reward/score/": Rule(Access.RESEARCHER, "post", "/api/v1/reward/score/"),
    "quality/": Rule(Access.STAFF, example="/quality/"),
    "quality/<int:batch_id>/": Rule(Access.STAFF, example="/quality/{batch}/"),
    "admin/login/": Rule(Access.PUBLIC, example="/admin/login/"),
    "admin/logout/": Rule(Access.PUBLIC, "post", "/admin/logout/"),
    # Rankings and assignments are evidence and the queue's state: nobody adds or deletes
    # them by hand; runs and model versions come from the training loop only.
    "admin/annotation/ranking/add/": Rule(Access.NOBODY, example="/admin/annotation/ranking/add/"),
    "admin/annotation/assignment/add/": Rule(
        Access.NOBODY, example="/admin/annotation/assignment/add/"
    ),
    "admin/annotation/assignment/<path:object_id>/delete/": Rule(
        Access.NOBODY, example="/admin/annotation/assignment/1/delete/"
    ),
    "admin/training/trainingrun/add/": Rule(
        Access.NOBODY, example="/admin/training/trainingrun/add/"
    ),
    "admin/training/modelversion/add/": Rule(
        Access.NOBODY, example="/admin/training/modelversion/add/"
    ),
    "admin/annotation/annotatorquality/add/": Rule(
        Access.NOBODY, example="/admin/annotation/annotatorquality/add/"
    ),
    # No admin declares autocomplete_fields, so the endpoint refuses every query.
    "admin/autocomplete/": Rule(Access.NOBODY, example="/admin/autocomplete/"),
}
ADMIN_PREFIX = "admin/"
# Values for the admin site's URL arguments when building an example URL from a pattern.
ADMIN_KWARGS = {
    "object_id": "1",
    "id": "1",
    "app_label": "annotation",
    "content_type_id": "1",
    "url": "nothing-here/",
}

ROLES = ("anonymous", "nobody", "alice", "researcher", "admin")
ALLOWED = {
    Access.PUBLIC: set(ROLES),
    Access.SIGNED_IN: {"nobody", "alice", "researcher", "admin"},
    Access.ANNOTATOR: {"alice", "admin"},
    Access.RESEARCHER: {"researcher", "admin"},
    Access.STAFF: {"admin"},
    Access.NOBODY: set(),
}


@dataclass(frozen=True)
class Route:
    pattern: str
    name: str | None
    regex: bool


def _walk(
    patterns: list[URLPattern | URLResolver], prefix: str = "", ns: str = ""
) -> Iterator[Route]:
    for entry in patterns:
        if isinstance(entry, URLResolver):
            namespace = entry.namespace or ns
            yield from _walk(entry.url_patterns, prefix + str(entry.pattern), namespace)
        else:
            name = f"{ns}:{entry.name}" if ns and entry.name else entry.name
            regex = type(entry.pattern).__name__ == "RegexPattern"
            yield Route(prefix + str(entry.pattern), name, regex)


ROUTES = list(_walk(get_resolver().url_patterns))


def _rule(route: Route) -> Rule | None:
    if route.pattern in ACCESS:
        return ACCESS[route.pattern]
    if route.pattern.startswith(ADMIN_PREFIX):
        return Rule(Access.STAFF, example=_admin_example(route))
    return None


def _admin_example(route: Route) -> str:
    if route.name is None:  # the admin's catch-all: any path under admin/
        return "/admin/nothing-here/"
    names = re.findall(r"<(?:\w+:)?(\w+)>|\(\?P<(\w+)>", route.pattern)
    kwargs = {a or b: ADMIN_KWARGS[a or b] for a, b in names}
    return reverse(route.name, kwargs=kwargs)


def test_every_url_pattern_is_classified() -> None:
    unclassified = [route for route in ROUTES if _rule(route) is None]
    assert not unclassified, (
        "URL patterns nobody has classified for access control; add each to ACCESS in "
        "tests/hardening/test_access.py with who may use it: "
        + ", ".join(f"{route.pattern!r} (name {route.name!r})" for route in unclassified)
    )


def test_the_walk_sees_the_whole_site() -> None:
    patterns = {route.pattern for route in ROUTES}
    assert set(ACCESS) - {"admin/login/", "admin/logout/"} <= patterns, "a stale ACCESS row"
    assert any(p.startswith("admin/annotation/ranking/") for p in patterns)


@pytest.fixture
def world() -> World:
    return build_world()


def _client(world: World, role: str) -> Client:
    client = Client(raise_request_exception=False)
    if role != "anonymous":
        client.force_login(world.users[role])
    return client


def _denied(response: object) -> bool:
    status = response.status_code
    if status in (401, 403):
        return True
    location = response.get("Location", "") if status == 302 else ""
    return "login" in location and "next=" in location


def test_each_url_lets_in_exactly_its_roles(world: World) -> None:
    """One test for the whole walk (one World, one client per role): a few seconds instead of
    a minute; the failure lists every URL and role that is wrong."""
    clients = {role: _client(world, role) for role in ROLES}
    wrong = []
    for route in ROUTES:
        rule = _rule(route)
        if rule is None:
            continue  # test_every_url_pattern_is_classified names it
        url = rule.example.format(**world.ids())
        for role, client in clients.items():
            if rule.method == "get":
                response = client.get(url)
            else:
                body = b"{}"
                response = getattr(client, rule.method)(url, body, content_type="application/json")
            allowed = role in ALLOWED[rule.access]
            problem = None
            if response.status_code >= 500:
                problem = f"answered {response.status_code}"
            elif _denied(response) == allowed:
                problem = (
                    f"{'refused' if allowed else 'let in'} ({response.status_code} "
                    f"{response.get('Location', '')}) but the rule is {rule.access.value}"
                )
            elif not allowed and url.startswith("/api/v1/") and not _json_detail(response):
                problem = "refused without a JSON detail"
            if problem:
                wrong.append(f"{role} {rule.method.upper()} {url}: {problem}")
            if rule.method == "post" and "logout" in url and role != "anonymous":
                client.force_login(world.users[role])  # logged out: sign back in
    assert not wrong, "\n".join(wrong)


def _json_detail(response: object) -> bool:
    if not response["Content-Type"].startswith("application/json"):  # type: ignore[index]
        return False
    return bool(response.json().get("detail"))


# -- other people's data ---------------------------------------------------------------------


def test_annotators_reach_only_their_own_assignments(world: World) -> None:
    alice = token_client(world.users["alice"])
    ids = world.ids()

    for url in (
        f"/api/v1/assignments/{ids['theirs']}/ranking/",
        f"/api/v1/assignments/{ids['theirs']}/skip/",
        f"/api/v1/assignments/{ids['stale']}/ranking/",
        f"/api/v1/assignments/{ids['stale']}/skip/",
    ):
        response = alice.post(url, {"order": world.theirs.display_order}, format="json")
        assert response.status_code == 404, url
        assert response.json()["detail"].startswith("you have no assignment")
    # bob's lease is untouched and still his
    world.theirs.refresh_from_db()
    assert world.theirs.status == "active"


def test_annotators_never_see_other_annotators_or_the_pseudonym_key(world: World) -> None:
    # given: bob and carol have rankings and leases; alice looks at everything she may
    alice_api = token_client(world.users["alice"])
    alice_page = _client(world, "alice")
    others = [world.users[name] for name in ("bob", "carol", "researcher", "admin")]
    secrets = [
        settings.EXPORT_PSEUDONYM_KEY,
        *pseudonym_map({user.pk for user in others}).values(),
        *(user.username for user in others),
        *(user.password for user in others),
    ]

    # when
    seen = [
        alice_api.get("/api/v1/assignments/next/").content,
        alice_page.get("/annotate/").content,
        alice_page.get("/annotate/next/").content,
        *(alice_api.get(f"/api/v1/{name}/").content for name in ("rankings", "comparisons")),
        alice_api.get("/api/v1/exports/rankings.jsonl").content,
    ]

    # then
    for content in seen:
        for secret in secrets:
            assert secret.encode() not in content, secret


def test_research_data_names_annotators_only_by_pseudonym(world: World) -> None:
    researcher = token_client(world.users["researcher"])
    users = list(User.objects.all())

    bodies = [
        researcher.get(f"/api/v1/{name}/").content
        for name in ("batches", "prompts", "rankings", "comparisons", "snapshots")
    ]
    export = researcher.get("/api/v1/exports/rankings.jsonl")
    if export.status_code == 200:
        bodies.append(b"".join(export.streaming_content))

    alice_pseudonym = pseudonym_map({world.users["alice"].pk})[world.users["alice"].pk]
    assert alice_pseudonym.encode() in bodies[2]
    for body in bodies:
        assert settings.EXPORT_PSEUDONYM_KEY.encode() not in body
        for user in users:
            assert f'"{user.username}"'.encode() not in body
            assert user.password.encode() not in body


# -- CSRF ------------------------------------------------------------------------------------


def test_session_requests_to_the_api_need_the_csrf_token(world: World) -> None:
    # given: alice signed in with a browser session, no token header
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(world.users["alice"])
    url = f"/api/v1/assignments/{world.mine.pk}/ranking/"
    body = {"order": world.mine_ids}

    # when: a cross-site form or script posts without the token
    forged = browser.post(url, body, content_type="application/json")

    # then: refused, nothing written
    assert forged.status_code == 403
    assert "CSRF" in forged.json()["detail"]
    world.mine.refresh_from_db()
    assert world.mine.status == "active"

    # when: the page's own script posts with the cookie's token
    browser.get("/annotate/")
    token = browser.cookies["csrftoken"].value
    real = browser.post(url, body, content_type="application/json", HTTP_X_CSRFTOKEN=token)

    # then
    assert real.status_code == 201, real.content


def test_token_requests_need_no_csrf_token(world: World) -> None:
    client = token_client(world.users["alice"])
    client.handler.enforce_csrf_checks = True

    response = client.post(
        f"/api/v1/assignments/{world.mine.pk}/ranking/", {"order": world.mine_ids}, format="json"
    )

    assert response.status_code == 201


# -- login rate limit ------------------------------------------------------------------------


@pytest.fixture
def clean_cache() -> Iterator[None]:
    cache.clear()
    yield
    cache.clear()


@pytest.mark.parametrize("login_url", ["/accounts/login/", "/admin/login/"])
def test_login_is_rate_limited_per_username_and_address(
    login_url: str, world: World, clean_cache: None
) -> None:
    # given: an attacker at one address guesses alice's password until the limit
    attacker = Client(REMOTE_ADDR="203.0.113.9")
    for _ in range(settings.LOGIN_FAILURE_LIMIT):
        guess = attacker.post(login_url, {"username": "alice", "password": "guess"})
        assert guess.status_code == 200

    # when: the next try, even with the right password
    blocked = attacker.post(login_url, {"username": "alice", "password": PASSWORD})

    # then: 429 with a readable reason and when to come back, and no session
    assert blocked.status_code == 429
    assert "Too many failed logins" in blocked.content.decode()
    assert int(blocked["Retry-After"]) == settings.LOGIN_FAILURE_WINDOW
    assert "_auth_user_id" not in attacker.session

    # and alice at her own address, and other users at the attacker's, are not locked out
    alice = Client(REMOTE_ADDR="198.51.100.7")
    assert (
        alice.post("/accounts/login/", {"username": "alice", "password": PASSWORD}).status_code
        == 302
    )
    bob = attacker.post("/accounts/login/", {"username": "bob", "password": PASSWORD})
    assert bob.status_code == 302


def test_a_successful_login_clears_the_failures(world: World, clean_cache: None) -> None:
    client = Client(REMOTE_ADDR="203.0.113.10")
    for _ in range(settings.LOGIN_FAILURE_LIMIT - 1):
        client.post("/accounts/login/", {"username": "alice", "password": "guess"})
    assert (
        client.post("/accounts/login/", {"username": "alice", "password": PASSWORD}).status_code
        == 302
    )
    client.logout()

    for _ in range(settings.LOGIN_FAILURE_LIMIT - 1):
        client.post("/accounts/login/", {"username": "alice", "password": "guess"})
    response = client.post("/accounts/login/", {"username": "alice", "password": PASSWORD})

    assert response.status_code == 302


# -- default credentials ---------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("config", "annotation", "training", "rewards", "templates", "static", "bench")
# A literal assigned to something that names a credential: `password="admin"`,
# "secret_key": "abc", PASSWORD = 'x', --password hunter2.
CREDENTIAL = re.compile(
    r"""(?:\b|_)(password|passwd|secret|secret_key|api_key)["']?\s*[:=]\s*["']([^"'\s]{4,})["']"""
    r"""|--password[ =]["']?(\w{4,})"""
    r"""|://[^/\s:@"']+:([^@\s/"']{3,})@"""
    r"""|\b\w*(?:SECRET|PASSWORD|KEY)\w*\s*=.*\bor\s+["']([^"']{4,})["']""",
    re.IGNORECASE,
)
# Literals that are not credentials: development-only keys that production refuses to start
# without replacing (config/settings/production.py), and names of fields.
NOT_CREDENTIALS = {
    "change-me",  # the placeholder in .env.example's DATABASE_URL
    "insecure-development-key-do-not-deploy",
    "insecure-development-pseudonym-key-do-not-deploy",
}


def _files() -> Iterator[Path]:
    for folder in SCANNED:
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix in {
                ".py",
                ".html",
                ".js",
                ".json",
                ".yaml",
                ".yml",
                ".toml",
                ".sh",
                ".cfg",
                ".ini",
                ".txt",
            }:
                yield path
    for name in ("Makefile", "pyproject.toml", "manage.py", ".env.example", "docker-compose.yml"):
        if (ROOT / name).is_file():
            yield ROOT / name


def test_no_default_credentials_in_code_settings_fixtures_or_commands() -> None:
    found = []
    for path in _files():
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
            for match in CREDENTIAL.finditer(line):
                value = next(group for group in match.groups()[1:] if group)
                if value not in NOT_CREDENTIALS:
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:120]}")
    assert not found, "credentials written into the code:\n" + "\n".join(found)


def test_production_settings_have_no_fallback_secrets() -> None:
    text = (ROOT / "config" / "settings" / "production.py").read_text()
    assert 'SECRET_KEY = env_required("DJANGO_SECRET_KEY")' in text
    assert 'EXPORT_PSEUDONYM_KEY = env_required("EXPORT_PSEUDONYM_KEY")' in text
    example = (ROOT / ".env.example").read_text()
    for name in ("DJANGO_SECRET_KEY", "EXPORT_PSEUDONYM_KEY"):
        assert re.search(rf"^{name}=$", example, re.MULTILINE), (
            f"{name} has a value in .env.example"
        )


def test_a_fresh_database_has_no_users() -> None:
    # Migrations create groups, never an account with a known password.
    assert User.objects.count() == 0


@pytest.mark.parametrize(
    "target", ["https://evil.example/", "//evil.example/", "/\\evil.example", "javascript:alert(1)"]
)
def test_login_never_redirects_off_the_site(target: str, world: World, clean_cache: None) -> None:
    client = Client()

    response = client.post(
        "/accounts/login/", {"username": "alice", "password": PASSWORD, "next": target}
    )

    assert response.status_code == 302
    assert response["Location"] == "/annotate/"
