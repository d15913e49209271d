"""Who may do what. Three roles: annotators rank, researchers read and export data, admins
(staff users) manage batches and see everything. A user's role is a Django group; staff users
are admins whatever their groups. This module is the one place that decides a user's role."""

from django.contrib.auth.models import AnonymousUser, Group, User
from django.db import models, transaction
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView


class Role(models.TextChoices):
    ANNOTATOR = "annotator"
    RESEARCHER = "researcher"
    ADMIN = "admin"


def user_role(user: User | AnonymousUser) -> Role | None:
    if not user.is_authenticated or not user.is_active:
        return None
    if user.is_staff:
        return Role.ADMIN
    names = set(user.groups.values_list("name", flat=True))
    for role in (Role.RESEARCHER, Role.ANNOTATOR):
        if role.value in names:
            return role
    return None


@transaction.atomic
def user_set_role(*, user: User, role: Role) -> None:
    """Give `user` exactly one role. Admins are staff (they may use the Django admin)."""
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

    def has_permission(self, request: Request, view: APIView) -> bool:
        return user_role(request.user) in (Role.ANNOTATOR, Role.ADMIN)


class IsResearcher(BasePermission):
    """Researchers and admins: the people who read the data."""

    message = "This needs the researcher or admin role."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return user_role(request.user) in (Role.RESEARCHER, Role.ADMIN)


class IsAdmin(BasePermission):
    message = "This needs the admin role."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return user_role(request.user) == Role.ADMIN
