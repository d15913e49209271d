"""python manage.py export_dataset --kind KIND --format FORMAT --output PATH [options]

Writes the same bytes as GET /api/v1/exports/{kind}.{format}. With --split-test the output is
two files, PATH with `.train` and `.test` before its suffix. With --freeze the selection is
first frozen into a DatasetSnapshot (its id and sha256 are printed), then exported from it;
--snapshot ID exports an existing one. Progress goes to stderr.
"""

import sys
from argparse import ArgumentParser, ArgumentTypeError
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

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
    export_stream,
    exports_available,
)
from annotation.models import DatasetSnapshot
from annotation.snapshots import snapshot_create, snapshot_export_options, snapshot_get


def _timestamp(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        try:
            parsed = datetime.combine(date.fromisoformat(value), datetime.min.time())
        except ValueError as exc:
            raise ArgumentTypeError(f"{value!r} is not an ISO 8601 date or datetime") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _text(value: str) -> str:
    if "\x00" in value:
        raise ArgumentTypeError(f"{value!r} holds a NUL character")
    return value


def _fraction(value: str) -> float:
    try:
        fraction = float(value)
    except ValueError as exc:
        raise ArgumentTypeError(f"{value!r} is not a number") from exc
    if not 0 < fraction < 1:
        raise ArgumentTypeError(f"{value} is not between 0 and 1 (exclusive)")
    return fraction


class Command(BaseCommand):
    help = "Export rankings, comparisons or preference pairs as JSONL, CSV or Parquet."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--kind", required=True, choices=[k.value for k in Kind])
        parser.add_argument("--format", required=True, choices=[f.value for f in Format])
        parser.add_argument("--output", required=True, type=Path, help="File to write.")
        parser.add_argument(
            "--batch",
            action="append",
            default=[],
            type=_text,
            help="Batch name; repeat for several.",
        )
        parser.add_argument("--created-after", type=_timestamp, help="Inclusive, ISO 8601.")
        parser.add_argument("--created-before", type=_timestamp, help="Exclusive, ISO 8601.")
        parser.add_argument("--annotator", type=_text, help="An annotator pseudonym.")
        parser.add_argument("--origin", choices=["human", "imported"])
        parser.add_argument("--k", type=int, help="Only rankings of K completions.")
        parser.add_argument("--pairs", choices=[p.value for p in Pairs], default="all")
        parser.add_argument(
            "--ties",
            choices=[t.value for t in Ties],
            help="Default: keep for comparisons, drop for preference.",
        )
        parser.add_argument("--style", choices=[s.value for s in Style], default="standard")
        parser.add_argument("--split-test", type=_fraction, metavar="FRACTION")
        parser.add_argument("--seed", type=int, default=0)
        source = parser.add_mutually_exclusive_group()
        source.add_argument("--snapshot", type=int, metavar="ID", help="Export a snapshot.")
        source.add_argument(
            "--freeze", metavar="NAME", help="Freeze the selection into a snapshot first."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not exports_available():
            raise CommandError("exports need PostgreSQL: set DATABASE_URL=postgres://...")
        kind, format = Kind(options["kind"]), Format(options["format"])
        output: Path = options["output"]
        if not output.parent.is_dir():
            raise CommandError(f"--output: the folder {output.parent} does not exist")
        snapshot = self._snapshot(options)
        sides: list[Split | None] = [None]
        if options["split_test"] is not None or (snapshot and snapshot.options.get("split_test")):
            sides = [Split.TRAIN, Split.TEST]
        for side in sides:
            try:
                export = self._options(kind, format, side, snapshot, options)
            except ExportError as exc:
                raise CommandError(f"--{exc.parameter.replace('_', '-')}: {exc}") from exc
            path = output if side is None else output.with_suffix(f".{side}{output.suffix}")
            rows = self._write(export, path)
            self.stdout.write(f"{path}: {rows} rows")

    def _snapshot(self, options: dict[str, Any]) -> DatasetSnapshot | None:
        if options["snapshot"] is not None:
            filters = ("batch", "created_after", "created_before", "annotator", "origin", "k")
            if given := [name for name in filters if options[name]]:
                raise CommandError(
                    f"--{given[0].replace('_', '-')}: a snapshot is already a frozen selection"
                )
            try:
                return snapshot_get(snapshot_id=options["snapshot"])
            except DatasetSnapshot.DoesNotExist as exc:
                raise CommandError(f"--snapshot: no snapshot {options['snapshot']}") from exc
        if options["freeze"] is not None:
            snapshot = snapshot_create(
                name=options["freeze"],
                batches=options["batch"],
                created_after=options["created_after"],
                created_before=options["created_before"],
                annotator=options["annotator"],
                origin=options["origin"],
                k=options["k"],
                split_test=options["split_test"],
                seed=options["seed"],
            )
            self.stdout.write(
                f"snapshot {snapshot.pk}: {snapshot.manifest['rankings']} rankings, "
                f"sha256 {snapshot.content_sha256}"
            )
            return snapshot
        return None

    def _options(
        self,
        kind: Kind,
        format: Format,
        side: Split | None,
        snapshot: DatasetSnapshot | None,
        options: dict[str, Any],
    ) -> ExportOptions:
        ties = Ties(options["ties"]) if options["ties"] else None
        if snapshot is not None:
            return snapshot_export_options(
                snapshot=snapshot,
                kind=kind,
                format=format,
                pairs=Pairs(options["pairs"]),
                ties=ties,
                style=Style(options["style"]),
                split=side,
            )
        return ExportOptions(
            kind=kind,
            format=format,
            filter=RankingFilter(
                batches=tuple(options["batch"]),
                created_after=options["created_after"],
                created_before=options["created_before"],
                annotator=options["annotator"],
                origin=options["origin"],
                k=options["k"],
            ),
            pairs=Pairs(options["pairs"]),
            ties=ties,
            style=Style(options["style"]),
            split_test=options["split_test"],
            seed=options["seed"],
            split=side,
        )

    def _write(self, export: ExportOptions, path: Path) -> int:
        unit = "pairs" if export.kind == Kind.PREFERENCE else export.kind.value
        rows = 0
        # disable=None: a bar on a terminal, silence in a log file.
        with (
            tqdm(desc=path.name, unit=f" {unit}", file=sys.stderr, disable=None) as bar,
            path.open("wb") as file,
        ):

            def count(n: int) -> None:
                nonlocal rows
                rows += n
                bar.update(n)

            for chunk in export_stream(export, on_rows=count):
                file.write(chunk)
        return rows
