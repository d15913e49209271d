"""The training loop's registry: runs (what was trained, on what, how it went) and the model
versions they produce.

Invariants in the database: at most one active (queued or running) run per kind, and at most
one promoted model per kind. A model version exists only once its artifact is completely
written and hashed, so a half-written artifact can never be promoted.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q


class ModelKind(models.TextChoices):
    REWARD = "reward"
    POLICY = "policy"


class TrainingRun(models.Model):
    class Kind(models.TextChoices):
        REWARD = "reward"
        POLICY = "policy"
        SAMPLING = "sampling"

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    ACTIVE = (Status.QUEUED, Status.RUNNING)

    kind = models.CharField(max_length=16, choices=Kind.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    config = models.JSONField(default=dict, blank=True, help_text="Hyperparameters as run.")
    snapshot = models.ForeignKey(
        "annotation.DatasetSnapshot",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="training_runs",
        help_text="The frozen rankings this run trained on.",
    )
    parent = models.ForeignKey(
        "ModelVersion",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="child_runs",
        help_text="The model this run starts from or scores with.",
    )
    retry_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retries"
    )
    metrics = models.JSONField(default=list, blank=True, help_text="One object per logged step.")
    summary = models.JSONField(default=dict, blank=True, help_text="Final evaluation.")
    log = models.TextField(blank=True, default="")
    progress = models.FloatField(default=0.0, help_text="0..1")
    worker = models.CharField(max_length=200, blank=True, default="")
    error = models.TextField(blank=True, default="")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["kind"],
                condition=Q(status__in=["queued", "running"]),
                name="training_one_active_run_per_kind",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} run {self.pk} ({self.status})"


class ModelVersion(models.Model):
    class Status(models.TextChoices):
        CANDIDATE = "candidate"
        PROMOTED = "promoted"
        ARCHIVED = "archived"

    kind = models.CharField(max_length=16, choices=ModelKind.choices)
    version = models.PositiveIntegerField(help_text="1, 2, 3... per kind.")
    run = models.OneToOneField(
        TrainingRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="model_version"
    )
    artifact_path = models.CharField(max_length=500)
    sha256 = models.CharField(max_length=64, help_text="Of the weights file, checked on load.")
    metrics = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CANDIDATE)
    status_reason = models.TextField(blank=True, default="", help_text="Why it was (not) promoted.")
    created_at = models.DateTimeField(auto_now_add=True)
    promoted_at = models.DateTimeField(null=True, blank=True)
    rolled_back_at = models.DateTimeField(
        null=True, blank=True, help_text="Set when a rollback retired it; rollbacks skip it."
    )

    class Meta:
        ordering = ["kind", "-version"]
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "version"], name="model_version_unique_per_kind"
            ),
            models.UniqueConstraint(
                fields=["kind"], condition=Q(status="promoted"), name="model_one_promoted_per_kind"
            ),
            models.CheckConstraint(condition=~Q(sha256=""), name="model_version_has_sha256"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} v{self.version} ({self.status})"


class PolicySample(models.Model):
    """Which model wrote a completion that a sampling run put into a batch.

    Declared here, on training's side: `annotation` knows nothing of training (an import
    contract), so a completion carries only plain text in `Completion.source` ("policy v3") for
    exports and annotators, and this row links it to the registry for the admin and the loop.
    `model_version` is empty for samples of the reference (base) policy, which is not in the
    registry; `policy` names what wrote it either way.
    """

    completion = models.OneToOneField(
        "annotation.Completion",
        primary_key=True,
        on_delete=models.CASCADE,
        related_name="policy_sample",
    )
    run = models.ForeignKey(
        TrainingRun,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="policy_samples",
        help_text="The sampling run that wrote it into its batch.",
    )
    model_version = models.ForeignKey(
        ModelVersion,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="samples",
        help_text="The registered policy that wrote it; empty for the reference policy.",
    )
    policy = models.CharField(max_length=500, help_text="The policy as loaded: path or base name.")
    is_reference = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(is_reference=True) | Q(model_version__isnull=False),
                name="policy_sample_names_its_version",
            ),
        ]

    def __str__(self) -> str:
        return f"completion {self.completion_id} by {self.policy}"
