# Two commands do everything on a fresh clone: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip -q --disable-pip-version-check
BUNDLES ?= bundles

INSTALLER_VENV ?= .venv-installer

.PHONY: run test install bundles bench installer clean fuzz orthanc

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(PIP) install --upgrade pip setuptools wheel
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[export,desktop,dev]'
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
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q

# The readers' fuzz suite at length (tests/test_fuzz.py, figures in docs/fuzzing.md): inputs per format
# (6 formats: 17000 each is 102,000 inputs, about an hour on 2 cores).
FUZZ_EXAMPLES ?= 17000
fuzz: install
	MEDEXPORT_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -s tests/test_fuzz.py

bench: install
	$(VENV)/bin/medexport bench densenet121-cxr pneumonia-cxr ecg-rhythm blood-cell-det fetal-head-us --out bench-results

# The clinic app: a separate environment with the runtime and desktop extras only (no torch),
# frozen with PyInstaller, self-tested with no Python on PATH, packed as a tarball.
installer: bundles
	$(PYTHON) -m venv $(INSTALLER_VENV)
	$(INSTALLER_VENV)/bin/pip -q --disable-pip-version-check install --upgrade pip setuptools wheel
	$(INSTALLER_VENV)/bin/pip -q --disable-pip-version-check install '.[desktop]' pyinstaller==6.22.3
	$(INSTALLER_VENV)/bin/python installer/build.py --bundles $(BUNDLES) --dist dist \
	    --study ../shared/data/images/cxr-nih/00000001_000.png

clean:
	rm -rf $(BUNDLES) build dist *.egg-info $(INSTALLER_VENV)
