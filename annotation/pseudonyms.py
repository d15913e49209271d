"""Annotator pseudonyms: how exports and the research API name the people who ranked.

A pseudonym is HMAC-SHA256(EXPORT_PSEUDONYM_KEY, user id), truncated. It is stable for one key
(a researcher can follow an annotator across exports and snapshots) and unlinkable without the
key (the user id space is small, so a plain hash could be reversed by enumeration; a keyed one
cannot). The key stays on the server: annotators and researchers only ever see pseudonyms.
"""

import hashlib
import hmac
from collections.abc import Iterable

from django.conf import settings
from django.contrib.auth import get_user_model

PREFIX = "ann-"
# 12 hex digits = 48 bits: readable in a spreadsheet, and a collision among even a million
# annotators has a probability of about 2e-3; `user_ids_for_pseudonym` returns every match.
DIGITS = 12


def _key() -> bytes:
    # Read at call time, not import time, so tests can override the setting.
    return str(settings.EXPORT_PSEUDONYM_KEY).encode()


def annotator_pseudonym(user_id: int, *, key: bytes | None = None) -> str:
    digest = hmac.new(key or _key(), str(user_id).encode(), hashlib.sha256).hexdigest()
    return PREFIX + digest[:DIGITS]


def pseudonym_map(user_ids: Iterable[int]) -> dict[int, str]:
    key = _key()
    return {user_id: annotator_pseudonym(user_id, key=key) for user_id in user_ids}


def pseudonyms_of_all_users() -> dict[int, str]:
    """Every user's pseudonym. Exports join it in SQL; there are thousands of users at most,
    against millions of rows, so hashing them all once per export is the cheap side."""
    return pseudonym_map(get_user_model().objects.values_list("id", flat=True))


def user_ids_for_pseudonym(pseudonym: str) -> list[int]:
    """Map a pseudonym back to user ids by hashing every user's id: an HMAC has no inverse."""
    return [user_id for user_id, name in pseudonyms_of_all_users().items() if name == pseudonym]


def key_fingerprint() -> str:
    """Identifies the key in a snapshot manifest without revealing it: a re-export whose
    pseudonyms differ can then be blamed on a rotated key rather than on changed data."""
    return hmac.new(_key(), b"rankloop key fingerprint", hashlib.sha256).hexdigest()[:12]
