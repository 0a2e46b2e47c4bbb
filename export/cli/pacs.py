"""``medexport pacs echo|find|get|send|add|nodes`` and ``medexport listen`` (no torch imported)."""
from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from pathlib import Path

from medexport.engine.errors import ConfigurationError, MedError


def add_parsers(sub) -> None:
    p = sub.add_parser("pacs", help="talk to a PACS: echo, find, get, send (nodes in the shared settings file)")
    ps = p.add_subparsers(dest="pacs_command", required=True)

    def node_arg(q):
        q.add_argument("--node", required=True, help="node name from the settings file (see 'medexport pacs nodes'), "
                                                      "or AET@HOST:PORT, or a DICOMweb URL")
        q.add_argument("--calling-ae", help="our AE title towards the node (default: the node's, else MEDEXPORT)")

    node_arg(ps.add_parser("echo", help="verify the node (C-ECHO; a QIDO-RS query for DICOMweb)"))
    f = ps.add_parser("find", help="find studies (C-FIND or QIDO-RS)")
    node_arg(f)
    f.add_argument("--patient-id")
    f.add_argument("--patient-name", help="DICOM wildcards allowed: DOE^*")
    f.add_argument("--date", help="YYYYMMDD or a range YYYYMMDD-YYYYMMDD (either end may be open)")
    f.add_argument("--modality", help="CR, DX, ECG, ...")
    f.add_argument("--accession")
    f.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    g = ps.add_parser("get", help="retrieve a study or one whole series (C-GET or WADO-RS) into a folder")
    node_arg(g)
    g.add_argument("--study", help="Study Instance UID (from 'medexport pacs find')")
    g.add_argument("--series", help="Series Instance UID: retrieve that series only, every instance or none "
                                    "(its study is looked up unless --study is given)")
    g.add_argument("-o", "--out", required=True, help="folder to write the instances into (one file per instance)")
    s = ps.add_parser("send", help="send DICOM files (C-STORE or STOW-RS): results, SR, SEG, Encapsulated PDF")
    node_arg(s)
    s.add_argument("files", nargs="+", help="DICOM files or folders")
    a = ps.add_parser("add", help="add or replace a node in the settings file")
    a.add_argument("name")
    a.add_argument("address", help="AET@HOST:PORT or a DICOMweb URL")
    a.add_argument("--calling-ae", default="MEDEXPORT", help="our AE title towards this node (default MEDEXPORT)")
    a.add_argument("--tls-ca", default="", help="CA bundle (PEM) that signed the node's certificate: turns TLS on")
    a.add_argument("--tls-cert", default="", help="our certificate (PEM), when the node asks for one")
    a.add_argument("--tls-key", default="", help="our private key (PEM)")
    a.add_argument("--username", default="", help="DICOMweb basic auth user (password: $MEDEXPORT_PACS_PASSWORD)")
    a.add_argument("--no-overlay", action="store_true",
                   help="send results without the overlay secondary capture (default: sent beside SR / SEG / PDF)")
    ps.add_parser("nodes", help="list the nodes in the settings file")
    ps.add_parser("remove", help="remove a node from the settings file").add_argument("name")

    li = sub.add_parser("listen", help="a DICOM storage node that runs the bundles on what arrives and forwards "
                                        "results; 'listen status|retry|requeue' look after its spool")
    li.add_argument("action", nargs="?", default="run", choices=["run", "status", "retry", "requeue"],
                    help="run (default): serve; status: the spool's backlog; retry JOB: run a failed or waiting "
                         "job now; requeue --failed: every failed job again (attempts and deadline reset)")
    li.add_argument("job", nargs="?", help="job id (file name in the spool's failed/ or pending/), for retry")
    li.add_argument("--bundles", help="a bundle folder, or a folder of bundles (required to run)")
    li.add_argument("--port", type=int, default=11112, help="DICOM port to listen on (default 11112)")
    li.add_argument("--ae-title", default="MEDEXPORT", help="our AE title; associations calling another are "
                                                            "rejected (default MEDEXPORT)")
    li.add_argument("--host", default="0.0.0.0", help="address to listen on (default all)")
    li.add_argument("--forward", help="where results go: AET@HOST:PORT, a DICOMweb URL or a node name "
                                      "(default: written to SPOOL/results)")
    li.add_argument("--allow", action="append", help="calling AE title allowed to send (repeat; default: any, "
                                                     "with a warning)")
    li.add_argument("--spool", help="folder for received objects, the job queue and audit.jsonl "
                                    "(default $MEDEXPORT_HOME/listener)")
    li.add_argument("--workers", type=int, default=1, help="jobs run at once (default 1)")
    li.add_argument("--max-attempts", type=int, default=0,
                    help="tries before a job goes to failed/ (default 0: no limit, only --send-deadline)")
    li.add_argument("--backoff", type=float, default=2.0, help="first retry delay in s, doubled each time (default 2)")
    li.add_argument("--max-backoff", type=float, default=300.0, help="longest retry delay in s (default 300)")
    li.add_argument("--send-deadline", type=float, default=24.0,
                    help="hours a job's results are re-sent to an unreachable --forward before it fails (default 24)")
    li.add_argument("--keep-days", type=float, default=7.0,
                    help="days a skipped or failed object is kept in the spool, then purged (default 7); "
                         "delivered objects are deleted at once")
    li.add_argument("--idle-timeout", type=float, default=30.0,
                    help="seconds an association may stay silent before it is dropped (default 30)")
    li.add_argument("--max-per-peer", type=int, default=8, help="connections one address may hold (default 8)")
    li.add_argument("--max-object-mb", type=float, default=512.0,
                    help="largest object taken, in MiB; larger ones are answered 0xA700 (default 512)")
    li.add_argument("--no-pdf", action="store_true", help="send SR/SEG only, no Encapsulated PDF report")
    li.add_argument("--series-quiet", type=float, default=10.0, metavar="SECONDS",
                    help="a series a volume bundle takes is complete when no instance of it has arrived for this "
                         "long; then the bundle runs once on the whole series (default 10)")
    li.add_argument("--log-file", help="also append the log to this file (reopened after rotation); "
                                       "SIGHUP reloads the bundles from --bundles")
    li.add_argument("--tls-cert", help="our certificate (PEM): the listener speaks TLS")
    li.add_argument("--tls-key", help="its private key (PEM)")
    li.add_argument("--tls-ca", help="CA bundle: senders must present a certificate it signed")
    li.add_argument("--allow-unsigned", action="store_true", help="run unsigned bundles even with a trust store")
    li.add_argument("--require-commissioning", metavar="DIR",
                    help="run only bundles a current, passing report in DIR commissions ('medexport commission')")
    li.add_argument("--shadow", action="append", metavar="CANDIDATE",
                    help="run this bundle beside the live bundle of its model id on every study; its results go to "
                         "SPOOL/shadow and audit.jsonl only, never to --forward ('medexport shadow --spool'); repeat")
    li.add_argument("--failed", action="store_true", help="with requeue: every job in failed/")
    li.add_argument("--json", action="store_true", help="with status: print JSON")


def _node(args):
    from dataclasses import replace

    from medexport.engine.pacs.nodes import get_node

    node = get_node(args.node)
    return replace(node, calling_ae=args.calling_ae) if args.calling_ae else node


def cmd_pacs(args) -> int:
    from medexport.engine.pacs import nodes, scu

    if args.pacs_command == "nodes":
        found = nodes.load_nodes()
        print("\n".join(n.describe() for n in found.values()) or f"no nodes yet in {nodes.nodes_path()}")
        return 0
    if args.pacs_command == "remove":
        found = nodes.load_nodes()
        if args.name not in found:
            raise ConfigurationError(f"no node named {args.name!r} in {nodes.nodes_path()}",
                                     expected=f"one of: {', '.join(found) or 'no nodes yet'}",
                                     fix="list them with 'medexport pacs nodes'")
        del found[args.name]
        print(f"removed {args.name} from {nodes.save_nodes(found)}")
        return 0
    if args.pacs_command == "add":
        found = nodes.load_nodes()
        extra = {k: getattr(args, k) for k in ("calling_ae", "tls_ca", "tls_cert", "tls_key", "username")}
        found[args.name] = nodes.Node.from_address(args.address, args.name, send_overlay=not args.no_overlay, **extra)
        print(f"saved {found[args.name].describe()} in {nodes.save_nodes(found)}")
        return 0
    node = _node(args)
    if args.pacs_command == "echo":
        print(f"{node.describe()}: answered in {scu.echo(node):.0f} ms")
    elif args.pacs_command == "find":
        rows = scu.find(node, patient_id=args.patient_id, patient_name=args.patient_name, date=args.date,
                        modality=args.modality, accession=args.accession)
        for r in rows:
            print(json.dumps(r) if args.json else
                  f"{r['StudyDate']:<9} {r['ModalitiesInStudy']:<8} {r['PatientID']:<12} {r['PatientName']:<24} "
                  f"{r['StudyDescription'][:30]:<30} {r['StudyInstanceUID']}")
        print(f"{len(rows)} studies", file=sys.stderr)
    elif args.pacs_command == "get":
        if args.series:
            paths = scu.get_series(node, args.series, Path(args.out), study_uid=args.study)
            print(f"{len(paths)} instances of series {args.series} in {args.out}")
            return 0
        if not args.study:
            raise ConfigurationError("pacs get needs --study or --series",
                                     fix="find the UIDs with 'medexport pacs find'")
        paths = scu.get(node, args.study, Path(args.out))
        print(f"{len(paths)} instances in {args.out}")
    elif args.pacs_command == "send":
        files = [p for f in args.files for p in (sorted(x for x in Path(f).rglob("*") if x.is_file())
                                                   if Path(f).is_dir() else [Path(f)])]
        datasets = _dicom_only(files)
        print(f"sent {len(scu.send(node, datasets)) if datasets else 0} objects to {node.describe()}")
    return 0


def _dicom_only(files: list) -> list:
    """The DICOM datasets among ``files``; every other file is skipped with one line on stderr."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    out = []
    for path in files:
        try:
            out.append(pydicom.dcmread(path))
        except (InvalidDicomError, EOFError, OSError) as exc:
            print(f"skipped {path}: not a DICOM file ({type(exc).__name__})", file=sys.stderr)
    return out


def _spool(args) -> Path:
    from medexport.engine.pacs.nodes import data_home

    return Path(args.spool) if args.spool else data_home() / "listener"


def cmd_listen_admin(args) -> int:
    """``listen status`` / ``retry JOB`` / ``requeue --failed``: files only, the listener may be running."""
    from medexport.engine.pacs.queue import JobQueue
    from medexport.engine.pacs.series import SeriesSpool
    from medexport.engine.pacs.spool import status

    if not _spool(args).is_dir():
        raise ConfigurationError(f"no spool at {_spool(args)}", fix="pass the listener's --spool folder")
    queue = JobQueue(_spool(args))
    if args.action == "status":
        info = status(queue.root) | {"series": SeriesSpool(queue).status()}
        if args.json:
            print(json.dumps(info, indent=1))
            return 0
        q, old = info["queue"], info["oldest_waiting"]
        print(f"{info['spool']}: pending {q['pending']}, running {q['running']}, done {q['done']} "
              f"({info['skipped']} skipped), failed {q['failed']}; {info['awaiting_delivery']} awaiting delivery; "
              f"{info['objects_kept']} objects kept")
        if old:
            print(f"oldest waiting: {old['job']} ({old['age_s']:.0f} s, {old['attempts']} attempts)")
        for e in info["last_errors"]:
            print(f"  {e['state']} {e['job']} ({e['attempts']} attempts): {e['error']}")
        for name, n in info["bundles"].items():
            print(f"  {name}: {n['done']} done, {n['failed']} failed")
        for name, n in info["shadow"].items():
            print(f"  shadow {name} {', '.join(n['candidates'])}: {n['runs']} runs, {n['changed']} decisions changed, "
                  f"{n['candidate_failed']} failed")
        series = info["series"]
        print(f"series: {series['gathering']} gathering ({series['gathering_instances']} instances), "
              f"{series['closed_kept']} complete series kept")
        return 0
    if args.action == "retry":
        if not args.job:
            raise ConfigurationError("listen retry needs a JOB", fix="see 'medexport listen status' for job ids")
        if not queue.requeue(args.job):
            raise ConfigurationError(f"no failed or waiting job {args.job} in {queue.root}",
                                     fix="see 'medexport listen status' for job ids")
        print(f"{args.job} queued again")
        return 0
    if not args.failed:
        raise ConfigurationError("listen requeue needs --failed", fix="medexport listen requeue --failed")
    jobs = [p.stem for p in sorted(queue.folder("failed").glob("*.json"))]
    print(f"{sum(queue.requeue(j) for j in jobs)} failed jobs queued again")
    return 0


def cmd_listen(args) -> int:
    from medexport.engine.pacs.listener import Listener, find_bundles
    from medexport.engine.pacs.nodes import Node, get_node
    from medexport.engine.trust_policy import trust_policy

    if args.action != "run":
        return cmd_listen_admin(args)
    if not args.bundles:
        raise ConfigurationError("listen needs --bundles", fix="medexport listen --bundles FOLDER ...")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if args.log_file:
        from logging.handlers import WatchedFileHandler

        handler = WatchedFileHandler(args.log_file, encoding="utf-8")  # logrotate-friendly: reopened when moved
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        logging.getLogger().addHandler(handler)
    logging.getLogger("highdicom").setLevel(logging.ERROR)  # its per-object notes are not the listener's news
    tls = Node("listener-tls", ae_title=args.ae_title, host="localhost", port=args.port,
               tls_ca=args.tls_ca or "", tls_cert=args.tls_cert or "", tls_key=args.tls_key or "") \
        if args.tls_cert else None
    listener = Listener(_spool(args), find_bundles(args.bundles),
                        ae_title=args.ae_title, port=args.port, host=args.host,
                        forward=get_node(args.forward) if args.forward else None, allow=args.allow, tls=tls,
                        workers=args.workers, max_attempts=args.max_attempts, backoff_s=args.backoff,
                        max_backoff_s=args.max_backoff, send_deadline_s=args.send_deadline * 3600,
                        keep_days=args.keep_days, idle_timeout_s=args.idle_timeout, max_per_peer=args.max_per_peer,
                        max_object_mb=args.max_object_mb, write_pdf=not args.no_pdf,
                        open_options={"trust": trust_policy(allow_unsigned=args.allow_unsigned, required=True)},
                        require_commissioning=args.require_commissioning, shadow=args.shadow,
                        series_quiet_s=args.series_quiet)
    stop = threading.Event()
    reload = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: reload.set())
    listener.start()
    print(f"listening as {listener.ae_title} on {args.host}:{listener.port} ({len(listener.models)} bundles); "
          f"queue {listener.queue.counts()}", flush=True)
    while not stop.wait(1) and listener.fatal is None:
        if reload.is_set():  # SIGHUP: the bundles folder again (new versions, added or removed bundles)
            reload.clear()
            try:
                listener.reload(find_bundles(args.bundles))
            except MedError as exc:
                listener.audit("reload-failed", reason=str(exc))
    listener.stop()
    if listener.fatal is not None:
        print(f"medexport listen: {listener.fatal}", file=sys.stderr)
        return 1
    return 0


COMMANDS = {"pacs": cmd_pacs, "listen": cmd_listen}
