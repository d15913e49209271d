"""`python manage.py batch_report NAME [--json] [--consensus FILE]`

Prints a batch's quality report: progress, throughput, the agreement distribution and the
annotators' figures, the same numbers the staff dashboard (/quality/) shows. Prompts that got
rankings since their figures were last stored are recomputed first; the rest are read.
`--consensus FILE` also writes each prompt's Bradley-Terry consensus ranking as JSONL.
"""

from typing import Any

import orjson
from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotation.models import PromptBatch
from annotation.quality import quality_refresh
from annotation.quality_report import batch_consensus, batch_report

COLUMNS = [
    ("annotator", "annotator", 16),
    ("rankings", "rankings", 8),
    ("loo_tau", "LOO tau", 8),
    ("pair_agreement", "pairs", 7),
    ("position_bias", "pos.bias", 8),
    ("copied_order_rate", "copied", 7),
    ("seconds_per_1000_chars", "s/1k ch", 8),
    ("gold_score", "gold", 6),
    ("gold_rankings", "n gold", 6),
    ("attention_pass_rate", "attn", 6),
    ("status", "status", 7),
]


class Command(BaseCommand):
    help = "Print a batch's annotation quality report (agreement, annotators, progress)."
    # A report reads the database only: the system checks would import every URL module (the
    # API schema, the reward scorer) and more than double its time.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="the batch's name")
        parser.add_argument("--json", action="store_true", help="print the report as JSON")
        parser.add_argument(
            "--consensus",
            metavar="FILE",
            help="write each prompt's consensus ranking (completion indices best first) as JSONL",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        batch = PromptBatch.objects.filter(name=options["name"]).first()
        if batch is None:
            known = ", ".join(PromptBatch.objects.order_by("name").values_list("name", flat=True))
            raise CommandError(f"no batch named {options['name']!r} (batches: {known or 'none'})")
        quality_refresh(batch_ids=[batch.pk])
        report = batch_report(batch=batch)
        if options["consensus"]:
            try:
                with open(options["consensus"], "wb") as out:
                    for line in batch_consensus(batch=batch):
                        out.write(orjson.dumps(line) + b"\n")
            except OSError as exc:
                raise CommandError(f"cannot write {options['consensus']}: {exc}") from exc
        if options["json"]:
            self.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
            return
        self.stdout.write(_as_text(report))


def _as_text(report: dict[str, Any]) -> str:
    progress, agreement, speed = report["progress"], report["agreement"], report["throughput"]
    lines = [
        f"batch {report['batch']} ({report['status']}), overlap {report['overlap']}",
        f"prompts {progress['prompts']} (gold {progress['gold_prompts']}, "
        f"attention checks {progress['attention_checks']}), "
        f"complete {progress['prompts_complete']}",
        f"rankings {progress['rankings_submitted']} of {progress['rankings_wanted']} "
        f"({progress['share_done']:.1%}), gold rankings {progress['gold_rankings']}, "
        f"leased now {progress['active_leases']}",
        f"throughput: last hour {speed['last_hour']}, last 24 h {speed['last_24h']}, "
        f"mean per hour {_fmt(speed['per_hour'])}",
        f"agreement over {agreement['prompts_measured']} prompts: Kendall's W mean "
        f"{_fmt(agreement['mean_w'])}, median {_fmt(agreement['median_w'])}; "
        f"pair agreement {_fmt(agreement['mean_pair_agreement'])}; "
        f"below {report['agreement_threshold']}: {agreement['below_threshold']}; "
        f"extra annotators added {agreement['extra_annotators_added']}",
        "W histogram: "
        + " ".join(f"{bin_['from']:.1f}:{bin_['prompts']}" for bin_ in agreement["histogram"]),
        "",
        " ".join(title.rjust(width) for _, title, width in COLUMNS),
    ]
    for row in report["annotators"]:
        lines.append(" ".join(_fmt(row[key]).rjust(width) for key, _, width in COLUMNS))
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)
