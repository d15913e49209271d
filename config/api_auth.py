"""The API's token authentication: DRF's, refusing a key that cannot be one before it reaches
the database (a NUL character in the header would otherwise end in PostgreSQL's DataError and
a 500)."""

from typing import Any

from rest_framework import authentication
from rest_framework.exceptions import AuthenticationFailed

KEY_LENGTH = 40  # rest_framework.authtoken's keys: 40 hexadecimal characters


class TokenAuthentication(authentication.TokenAuthentication):
    def authenticate_credentials(self, key: str) -> tuple[Any, Any]:
        if len(key) != KEY_LENGTH or not key.isascii() or not key.isalnum():
            raise AuthenticationFailed("Invalid token.")
        return super().authenticate_credentials(key)
