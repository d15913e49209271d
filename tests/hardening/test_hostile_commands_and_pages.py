"""Hostile input to the management commands and the page forms, script payloads in every text
field that is rendered somewhere, and formula payloads in CSV exports.

A command refuses bad input with a CommandError whose message (and the FILE:LINE lines on
stderr, for an import) says what is wrong, and writes nothing; a page answers with its status
and a message in the page, and writes nothing.
"""

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import Client

from annotation.models import Prompt, PromptBatch, Ranking
from annotation.roles import Role
from tests.factories import completion_ids
from tests.hardening.world import (
    PASSWORD,
    World,
    build_world,
    make_user,
    row_counts,
    token_client,
)
from training.models import TrainingRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def world() -> World:
    return build_world()


def line(**fields: Any) -> bytes:
    return json.dumps(fields).encode() + b"\n"


GOOD = line(id="ok", prompt="Fine?", completions=["yes", "no", "maybe"])

# (case id, file bytes, the reason printed as FILE:2: reason)
BAD_IMPORT_LINES = [
    ("oversized line", b'{"prompt": "' + b"x" * (4 * 1024 * 1024 + 1) + b'"}\n', "longer than"),
    (
        "oversized line without a newline",
        b'{"prompt": "' + b"x" * (4 * 1024 * 1024 + 10),
        "longer than",
    ),
    ("invalid UTF-8", b'{"prompt": "caf\xe9", "completions": ["a", "b", "c"]}\n', "UTF-8"),
    ("NUL in the prompt", line(prompt="a\u0000b", completions=["a", "b", "c"]), "NUL"),
    ("NUL in a completion", line(prompt="q", completions=["a", "b\u0000", "c"]), "NUL"),
    ("NUL in a key", line(prompt="q", completions=["a", "b", "c"], **{"k\u0000": 1}), "NUL"),
    ("deeply nested", b'{"prompt": "q", "metadata": ' + b"[" * 100_000 + b"\n", "not valid JSON"),
    (
        "duplicate keys",
        b'{"prompt": "q", "completions": ["a", "b", "c"], "prompt": "r"}\n',
        "appears twice",
    ),
    ("a list, not an object", b'["q", "a", "b"]\n', "expected a JSON object"),
    ("K below the range", line(prompt="q", completions=["a"]), "completions"),
    ("K above the range", line(prompt="q", completions=["a"] * 17), "completions"),
    (
        "a ranking that repeats",
        line(prompt="q", completions=["a", "b", "c"], ranking=[0, 0, 1]),
        "repeated",
    ),
    (
        "a ranking that omits",
        line(prompt="q", completions=["a", "b", "c"], ranking=[0, 1]),
        "missing",
    ),
    (
        "a ranking with an index beyond K",
        line(prompt="q", completions=["a", "b", "c"], ranking=[0, 1, 2, 3]),
        "ranking",
    ),
    (
        "a ranking of floats",
        line(prompt="q", completions=["a", "b", "c"], ranking=[0.0, 1.0, 2.0]),
        "ranking",
    ),
    ("an id that is a list", line(id=[1], prompt="q", completions=["a", "b", "c"]), '"id"'),
]


@pytest.mark.parametrize(
    ("content", "reason"),
    [(content, reason) for _, content, reason in BAD_IMPORT_LINES],
    ids=[name for name, _, _ in BAD_IMPORT_LINES],
)
def test_import_refuses_a_bad_line_by_its_number_and_writes_nothing(
    content: bytes, reason: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # given
    path = tmp_path / "prompts.jsonl"
    path.write_bytes(GOOD + content)
    before = row_counts()

    # when
    with pytest.raises(CommandError, match="nothing was written"):
        call_command(
            "import_batch", str(path), "--name", "hostile", "--k-min", "2", "--no-progress"
        )

    # then
    stderr = capsys.readouterr().err
    assert "prompts.jsonl:2: " in stderr, stderr[:500]
    assert reason.lower() in stderr.lower(), stderr[:500]
    assert row_counts() == before
    assert not PromptBatch.objects.filter(name="hostile").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["nul\x00name", "--role", "annotator"], "username"),
        (["<script>alert(1)</script>", "--role", "annotator"], "username"),
        (["spaces in name", "--role", "annotator"], "username"),
        (["x" * 151, "--role", "annotator"], "150"),
        (["mallory", "--role", "superuser"], "invalid choice"),
        (["mallory", "--role", "admin", "--password", "password"], "too common"),
        (["mallory", "--role", "admin", "--password", "mallory1"], "too"),
    ],
    ids=["NUL", "script", "spaces", "too long", "no such role", "common password", "weak"],
)
def test_add_user_refuses_bad_input_and_writes_nothing(
    arguments: list[str], message: str, world: World
) -> None:
    before = row_counts()

    with pytest.raises(CommandError, match=f"(?i){message}"):
        call_command("add_user", *arguments)

    assert row_counts() == before


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--k", "two"], "invalid int"),
        (["--k", "2.5"], "invalid int"),
        (["--snapshot", "999999"], "no snapshot"),
        (["--snapshot", "1.5"], "invalid int"),
        (["--batch", "a\x00b"], "NUL"),
        (["--annotator", "ann-\x00"], "NUL"),
        (["--split-test", "2"], "split-test"),
        (["--created-after", "soon"], "created-after"),
        (["--pairs", "every"], "invalid choice"),
    ],
    ids=lambda value: str(value)[:30],
)
def test_export_dataset_refuses_bad_options_and_writes_nothing(
    arguments: list[str], message: str, world: World, tmp_path: Path
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("exports need PostgreSQL")
    before = row_counts()
    output = tmp_path / "out.csv"

    with pytest.raises(CommandError, match=f"(?i){message}"):
        call_command(
            "export_dataset", "--kind", "rankings", "--format", "csv", "--output", str(output),
            *arguments,
        )  # fmt: skip

    assert row_counts() == before
    assert not output.exists()


# -- page forms ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"username": "alice\x00", "password": PASSWORD}, "did not match"),
        ({"username": "alice", "password": "wrong"}, "did not match"),
        ({"username": "a" * 10_000, "password": PASSWORD}, "did not match"),
        ({"username": "alice"}, "did not match"),
    ],
    ids=["NUL", "wrong password", "huge username", "no password"],
)
def test_the_login_form_refuses_bad_input_in_the_page(
    form: dict[str, str], message: str, world: World
) -> None:
    client = Client(raise_request_exception=False)
    before = row_counts()

    response = client.post("/accounts/login/", form)

    assert response.status_code == 200
    assert message in response.content.decode()
    assert "_auth_user_id" not in client.session
    assert row_counts() == before


@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("/annotate/?q=%00", 400),
        ("/annotate/next/?x=a%00", 400),
        ("/admin/annotation/prompt/?q=%00", 400),
        ("/admin/annotation/prompt/?q=%27%22%3E%3Cscript%3Ealert(1)%3C/script%3E", 200),
        ("/admin/annotation/ranking/?annotator__password__startswith=pbkdf2", 400),
        ("/admin/auth/user/?password__startswith=md5", 400),
        ("/admin/annotation/ranking/?o=annotator__password", 200),  # not a sortable column
        ("/admin/annotation/ranking/?o=99", 200),
        ("/admin/annotation/ranking/?prompt__batch__id__exact=abc", 200),
    ],
)
def test_pages_refuse_hostile_query_strings_without_an_error_page(
    url: str, status: int, world: World
) -> None:
    client = Client(raise_request_exception=False)
    client.force_login(world.users["admin"])

    response = client.get(url)

    assert response.status_code == status
    # Whatever the admin shows, it is never a password hash or a live script.
    assert b"md5$" not in response.content
    assert b"pbkdf2_" not in response.content
    assert b"<script>alert" not in response.content


# -- script payloads -------------------------------------------------------------------------

SCRIPT = '<script>alert("x")</script>'
IMG = "<img src=x onerror=alert(1)>"
PAYLOAD = f"**bold** {SCRIPT} {IMG} [link](javascript:alert(2))"
FORBIDDEN = (b"<script>alert", b"<img src=x onerror", b'href="javascript:')


def _assert_inert(content: bytes, where: str) -> None:
    for needle in FORBIDDEN:
        assert needle not in content, f"{needle!r} is live on {where}"


def test_script_payloads_stay_inert_on_every_page_that_renders_them(tmp_path: Path) -> None:
    # given: every text field an import, an annotator and the training loop write
    path = tmp_path / "evil.jsonl"
    path.write_text(
        json.dumps(
            {
                "id": PAYLOAD,
                "messages": [
                    {"role": "system", "content": PAYLOAD},
                    {"role": "user", "content": PAYLOAD},
                ],
                "completions": [
                    {"text": PAYLOAD, "source": PAYLOAD},
                    {"text": SCRIPT, "source": IMG},
                    IMG,
                ],
                "metadata": {"note": PAYLOAD},
            }
        )
        + "\n"
    )
    guidelines = tmp_path / "guidelines.md"
    guidelines.write_text(PAYLOAD)
    name = f"evil {SCRIPT}"
    call_command(
        "import_batch", str(path), "--name", name, "--k-min", "3", "--publish",
        "--guidelines", str(guidelines), "--no-progress",
    )  # fmt: skip
    alice = make_user("alice", Role.ANNOTATOR)
    admin = make_user("adam", Role.ADMIN)
    evil_user = make_user("evil", Role.ANNOTATOR)
    evil_user.first_name = SCRIPT
    evil_user.save()
    prompt = Prompt.objects.get()
    ids = completion_ids(prompt)
    api = token_client(evil_user)
    assignment = api.get("/api/v1/assignments/next/").json()
    submitted = api.post(
        f"/api/v1/assignments/{assignment['id']}/ranking/",
        {"order": ids, "rationale": PAYLOAD, "flags": {str(ids[0]): ["other"]}},
        format="json",
    )
    assert submitted.status_code == 201
    run = TrainingRun.objects.create(
        kind=TrainingRun.Kind.REWARD,
        status=TrainingRun.Status.FAILED,
        error=PAYLOAD,
        log=PAYLOAD,
        config={"note": PAYLOAD},
        summary={"note": PAYLOAD},
    )
    ranking = Ranking.objects.get()
    batch = PromptBatch.objects.get()

    # when: the annotator's page and every admin page that shows those fields
    annotator = Client()
    annotator.force_login(alice)
    staff = Client()
    staff.force_login(admin)
    pages = {
        "/annotate/": annotator.get("/annotate/"),
        "/annotate/next/": annotator.get("/annotate/next/"),
    }
    for url in [
        "/admin/annotation/promptbatch/",
        f"/admin/annotation/promptbatch/{batch.pk}/change/",
        "/admin/annotation/prompt/",
        f"/admin/annotation/prompt/{prompt.pk}/change/",
        "/admin/annotation/ranking/",
        f"/admin/annotation/ranking/{ranking.pk}/change/",
        "/admin/annotation/assignment/",
        "/admin/training/trainingrun/",
        f"/admin/training/trainingrun/{run.pk}/change/",
        "/admin/auth/user/",
        f"/admin/auth/user/{evil_user.pk}/change/",
    ]:
        pages[url] = staff.get(url)

    # then: each page is there, shows the text, and no payload is live markup
    for url, response in pages.items():
        assert response.status_code == 200, url
        _assert_inert(response.content, url)
    assert (
        b"&lt;script&gt;alert" in pages[f"/admin/annotation/ranking/{ranking.pk}/change/"].content
    )
    assert b"<strong>bold</strong>" in pages["/annotate/"].content  # markdown still renders
    annotate = pages["/annotate/"].content.decode()
    assert "evil &lt;script&gt;" in annotate  # the batch name, escaped


@pytest.mark.parametrize("kind", ["rankings", "comparisons", "preference"])
def test_csv_exports_neutralise_formula_payloads(kind: str, tmp_path: Path) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("exports need PostgreSQL")
    # given: text fields that a spreadsheet would evaluate
    formulas = ['=HYPERLINK("http://evil.example","x")', "+1+1", "-2+3", "@SUM(A1)", "\t=1"]
    path = tmp_path / "formulas.jsonl"
    path.write_text(
        json.dumps(
            {
                "id": "=1+1",
                "prompt": formulas[0],
                "completions": [
                    {"text": text, "source": "=cmd|' /C calc'!A0"} for text in formulas
                ],
                "ranking": [0, 1, 2, 3, 4],
                "metadata": {"=x": "=y"},
            }
        )
        + "\n"
    )
    call_command("import_batch", str(path), "--name", "=formulas", "--k-min", "2", "--no-progress")
    researcher = token_client(make_user("rita", Role.RESEARCHER))

    # when
    response = researcher.get(f"/api/v1/exports/{kind}.csv")
    command_output = tmp_path / f"{kind}.csv"
    call_command(
        "export_dataset", "--kind", kind, "--format", "csv", "--output", str(command_output),
        stdout=io.StringIO(),
    )  # fmt: skip

    # then: no cell starts like a formula; the text is still there behind a quote
    assert response.status_code == 200
    for data in (b"".join(response.streaming_content), command_output.read_bytes()):
        rows = list(csv.reader(io.StringIO(data.decode())))
        assert len(rows) > 1
        cells = [cell for row in rows[1:] for cell in row]
        assert not [cell for cell in cells if cell[:1] in ("=", "+", "-", "@", "\t", "\r")]
        assert any(cell.startswith("'=HYPERLINK(") for cell in cells)


BATCH_FORM = {
    "name": "fine",
    "status": "draft",
    "k_min": "2",
    "k_max": "9",
    "overlap": "3",
    "priority": "0",
    "guidelines": "",
    "guidelines_version": "1",
    "gold_rate": "0",
    "agreement_threshold": "0.5",
    "extra_annotators_max": "0",
}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "bad\x00name"}, "Null characters are not allowed"),
        ({"guidelines": "a\x00b"}, "Null characters are not allowed"),
        ({"k_min": "1"}, "k_min"),
        ({"k_max": "17"}, "k_max"),
        ({"k_min": "9", "k_max": "2"}, "k_"),
        ({"overlap": "0"}, "overlap"),
        ({"overlap": "1.5"}, "Enter a whole number"),
        ({"priority": "99999999999999999999"}, "Ensure this value"),
        ({"status": "launched"}, "Select a valid choice"),
        ({"name": "world"}, "already exists"),
    ],
    ids=["NUL name", "NUL guidelines", "K below 2", "K above 16", "K range reversed",
         "no overlap", "float overlap", "huge priority", "unknown status", "taken name"],
)  # fmt: skip
def test_the_admin_batch_form_refuses_bad_input_and_writes_nothing(
    changes: dict[str, str], message: str, world: World
) -> None:
    staff = Client(raise_request_exception=False)
    staff.force_login(world.users["admin"])
    before = row_counts()

    response = staff.post("/admin/annotation/promptbatch/add/", {**BATCH_FORM, **changes})

    assert response.status_code == 200, response.status_code  # the form again, with errors
    page = response.content.decode()
    assert "errornote" in page
    assert message.lower() in page.lower()
    assert row_counts() == before


def test_the_admin_batch_form_accepts_good_input(world: World) -> None:
    # The control for the cases above: the same form, unchanged, creates the batch.
    staff = Client()
    staff.force_login(world.users["admin"])

    response = staff.post("/admin/annotation/promptbatch/add/", BATCH_FORM)

    assert response.status_code == 302
    assert PromptBatch.objects.filter(name="fine").exists()


@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("/annotate/", 302),  # to the login page: the cookie is nobody's session
        ("/admin/", 302),
        ("/accounts/login/", 200),
        ("/api/v1/assignments/next/", 401),
    ],
)
def test_a_cookie_holding_nul_is_ignored(url: str, status: int, world: World) -> None:
    client = Client(raise_request_exception=False, HTTP_COOKIE='sessionid="abcdefghij\\000k"')

    response = client.get(url)

    assert response.status_code == status
