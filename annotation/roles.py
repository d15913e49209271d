"""Who may do what. Three roles: annotators rank, researchers read and export data, admins
(staff users) manage batches and see everything. A user's role is a Django group; staff users
are admins whatever their groups. This module is the one place that decides a user's role."""

from collections.abc import Callable
from typing import TYPE_CHECKING

from django.contrib.auth.models import AnonymousUser, Group, User
from django.db import models, transaction
from rest_framework.permissions import BasePermission

if TYPE_CHECKING:
    # Types only: importing DRF's views here would be circular, as DRF imports the
    # authentication classes (annotation.authentication, which uses this module) from there.
    from rest_framework.request import Request
    from rest_framework.views import APIView


class Role(models.TextChoices):
    ANNOTATOR = "annotator"
    RESEARCHER = "researcher"
    ADMIN = "admin"


# Where a user object remembers its role for the rest of the request (see `user_role`).
_ROLE_ATTRIBUTE = "_rankloop_role"
# The roles held through a group, strongest first: a user in both groups is a researcher.
GROUP_ROLES = (Role.RESEARCHER, Role.ANNOTATOR)


def user_role(user: User | AnonymousUser) -> Role | None:
    """The user's role, read once per user object: a request asks several times (the
    permission class, the view, the template), and its user object lives for that request
    only, so a role changed meanwhile applies from the next request on."""
    if not user.is_authenticated or not user.is_active:
        return None
    if user.is_staff:
        return Role.ADMIN
    if _ROLE_ATTRIBUTE not in user.__dict__:
        names = set(user.groups.values_list("name", flat=True))
        user.__dict__[_ROLE_ATTRIBUTE] = _role_from_groups(lambda role: role.value in names)
    role: Role | None = user.__dict__[_ROLE_ATTRIBUTE]
    return role


def user_remember_role(user: User, membership: dict[Role, bool]) -> None:
    """Store on `user` the role that its group `membership` (read with the user, in the
    query that fetched it) makes it: token authentication reads both in one query."""
    user.__dict__[_ROLE_ATTRIBUTE] = _role_from_groups(lambda role: bool(membership.get(role)))


def _role_from_groups(member_of: Callable[[Role], bool]) -> Role | None:
    return next((role for role in GROUP_ROLES if member_of(role)), None)


@transaction.atomic
def user_set_role(*, user: User, role: Role) -> None:
    """Give `user` exactly one role. Admins are staff (they may use the Django admin)."""
    user.__dict__.pop(_ROLE_ATTRIBUTE, None)
    user.groups.remove(*Group.objects.filter(name__in=Role.values))
    user.is_staff = role == Role.ADMIN
    user.is_superuser = role == Role.ADMIN
    user.save()
    if role != Role.ADMIN:
        group, _ = Group.objects.get_or_create(name=role.value)
        user.groups.add(group)


class IsAnnotator(BasePermission):
    """Annotators, and admins (who may try the workspace themselves)."""

    message = "This needs the annotator role."

    def has_permission(self, request: "Request", view: "APIView") -> bool:
        return user_role(request.user) in (Role.ANNOTATOR, Role.ADMIN)


class IsResearcher(BasePermission):
    """Researchers and admins: the people who read the data."""

    message = "This needs the researcher or admin role."

    def has_permission(self, request: "Request", view: "APIView") -> bool:
        return user_role(request.user) in (Role.RESEARCHER, Role.ADMIN)


class IsAdmin(BasePermission):
    message = "This needs the admin role."

    def has_permission(self, request: "Request", view: "APIView") -> bool:
        return user_role(request.user) == Role.ADMIN
