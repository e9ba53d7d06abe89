#!/usr/bin/env bash
# System packages and services the test suite needs. Idempotent; called by ./dev test.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"

need_apt=()
command -v espeak-ng >/dev/null || need_apt+=(espeak-ng)
# Festival's English and Italian voices: speech in two languages for the Whisper tests.
command -v text2wave >/dev/null || need_apt+=(festival)
[ -d /usr/share/festival/voices/english/kal_diphone ] || need_apt+=(festvox-kallpc16k)
[ -d /usr/share/festival/voices/italian/pc_diphone ] || need_apt+=(festvox-itapc16k)
# The web page's browser tests: Playwright drives Debian's Chromium (it never downloads one).
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
command -v rabbitmq-server >/dev/null || need_apt+=(rabbitmq-server)
command -v pg_ctlcluster >/dev/null || need_apt+=(postgresql)
command -v node >/dev/null || need_apt+=(nodejs npm)
/usr/bin/python3 -c "import seccomp" 2>/dev/null || need_apt+=(python3-seccomp)
# Rootful podman with runc builds and runs the container image; mmdebstrap makes its base
# image (no registry needed). tests/container/podman.py says why runc and not crun.
command -v podman >/dev/null || need_apt+=(podman)
command -v runc >/dev/null || need_apt+=(runc)
command -v mmdebstrap >/dev/null || need_apt+=(mmdebstrap)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "setup: installing ${need_apt[*]}" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# RabbitMQ: the tests use the machine's broker on 127.0.0.1:5672 (guest/guest).
if ! rabbitmqctl -q status >/dev/null 2>&1; then
    echo "setup: starting RabbitMQ" >&2
    $SUDO rabbitmq-server -detached
    for _ in $(seq 1 60); do rabbitmqctl -q await_startup >/dev/null 2>&1 && break; sleep 1; done
fi
rabbitmqctl -q await_startup >/dev/null
rabbitmqctl -q start_app >/dev/null 2>&1 || true

# PostgreSQL: the journal's second backend, on 127.0.0.1:5432 as user postgres without a
# password (each test makes a database of its own and drops it).
pg_ok() { psql -h 127.0.0.1 -U postgres -d postgres -Atqc "SELECT 1" >/dev/null 2>&1; }
if ! pg_ok; then
    if ! pg_lsclusters -h | grep -q .; then
        echo "setup: creating a PostgreSQL cluster" >&2
        version="$(ls /usr/lib/postgresql | sort -V | tail -1)"
        $SUDO pg_createcluster "$version" main >/dev/null
    fi
    read -r version cluster port status _ < <(pg_lsclusters -h | head -1)
    if [ "$status" != "online" ]; then
        echo "setup: starting PostgreSQL $version/$cluster" >&2
        $SUDO pg_ctlcluster "$version" "$cluster" start
    fi
    if ! pg_ok; then  # a fresh cluster asks TCP clients for a password: the tests' user need not
        hba="/etc/postgresql/$version/$cluster/pg_hba.conf"
        echo "setup: letting postgres connect from 127.0.0.1 without a password ($hba)" >&2
        $SUDO sed -i '1i host all postgres 127.0.0.1/32 trust' "$hba"
        $SUDO pg_ctlcluster "$version" "$cluster" reload
    fi
    for _ in $(seq 1 30); do pg_ok && break; sleep 1; done
    pg_ok || { echo "setup: PostgreSQL does not answer on 127.0.0.1:5432 as postgres" >&2; exit 1; }
fi

# Azurite (the real Azure Storage emulator) for the Azure Document Translation tests.
if [ ! -x "$here/tests/node_modules/.bin/azurite" ]; then
    echo "setup: installing Azurite" >&2
    (cd "$here/tests" && npm install --silent --no-audit --no-fund --prefix . azurite@3 >/dev/null)
fi
