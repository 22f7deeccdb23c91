"""`python -m tools.standin <command>`: bring the stand-in up, and operate its jobs.

    up [--state DIR] [--host ADDR]      broker + Jobs service + files + control plane, until Ctrl-C
    create-thing NAME [--kind rsa|ec]   register a thing and issue its certificate
    create-job JOB --thing T [--group G] (--document JSON | --document-file F | --template NAME)
    cancel-job JOB [--force]            cancel-execution JOB THING [--force]
    describe-job JOB                    describe-execution JOB THING
    list-executions [--job J] [--thing T]   get-document JOB     delete-job JOB [--force]
    list-jobs [--status S]              list-things
    sign FILE                           sig-sha256-ecdsa of FILE by the local code-signing profile
    watch                               live table: job, thing, status, statusDetails, elapsed
    settings [key=value ...]            fast clock, AWS's open choices, fault injection

Every command but `up` works on the state folder directly (`--state`, default build/standin);
notifications it causes are published by the Jobs service of the running `up`.
"""

import argparse
import json
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from tools import stopped_by
from tools.mpenv import as_typed
from tools.standin.core import ApiError
from tools.standin.ota_api import OtaApi
from tools.standin.store import DEFAULTS, Store

DEFAULT_STATE = "build/standin"


def _engine(args) -> OtaApi:
    state = Path(args.state) / "state.sqlite"
    if not state.exists():
        raise SystemExit(
            f"no stand-in state in {args.state}: run `{as_typed(sys.executable)} -m tools.standin up "
            f"--state {args.state}` first"
        )
    return OtaApi(Store(state))


def _print(obj) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True))


def _check_port(option: str, port: int | None) -> None:
    """An explicit port must be free on loopback (0: a free one is chosen; None: the kept one)."""
    if port is None:
        return
    if not 0 <= port <= 65535:
        raise SystemExit(f"{option} {port} is not a TCP port number (0 chooses a free one)")
    if port:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                raise SystemExit(
                    f"{option} {port} is in use on 127.0.0.1: choose another, or 0 for a free one"
                ) from None


def cmd_up(args) -> int:
    from tools.standin import StandIn
    from tools.standin.standin import PortInUse

    for option, port in (("--port", args.port), ("--control-port", args.control_port),
                         ("--files-port", args.files_port)):  # fmt: skip
        _check_port(option, port)
    settings = {"minute_seconds": args.minute_seconds} if args.minute_seconds else {}
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        aws = StandIn(args.state, control_port=args.control_port, files_port=args.files_port,
                      broker_port=args.port, host=args.host, **settings).start()  # fmt: skip
    except (PortInUse, ValueError) as err:
        raise SystemExit(f"standin up: {err}") from None
    try:
        info = aws.describe()
        print("local AWS IoT stand-in is up")
        print(f"  MQTT endpoint   {info['endpoint']}:{info['mqtt_port']}  (mutual TLS, CN = thing name;"
              f" listening on {', '.join(info['listen'])})")  # fmt: skip
        print(f"  control plane   {info['control_url']}  (aws --endpoint-url / boto3 endpoint_url)")
        print(f"  fleet page      {info['fleet_url']}  (devices, jobs, executions, live)")
        print(f"  files (S3)      {info['files_url']}  serving {info['files_folder']}")
        print(f"  certificates    {info['certificates']}  (CA: {info['ca']})")
        print(f"  state           {info['state']}  (ports kept for the next up; {args.state}/standin.json)")
        print("Ctrl-C to stop.", flush=True)
        while not stop.wait(0.5):
            if aws.service is None or aws.service.poll() is not None:
                print("the Jobs service stopped; restarting it", file=sys.stderr)
                aws.start_service()
    finally:
        aws.stop()
    print("stopped")
    return 0


def cmd_service(args) -> int:
    from tools.standin import service

    return service.main(args.state, args.port)


def cmd_create_thing(args) -> int:
    from tools.broker import SERVICE_IDENTITY, Broker

    if args.name == SERVICE_IDENTITY:
        raise SystemExit(f"{args.name!r} is the Jobs service's identity; choose another thing name")
    _print(_engine(args).create_thing(args.name))
    broker = Broker(Path(args.state) / "broker")
    broker.prepare()
    ident = broker.device(args.name, args.kind)
    print(f"certificate: {ident.cert_pem} (DER {ident.cert_der}), key: {ident.key_pem} (DER {ident.key_der})")
    return 0


def _key_values(pairs, what: str) -> dict:
    result = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"{what} must be KEY=VALUE, got {pair!r}")
        result[key] = value
    return result


def cmd_create_job(args) -> int:
    engine = _engine(args)
    body: dict = {
        "targets": [engine.arn("thing", t) for t in args.thing or []]
        + [engine.arn("thinggroup", g) for g in args.group or []],
        "targetSelection": "CONTINUOUS" if args.continuous else "SNAPSHOT",
    }
    if args.document_file:
        try:
            body["document"] = Path(args.document_file).read_text()
        except OSError as err:
            raise SystemExit(f"cannot read --document-file: {err.strerror}") from None
    elif args.document:
        body["document"] = args.document
    if args.template:
        body["jobTemplateArn"] = f"arn:aws:iot:us-east-1::jobtemplate/{args.template}:1.0"
    if args.param:
        body["documentParameters"] = _key_values(args.param, "--param")
    if args.timeout_minutes:
        body["timeoutConfig"] = {"inProgressTimeoutInMinutes": args.timeout_minutes}
    if args.retry:
        retries = _key_values(args.retry, "--retry")
        try:
            criteria = [{"failureType": k, "numberOfRetries": int(v)} for k, v in retries.items()]
        except ValueError:
            raise SystemExit("--retry must be FAILED=N, TIMED_OUT=N or ALL=N") from None
        body["jobExecutionsRetryConfig"] = {"criteriaList": criteria}
    if args.presigned_expires or "${aws:iot:s3-presigned-url:" in body.get("document", ""):
        body["presignedUrlConfig"] = {
            "roleArn": "arn:aws:iam::123456789012:role/standin",
            "expiresInSec": args.presigned_expires or 3600,
        }
    if args.description:
        body["description"] = args.description
    _print(engine.create_job(args.job, body))
    return 0


def cmd_sign(args) -> int:
    from tools.standin.signing import PROFILE

    path = Path(args.file)
    if not path.is_file():
        raise SystemExit(f"sign: {args.file} is not a file")
    signer = _engine(args).signer()
    _print({"profile": PROFILE, "file": str(path), "signature": signer.sign(path),
            "certificate": str(signer.cert_pem)})  # fmt: skip
    return 0


def cmd_watch(args) -> int:
    engine = _engine(args)
    while True:
        rows = engine.executions()
        now = time.time()
        lines = [f"{'JOB':<24} {'THING':<20} {'STATUS':<12} {'ELAPSED':>8}  STATUS DETAILS"]
        for row in rows:
            since = row["started_at"] or row["queued_at"]
            end = row["last_updated_at"] if row["status"] not in ("QUEUED", "IN_PROGRESS") else now
            details = json.loads(row["status_details"]) if row["status_details"] else {}
            text = " ".join(f"{k}={v}" for k, v in details.items())
            lines.append(
                f"{row['job_id'][:24]:<24} {row['thing'][:20]:<20} {row['status']:<12} "
                f"{end - since:>7.1f}s  {text[:60]}"
            )
        if not args.once:
            print("\x1b[2J\x1b[H", end="")
        print("\n".join(lines), flush=True)
        if args.once:
            return 0
        try:
            time.sleep(args.interval)
        except KeyboardInterrupt:
            return 0


def cmd_settings(args) -> int:
    store = Store(Path(args.state) / "state.sqlite") if (Path(args.state) / "state.sqlite").exists() else None
    if store is None:
        raise SystemExit(f"no stand-in state in {args.state}")
    values = {}
    for key, raw in _key_values(args.values, "a setting").items():
        if key not in DEFAULTS:
            raise SystemExit(f"unknown setting {key!r}; known: {', '.join(sorted(DEFAULTS))}")
        kind = type(DEFAULTS[key])
        try:
            values[key] = (raw.lower() in ("1", "true", "yes")) if kind is bool else kind(raw)
        except ValueError:
            raise SystemExit(f"setting {key} needs a {kind.__name__}, got {raw!r}") from None
    if values:
        store.set(**values)
    _print(store.settings())
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.standin", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name, func, help_text):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--state", default=DEFAULT_STATE, help=f"state folder (default {DEFAULT_STATE})")
        p.set_defaults(func=func)
        return p

    p = command("up", cmd_up, "bring the stand-in up until Ctrl-C")
    kept = "default: the one the last up used in --state, else a free one; 0: a new free one"
    p.add_argument("--port", type=int, help=f"MQTT port ({kept})")
    p.add_argument("--control-port", type=int, help=f"control-plane port ({kept})")
    p.add_argument("--files-port", type=int, help=f"files port ({kept})")
    p.add_argument(
        "--host",
        help="also listen on this address of the machine (or a name for it) for MQTT and files, with it "
        "in the server certificate and as the endpoint: for a chip on your network (kept for the "
        "next up; --host localhost: loopback only again)",
    )
    p.add_argument("--minute-seconds", type=float, help="fast clock: real seconds per timer minute")
    p = command("service", cmd_service, "the Jobs service process (started by up)")
    p.add_argument("--port", type=int, required=True)
    p = command("create-thing", cmd_create_thing, "register a thing and issue its certificate")
    p.add_argument("name")
    p.add_argument("--kind", choices=("rsa", "ec"), default="rsa")
    p = command("create-job", cmd_create_job, "create a job")
    p.add_argument("job")
    p.add_argument("--thing", action="append", help="target thing (repeatable)")
    p.add_argument("--group", action="append", help="target thing group (repeatable)")
    p.add_argument("--document", help="job document (JSON text)")
    p.add_argument("--document-file", help="job document file")
    p.add_argument("--template", help="AWS managed template, e.g. AWS-Reboot")
    p.add_argument("--param", action="append", help="template parameter KEY=VALUE (repeatable)")
    p.add_argument("--continuous", action="store_true", help="targetSelection CONTINUOUS")
    p.add_argument("--timeout-minutes", type=int, help="timeoutConfig.inProgressTimeoutInMinutes")
    p.add_argument("--retry", action="append", help="retry criterion FAILED=N | TIMED_OUT=N | ALL=N")
    p.add_argument("--presigned-expires", type=int, help="presignedUrlConfig.expiresInSec")
    p.add_argument("--description")
    p = command("cancel-job", cmd_api(lambda e, a: e.cancel_job(a.job, _reason(a), a.force)), "cancel a job")
    p.add_argument("job")
    p.add_argument("--force", action="store_true")
    p.add_argument("--reason-code")
    p.add_argument("--comment")
    p = command("cancel-execution",
                cmd_api(lambda e, a: e.cancel_job_execution(a.job, a.thing, {}, a.force)),
                "cancel one job execution")  # fmt: skip
    p.add_argument("job")
    p.add_argument("thing")
    p.add_argument("--force", action="store_true")
    p = command("describe-job", cmd_api(lambda e, a: e.describe_job(a.job)), "describe a job")
    p.add_argument("job")
    p = command("describe-execution",
                cmd_api(lambda e, a: e.describe_job_execution(a.job, a.thing, a.execution_number)),
                "describe a job execution")  # fmt: skip
    p.add_argument("job")
    p.add_argument("thing")
    p.add_argument("--execution-number", type=int)
    p = command("list-executions", cmd_api(_list_executions), "list executions of a job or a thing")
    p.add_argument("--job")
    p.add_argument("--thing")
    p.add_argument("--status")
    p = command("list-jobs", cmd_api(lambda e, a: e.list_jobs(a.status, a.target_selection, a.thing_group)),
                "list jobs, newest first")  # fmt: skip
    p.add_argument("--status", choices=("IN_PROGRESS", "CANCELED", "COMPLETED"))
    p.add_argument("--target-selection", choices=("SNAPSHOT", "CONTINUOUS"))
    p.add_argument("--thing-group", help="only jobs targeting this thing group")
    p = command("list-things", cmd_api(lambda e, a: e.list_things()), "list things")
    p = command("get-document", cmd_api(lambda e, a: e.get_job_document(a.job)), "a job's document")
    p.add_argument("job")
    p = command("delete-job", cmd_api(lambda e, a: e.delete_job(a.job, a.force)), "delete a job")
    p.add_argument("job")
    p.add_argument("--force", action="store_true")
    p = command("sign", cmd_sign, "sign a file with the local code-signing profile (base64 DER ECDSA P-256)")
    p.add_argument("file")
    p = command("watch", cmd_watch, "live table of executions")
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--once", action="store_true", help="print the table once and exit")
    p = command("settings", cmd_settings, "show or change settings (KEY=VALUE ...)")
    p.add_argument("values", nargs="*")
    return parser


def _reason(args) -> dict:
    return {k: v for k, v in (("reasonCode", args.reason_code), ("comment", args.comment)) if v}


def _list_executions(engine, args):
    if bool(args.job) == bool(args.thing):
        raise SystemExit("list-executions needs exactly one of --job or --thing")
    if args.job:
        return engine.list_executions_for_job(args.job, args.status)
    return engine.list_executions_for_thing(args.thing, args.status)


def cmd_api(call):
    def run(args) -> int:
        _print(call(_engine(args), args))
        return 0

    return run


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except ApiError as err:
        print(f"error: {err.error_type}: {err.message}", file=sys.stderr)
        return 1
    except (OSError, RuntimeError) as err:  # a state folder that cannot be made, a broker that will not start
        print(f"error: {stopped_by(err, args.state)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
