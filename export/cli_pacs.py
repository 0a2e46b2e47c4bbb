"""``medexport pacs echo|find|get|send|add|nodes`` and ``medexport listen`` (no torch imported)."""
from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from pathlib import Path


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
    g = ps.add_parser("get", help="retrieve a study (C-GET or WADO-RS) into a folder")
    node_arg(g)
    g.add_argument("--study", required=True, help="Study Instance UID (from 'medexport pacs find')")
    g.add_argument("-o", "--out", required=True, help="folder to write the instances into")
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
    ps.add_parser("nodes", help="list the nodes in the settings file")

    li = sub.add_parser("listen", help="a DICOM storage node that runs the bundles on what arrives and forwards results")
    li.add_argument("--bundles", required=True, help="a bundle folder, or a folder of bundles")
    li.add_argument("--port", type=int, default=11112, help="DICOM port to listen on (default 11112)")
    li.add_argument("--ae-title", default="MEDEXPORT", help="our AE title (default MEDEXPORT)")
    li.add_argument("--host", default="0.0.0.0", help="address to listen on (default all)")
    li.add_argument("--forward", help="where results go: AET@HOST:PORT, a DICOMweb URL or a node name "
                                      "(default: written to SPOOL/results)")
    li.add_argument("--allow", action="append", help="calling AE title allowed to send (repeat; default: any)")
    li.add_argument("--spool", help="folder for received objects, the job queue and audit.jsonl "
                                    "(default $MEDEXPORT_HOME/listener)")
    li.add_argument("--workers", type=int, default=1, help="jobs run at once (default 1)")
    li.add_argument("--max-attempts", type=int, default=5, help="tries before a job goes to failed/ (default 5)")
    li.add_argument("--backoff", type=float, default=2.0, help="first retry delay in s, doubled each time (default 2)")
    li.add_argument("--no-pdf", action="store_true", help="send SR/SEG only, no Encapsulated PDF report")
    li.add_argument("--tls-cert", help="our certificate (PEM): the listener speaks TLS")
    li.add_argument("--tls-key", help="its private key (PEM)")
    li.add_argument("--tls-ca", help="CA bundle: senders must present a certificate it signed")
    li.add_argument("--allow-unsigned", action="store_true", help="run unsigned bundles even with a trust store")


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
    if args.pacs_command == "add":
        found = nodes.load_nodes()
        extra = {k: getattr(args, k) for k in ("calling_ae", "tls_ca", "tls_cert", "tls_key", "username")}
        found[args.name] = nodes.Node.from_address(args.address, args.name, **extra)
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
        paths = scu.get(node, args.study, Path(args.out))
        print(f"{len(paths)} instances in {args.out}")
    elif args.pacs_command == "send":
        files = [p for f in args.files for p in (sorted(x for x in Path(f).rglob("*") if x.is_file())
                                                   if Path(f).is_dir() else [Path(f)])]
        print(f"sent {len(scu.send(node, files))} objects to {node.describe()}")
    return 0


def cmd_listen(args) -> int:
    from medexport.engine.pacs.listener import Listener, find_bundles
    from medexport.engine.pacs.nodes import Node, data_home, get_node

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    tls = Node("listener-tls", ae_title=args.ae_title, host="localhost", port=args.port,
               tls_ca=args.tls_ca or "", tls_cert=args.tls_cert or "", tls_key=args.tls_key or "") \
        if args.tls_cert else None
    listener = Listener(Path(args.spool) if args.spool else data_home() / "listener", find_bundles(args.bundles),
                        ae_title=args.ae_title, port=args.port, host=args.host,
                        forward=get_node(args.forward) if args.forward else None, allow=args.allow, tls=tls,
                        workers=args.workers, max_attempts=args.max_attempts, backoff_s=args.backoff,
                        write_pdf=not args.no_pdf, open_options={"allow_unsigned": args.allow_unsigned})
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    listener.start()
    print(f"listening as {listener.ae_title} on {args.host}:{listener.port} ({len(listener.models)} bundles); "
          f"queue {listener.queue.counts()}", flush=True)
    while not stop.wait(1):
        pass
    listener.stop()
    return 0


COMMANDS = {"pacs": cmd_pacs, "listen": cmd_listen}
