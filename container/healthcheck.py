#!/opt/stenod/bin/python
"""The image's HEALTHCHECK: ``GET /healthz`` on the address the daemon listens on.

The address comes from the daemon's own settings (the mounted TOML and ``STENOD_*``), so a
changed ``[http] listen`` needs no change here. Exit 0 when healthy, 1 when not; with no
HTTP server configured there is nothing to ask, and the check passes.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

from stenod.errors import ConfigError
from stenod.settings_loading import load_settings, parse_listen

_TIMEOUT_SECONDS = 5.0
_ANY = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through $http_proxy


def url() -> str | None:
    listen = load_settings().http.listen
    if listen is None:
        return None
    host, port = parse_listen(listen)
    host = _ANY.get(host, host)
    return f"http://[{host}]:{port}/healthz" if ":" in host else f"http://{host}:{port}/healthz"


def main() -> int:
    try:
        target = url()
    except ConfigError as exc:
        print(f"unhealthy: {exc}")
        return 1
    if target is None:
        print("healthy: no [http] listen, nothing to ask")
        return 0
    try:
        with _DIRECT.open(target, timeout=_TIMEOUT_SECONDS) as answer:
            print(answer.read().decode("utf-8", "replace"))
            return 0
    except urllib.error.HTTPError as exc:  # 503: a check failed; the body says which
        print(exc.read().decode("utf-8", "replace"))
    except (urllib.error.URLError, OSError) as exc:
        print(f"unhealthy: {target}: {exc}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
