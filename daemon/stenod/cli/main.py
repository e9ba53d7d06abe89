"""The ``stenod`` command line. Exit codes: 0 ok, 1 job failed, 2 usage or config error."""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog

from stenod import __version__
from stenod import logging as stenod_logging
from stenod.errors import ConfigError, JournalError
from stenod.fault_points import EXITING, sigterm_at
from stenod.intake.request_message import options_from_pairs
from stenod.masking import mask_text
from stenod.settings import Settings
from stenod.settings_loading import load_settings, redacted_dump
from stenod.who_spoke.diarization import diarization_of

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse exits 2 on usage errors, as we want
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"stenod: error: {message}\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="stenod", description="Turn audio (and documents) into text.")
    p.add_argument("--version", action="version", version=f"stenod {__version__}")
    p.add_argument("--config", type=Path, help="TOML config (default: $STENOD_CONFIG, /etc/stenod/stenod.toml)")
    # --config is also accepted after the command (`stenod run --config F`, as systemd runs it);
    # SUPPRESS keeps a subcommand's absent option from overwriting one given before it.
    common = _Parser(add_help=False)
    common.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    add = functools.partial(sub.add_parser, parents=[common])

    add("run", help="run the daemon in the foreground")

    t = add("transcribe", help="transcribe files now, in this process (no broker needed)")
    t.add_argument("files", nargs="+", type=Path)
    t.add_argument("--provider", "-p")
    t.add_argument("--language", "-l")
    t.add_argument("--format", "-f", dest="formats", action="append", choices=["txt", "json", "srt", "vtt"])
    t.add_argument("--output-dir", "-o", type=Path)
    t.add_argument(
        "--translate-provider",
        help="transcribe with --provider, then translate with this one (default: "
        "the provider translates the input itself if it can, else azure)",
    )
    t.add_argument(
        "--translate-to",
        action="append",
        metavar="LANG",
        help="translate the input (documents) or the transcript (audio) to LANG",
    )
    t.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="provider option (JSON value), e.g. --option with_timestamps=true",
    )
    _add_speaker_arguments(t)
    t.add_argument("--print", dest="print_text", action="store_true", help="print the transcript text")

    j = add("jobs", help="list jobs from the journal")
    j.add_argument("--state")
    j.add_argument("--limit", type=int, default=50)
    j.add_argument("--json", action="store_true")

    one = add("job", help="show one job")
    one.add_argument("job_id")
    one.add_argument("--json", action="store_true")

    add("providers", help="discovered provider plugins, their limits and errors")
    add("config", help="validate and print the effective config (secrets masked)")
    _add_queue_commands(add)
    return p


def _add_speaker_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("--diarize", action="store_true", help="say who spoke (segments carry speakers)")
    command.add_argument("--num-speakers", type=int, metavar="N", help="with --diarize: exactly N voices")
    command.add_argument("--min-speakers", type=int, metavar="N", help="with --diarize: at least N voices")
    command.add_argument("--max-speakers", type=int, metavar="N", help="with --diarize: at most N voices")


def _add_queue_commands(add: Any) -> None:
    s = add("submit", help="publish a request to the queue")
    s.add_argument("files", nargs="*", type=Path)
    s.add_argument("--url", action="append", default=[])
    s.add_argument("--provider", "-p")
    s.add_argument("--language", "-l")
    s.add_argument("--task", choices=["transcribe", "translate"], default="transcribe")
    s.add_argument("--translate-to", dest="target_language")
    s.add_argument("--format", "-f", dest="formats", action="append", choices=["txt", "json", "srt", "vtt"])
    s.add_argument("--output-dir", "-o", type=Path)
    s.add_argument("--request-id")
    s.add_argument("--option", action="append", default=[], metavar="KEY=VALUE")
    _add_speaker_arguments(s)
    s.add_argument("--wait", action="store_true", help="follow the job's events and print the result")
    s.add_argument("--timeout", type=float, default=None, help="with --wait: give up after this many seconds")
    c = add("cancel", help="cancel a job")
    c.add_argument("job_id")


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"stenod: {mask_text(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    stenod_logging.configure(fmt=settings.log_format, level=settings.log_level)
    handler: Callable[[argparse.Namespace, Settings], int] = COMMANDS[args.command]
    try:
        return handler(args, settings)
    except ConfigError as exc:
        structlog.get_logger("stenod").error("config.invalid", error=str(exc))
        print(f"stenod: {mask_text(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except JournalError as exc:  # exit 1: systemd starts us again (a database that is starting)
        structlog.get_logger("stenod").error("journal.unavailable", error=str(exc))
        print(f"stenod: {mask_text(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from stenod.wiring.app import run

    try:
        return asyncio.run(run(settings))
    finally:
        # The loop is closed and with it its SIGTERM handler: the daemon is exiting, with the
        # code its run decided (0, or 1 for a journal it cannot trust). A SIGTERM now asks for
        # what is already happening; it must not end the process with the signal instead.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        sigterm_at(EXITING)


def cmd_transcribe(args: argparse.Namespace, settings: Settings) -> int:
    from stenod.cli.transcribe import transcribe_files

    options = options_from_pairs(args.option)
    try:
        diarization = diarization_of(
            args.diarize,
            num_speakers=args.num_speakers,
            min_speakers=args.min_speakers,
            max_speakers=args.max_speakers,
        )
    except ValueError as exc:
        print(f"stenod: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="stenod-transcribe-") as tmp:
        one_shot = settings.model_copy(
            update={
                "state_dir": Path(tmp),
                "watch": [],
                "amqp": settings.amqp.model_copy(update={"url": None}),
                "journal": settings.journal.model_copy(update={"backend": "sqlite"}),  # ephemeral, in tmp
            }
        )
        return asyncio.run(
            transcribe_files(
                one_shot,
                args.files,
                provider=args.provider or settings.default_provider,
                language=args.language,
                formats=args.formats,
                output_dir=args.output_dir,
                translate_to=args.translate_to or [],
                translate_provider=args.translate_provider,
                options=options,
                print_text=args.print_text,
                diarization=diarization,
            )
        )


def _with_leases(data: dict[str, Any], held: list[tuple[str, float]] | None) -> dict[str, Any]:
    """The instances stepping the job now, and until when (epoch seconds) their leases run."""
    if held:
        data["held_by"] = [{"instance": holder, "lease_until": until} for holder, until in held]
    return data


def _job_line(view: Any) -> str:
    inputs = ", ".join(Path(i.input).name for i in view.items[:3]) + (" …" if len(view.items) > 3 else "")
    return f"{view.job_id}  {view.state:<10} {view.provider:<8} {view.task:<10} {view.created_at}  {inputs}"


def _reader(settings: Settings) -> Any:
    if (url := settings.journal_url) is not None:
        from stenod.adapters.postgres.journal import PostgresReader

        return PostgresReader(url)
    from stenod.adapters.sqlite.journal import JournalReader

    if not settings.journal_path.exists():
        raise ConfigError(f"no journal at {settings.journal_path} (has the daemon run with this state_dir?)")
    return JournalReader(settings.journal_path)


def cmd_jobs(args: argparse.Namespace, settings: Settings) -> int:
    reader = _reader(settings)
    try:
        views = reader.jobs(args.state, args.limit)
        held = reader.leases([v.job_id for v in views])
    finally:
        reader.close()
    if args.json:
        print(json.dumps([_with_leases(v.to_data(), held.get(v.job_id)) for v in views], indent=2, ensure_ascii=False))
    else:
        for view in views:
            print(_job_line(view) + "".join(f"  @{holder}" for holder, _ in held.get(view.job_id, ())))
    return EXIT_OK


def cmd_job(args: argparse.Namespace, settings: Settings) -> int:
    reader = _reader(settings)
    try:
        view = reader.job(args.job_id)
        held = reader.leases([args.job_id]).get(args.job_id, []) if view is not None else []
    finally:
        reader.close()
    if view is None:
        print(f"stenod: no job {args.job_id}", file=sys.stderr)
        return EXIT_USAGE
    data = _with_leases(view.to_data(), held)
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        print(_job_line(view))
        for holder, until in held:
            left = until - time.time()
            print(f"  held by {holder}: lease {'for ' + f'{left:.0f} s more' if left > 0 else 'expired'}")
        if view.error:
            print(f"  error: {view.error.code}: {view.error.message}")
        if view.cost:
            print(f"  cost: {json.dumps(dict(view.cost))}")
        for item in view.items:
            print(f"  [{item.state}] {item.input}")
            for out in item.outputs:
                print(f"      → {out}")
            if item.error:
                print(f"      error: {item.error.code}: {item.error.message}")
                if item.error.hint:
                    print(f"      what to do: {item.error.hint}")
    return EXIT_OK if view.state in ("succeeded",) or not view.state.terminal else EXIT_FAILED


def cmd_providers(args: argparse.Namespace, settings: Settings) -> int:
    from stenod.wiring.plugin_discovery import Catalogue
    from stenod.wiring.provider_setup import describe_providers

    rows = describe_providers(Catalogue.discover(), settings)
    for row in rows:
        if row["status"] == "ok":
            limit = ", ".join(
                f"{k}={row[k]}"
                for k in ("max_files", "max_file_bytes", "max_batch_bytes", "max_audio_seconds", "min_poll_seconds")
                if row[k] is not None
            )
            print(f"{row['name']:<10} ok      {row['distribution']}")
            print(f"           tasks: {', '.join(row['tasks'])}; formats: {', '.join(row['formats'])}")
            print(f"           limits: {limit}")
            print(f"           configured: {row['configured']}")
            _print_described(row)
        else:
            print(f"{row['name']:<10} BROKEN  {row['distribution']} ({row['target']})")
            print(f"           error: {row['error']}")
    return EXIT_OK


def _print_described(row: dict[str, Any]) -> None:
    """The facts a provider adds about itself (a local engine's model and device)."""
    model = row.get("model")
    if isinstance(model, dict):
        size = f", {model['size_bytes'] / 1e6:.0f} MB" if model.get("size_bytes") else ""
        print(f"           model: {model.get('name')}{size}: {model.get('path') or model.get('error', '')}")
    if "languages" in row:
        languages = row["languages"]
        more = ", …" if len(languages) > 12 else ""
        print(f"           languages: {len(languages)} ({', '.join(languages[:12])}{more})")
        print(f"           translates speech into: {', '.join(row.get('translates_to') or ['nothing'])}")
    if "device" in row:
        print(f"           device: {row['device']}; compute type: {row['compute_type']}; workers: {row['workers']}")
    if "describe_error" in row:
        print(f"           error: {row['describe_error']}")


def cmd_config(args: argparse.Namespace, settings: Settings) -> int:
    from stenod.wiring.plugin_discovery import Catalogue
    from stenod.wiring.provider_setup import describe_providers

    catalogue = Catalogue.discover()
    problems: list[str] = []
    for name in settings.providers:
        if name not in catalogue.available:
            problems.append(f"providers.{name}: no provider plugin named {name!r} is installed")
    for row in describe_providers(catalogue, settings):
        if row["status"] == "ok" and row["name"] in settings.providers and row["configured"].startswith("no"):
            problems.append(row["configured"][4:])
    names = set(catalogue.available)
    for idx, rule in enumerate(settings.watch):
        provider = rule.provider or settings.default_provider
        if provider not in names:
            problems.append(f"watch.{idx}.provider: unknown provider {provider!r}")
        if not rule.path.is_dir():
            problems.append(f"watch.{idx}.path: {rule.path} does not exist or is not a folder")
    print(json.dumps(redacted_dump(settings), indent=2, default=str))
    for problem in problems:
        print(f"stenod: invalid configuration: {problem}", file=sys.stderr)
    return EXIT_USAGE if problems else EXIT_OK


def cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    from stenod.cli.queue_commands import submit

    return submit(args, settings)


def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    from stenod.cli.queue_commands import cancel

    return cancel(args, settings)


COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "run": cmd_run,
    "transcribe": cmd_transcribe,
    "jobs": cmd_jobs,
    "job": cmd_job,
    "providers": cmd_providers,
    "config": cmd_config,
    "submit": cmd_submit,
    "cancel": cmd_cancel,
}
