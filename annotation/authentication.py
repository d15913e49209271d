"""API authentication: DRF's token authentication in one query that also reads the user's
role, so the role check that follows on every API request costs nothing more.

Why raw SQL: an annotator's next-then-submit cycle is the application's hottest path, and
building this query through the ORM (a join and two EXISTS subqueries) costs several times
the CPU of running it; the statement is plain SQL that SQLite and PostgreSQL both run."""

from django.contrib.auth.models import Group, User
from rest_framework import authentication
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import AuthenticationFailed

from annotation.roles import GROUP_ROLES, user_remember_role


def _token_user_sql() -> str:
    user_table = User._meta.db_table
    memberships = User.groups.through._meta.db_table
    in_role = ",\n".join(
        f"""EXISTS (SELECT 1 FROM {memberships} m JOIN {Group._meta.db_table} g ON g.id = m.group_id
                   WHERE m.user_id = u.id AND g.name = '{role.value}') AS in_{role.value}"""
        for role in GROUP_ROLES
    )
    return f"""
        SELECT u.*, t.created AS token_created, {in_role}
        FROM {Token._meta.db_table} t JOIN {user_table} u ON u.id = t.user_id
        WHERE t.key = %s
    """


class TokenAuthentication(authentication.TokenAuthentication):
    """`Authorization: Token <key>`, as DRF's, with the user's role read alongside."""

    _sql: str | None = None

    def authenticate_credentials(self, key: str) -> tuple[User, Token]:
        if TokenAuthentication._sql is None:
            TokenAuthentication._sql = _token_user_sql()
        users = list(User.objects.raw(TokenAuthentication._sql, [key]))
        if not users:
            raise AuthenticationFailed("Invalid token.")
        user = users[0]
        if not user.is_active:
            raise AuthenticationFailed("User inactive or deleted.")
        user_remember_role(user, {role: getattr(user, f"in_{role.value}") for role in GROUP_ROLES})
        return user, Token(key=key, user=user, created=user.token_created)  # type: ignore[attr-defined]
