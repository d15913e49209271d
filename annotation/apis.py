"""The annotation API, under /api/v1/. One class per operation: parse with a serializer, call
one service, shape the answer. Every error is JSON with a readable `detail`."""

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.leases import AssignmentClosed, assignment_next, assignment_skip, assignment_submit
from annotation.models import Assignment
from annotation.rankings import InvalidRanking, normalize_groups
from annotation.roles import IsAnnotator
from annotation.selectors import assignment_completions

FLAG_LABELS = ("unsafe", "factually_wrong", "off_topic", "other")
RATIONALE_MAX = 5000
DURATION_MAX_MS = 24 * 3600 * 1000


class StrictIntegerField(serializers.IntegerField):
    """An integer in the JSON, not "3", 3.0 or true."""

    def to_internal_value(self, data: Any) -> int:
        if not isinstance(data, int) or isinstance(data, bool):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class StrictCharField(serializers.CharField):
    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class RankingInputSerializer(serializers.Serializer):
    """Either `ranking` (groups best first, a group of several a tie) or `order` (a strict
    order of ids). Both are checked for shape and types here; whether they partition the
    prompt's completions is the service's check."""

    ranking = serializers.JSONField(required=False)
    order = serializers.JSONField(required=False)
    not_rankable = StrictBooleanField(required=False, default=False)
    flags = serializers.DictField(
        child=serializers.ListField(child=serializers.ChoiceField(choices=FLAG_LABELS)),
        required=False,
        default=dict,
    )
    rationale = StrictCharField(
        required=False, default="", allow_blank=True, max_length=RATIONALE_MAX, trim_whitespace=True
    )
    duration_ms = StrictIntegerField(
        required=False, allow_null=True, default=None, min_value=0, max_value=DURATION_MAX_MS
    )

    def validate_flags(self, flags: dict[str, list[str]]) -> dict[str, list[str]]:
        for key in flags:
            if not key.isdigit():
                raise ValidationError(f"flags are keyed by completion id, got {key!r}")
        return flags

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        unknown = set(self.initial_data) - set(self.fields)
        if unknown:
            raise ValidationError(f"unknown fields: {', '.join(sorted(unknown))}")
        if "ranking" in attrs and "order" in attrs:
            raise ValidationError("send either `ranking` or `order`, not both")
        raw = attrs.pop("ranking", attrs.pop("order", None))
        if raw is None and not attrs["not_rankable"]:
            raise ValidationError("send `ranking` (groups best first) or `order`")
        if "order" in self.initial_data and not _is_flat_int_list(raw):
            raise ValidationError("`order` must be a list of completion ids, best first")
        if raw is None or (attrs["not_rankable"] and raw == []):
            attrs["groups"] = []
        else:
            try:
                attrs["groups"] = normalize_groups(raw)
            except InvalidRanking as exc:
                raise ValidationError(str(exc)) from exc
        return attrs


class SkipInputSerializer(serializers.Serializer):
    reason = StrictCharField(required=False, default="", allow_blank=True, max_length=500)


class AssignmentNextApi(APIView):
    """GET: the annotator's current lease, or a new one; 204 when nothing is left."""

    permission_classes = [IsAuthenticated, IsAnnotator]

    @extend_schema(responses={200: OpenApiTypes.OBJECT, 204: None})
    def get(self, request: Request) -> Response:
        assignment = assignment_next(annotator=request.user)  # type: ignore[arg-type]
        if assignment is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(_assignment_data(assignment))


class AssignmentRankingApi(APIView):
    """POST: submit the ranking for one of the annotator's assignments."""

    permission_classes = [IsAuthenticated, IsAnnotator]

    @extend_schema(request=RankingInputSerializer, responses={201: OpenApiTypes.OBJECT})
    def post(self, request: Request, assignment_id: int) -> Response:
        data = _parse(RankingInputSerializer, request.data)
        try:
            submitted = assignment_submit(
                annotator=request.user,  # type: ignore[arg-type]
                assignment_id=assignment_id,
                groups=data["groups"],
                not_rankable=data["not_rankable"],
                flags=data["flags"],
                rationale=data["rationale"],
                duration_ms=data["duration_ms"],
            )
        except Assignment.DoesNotExist as exc:
            raise _not_yours(assignment_id) from exc
        except InvalidRanking as exc:
            return _error(status.HTTP_400_BAD_REQUEST, str(exc))
        except AssignmentClosed as exc:
            return _closed(exc)
        return Response(
            {"ranking_id": submitted.ranking.pk, "comparisons": submitted.comparisons},
            status=status.HTTP_201_CREATED,
        )


class AssignmentSkipApi(APIView):
    """POST: give the prompt back to the pool; optional {"reason": "..."}."""

    permission_classes = [IsAuthenticated, IsAnnotator]

    @extend_schema(request=SkipInputSerializer, responses={200: OpenApiTypes.OBJECT})
    def post(self, request: Request, assignment_id: int) -> Response:
        data = _parse(SkipInputSerializer, request.data)
        try:
            skipped = assignment_skip(
                annotator=request.user,  # type: ignore[arg-type]
                assignment_id=assignment_id,
                reason=data["reason"],
            )
        except Assignment.DoesNotExist as exc:
            raise _not_yours(assignment_id) from exc
        except AssignmentClosed as exc:
            return _closed(exc)
        return Response({"id": skipped.pk, "status": skipped.status})


def _assignment_data(assignment: Assignment) -> dict[str, Any]:
    prompt = assignment.prompt
    batch = prompt.batch
    return {
        "id": assignment.pk,
        "batch": {
            "id": batch.pk,
            "name": batch.name,
            "guidelines_version": batch.guidelines_version,
        },
        "guidelines": batch.guidelines,
        "prompt": {"id": prompt.pk, "text": prompt.text, "messages": prompt.messages},
        "completions": [
            {"id": c.pk, "text": c.text} for c in assignment_completions(assignment=assignment)
        ],
        "lease_expires_at": assignment.lease_expires_at,
    }


def _not_yours(assignment_id: int) -> NotFound:
    return NotFound(f"you have no assignment {assignment_id}")


def _parse(serializer_class: type[serializers.Serializer], data: Any) -> dict[str, Any]:
    serializer = serializer_class(data=data)
    if not serializer.is_valid():
        raise ValidationError({"detail": _readable(serializer.errors), "errors": serializer.errors})
    return dict(serializer.validated_data)


def _readable(errors: Any, field: str = "") -> str:
    """DRF's nested error structure as one sentence: 'flags.12.0: "x" is not a valid choice'."""
    if isinstance(errors, dict):
        return "; ".join(
            _readable(value, key if field == "" or key == "non_field_errors" else f"{field}.{key}")
            for key, value in errors.items()
        )
    if isinstance(errors, list):
        return "; ".join(_readable(value, field) for value in errors)
    prefix = "" if field in ("", "non_field_errors") else f"{field}: "
    return f"{prefix}{errors}"


def _is_flat_int_list(value: object) -> bool:
    return isinstance(value, list) and all(
        isinstance(item, int) and not isinstance(item, bool) for item in value
    )


def _error(code: int, message: str, **extra: Any) -> Response:
    return Response({"detail": message, **extra}, status=code)


def _closed(exc: AssignmentClosed) -> Response:
    assignment = exc.assignment
    lapsed = assignment.status == Assignment.Status.ACTIVE  # active in the table, past its lease
    return _error(
        status.HTTP_409_CONFLICT,
        str(exc),
        status=Assignment.Status.EXPIRED if lapsed else assignment.status,
        ranking_id=assignment.ranking_id,
    )
