"""``medexport commission`` and ``medexport shadow``: the two reports a clinic files before relying on,
or switching, a model (export/commission.py, export/shadow.py; docs/commissioning.md)."""
from __future__ import annotations

from medexport.engine.errors import ConfigurationError

TRUST_HELP = "public key file or folder of trusted publishers (default $MEDEXPORT_TRUST or the data folder's trust/)"


def add_parsers(sub) -> None:
    c = sub.add_parser("commission", help="commission bundles on this machine: golden replay, speed, validation, "
                                          "verdict; writes OUT/commissioning-<date>.json and .pdf")
    c.add_argument("bundles", nargs="+", help="bundle folders or .zip files")
    c.add_argument("-o", "--out", required=True, help="folder of the clinic's commissioning reports")
    c.add_argument("--studies", action="append", default=[],
                   help="the clinic's own unlabelled studies for speed and flag rates: DIR (every bundle that reads "
                        "them) or MODEL_ID=DIR; repeatable")
    c.add_argument("--sign-key", help="the clinic's ECDSA private key (PEM): the JSON report is signed with it")
    c.add_argument("--threads", type=int, help="runtime threads for the speed measurements (default: the runtime's)")
    c.add_argument("--trust", action="append", help=TRUST_HELP)

    s = sub.add_parser("shadow", help="run a candidate bundle beside the current one on the same studies and "
                                      "report every decision that would change")
    s.add_argument("candidate", help="the bundle that would replace the current one")
    s.add_argument("--current", required=True, help="the bundle in use now")
    where = s.add_mutually_exclusive_group(required=True)
    where.add_argument("--studies", help="folder of studies both read")
    where.add_argument("--spool", help="the spool of 'medexport listen --shadow CANDIDATE': summarise the runs it "
                                       "kept (runs nothing)")
    where.add_argument("--pacs", metavar="NODE", help="retrieve the studies --query finds on this PACS node "
                                                      "(name, AET@HOST:PORT or DICOMweb URL) and run both on them")
    s.add_argument("--query", nargs="+", metavar="KEY=VALUE", default=[],
                   help="with --pacs: patient_id, patient_name, date (YYYYMMDD[-YYYYMMDD]), modality, accession, "
                        "study_uid, description")
    s.add_argument("--labels", help="labels.csv (file,label): sensitivity and specificity of both, with CIs "
                                    "(with --spool: file is the SOP Instance UID)")
    s.add_argument("-o", "--out", required=True, help="folder for changes.csv, shadow.json, shadow.pdf")
    s.add_argument("--trust", action="append", help=TRUST_HELP)


def _studies(values: list) -> dict:
    out = {}
    for value in values:
        model, sep, folder = value.rpartition("=")
        out[model if sep else "*"] = folder
    return out


def cmd_commission(args) -> int:
    """Exit 0 when every bundle passes, 1 when one fails."""
    from ..commission import commission

    if args.threads is not None and args.threads < 1:
        raise ConfigurationError(f"--threads is {args.threads}", expected="1 or more")
    path, pdf, report = commission(args.bundles, args.out, studies=_studies(args.studies), sign_key=args.sign_key,
                                   trust=args.trust, threads=args.threads)
    for b in report["bundles"]:
        print(f"{b['verdict'].upper():<4} {b.get('model_id', b['path'])} {b.get('version', '')}")
        for c in b["checks"]:
            if not c["passed"]:
                print(f"     FAIL {c['name']}: {c['detail']}")
    for change in report["changes"]:
        print(f"changed: {change}")
    print(f"verdict {report['verdict'].upper()} in {report['seconds']} s: {path} and {pdf}")
    return 0 if report["verdict"] == "pass" else 1


def _query(values: list) -> dict:
    out = {}
    for value in values:
        key, sep, wanted = value.partition("=")
        if not sep or not key or not wanted:
            raise ConfigurationError(f"--query {value!r}", expected="KEY=VALUE, e.g. modality=CR date=20260101-",
                                     fix="name each query key with its value")
        out[key] = wanted
    return out


def cmd_shadow(args) -> int:
    from ..shadow import shadow, shadow_pacs, shadow_spool

    if args.query and not args.pacs:
        raise ConfigurationError("--query without --pacs", fix="add --pacs NODE, or drop --query")
    if args.pacs:
        from medexport.engine.pacs.nodes import get_node

        if not args.query:
            raise ConfigurationError("--pacs without --query", expected="which studies to retrieve",
                                     fix="e.g. --query modality=CR date=20260101-20260131")
        path, report = shadow_pacs(args.candidate, args.current, get_node(args.pacs), _query(args.query), args.out,
                                   labels=args.labels, trust=args.trust)
    elif args.spool:
        path, report = shadow_spool(args.candidate, args.current, args.spool, args.out, labels=args.labels)
    else:
        path, report = shadow(args.candidate, args.current, args.studies, args.out, labels=args.labels, trust=args.trust)
    print(f"{report['changed']} of {report['compared']} decisions would change ({report['seconds']} s); {path}")
    return 0


COMMANDS = {"commission": cmd_commission, "shadow": cmd_shadow}
