# Two commands do everything on a fresh clone: `make run` and `make test`.
PYTHON ?= python3
comma  := ,
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip -q --disable-pip-version-check
BUNDLES ?= bundles

INSTALLER_VENV ?= .venv-installer

.PHONY: run test check install bundles bench bench-serve installer clean fuzz calibration-study orthanc robustness soak

# `medexport serve` (Triton through pytriton) runs on Linux x86_64 only. pytriton 0.7.0 declares
# numpy<2 but runs beside numpy 2 (engine/serve/stub_env.py): it is installed without its pins, and
# Triton's Python-backend stub gets its own small environment (numpy<2, pyzmq) inside the venv.
SERVER := $(shell uname -sm | grep -qx 'Linux x86_64' && echo yes)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(PIP) install --upgrade pip setuptools wheel
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[export,desktop,dev$(if $(SERVER),$(comma)server)]'
	$(if $(SERVER),$(PIP) install --no-deps nvidia-pytriton==0.7.0 && $(VENV)/bin/medexport serve --setup)
	touch $@

install: $(VENV)/.installed

bundles: install
	$(VENV)/bin/medexport demo --bundles $(BUNDLES) --build-only

run: install
	$(VENV)/bin/medexport demo --bundles $(BUNDLES)

# The PACS tests run against a real Orthanc (Debian packages; installed once, when missing and root).
orthanc:
	@{ command -v Orthanc >/dev/null 2>&1 || [ -x /usr/sbin/Orthanc ]; } && [ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || { \
	    if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq orthanc orthanc-dicomweb; \
	    else echo "install Orthanc for the PACS tests: sudo apt-get install -y orthanc orthanc-dicomweb" >&2; exit 1; fi; }

test: install orthanc
	$(VENV)/bin/lint-imports
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q --durations=15

# The fast loop beside the full suite: the import contracts and every test that needs no bundle built
# by torch, no Orthanc, no Triton server and no load (tests/conftest.py marks the others `slow` from the
# fixtures they use); a few minutes on 2 cores.
check: install
	$(VENV)/bin/lint-imports
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -m "not slow"

# The listener soak (tests/soak_listener.py, not part of make test; about 10 min, root for its tmpfs spool):
# 200 mixed studies from 4 senders, the forward PACS down 5 min, the spool's disk full 30 s, one kill -9.
soak: install orthanc
	MEDEXPORT_SOAK=1 QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -s tests/soak_listener.py

# The readers' fuzz suite at length (tests/test_fuzz.py, figures in docs/fuzzing.md): inputs per format
# (6 formats: 17000 each is 102,000 inputs, about an hour on 2 cores).
FUZZ_EXAMPLES ?= 17000
fuzz: install
	MEDEXPORT_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -s tests/test_fuzz.py

bench: install
	$(VENV)/bin/medexport bench densenet121-cxr pneumonia-cxr ecg-rhythm blood-cell-det fetal-head-us --out bench-results

# Site calibration on a simulated new site (docs/calibration.md): builds pneumonia-cxr if needed.
calibration-study: install
	$(PY) -m medexport.export.site_calibration_study $(if $(wildcard $(BUNDLES)/pneumonia-cxr),--bundle $(BUNDLES)/pneumonia-cxr) --out calibration-study.json

# Triton load test (not part of make test): 16 clients x 30 s on loopback; a local process, batch-1
# serving and dynamic batching on the same study (docs/triton.md has the figures).
bench-serve: bundles
	mkdir -p bench-results
	$(PY) -m medexport.export.bench.loadtest $(BUNDLES)/pneumonia-cxr --clients 16 --seconds 30 \
	    --study ../shared/data/images/cxr-nih/00000001_000.png --out bench-results/bench-serve.json

# Robustness report of the shipped models (docs/robustness.md): the demo bundles' targets and
# precisions rebuilt from the shipped weights with their validation data and --robustness (opt-in:
# minutes per model on 2 cores), then each bundle's table as 'inspect' prints it.
DATA ?= ../shared/data
ROBUSTNESS ?= robustness-bundles
ROBUSTNESS_STUDIES ?= 200
ROBUST_BUILD = $(VENV)/bin/medexport build --overwrite --keep-passing --robustness --robustness-studies $(ROBUSTNESS_STUDIES)
robustness: install
	$(ROBUST_BUILD) pneumonia-cxr -o $(ROBUSTNESS)/pneumonia-cxr --target openvino,onnxruntime --precision fp32,int8 \
	    --calib models/weights/pneumonia-cxr.calib.csv --val models/weights/pneumonia-cxr.val.csv
	$(ROBUST_BUILD) ecg-rhythm -o $(ROBUSTNESS)/ecg-rhythm --target onnxruntime,openvino --precision fp32 \
	    --val $(DATA)/ecg/cinc2017-af
	$(ROBUST_BUILD) fetal-head-us -o $(ROBUSTNESS)/fetal-head-us --target openvino,onnxruntime --precision fp32,int8 \
	    --calib $(DATA)/segmentation/hc18:train:64 --val $(DATA)/segmentation/hc18:val
	$(ROBUST_BUILD) blood-cell-det -o $(ROBUSTNESS)/blood-cell-det --target openvino,onnxruntime --precision fp32,int8 \
	    --calib $(DATA)/detection/bccd:train --val $(DATA)/detection/bccd:val
	for m in pneumonia-cxr ecg-rhythm fetal-head-us blood-cell-det; do $(VENV)/bin/medexport inspect $(ROBUSTNESS)/$$m; done

# The clinic app: a separate environment with the runtime and desktop extras only (no torch),
# frozen with PyInstaller, self-tested with no Python on PATH, packed as a tarball.
installer: bundles
	$(PYTHON) -m venv $(INSTALLER_VENV)
	$(INSTALLER_VENV)/bin/pip -q --disable-pip-version-check install --upgrade pip setuptools wheel
	$(INSTALLER_VENV)/bin/pip -q --disable-pip-version-check install '.[desktop]' pyinstaller==6.22.3
	$(INSTALLER_VENV)/bin/python installer/build.py --bundles $(BUNDLES) --dist dist \
	    --study ../shared/data/images/cxr-nih/00000001_000.png

clean:
	rm -rf $(BUNDLES) $(ROBUSTNESS) build dist *.egg-info $(INSTALLER_VENV)
