"""``medexport build``: source -> ONNX -> compiled artifacts -> validated, checksummed bundle.

The plan runs small steps in order and records each in the bundle's provenance. Nothing
reaches ``out`` unless every artifact passed validation and the finished bundle opens and
self-tests through the engine, exactly as it will on the target.
"""
from __future__ import annotations

import importlib
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from medexport.engine.model import in_chunks
from medexport.engine.open import self_test_bundle
from medexport.engine.errors import ConfigurationError, ValidationError
from medexport.engine.manifest import Artifact, Manifest
from medexport.engine.ood import OodReference
from medexport.engine.signing import sign_bundle, signing_key
from medexport.engine.tasks import task_class, task_for

from . import source as sources
from .datasets import Dataset, check_calib_val, load_dataset
from .golden import UNLIKE_PREFIX, golden_inputs
from .guards import AurocGuard, GuardReport, guard_class
from .steps import validate, write_bundle
from .render import trust_section
from .steps.context import CompileContext
from .steps.features import FEATURES
from .steps import proof
from .steps.ood_fit import OOD_FILE, OOD_FIT_STUDIES, fit_ood, with_features
from .targets import check_options, get_target


DEFAULT_MAX_DECISION_DROP = 0.02


def _default(value, default):
    return default if value is None else value


@dataclass
class BuildOptions:
    targets: list
    precisions: list = field(default_factory=lambda: ["fp32"])
    golden: str | None = None
    calib: str | None = None
    calib_size: int | None = None
    val: str | None = None
    metric: str | None = None
    max_drop: float | None = None
    max_decision_drop: float | None = None
    overwrite: bool = False
    keep_passing: bool = False  # an artifact that fails validation is left out (and recorded) instead of failing the build
    sign_key: str | None = None  # ECDSA private key (PEM): sign the finished bundle (bundle.sig)
    robustness: bool = False  # with --val: the guard's metric under perturbations, per artifact (export/robustness.py)
    robustness_studies: int = 200  # validation studies the robustness report uses (a seeded subset)
    skip: tuple = ()  # "target-precision" artifacts of the cross product not to build (e.g. "onnxruntime-int8")
    # for ONNX sources
    task: str | None = None
    labels: list | None = None
    input_size: int | None = None
    mean: tuple = (0.0,)
    std: tuple = (1.0,)
    activation: str | None = None
    threshold: float = 0.5
    model_id: str | None = None
    version: str | None = None
    intended_use: str | None = None
    intended_for: dict | None = None  # engine.manifest.IntendedUse fields, for ONNX sources



def _check_skip(options: BuildOptions) -> None:
    """Skipped artifacts must be ones the build would make, and never an fp32 rung a quantized artifact needs."""
    built = {f"{t}-{p}" for t in options.targets for p in options.precisions}
    unknown = sorted(set(options.skip) - built)
    if unknown:
        raise ConfigurationError(f"asked to skip {', '.join(unknown)}, which this build does not make",
                                 expected=f"some of {', '.join(sorted(built))}")
    for target in options.targets:
        if f"{target}-fp32" in options.skip and any(f"{target}-{p}" in built - set(options.skip)
                                                   for p in options.precisions if p != "fp32"):
            raise ConfigurationError(f"{target}-fp32 cannot be skipped: the quantized artifact of {target} needs it "
                                     "(the precision ladder)", fix=f"skip {target}'s quantized artifacts too")

class Log:
    """Prints each step with its time; the CLI passes ``print`` to stderr, tests pass a list."""

    def __init__(self, emit=print):
        self.emit, self.steps = emit, []

    def step(self, name: str):
        log = self

        class _Step:
            def __enter__(self):
                self.start = time.perf_counter()
                log.emit(f"[build] {name} ...")
                return self

            def __exit__(self, exc_type, *rest):
                seconds = round(time.perf_counter() - self.start, 2)
                log.steps.append({"step": name, "seconds": seconds, "ok": exc_type is None})
                if exc_type is None:
                    log.emit(f"[build] {name}: done in {seconds:.1f} s")

        return _Step()


def build(model: str, out, options: BuildOptions, emit=print) -> Path:
    """Build a bundle at ``out`` from a registered model name or an .onnx path."""
    out = Path(out)
    log = Log(emit)
    started = time.perf_counter()
    if options.sign_key:
        signing_key(options.sign_key)  # a wrong key path fails now, not after the build
    with tempfile.TemporaryDirectory(prefix="medexport-") as work:
        with log.step("load source model"):
            source = _load_source(model, Path(work), options)
        if options.calib and task_class(source.task).ood_applies:
            with log.step("expose the model's features for the out-of-distribution reference"):
                source = with_features(source, Path(work))
        if "int8" in options.precisions and "fp32" not in options.precisions:
            options = replace(options, precisions=["fp32", *options.precisions])
            log.emit("[build] int8 added with fp32 on each target: a quantized artifact answers only the studies its "
                     "screening passes, the fp32 artifact of the same backend answers the rest (the precision ladder)")
        check_options(options.targets, options.precisions, clinical=source.clinical, calib=options.calib,
                      calib_size=options.calib_size, val=options.val, max_drop=options.max_drop,
                      max_decision_drop=options.max_decision_drop)
        _check_skip(options)
        if options.robustness and not options.val:
            raise ConfigurationError("--robustness measures the metric on labelled validation studies, and no --val "
                                     "was given", fix="add --val DATA (labelled), or drop --robustness")
        guard_cls = guard_class(task_class(source.task), source.postprocess, options.metric)
        if "int8" in options.precisions:
            options = replace(options, max_drop=_default(options.max_drop, guard_cls.default_budget),
                              max_decision_drop=_default(options.max_decision_drop, DEFAULT_MAX_DECISION_DROP))
            log.emit(f"[build] int8 guard: {guard_cls.name.upper()} may drop by at most {options.max_drop} (--max-drop)"
                     + (f", sensitivity and specificity at the threshold by {options.max_decision_drop} "
                        "(--max-decision-drop)" if guard_cls is AurocGuard else ""))
        guard = guard_cls(source.labels, source.postprocess, source.preprocess, max_drop=options.max_drop,
                          max_decision_drop=options.max_decision_drop)
        stage = write_bundle.staging_dir(out, options.overwrite)
        try:
            manifest = _build_into(stage, source, options, guard, log)
            with log.step("self-test the finished bundle through the engine"):
                for check in self_test_bundle(stage, trust=[]):  # not signed yet
                    log.emit(f"[build]   {check.line()}")
                    if not check.passed:
                        raise ValidationError(f"the written bundle failed its own self-test: {check.line()}")
            if options.sign_key:
                with log.step("sign the bundle"):
                    signature = sign_bundle(stage, options.sign_key)
                log.emit(f"[build]   {signature.describe()}")
            path = write_bundle.finish(stage, out)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    emit(f"[build] wrote {path} in {time.perf_counter() - started:.1f} s")
    return path


def _load_source(model: str, work: Path, options: BuildOptions):
    if model.endswith(".onnx") or Path(model).is_file():
        return sources.from_onnx(Path(model), task=options.task, labels=options.labels,
                                 input_size=options.input_size, mean=options.mean, std=options.std,
                                 activation=options.activation, threshold=options.threshold,
                                 model_id=options.model_id, version=options.version,
                                 intended_use=options.intended_use, intended_for=options.intended_for,
                                 workdir=work)
    given = [f for f, v in (("--task", options.task), ("--labels", options.labels),
                            ("--input-size", options.input_size), ("--version", options.version),
                            ("--intended-use", options.intended_use),
                            ("--modalities/--body-parts/--views/--ages", options.intended_for)) if v]
    if given:
        raise ConfigurationError(f"{', '.join(given)} only apply to ONNX files; {model!r} is a registered model "
                                 "with its own settings", fix=f"drop {', '.join(given)}")
    return sources.from_registry(model, work)


def _build_into(stage: Path, source, options: BuildOptions, guard, log: Log) -> Manifest:
    with log.step("read golden inputs"):
        golden, stored = golden_inputs(source, options.golden)
        unlike = sum(n.startswith(UNLIKE_PREFIX) for n in golden.names)
        log.emit(f"[build]   agreement checked on {len(golden.names)} rows ({unlike} from studies unlike the training "
                 f"data); the bundle stores {len(stored)} of them for on-target self-tests")
    task = task_for(_draft_manifest(source, ()))
    ref_outputs = in_chunks(source.reference, golden.inputs, source.input.shape[0])
    ref_scores = task.scores(ref_outputs)
    val = None
    if options.val:
        with log.step(f"read validation data {options.val}"):
            val = load_dataset(options.val, source.preprocess, labels=source.labels)
            if val.labels is None:
                raise ConfigurationError(f"validation data {options.val} has no labels",
                                         fix="use an .npz with *_labels or a folder with labels.csv")
            val_ref = _scores(task, source.reference, val.inputs, source.input)
        for note in [*val.notes, *guard.source_problems(val, val_ref)]:
            log.emit(f"[build] WARNING: {note}")
        if options.calib:
            check_calib_val(options.calib, val, source.preprocess, source.labels, log.emit)
    golden_arrays = {"inputs": golden.inputs[stored], "scores_source": ref_scores[stored].astype(np.float32),
                     "names": np.array(golden.names)[stored]}
    artifacts, reports, refused, runtimes = [], {}, [], {}
    with tempfile.TemporaryDirectory(prefix="medexport-decode-") as encoded:
        paths = validate.reduced_decode_paths(task.study_kind, encoded)
        decode_checks = {m: validate.reduced_decode_inputs(task, paths, m) for m in validate.DECODE_MARGINS} \
            if paths else {}
    with log.step("prepare calibration data"):
        context = _compile_context(options, source, task, guard, val, golden, log)
    ood, ood_ref, calib = None, None, None
    if FEATURES in [o.name for o in source.outputs]:
        with log.step("fit the out-of-distribution reference"):
            calib = load_dataset(options.calib, source.preprocess, labels=source.labels, limit=OOD_FIT_STUDIES)
            ood, reference = fit_ood(source, calib, val, log)
            (stage / ood.file).write_bytes(reference)
            ood_ref = OodReference.from_file(stage / ood.file)
    proving = "int8" in options.precisions and source.clinical and val is not None
    other = None
    if proving:
        with log.step("read the other studies the quantized artifacts must flag where they stray (coverage)"):
            other, other_header = proof.coverage_set(source, task, options.val)
            other_ref = _scores(task, source.reference, other.inputs, source.input)
            header = {n: bool(other_header[other.row_groups == g].any()) for g, n in enumerate(other.names)}
            golden_header = np.array([header.get(n.split("#")[0], False) for n in golden.names], bool)
            log.emit(f"[build]   {len(other.inputs)} rows from {len(other)} studies")
    rungs = {}  # target -> the fp32 artifact's golden outputs and scores, and its validation outputs
    for name in options.targets:
        target = get_target(name)
        compiler = _compiler(target)
        for precision in sorted(options.precisions, key=lambda p: p != "fp32"):  # the fp32 rung first
            key = f"{name}-{precision}"
            if key in options.skip:
                log.emit(f"[build]   {key}: not built (asked to skip it)")
                continue
            with log.step(f"compile {key}"):
                files = compiler(source, precision, stage / key,
                                 context.with_tolerance(task.golden_tolerance[precision]))
                quantization = files.pop("quantization", None)  # steps/quantize.py: what it did, kept in float
                if quantization:
                    log.emit(f"[build]   {key}: {quantization['method']}, kept in float: " + (", ".join(
                        k["layer"] for k in quantization["kept_in_float"]) or "nothing"))
            backend_cls = _backend(target.backend)
            with backend_cls(files, precision=precision) as runtime, log.step(f"validate {key}"):
                run = lambda x: runtime.infer({source.input.name: x})  # noqa: E731
                outputs = in_chunks(run, golden.inputs, source.input.shape[0])
                scores = task.scores(outputs)
                tolerance = task.golden_tolerance[precision]
                report = {"target": name, "precision": precision,
                          "golden": validate.golden_agreement(ref_scores, scores, task.disagreement(ref_scores, scores),
                                                              golden.names, tolerance, task.agreement_measure)}
                if quantization:
                    report["quantization"] = quantization
                heatmap = source.postprocess.heatmap_output
                if heatmap:
                    report["golden"]["heatmap_correlation"] = validate.heatmap_correlation(
                        ref_outputs[heatmap], outputs[heatmap], ref_scores)
                if decode_checks:
                    report["reduced_decode"] = validate.reduced_decode_choice(task, run, decode_checks, tolerance)
                verdict, val_out = None, None
                if val is not None:
                    val_out = _kept(in_chunks(run, val.inputs, source.input.shape[0]), source)
                    verdict = guard.report(val, val_ref, task.scores(val_out))
                    report["validation"] = verdict.data
                band = validate.borderline_band(tolerance, source.postprocess.thresholds, verdict)
                spec, own_ref, extra = ood, ood_ref, {}
                rung = rungs.get(name)
                if precision == "int8" and rung is None:
                    report["no_fp32_rung"] = True
                if proving and precision == "int8" and ood is not None:
                    spec, own_ref, extra = _own_ood(source, calib, val, run, key, stage, log) or (ood, ood_ref, {})
                if proving and precision == "int8":
                    report["proof"] = _prove(source, task, tolerance, band, golden, stored, ref_scores, outputs, scores,
                                             golden_header, val, val_ref, val_out, other, other_header, other_ref,
                                             run, (spec, own_ref), (ood, ood_ref), rung)
                    _log_proof(key, report["proof"], log)
            if not source.clinical and not report["golden"]["passed"]:
                g = report["golden"]
                # its stated tolerance becomes what it measured, so that on-target self-tests check for drift
                tolerance = float(f"{1.25 * g['max_disagreement']:.1e}")
                log.emit(f"[build]   {key}: golden disagreement up to {g['max_disagreement']:.2e} (tolerance "
                         f"{g['tolerance']:.0e}) recorded, not enforced: {source.model_id} has random weights, for "
                         f"speed work only; stated tolerance {tolerance:.1e}")
                g["enforced"], g["stated_tolerance"] = False, tolerance
            try:
                _raise_if_failed(key, report, verdict, enforce_golden=source.clinical)
            except ValidationError as exc:
                if not options.keep_passing:
                    raise
                log.emit(f"[build]   {key} refused, left out of the bundle (--keep-passing): {exc.what}")
                refused.append({"artifact": key, "reason": exc.what})
                write_bundle.write_json(stage / "reports" / "refused" / f"{key}.json", report)
                shutil.rmtree(stage / key, ignore_errors=True)
                continue
            answered = scores
            if precision != "fp32" and rung is not None:  # what the ladder answers: the self-test's reference
                moved = proof.row_flags(source, task, outputs, scores, spec, own_ref, band)
                answered = np.where(moved.reshape((-1,) + (1,) * (scores.ndim - 1)), rung["scores"], scores)
            if precision == "fp32":
                rungs[name] = {"outputs": outputs, "scores": scores, "val": val_out}
            # each artifact's own build-time answers, for the self-test's drift line (reported, not enforced): maps
            # (masks' probabilities) in float16, which keeps the golden file within the installer's budget
            golden_arrays[f"scores_{key}"] = answered[stored].astype(np.float16 if answered.ndim > 2 else np.float32)
            rel = {role: str(Path(p).relative_to(stage)) for role, p in files.items()}
            reports[key] = report
            runtimes[key] = (backend_cls, files, precision)
            write_bundle.write_json(stage / "reports" / f"{key}.json", report)
            margin = report.get("reduced_decode", {}).get("decode_margin", 0)
            extra = {**extra, **({"quantization": quantization} if quantization else {})}
            artifacts.append(Artifact(name, precision, rel, tolerance, f"reports/{key}.json", extra, borderline=band,
                                      decode_margin=margin))
    if options.robustness and runtimes:
        with log.step(f"robustness: the {guard.name} metric under perturbations"):
            for key, table in _robustness(options, source, task, guard, runtimes, log).items():
                reports[key]["robustness"] = table
                write_bundle.write_json(stage / "reports" / f"{key}.json", reports[key])
    np.savez_compressed(stage / "golden.npz", **golden_arrays)
    (stage / "MODEL_CARD.md").write_text(source.card_text.rstrip() + "\n\n" + trust_section(source.intended_for, ood, artifacts))
    if not artifacts:
        raise ValidationError("every artifact failed validation; no bundle was written",
                              fix="see the reasons above; build another precision or target")
    draft = _draft_manifest(source, artifacts, steps=log.steps, refused=refused, ood=ood)
    manifest = Manifest(**{**draft.__dict__, "files": write_bundle.checksums(stage)})
    write_bundle.write_manifest(stage, manifest.to_json())
    return manifest


def _draft_manifest(source, artifacts, steps=(), refused=(), ood=None) -> Manifest:
    return Manifest(
        model_id=source.model_id, model_version=source.version, task=source.task, labels=source.labels,
        input=source.input, outputs=source.outputs, preprocess=source.preprocess,
        postprocess=source.postprocess, artifacts=tuple(artifacts), files={}, golden="golden.npz",
        card="MODEL_CARD.md", intended_use=source.intended_use, intended_for=source.intended_for,
        medical_device=False,
        backend_preference=source.backend_preference, ood=ood,
        provenance={"source": source.kind, "source_sha256": source.source_sha256,
                    "training": source.training, "tools": _tool_versions(),
                    "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "machine": {"platform": platform.platform(), "processor": _cpu_name(),
                                "python": platform.python_version()},
                    "steps": list(steps), "refused_artifacts": list(refused)})


def _scores(task, run, inputs: np.ndarray, input_spec) -> np.ndarray:
    """Scores for many preprocessed inputs, chunked by the model's batch dimension."""
    return task.scores(in_chunks(run, inputs, input_spec.shape[0]))


def _robustness(options: BuildOptions, source, task, guard, runtimes: dict, log: Log) -> dict:
    """Every kept artifact's metric on perturbed validation studies (export/robustness.py)."""
    from contextlib import ExitStack

    from . import robustness

    with ExitStack() as stack:
        runs = {}
        for key, (backend_cls, files, precision) in runtimes.items():
            runtime = stack.enter_context(backend_cls(files, precision=precision))
            runs[key] = lambda x, r=runtime: r.infer({source.input.name: x})
        return robustness.measure(options.val, source, guard, runs,
                                  lambda run, data: _scores(task, run, data.inputs, source.input),
                                  studies=options.robustness_studies, emit=log.emit)


def _kept(outputs: dict, source) -> dict:
    """The outputs the proof needs of many studies: scores and features (not maps)."""
    return {k: v for k, v in outputs.items() if k in (FEATURES, source.postprocess.score_output)}


def _own_ood(source, calib, val, run, key: str, stage: Path, log: Log):
    """The artifact's own OOD reference (its features), written into its folder; its options entry.
    None when its features do not separate anything (a threshold of 0: quantization collapsed the
    feature output): the bundle's fp32 reference then screens it, as the build says."""
    spec, reference = fit_ood(source, calib, val, log, run=run, file=f"{key}/{OOD_FILE}", label=f" {key}")
    if not np.isfinite(spec.threshold) or spec.threshold <= 0:
        log.emit(f"[build]   OOD {key}: its own features give threshold {spec.threshold:.2f} (collapsed by "
                 "quantization): the bundle's fp32 reference screens it")
        return None
    (stage / spec.file).write_bytes(reference)
    extra = {"ood": {"file": spec.file, "threshold": spec.threshold, "fitted_on": spec.fitted_on,
                     "threshold_rule": spec.threshold_rule, "report": spec.report}}
    return spec, OodReference.from_file(stage / spec.file), extra


def _prove(source, task, tolerance, band, golden, stored, ref_scores, outputs, scores, golden_header, val, val_ref,
           val_out, other, other_header, other_ref, run, own, fp32, rung) -> dict:
    """export/steps/proof.py on this artifact's outputs: in distribution, coverage, the ladder's share."""
    spec, ref = own
    flags = lambda out, sc: proof.row_flags(source, task, out, sc, spec, ref, band)  # noqa: E731
    val_scores = task.scores(val_out)
    other_out = _kept(in_chunks(run, other.inputs, source.input.shape[0]), source)
    other_scores = task.scores(other_out)
    golden_flags, val_flags = flags(outputs, scores), flags(val_out, val_scores)
    fp32_ood = own_ood = None
    if rung is not None and ref is not None and fp32[1] is not None:
        decide = lambda out, sp, r: proof.row_flags(source, task, out, np.zeros((len(out[FEATURES]), 0)), sp, r, 0.0)  # noqa: E731
        fp32_ood = {"agreement_set": decide(rung["outputs"], *fp32), "validation": decide(rung["val"], *fp32)}
        own_ood = {"agreement_set": decide(outputs, spec, ref), "validation": decide(val_out, spec, ref)}
    return proof.prove(tolerance, golden_names=golden.names, golden_diff=task.disagreement(ref_scores, scores),
                       golden_flags=golden_flags, golden_header=golden_header, stored=stored,
                       val_diff=task.disagreement(val_ref, val_scores), val_flags=val_flags,
                       other_names=tuple(other.names[g] for g in other.row_groups),
                       other_diff=task.disagreement(other_ref, other_scores),
                       other_flags=flags(other_out, other_scores) | other_header, fp32_ood=fp32_ood, own_ood=own_ood,
                       val_names=tuple(val.names[g] for g in val.row_groups))


def _log_proof(key: str, p: dict, log: Log) -> None:
    i, c, a = p["in_distribution"], p["coverage"], p["answered_itself"]
    log.emit(f"[build]   {key} in distribution: worst {i['max_disagreement']:.2e} on {i['n']} studies (tolerance "
             f"{p['tolerance']:.0e}); coverage: {c['flagged']} of {c['beyond_tolerance']} beyond the tolerance flagged "
             f"({c['n']} other rows); answered itself: {a['agreement_set']:.0%} of the agreement set, "
             f"{a['validation']:.0%} of validation"
             + ("; OOD decisions agree with fp32 on " + ", ".join(f"{v:.1%} of the {k.replace('_', ' ')}"
                                                                 for k, v in p["ood_agreement"].items())
                if p.get("ood_agreement") else ""))


def _raise_if_failed(key: str, report: dict, verdict: GuardReport | None, enforce_golden: bool = True) -> None:
    """``enforce_golden=False``: a random-weight speed model, whose scores mean nothing. A quantized
    artifact with a proof (steps/proof.py) is held to it instead of every golden input."""
    problems = []
    g = report["golden"]
    if report.get("no_fp32_rung"):
        problems.append(f"the bundle has no fp32 artifact on {report['target']} (refused or not built), and a "
                        "quantized artifact answers only the studies its screening passes: the fp32 one answers the rest")
    if "proof" in report and enforce_golden:
        problems += report["proof"]["problems"]
    elif not g["passed"] and enforce_golden:
        problems.append(f"{len(g['over_tolerance'])} of {g['n']} golden inputs disagree with the source model beyond "
                        f"the tolerance ({g['measure']} up to {g['max_disagreement']:.2e}, tolerance {g['tolerance']:.0e}, "
                        f"worst {g['worst_item']})")
    if verdict is not None:
        problems += verdict.problems
    if problems:
        raise ValidationError(f"{key} failed validation: " + "; ".join(problems) + "; no bundle was written",
                              fix="raise the budget only if that is clinically acceptable, or choose another precision",
                              report=report)


def _compiler(target):
    module, func = target.compiler.split(":")
    return getattr(importlib.import_module(f"medexport.export.steps.{module}"), func)


def _backend(name: str):
    from medexport.engine.backends import get_backend

    cls = get_backend(name)
    cls.require()
    return cls


def _compile_context(options: BuildOptions, source, task, guard, val: Dataset | None, golden: Dataset,
                     log: Log) -> CompileContext:
    """What compile steps may use: golden and calibration inputs and, with --val, the guarded metric."""
    calib = None
    if "int8" in options.precisions:
        calib = load_dataset(options.calib, source.preprocess, labels=source.labels, limit=options.calib_size or 300)
        log.emit(f"[build]   {len(calib)} calibration studies from {options.calib}")
    metric = None
    if val is not None:
        def metric(run, inputs=None) -> float:  # NNCF passes the whole validation set back
            return guard.value(val, _scores(task, run, val.inputs, source.input))
    return CompileContext(emit=log.emit, golden_inputs=golden.inputs, golden_tolerance=0.0,
                          calib_inputs=None if calib is None else calib.inputs,
                          val_inputs=None if val is None else val.inputs, val_metric=metric,
                          metric_name=guard.name, max_drop=options.max_drop)


def _tool_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("medexport", "torch", "onnx", "onnxruntime", "openvino", "nncf", "numpy", "pydicom"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
