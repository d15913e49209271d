"""Admin pages for the training loop: runs with their curves, the model registry with
promotion and rollback, and a "train now" button."""

from collections.abc import Sequence
from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from training import services
from training.charts import line_chart_svg, metric_series
from training.models import ModelVersion, TrainingRun
from training.reward_runs import reward_run_create
from training.selectors import policy_samples_side_by_side

# A PPO run logs a dozen figures a step; drawn together they would share one scale.
POLICY_CHARTS = (
    ("reward", ["reward"]),
    ("KL to the starting policy (nats per response)", ["kl", "kl_k3"]),
    ("losses", ["policy_loss", "value_loss"]),
    ("response length (tokens)", ["response_length"]),
)


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "kind",
        "status",
        "progress_percent",
        "worker",
        "created_at",
        "finished_at",
    ]
    list_filter = ["kind", "status"]
    change_list_template = "admin/training/trainingrun/change_list.html"
    readonly_fields = [
        "kind",
        "status",
        "progress",
        "curves",
        "config",
        "summary",
        "parent",
        "retry_of",
        "worker",
        "heartbeat_at",
        "error",
        "log",
        "created_by",
        "created_at",
        "started_at",
        "finished_at",
    ]
    exclude = ["metrics"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="progress")
    def progress_percent(self, run: TrainingRun) -> str:
        return f"{run.progress:.0%}"

    @admin.display(description="curves")
    def curves(self, run: TrainingRun) -> SafeString:
        groups: Sequence[tuple[str, list[str]]]
        if run.kind == TrainingRun.Kind.POLICY:
            groups = POLICY_CHARTS
        else:
            keys = sorted(
                {key for row in run.metrics for key in row if key not in ("step", "epoch")}
            )
            loss_keys = [key for key in keys if "loss" in key]
            other_keys = [key for key in keys if key not in loss_keys]
            groups = (("losses", loss_keys), ("metrics", other_keys))
        charts = [
            line_chart_svg({key: metric_series(run.metrics, key) for key in group}, title=title)
            for title, group in groups
            if group and run.metrics
        ]
        # The SVG is built from numbers and escaped names only (training.charts).
        return mark_safe("".join(charts) or "no metrics yet")

    def get_urls(self) -> list[Any]:
        return [
            path(
                "train-now/", self.admin_site.admin_view(self.train_now), name="training_train_now"
            ),
            *super().get_urls(),
        ]

    def train_now(self, request: HttpRequest) -> HttpResponseRedirect:
        changelist = reverse("admin:training_trainingrun_changelist")
        if request.method != "POST":
            return HttpResponseRedirect(changelist)
        user = request.user if request.user.is_authenticated else None
        try:
            run = reward_run_create(created_by=user)
        except services.RunAlreadyActive as exc:
            messages.warning(request, str(exc))
        else:
            messages.success(request, f"Queued reward run {run.pk}.")
        return HttpResponseRedirect(changelist)


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "kind",
        "version",
        "status",
        "accuracy",
        "human_agreement",
        "created_at",
        "promoted_at",
    ]
    list_filter = ["kind", "status"]
    readonly_fields = [
        "kind",
        "version",
        "run",
        "artifact_path",
        "sha256",
        "metrics",
        "status",
        "status_reason",
        "created_at",
        "promoted_at",
        "rolled_back_at",
    ]
    actions = ["promote"]
    change_list_template = "admin/training/modelversion/change_list.html"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_urls(self) -> list[Any]:
        return [
            path(
                "samples/",
                self.admin_site.admin_view(self.samples),
                name="training_policy_samples",
            ),
            *super().get_urls(),
        ]

    def samples(self, request: HttpRequest) -> HttpResponse:
        """Completions of successive policy versions side by side, for the same prompts."""
        table = policy_samples_side_by_side(versions=_version_numbers(request.GET.get("versions")))
        context = {
            **self.admin_site.each_context(request),
            "title": "Policy samples side by side",
            "opts": self.model._meta,
            **table,
        }
        return TemplateResponse(request, "admin/training/modelversion/samples.html", context)

    @admin.display(description="held-out accuracy")
    def accuracy(self, version: ModelVersion) -> str:
        value = version.metrics.get("accuracy")
        return format_html("{}", f"{value:.1%}") if isinstance(value, float) else "—"

    @admin.display(description="annotators' own agreement")
    def human_agreement(self, version: ModelVersion) -> str:
        """The same held-out pairs judged by two annotators: the ceiling for the accuracy."""
        value = version.metrics.get("human_agreement")
        return f"{value:.1%}" if isinstance(value, float) else "—"

    @admin.action(description="Promote the selected model (one per kind)")
    def promote(self, request: HttpRequest, queryset: Any) -> None:
        if queryset.count() != 1:
            messages.error(request, "Select exactly one model to promote.")
            return
        try:
            version = services.model_promote(version=queryset.get(), reason="promoted by an admin")
        except services.ArtifactIncomplete as exc:
            messages.error(request, str(exc))
            return
        messages.success(request, f"{version} is promoted.")


def _version_numbers(raw: str | None) -> list[int] | None:
    """?versions=1,3,4 as numbers; None (the latest versions) when absent or malformed."""
    if not raw:
        return None
    try:
        return [int(part) for part in raw.split(",") if part.strip()] or None
    except ValueError:
        return None
