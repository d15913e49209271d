"""The preference data: batches of prompts, their completions, rankings and the pairwise
comparisons each ranking expands into.

Invariants are constraints in the database, not only checks in Python: a comparison never
pairs a completion with itself, never repeats a pair within a ranking (in either direction),
and both of its completions belong to the ranking's prompt (composite foreign keys, added in
migration 0002 on PostgreSQL). Services give the friendly errors; constraints make
corruption impossible.
"""

import json
from typing import Any

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import F, Q
from django.db.models.functions import Greatest, Least

K_MIN_LIMIT = 2
K_MAX_LIMIT = 16


class PromptBatch(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft"
        PUBLISHED = "published"
        PAUSED = "paused"
        CLOSED = "closed"

    name = models.CharField(max_length=200, unique=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    k_min = models.PositiveSmallIntegerField(
        default=4, help_text="Fewest completions a prompt may have."
    )
    k_max = models.PositiveSmallIntegerField(
        default=9, help_text="Most completions a prompt may have."
    )
    overlap = models.PositiveSmallIntegerField(
        default=3, help_text="Human rankings wanted per prompt."
    )
    priority = models.IntegerField(default=0, help_text="Higher batches are served first.")
    guidelines = models.TextField(blank=True)
    guidelines_version = models.PositiveIntegerField(default=1)
    gold_rate = models.FloatField(
        default=0.0,
        help_text="Share of the claims that serve one of the batch's gold prompts (0 to 1).",
    )
    agreement_threshold = models.FloatField(
        default=0.5,
        help_text="Prompts whose Kendall's W falls below this get an extra annotator.",
    )
    extra_annotators_max = models.PositiveSmallIntegerField(
        default=0, help_text="Most extra annotators a low-agreement prompt may get."
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "prompt batches"
        ordering = ["-priority", "created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(k_min__gte=K_MIN_LIMIT)
                & Q(k_max__gte=F("k_min"))
                & Q(k_max__lte=K_MAX_LIMIT),
                name="batch_k_range_valid",
            ),
            models.CheckConstraint(condition=Q(overlap__gte=1), name="batch_overlap_positive"),
            models.CheckConstraint(
                condition=Q(guidelines_version__gte=1), name="batch_guidelines_version_positive"
            ),
            models.CheckConstraint(
                condition=Q(gold_rate__gte=0) & Q(gold_rate__lte=1), name="batch_gold_rate_share"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Prompt(models.Model):
    batch = models.ForeignKey(PromptBatch, on_delete=models.CASCADE, related_name="prompts")
    text = models.TextField(help_text="The prompt as plain text; a chat is rendered turn by turn.")
    messages = models.JSONField(
        default=list,
        help_text='The chat as [{"role", "content"}, ...]; single-turn is one user message.',
    )
    external_id = models.CharField(max_length=200, blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # The assignment queue's counters, kept by the services in `annotation.assignments` under
    # the prompt's row lock: claiming reads them instead of counting assignments per prompt.
    human_ranking_count = models.PositiveIntegerField(
        default=0, help_text="Rankings submitted through assignments."
    )
    lease_count = models.PositiveIntegerField(
        default=0, help_text="Assignments active now (expired ones until they are reaped)."
    )
    # Annotation quality (annotation/quality.py). A gold prompt is served to every annotator at
    # the batch's gold rate instead of by overlap; its reference ranking scores them.
    gold_ranking = models.JSONField(
        null=True,
        blank=True,
        help_text="Reference ranking (completion ids best first) that makes this a gold prompt.",
    )
    extra_overlap = models.PositiveSmallIntegerField(
        default=0, help_text="Annotators added beyond the batch's overlap for low agreement."
    )
    attention_check = models.ForeignKey(
        "Completion",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="A degraded completion that must rank last; never exported or trained on.",
    )

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["batch", "external_id"],
                condition=~Q(external_id=""),
                name="prompt_external_id_unique_in_batch",
            ),
        ]
        indexes = [
            # The claim scans one batch in queue order: fewest rankings first, then oldest.
            models.Index(
                fields=["batch", "human_ranking_count", "created_at", "id"],
                name="prompt_queue_order",
            ),
            # The gold claim looks only at gold prompts: usually none, a few at most.
            models.Index(
                fields=["batch"], condition=Q(gold_ranking__isnull=False), name="prompt_gold"
            ),
        ]

    def __str__(self) -> str:
        return self.external_id or f"prompt {self.pk}"


class Completion(models.Model):
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="completions")
    text = models.TextField()
    source = models.CharField(
        max_length=200, blank=True, default="", help_text="Who or which model wrote it."
    )
    position = models.PositiveSmallIntegerField(help_text="Position in the import order, from 0.")

    class Meta:
        ordering = ["prompt_id", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["prompt", "position"], name="completion_position_unique"
            ),
            # The target of the composite foreign keys that tie a comparison's completions
            # to its prompt.
            models.UniqueConstraint(fields=["id", "prompt"], name="completion_id_prompt_unique"),
        ]

    def __str__(self) -> str:
        return f"completion {self.pk} of prompt {self.prompt_id}"


class Ranking(models.Model):
    class Origin(models.TextChoices):
        HUMAN = "human"
        IMPORTED = "imported"

    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="rankings")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="rankings",
    )
    origin = models.CharField(max_length=16, choices=Origin.choices, default=Origin.HUMAN)
    external_id = models.CharField(
        max_length=200, blank=True, default="", help_text="Identifies an imported ranking."
    )
    groups = models.JSONField(
        default=list, help_text="Completion ids best to worst; a group of several is a tie."
    )
    k = models.PositiveSmallIntegerField(help_text="Number of completions ranked.")
    not_rankable = models.BooleanField(
        default=False, help_text='"None is acceptable": no comparisons.'
    )
    display_order = models.JSONField(default=list, blank=True, help_text="Completion ids as shown.")
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    rationale = models.TextField(blank=True, default="")
    flags = models.JSONField(default=dict, blank=True, help_text="{completion id: [labels]}")
    guidelines_version = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["prompt", "annotator"],
                condition=Q(annotator__isnull=False),
                name="ranking_one_per_annotator_and_prompt",
            ),
            models.UniqueConstraint(
                fields=["prompt", "external_id"],
                condition=Q(origin="imported"),
                name="ranking_imported_external_id_unique",
            ),
            models.CheckConstraint(
                condition=Q(origin="imported", annotator__isnull=True)
                | Q(origin="human", annotator__isnull=False),
                name="ranking_origin_matches_annotator",
            ),
            models.CheckConstraint(condition=Q(k__gte=K_MIN_LIMIT), name="ranking_k_at_least_2"),
            # Target of the composite foreign key from Comparison(ranking, prompt).
            models.UniqueConstraint(fields=["id", "prompt"], name="ranking_id_prompt_unique"),
        ]

    def __str__(self) -> str:
        return f"ranking {self.pk} of prompt {self.prompt_id}"


class Comparison(models.Model):
    """One pair of a ranking. For a tie, winner/loser is the pair ordered by id."""

    ranking = models.ForeignKey(Ranking, on_delete=models.CASCADE, related_name="comparisons")
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="+")
    winner = models.ForeignKey(Completion, on_delete=models.CASCADE, related_name="+")
    loser = models.ForeignKey(Completion, on_delete=models.CASCADE, related_name="+")
    rank_gap = models.PositiveSmallIntegerField(
        help_text="Groups between winner and loser; 0 for a tie."
    )
    is_tie = models.BooleanField(default=False)
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(
                condition=~Q(winner=F("loser")), name="comparison_not_self_pair"
            ),
            models.UniqueConstraint(
                fields=["ranking", "winner", "loser"], name="comparison_pair_unique"
            ),
            models.UniqueConstraint(
                F("ranking"),
                Least("winner", "loser"),
                Greatest("winner", "loser"),
                name="comparison_unordered_pair_unique",
            ),
            models.CheckConstraint(
                condition=Q(is_tie=True, rank_gap=0) | Q(is_tie=False, rank_gap__gte=1),
                name="comparison_tie_iff_zero_gap",
            ),
            models.CheckConstraint(
                condition=Q(is_tie=False) | Q(winner__lt=F("loser")),
                name="comparison_tie_canonical_order",
            ),
        ]

    def __str__(self) -> str:
        relation = "ties" if self.is_tie else "beats"
        return f"{self.winner_id} {relation} {self.loser_id}"


class Assignment(models.Model):
    """A prompt leased to one annotator. Active until submitted, skipped or expired; an
    expired lease gives the prompt back to the pool. An annotator gets a prompt at most once.
    """

    class Status(models.TextChoices):
        ACTIVE = "active"
        SUBMITTED = "submitted"
        SKIPPED = "skipped"
        EXPIRED = "expired"

    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="assignments")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="assignments"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    lease_expires_at = models.DateTimeField()
    display_order = models.JSONField(
        default=list, help_text="Completion ids in the shuffled order the annotator saw."
    )
    ranking = models.OneToOneField(
        Ranking, null=True, blank=True, on_delete=models.PROTECT, related_name="assignment"
    )
    skip_reason = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["prompt", "annotator"], name="assignment_prompt_once_per_annotator"
            ),
            # One lease at a time: a second tab asking for work gets the same prompt.
            models.UniqueConstraint(
                fields=["annotator"],
                condition=Q(status="active"),
                name="assignment_one_active_per_annotator",
            ),
            models.CheckConstraint(
                condition=Q(status="submitted", ranking__isnull=False)
                | (~Q(status="submitted") & Q(ranking__isnull=True)),
                name="assignment_ranking_iff_submitted",
            ),
            models.CheckConstraint(
                condition=Q(status="active", finished_at__isnull=True)
                | (~Q(status="active") & Q(finished_at__isnull=False)),
                name="assignment_finished_iff_not_active",
            ),
        ]
        indexes = [
            # Reaping scans only the live leases, by expiry.
            models.Index(
                fields=["lease_expires_at"],
                condition=Q(status="active"),
                name="assignment_active_by_expiry",
            ),
            # "Done today" per annotator.
            models.Index(
                fields=["annotator", "finished_at"],
                condition=Q(status="submitted"),
                name="assignment_submitted_by_user",
            ),
        ]

    def __str__(self) -> str:
        return f"assignment {self.pk} of prompt {self.prompt_id} to {self.annotator_id}"


class IdArrayField(ArrayField):
    """A list of ids: `bigint[]` on PostgreSQL (what the export queries `unnest`), and the same
    list as JSON text on any other database, so that the embedded SQLite of a laptop or the demo
    can freeze snapshots too. Python sees a list of ints either way."""

    def db_type(self, connection: BaseDatabaseWrapper) -> str | None:
        if connection.vendor == "postgresql":
            return super().db_type(connection)
        return "text"

    def cast_db_type(self, connection: BaseDatabaseWrapper) -> str:
        if connection.vendor == "postgresql":
            return super().cast_db_type(connection)
        return "text"

    def get_placeholder(self, value: Any, compiler: Any, connection: BaseDatabaseWrapper) -> str:
        if connection.vendor == "postgresql":
            return super().get_placeholder(value, compiler, connection)  # type: ignore[misc]
        return "%s"

    def get_db_prep_value(
        self, value: Any, connection: BaseDatabaseWrapper, prepared: bool = False
    ) -> Any:
        if connection.vendor == "postgresql":
            return super().get_db_prep_value(value, connection, prepared)
        return None if value is None else json.dumps([int(item) for item in value])

    def from_db_value(self, value: Any, expression: Any, connection: BaseDatabaseWrapper) -> Any:
        return json.loads(value) if isinstance(value, str) else value


class DatasetSnapshot(models.Model):
    """A frozen set of rankings: what an export or a training run used, re-exportable byte for
    byte months later.

    The set is stored as the sorted array of ranking ids, not as filters to re-run: filters
    (a batch, a date range, "K = 4") select different rows as data arrives or is deleted, and a
    "max id + created_at" cut-off breaks as soon as a ranking inside it is deleted. An array is
    one row however large the set (8 bytes an id, TOASTed and compressed: ~8 MB for a million
    rankings, read in one go and joined with `unnest`), where a many-to-many table would add a
    row per ranking per snapshot, for every training run. The price is that no foreign key
    stops a ranking inside a snapshot from being deleted; the manifest's counts and sha256
    make that visible (`snapshot_verify`). On other databases (the embedded SQLite) the ids
    are JSON text (`IdArrayField`) and `annotation.snapshots` takes its portable path.
    """

    name = models.CharField(max_length=200, blank=True, default="")
    ranking_ids = IdArrayField(models.BigIntegerField(), help_text="Frozen ranking ids, ascending.")
    options = models.JSONField(
        default=dict, help_text="The filters that selected the rankings and the export options."
    )
    manifest = models.JSONField(
        default=dict, help_text="Counts, K histogram, batches, annotators, options, sha256."
    )
    content_sha256 = models.CharField(
        max_length=64, help_text="sha256 of the snapshot's rankings JSONL export."
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return self.name or f"snapshot {self.pk}"


class PromptQuality(models.Model):
    """A prompt's agreement figures, refreshed when its human rankings change
    (`annotation.quality.quality_refresh`), so that reports read them instead of computing."""

    prompt = models.OneToOneField(
        Prompt, primary_key=True, on_delete=models.CASCADE, related_name="quality"
    )
    batch = models.ForeignKey(PromptBatch, on_delete=models.CASCADE, related_name="+")
    human_rankings = models.PositiveIntegerField(
        help_text="The prompt's human_ranking_count when these figures were computed."
    )
    raters = models.PositiveIntegerField(help_text="Rankings that entered the figures.")
    kendall_w = models.FloatField(null=True, blank=True)
    pair_agreement = models.FloatField(null=True, blank=True)
    consensus = models.JSONField(
        default=list, help_text="Bradley-Terry consensus: completion ids best first, with ties."
    )
    consensus_scores = models.JSONField(default=dict, help_text="{completion id: log-strength}")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "prompt quality"
        indexes = [models.Index(fields=["batch", "kendall_w"], name="promptquality_batch_w")]

    def __str__(self) -> str:
        return f"quality of prompt {self.prompt_id}"


class RankingQuality(models.Model):
    """One human ranking's figures: its agreement with the prompt's other rankings, how it
    relates to the order shown, and its gold and attention-check results."""

    ranking = models.OneToOneField(
        Ranking, primary_key=True, on_delete=models.CASCADE, related_name="quality"
    )
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="+")
    batch = models.ForeignKey(PromptBatch, on_delete=models.CASCADE, related_name="+")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    loo_tau = models.FloatField(null=True, blank=True)
    pair_hits = models.PositiveIntegerField(default=0)
    pair_total = models.PositiveIntegerField(default=0)
    position_tau = models.FloatField(null=True, blank=True)
    copied_order = models.BooleanField(null=True, blank=True)
    ms_per_kchar = models.FloatField(null=True, blank=True)
    gold_tau = models.FloatField(null=True, blank=True)
    attention_passed = models.BooleanField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "ranking quality"
        indexes = [
            models.Index(fields=["batch", "annotator"], name="rankingquality_batch_user"),
            models.Index(
                fields=["annotator", "created_at"],
                condition=Q(gold_tau__isnull=False),
                name="rankingquality_gold",
            ),
        ]

    def __str__(self) -> str:
        return f"quality of ranking {self.ranking_id}"


class AnnotatorQuality(models.Model):
    """An annotator's standing on gold prompts. Paused annotators get no work until an admin
    resumes them; after that only gold rankings from then on count."""

    class Status(models.TextChoices):
        OK = "ok"
        WARNED = "warned"
        PAUSED = "paused"

    annotator = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        primary_key=True,
        on_delete=models.CASCADE,
        related_name="annotation_quality",
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OK)
    gold_score = models.FloatField(null=True, blank=True, help_text="Mean gold tau since.")
    gold_count = models.PositiveIntegerField(default=0)
    gold_since = models.DateTimeField(
        null=True, blank=True, help_text="Gold rankings before this do not count."
    )
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "annotator quality"

    def __str__(self) -> str:
        return f"{self.annotator}: {self.status}"
