"""Admin wiring: batches, prompts with their completions inline, rankings read-only with
their comparisons. Rankings are evidence: the admin shows them and never edits them."""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from annotation.models import (
    AnnotatorQuality,
    Assignment,
    Comparison,
    Completion,
    Prompt,
    PromptBatch,
    Ranking,
)
from annotation.quality import annotator_resume, attention_checks_add, gold_ranking_clean
from annotation.rankings import InvalidRanking
from annotation.services import batches_publish


@admin.register(PromptBatch)
class PromptBatchAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "status",
        "priority",
        "k_min",
        "k_max",
        "overlap",
        "prompt_count",
        "created_at",
        "quality_link",
    ]
    actions = ["add_attention_checks"]
    list_filter = ["status"]
    list_editable = ["status", "priority"]
    search_fields = ["name"]
    readonly_fields = ["created_by", "created_at"]
    actions = ["publish"]

    @admin.action(description="Publish the selected draft batches to annotators")
    def publish(self, request: HttpRequest, queryset: QuerySet[PromptBatch]) -> None:
        published = batches_publish(batches=queryset)
        self.message_user(request, f"Published {published} draft batch(es).")

    def get_queryset(self, request: HttpRequest) -> QuerySet[PromptBatch]:
        return super().get_queryset(request).annotate(prompt_count=Count("prompts"))

    @admin.display(description="prompts", ordering="prompt_count")
    def prompt_count(self, batch: Any) -> int:
        return int(batch.prompt_count)

    def save_model(self, request: HttpRequest, obj: PromptBatch, form: Any, change: bool) -> None:
        if not change and request.user.is_authenticated:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)

    @admin.display(description="quality")
    def quality_link(self, batch: PromptBatch) -> str:
        return format_html('<a href="{}">dashboard</a>', reverse("quality-batch", args=[batch.pk]))

    @admin.action(description="Add an attention check to 10% of the untouched prompts")
    def add_attention_checks(self, request: HttpRequest, queryset: QuerySet[PromptBatch]) -> None:
        for batch in queryset:
            added = attention_checks_add(batch=batch, share=0.1, seed=batch.pk)
            self.message_user(request, f"{batch.name}: {added} attention checks added")


class CompletionInline(admin.TabularInline):
    model = Completion
    extra = 0
    fields = ["position", "text", "source"]


class PromptForm(forms.ModelForm):
    class Meta:
        model = Prompt
        fields = ["batch", "text", "messages", "external_id", "metadata", "gold_ranking"]

    def clean_gold_ranking(self) -> Any:
        groups = self.cleaned_data.get("gold_ranking")
        if groups in (None, "", []):
            return None
        try:
            return gold_ranking_clean(prompt=self.instance, groups=groups)
        except InvalidRanking as exc:
            raise forms.ValidationError(f"not a reference ranking of this prompt: {exc}") from exc


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
    form = PromptForm
    list_display = [
        "__str__",
        "batch",
        "short_text",
        "human_ranking_count",
        "lease_count",
        "created_at",
    ]
    list_filter = ["batch"]
    list_select_related = ["batch"]
    search_fields = ["external_id", "text"]
    inlines = [CompletionInline]
    # The assignment queue's counters: only its services write them, under the row lock.
    # A gold_ranking (completion ids best first, e.g. [[12], [10, 11], [13]]) makes the prompt
    # a gold prompt; attention checks and extra annotators come from annotation.quality.
    readonly_fields = ["human_ranking_count", "lease_count", "extra_overlap", "attention_check"]

    @admin.display(description="text")
    def short_text(self, prompt: Prompt) -> str:
        return prompt.text[:80]


class ComparisonInline(admin.TabularInline):
    model = Comparison
    extra = 0
    fields = ["winner", "loser", "rank_gap", "is_tie"]
    readonly_fields = ["winner", "loser", "rank_gap", "is_tie"]
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Ranking)
class RankingAdmin(admin.ModelAdmin):
    list_display = ["__str__", "prompt", "origin", "annotator", "k", "not_rankable", "created_at"]
    list_filter = ["origin", "not_rankable", "prompt__batch"]
    list_select_related = ["prompt", "annotator"]
    inlines = [ComparisonInline]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [field.name for field in Ranking._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    """Leases, to watch the queue. Read-only: closing a lease by hand would leave the prompt's
    counters wrong; leases expire by themselves."""

    list_display = ["__str__", "prompt", "annotator", "status", "lease_expires_at", "finished_at"]
    list_filter = ["status", "prompt__batch"]
    list_select_related = ["prompt", "annotator"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [field.name for field in Assignment._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(AnnotatorQuality)
class AnnotatorQualityAdmin(admin.ModelAdmin):
    """Annotators' gold standing. A paused annotator gets no work until resumed here."""

    list_display = ["annotator", "status", "gold_score", "gold_count", "gold_since", "decided_by"]
    list_filter = ["status"]
    list_select_related = ["annotator", "decided_by"]
    actions = ["resume"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [field.name for field in AnnotatorQuality._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Resume: give them work again, gold score from now on")
    def resume(self, request: HttpRequest, queryset: QuerySet[AnnotatorQuality]) -> None:
        for standing in queryset.select_related("annotator"):
            annotator_resume(annotator=standing.annotator, decided_by=request.user)  # type: ignore[arg-type]
        self.message_user(request, f"{queryset.count()} resumed", messages.SUCCESS)
