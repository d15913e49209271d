"""A container health check without Django's start-up or curl in the image (the probe uses the
standard library; importing `config` loads only the Celery app object, about 0.3 s in all):
`python -m config.probe [URL]` exits 0 when URL (default /readyz on port 8000) answers
200, 1 otherwise, printing the answer. It sends the first of DJANGO_ALLOWED_HOSTS as the Host
header, which production settings check; /healthz and /readyz are exempt from the HTTPS
redirect (config/settings/production.py)."""

import os
import sys
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:8000/readyz"


def main(argv: list[str]) -> int:
    url = argv[1] if len(argv) > 1 else DEFAULT_URL
    hosts = [h.strip() for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "").split(",") if h.strip()]
    headers = {"Host": hosts[0].lstrip(".")} if hosts and hosts[0] != "*" else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            print(response.read(500).decode(errors="replace"))
            return 0 if response.status == 200 else 1
    except urllib.error.HTTPError as exc:
        print(f"{exc.code}: {exc.read(500).decode(errors='replace')}")
    except OSError as exc:
        print(f"unreachable: {exc}")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
