"""The research API under /api/v1/: list endpoints, streamed exports and dataset snapshots.

Researchers and admins only (`IsResearcher`); annotators get 403. One class per operation:
parse the query with a serializer, call one selector or service, serialize the result. Query
parameters are a whitelist per endpoint: an unknown one is a 400 that names it, so a typo never
silently exports everything and no parameter reaches an ORM lookup.
"""

from collections.abc import Iterable
from typing import Any, ClassVar

from django.contrib.auth.models import User
from django.http import Http404, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
)
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.pagination import CursorPagination
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation import research_selectors
from annotation.exports import (
    ExportError,
    ExportOptions,
    Format,
    Kind,
    Pairs,
    RankingFilter,
    Split,
    Style,
    Ties,
    export_content_type,
    export_stream,
    exports_available,
)
from annotation.models import DatasetSnapshot, Ranking
from annotation.pseudonyms import pseudonym_map
from annotation.roles import IsResearcher
from annotation.snapshots import snapshot_create, snapshot_export_options, snapshot_get

_DATE_FORMATS = ["iso-8601", "%Y-%m-%d"]
_PAGING_PARAMETERS = {"cursor", "page_size", "format"}


class BatchFilterSerializer(serializers.Serializer):
    batch = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="Batch name; repeat for several."
    )
    created_after = serializers.DateTimeField(
        required=False, input_formats=_DATE_FORMATS, help_text="Inclusive, ISO 8601."
    )
    created_before = serializers.DateTimeField(
        required=False, input_formats=_DATE_FORMATS, help_text="Exclusive, ISO 8601."
    )


class PromptFilterSerializer(BatchFilterSerializer):
    k = serializers.IntegerField(required=False, min_value=2, help_text="Completions per prompt.")


class RankingFilterSerializer(PromptFilterSerializer):
    annotator = serializers.CharField(required=False, help_text="An annotator pseudonym.")
    origin = serializers.ChoiceField(choices=Ranking.Origin.choices, required=False)


def parse_query(
    request: Request, serializer_class: type[serializers.Serializer], *, extra: set[str]
) -> dict[str, Any]:
    allowed = set(serializer_class().fields) | extra
    if unknown := sorted(set(request.query_params) - allowed):
        raise ValidationError(
            {unknown[0]: [f"unknown query parameter; allowed: {', '.join(sorted(allowed))}"]}
        )
    serializer = serializer_class(data=request.query_params)
    serializer.is_valid(raise_exception=True)
    data = dict(serializer.validated_data)
    if "batch" in data:
        data["batches"] = data.pop("batch")
    return data


class ResearchPagination(CursorPagination):
    # Cursor pagination: constant time on any page of millions of rows, no COUNT(*).
    ordering = "id"
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000


class _ListApi(APIView):
    permission_classes = [IsResearcher]
    filter_serializer: ClassVar[type[serializers.Serializer]]
    output_serializer: ClassVar[type[serializers.Serializer]]

    def rows(self, filters: dict[str, Any]) -> Any:
        raise NotImplementedError

    def context(self, page: list[Any]) -> dict[str, Any]:
        return {}

    def get(self, request: Request) -> Response:
        filters = parse_query(request, self.filter_serializer, extra=_PAGING_PARAMETERS)
        paginator = ResearchPagination()
        page: list[Any] = paginator.paginate_queryset(self.rows(filters), request, view=self) or []
        data = self.output_serializer(page, many=True, context=self.context(page)).data
        return paginator.get_paginated_response(data)


@extend_schema_field({"type": "string", "nullable": True, "example": "ann-3f9c2a71b0de"})
class _PseudonymField(serializers.Field):
    """The annotator as their pseudonym; the page's pseudonyms come in the context."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(source="annotator_id", read_only=True, **kwargs)

    def to_representation(self, value: int | None) -> str | None:
        return None if value is None else self.context["pseudonyms"][value]


def _page_pseudonyms(page: list[Any]) -> dict[str, Any]:
    return {"pseudonyms": pseudonym_map({row.annotator_id for row in page if row.annotator_id})}


class BatchListApi(_ListApi):
    filter_serializer = BatchFilterSerializer

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "Batch"  # the schema's component name; every API's is "Output"

        id = serializers.IntegerField()
        name = serializers.CharField()
        status = serializers.CharField()
        k_min = serializers.IntegerField()
        k_max = serializers.IntegerField()
        overlap = serializers.IntegerField()
        guidelines_version = serializers.IntegerField()
        prompt_count = serializers.IntegerField()
        created_at = serializers.DateTimeField()

    output_serializer = OutputSerializer

    def rows(self, filters: dict[str, Any]) -> Any:
        return research_selectors.batch_list(**filters)

    @extend_schema(parameters=[BatchFilterSerializer], responses=OutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        return super().get(request)


class PromptListApi(_ListApi):
    filter_serializer = PromptFilterSerializer

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "Prompt"  # the schema's component name; every API's is "Output"

        class CompletionSerializer(serializers.Serializer):
            id = serializers.IntegerField()
            position = serializers.IntegerField()
            text = serializers.CharField()
            # `source` names the completion's column here, not Field.source.
            source = serializers.CharField()  # type: ignore[assignment]

        id = serializers.IntegerField()
        external_id = serializers.CharField()
        batch = serializers.CharField(source="batch.name")
        text = serializers.CharField()
        messages = serializers.JSONField()
        metadata = serializers.JSONField()
        completions = CompletionSerializer(many=True, source="completions.all")
        created_at = serializers.DateTimeField()

    output_serializer = OutputSerializer

    def rows(self, filters: dict[str, Any]) -> Any:
        return research_selectors.prompt_list(**filters)

    @extend_schema(parameters=[PromptFilterSerializer], responses=OutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        return super().get(request)


class RankingListApi(_ListApi):
    filter_serializer = RankingFilterSerializer

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "Ranking"  # the schema's component name; every API's is "Output"

        id = serializers.IntegerField()
        prompt_id = serializers.IntegerField()
        batch = serializers.CharField(source="prompt.batch.name")
        origin = serializers.CharField()
        external_id = serializers.CharField()
        annotator = _PseudonymField()
        groups = serializers.JSONField()
        k = serializers.IntegerField()
        not_rankable = serializers.BooleanField()
        display_order = serializers.JSONField()
        duration_ms = serializers.IntegerField(allow_null=True)
        rationale = serializers.CharField()
        flags = serializers.JSONField()
        guidelines_version = serializers.IntegerField(allow_null=True)
        created_at = serializers.DateTimeField()

    output_serializer = OutputSerializer

    def rows(self, filters: dict[str, Any]) -> Any:
        return research_selectors.ranking_list(**filters)

    def context(self, page: list[Any]) -> dict[str, Any]:
        return _page_pseudonyms(page)

    @extend_schema(parameters=[RankingFilterSerializer], responses=OutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        return super().get(request)


class ComparisonListApi(_ListApi):
    filter_serializer = RankingFilterSerializer

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "Comparison"  # the schema's component name; every API's is "Output"

        id = serializers.IntegerField()
        ranking_id = serializers.IntegerField()
        prompt_id = serializers.IntegerField()
        batch = serializers.CharField(source="prompt.batch.name")
        winner_id = serializers.IntegerField()
        loser_id = serializers.IntegerField()
        rank_gap = serializers.IntegerField()
        is_tie = serializers.BooleanField()
        annotator = _PseudonymField()

    output_serializer = OutputSerializer

    def rows(self, filters: dict[str, Any]) -> Any:
        return research_selectors.comparison_list(**filters)

    def context(self, page: list[Any]) -> dict[str, Any]:
        return _page_pseudonyms(page)

    @extend_schema(parameters=[RankingFilterSerializer], responses=OutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        return super().get(request)


class ExportQuerySerializer(RankingFilterSerializer):
    pairs = serializers.ChoiceField(choices=[p.value for p in Pairs], default=Pairs.ALL.value)
    ties = serializers.ChoiceField(choices=[t.value for t in Ties], required=False)
    # The serializer metaclass takes declared fields off the class, so `style` does not shadow
    # Field.style at run time; mypy cannot know that.
    style = serializers.ChoiceField(  # type: ignore[assignment]
        choices=[s.value for s in Style], default=Style.STANDARD.value
    )
    split_test = serializers.FloatField(
        required=False, help_text="Fraction of prompts for test (0..1); needs split."
    )
    seed = serializers.IntegerField(default=0)
    split = serializers.ChoiceField(choices=[s.value for s in Split], required=False)
    snapshot = serializers.IntegerField(
        required=False, help_text="Export a frozen snapshot (its split too) instead of filters."
    )


class _StreamNegotiation(BaseContentNegotiation):
    """An export's media type comes from its URL, whatever the Accept header says; errors are
    JSON."""

    def select_renderer(
        self,
        request: Request,
        renderers: Iterable[BaseRenderer],
        format_suffix: str | None = None,
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, renderer.media_type

    def select_parser(self, request: Request, parsers: Iterable[BaseParser]) -> BaseParser | None:
        return next(iter(parsers), None)


_FILTER_NAMES = ("batches", "created_after", "created_before", "annotator", "origin", "k")


class ExportApi(APIView):
    permission_classes = [IsResearcher]
    renderer_classes = [JSONRenderer]
    content_negotiation_class = _StreamNegotiation

    @extend_schema(
        parameters=[
            OpenApiParameter("kind", str, OpenApiParameter.PATH, enum=[k.value for k in Kind]),
            OpenApiParameter("fmt", str, OpenApiParameter.PATH, enum=[f.value for f in Format]),
            ExportQuerySerializer,
        ],
        responses={
            (200, "application/x-ndjson"): OpenApiTypes.BINARY,
            (200, "text/csv"): OpenApiTypes.BINARY,
            (200, "application/vnd.apache.parquet"): OpenApiTypes.BINARY,
            400: OpenApiResponse(description="A bad parameter, named in the body."),
        },
        description="Stream an export: rankings (lossless, import_batch's JSONL shape), "
        "comparisons (one line per stored pair) or preference (prompt/chosen/rejected).",
    )
    def get(self, request: Request, kind: str, fmt: str) -> StreamingHttpResponse | Response:
        if not exports_available():
            return _needs_postgres()
        if kind not in {k.value for k in Kind} or fmt not in {f.value for f in Format}:
            raise Http404(f"no export {kind}.{fmt}: kinds {list(Kind)}, formats {list(Format)}")
        query = parse_query(request, ExportQuerySerializer, extra=set())
        options = _export_options(Kind(kind), Format(fmt), query)
        response = StreamingHttpResponse(
            export_stream(options), content_type=export_content_type(options.format)
        )
        name = f"{kind}-snapshot-{query['snapshot']}" if "snapshot" in query else kind
        suffix = f".{options.split}" if options.split else ""
        response["Content-Disposition"] = f'attachment; filename="{name}{suffix}.{fmt}"'
        return response


def _needs_postgres() -> Response:
    return Response(
        {"detail": "exports and snapshots need PostgreSQL: set DATABASE_URL=postgres://..."},
        status=status.HTTP_501_NOT_IMPLEMENTED,
    )


def _export_options(kind: Kind, format: Format, query: dict[str, Any]) -> ExportOptions:
    ties = Ties(query["ties"]) if "ties" in query else None
    try:
        if "snapshot" in query:
            if given := [name for name in _FILTER_NAMES if name in query]:
                raise ExportError(
                    "a snapshot is already a frozen selection; drop the filters",
                    parameter=given[0] if given[0] != "batches" else "batch",
                )
            if "split_test" in query:
                raise ExportError(
                    "a snapshot's split is frozen with it; ask for split=train|test",
                    parameter="split_test",
                )
            try:
                snapshot = snapshot_get(snapshot_id=query["snapshot"])
            except DatasetSnapshot.DoesNotExist as exc:
                raise ExportError("no such snapshot", parameter="snapshot") from exc
            try:
                return snapshot_export_options(
                    snapshot=snapshot,
                    kind=kind,
                    format=format,
                    pairs=Pairs(query["pairs"]),
                    ties=ties,
                    style=Style(query["style"]),
                    split=Split(query["split"]) if "split" in query else None,
                )
            except ExportError:
                raise
            except ValueError as exc:
                raise ExportError(str(exc), parameter="split") from exc
        return ExportOptions(
            kind=kind,
            format=format,
            filter=RankingFilter(
                batches=tuple(query.get("batches", ())),
                created_after=query.get("created_after"),
                created_before=query.get("created_before"),
                annotator=query.get("annotator"),
                origin=query.get("origin"),
                k=query.get("k"),
            ),
            pairs=Pairs(query["pairs"]),
            ties=ties,
            style=Style(query["style"]),
            split_test=query.get("split_test"),
            seed=query["seed"],
            split=Split(query["split"]) if "split" in query else None,
        )
    except ExportError as exc:
        raise ValidationError({exc.parameter: [str(exc)]}) from exc


class SnapshotOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    options = serializers.JSONField()
    manifest = serializers.JSONField()
    content_sha256 = serializers.CharField()
    created_at = serializers.DateTimeField()


class SnapshotListApi(_ListApi):
    filter_serializer = serializers.Serializer
    output_serializer = SnapshotOutputSerializer

    def rows(self, filters: dict[str, Any]) -> Any:
        return research_selectors.snapshot_list()

    @extend_schema(responses=SnapshotOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        return super().get(request)


class SnapshotDetailApi(APIView):
    permission_classes = [IsResearcher]

    @extend_schema(responses=SnapshotOutputSerializer)
    def get(self, request: Request, snapshot_id: int) -> Response:
        try:
            snapshot = snapshot_get(snapshot_id=snapshot_id)
        except DatasetSnapshot.DoesNotExist as exc:
            raise Http404("no such snapshot") from exc
        return Response(SnapshotOutputSerializer(snapshot).data)


class SnapshotCreateApi(APIView):
    permission_classes = [IsResearcher]

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "SnapshotCreate"

        name = serializers.CharField(required=False, default="", allow_blank=True)
        batch = serializers.ListField(child=serializers.CharField(), required=False)
        created_after = serializers.DateTimeField(required=False, input_formats=_DATE_FORMATS)
        created_before = serializers.DateTimeField(required=False, input_formats=_DATE_FORMATS)
        annotator = serializers.CharField(required=False)
        origin = serializers.ChoiceField(choices=Ranking.Origin.choices, required=False)
        k = serializers.IntegerField(required=False, min_value=2)
        split_test = serializers.FloatField(required=False, min_value=0, max_value=1)
        seed = serializers.IntegerField(default=0)

    @extend_schema(request=InputSerializer, responses={201: SnapshotOutputSerializer})
    def post(self, request: Request) -> Response:
        if not exports_available():
            return _needs_postgres()
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        if unknown := sorted(set(request.data) - set(serializer.fields)):
            raise ValidationError(f"unknown fields: {', '.join(unknown)}")
        data = dict(serializer.validated_data)
        user = request.user
        assert isinstance(user, User)  # IsResearcher let only a signed-in user through
        try:
            snapshot = snapshot_create(batches=data.pop("batch", None), created_by=user, **data)
        except ExportError as exc:
            raise ValidationError({exc.parameter: [str(exc)]}) from exc
        return Response(SnapshotOutputSerializer(snapshot).data, status=status.HTTP_201_CREATED)
