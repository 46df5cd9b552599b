# The commands a fresh machine needs: `make reproduce`, and `make test` (fast) or `make test-all` (everything).
# Everything else (the virtual environment, the toy data) is made on the way.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python

.PHONY: setup test test-all reproduce ablation

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[dev,deploy,book]'
	touch $@

# make test: the fast tier, to run before a commit (no training past a few steps, no Jupyter kernel,
# browser or torchrun; the markers are declared in pyproject.toml). make test-all: every test (CI).
# PYTEST="..." passes more pytest arguments, e.g. PYTEST="tests/test_metrics.py -x".
FAST   := not (slow or kernel or ui or torchrun)
PYTEST ?=

test: setup
	$(BIN)/lint-imports
	$(PY) -m pytest -q -m '$(FAST)' $(PYTEST)

test-all: setup
	$(BIN)/lint-imports
	$(PY) -m pytest -q $(PYTEST)

# ---------------------------------------------------------------------------------------------
# make reproduce: every notebook headless (papermill) per category, then the results tables.
# Results, executed notebooks (.ipynb and .html) and tables go to results/<data folder>/<profile>/
# (ignored by git). Up-to-date categories are skipped unless FORCE=1. SOLUTIONS=1 also runs the
# exercises' solutions (into exercise_* folders beside the runs; their outputs then show in the
# executed notebooks and the book). README=1 also rewrites the
# README's results section from them (only then is a tracked file changed).
#   make reproduce                                          toy data set, offline teacher, CPU
#   make reproduce DATA=data/mvtec_ad PROFILE=paper         the paper's reproduction (GPU)
#   make reproduce DATA=data/mvtec_ad PROFILE=paper DEVICES=0,1,2,3   categories spread over 4 GPUs
#   make reproduce DATA=data/mvtec_ad CATEGORIES=bottle PROFILE=offline README=1
#   make reproduce DATA=data/mtd.yaml PROFILE=offline          a data-set file: images in any layout (data/README.md)
# make ablation: the RD baseline, each addition alone, then all; one table per category, with the
# mean ± std over SEEDS (default: the profile's seed). Resumable: run it again to finish what is missing.
# VARIANTS="rd all" runs only those rows (any of: rd fusion attention memory masking all).
# README=1 also writes the tables into docs/ablation.md (a block per results folder). REFERENCE=1 first
# scores the training-free reference on the same teacher (benchmarks/reference.py) and adds its row.
#   make ablation DATA=data/mvtec_ad CATEGORIES=bottle PROFILE=offline SEEDS="111 112 113"
DATA       ?=
CATEGORIES ?=
PROFILE    ?=
EPOCHS     ?=
DEVICE     ?= auto
DEVICES    ?=
FORCE      ?=
SOLUTIONS  ?=
SEEDS      ?=
VARIANTS   ?=
README     ?=
REFERENCE  ?=
RESULTS    ?= results
TOY_DATA   ?= data/toy
TOY_EPOCHS ?= 10

ifeq ($(strip $(DATA)),)
RUN_DATA    = $(TOY_DATA)
RUN_PROFILE = $(or $(PROFILE),offline)
RUN_EPOCHS  = $(or $(EPOCHS),$(TOY_EPOCHS))
MAKE_DATA   = $(BIN)/dhkd data toy --out $(TOY_DATA)
else
RUN_DATA    = $(DATA)
RUN_PROFILE = $(or $(PROFILE),paper)
RUN_EPOCHS  = $(EPOCHS)
MAKE_DATA   = @true
endif
REPRODUCE = $(BIN)/dhkd reproduce --data '$(RUN_DATA)' --categories '$(CATEGORIES)' --profile '$(RUN_PROFILE)' \
	--epochs '$(RUN_EPOCHS)' --device '$(DEVICE)' --devices '$(DEVICES)' --out '$(RESULTS)' $(if $(filter 1 yes true,$(FORCE)),--force) \
	$(if $(filter 1 yes true,$(SOLUTIONS)),--solutions)

reproduce: setup
	$(MAKE_DATA)
	$(REPRODUCE) $(if $(filter 1 yes true,$(README)),--readme README.md)

ablation: setup
	$(MAKE_DATA)
	$(if $(filter 1 yes true,$(REFERENCE)),$(BIN)/python -m benchmarks.reference --data '$(RUN_DATA)' \
		--categories '$(CATEGORIES)' --profile '$(RUN_PROFILE)' --seeds '$(or $(SEEDS),111)' --out '$(RESULTS)')
	$(REPRODUCE) --ablation --seeds '$(SEEDS)' --variants '$(VARIANTS)' $(if $(filter 1 yes true,$(README)),--readme docs/ablation.md)

# ---------------------------------------------------------------------------------------------
# make book: the executed notebooks make reproduce left under RESULTS (each <data>/<profile>/
# there, or RESULTS=one results folder) as a static web site, figures and the widgets' last
# state included (MkDocs with mkdocs-jupyter). It goes to BOOK, inside the checkout or RESULTS;
# a book make book wrote there before is replaced, any other folder left alone.
#   make book                                   every results folder under results/ -> build/book/index.html
#   make book RESULTS=results/mvtec_ad/paper BOOK=results/mvtec_ad/paper/book
BOOK ?= build/book

.PHONY: book
book: setup
	$(BIN)/dhkd book --results '$(RESULTS)' --out '$(BOOK)'

# ---------------------------------------------------------------------------------------------
# make bench: training, inference and metric timings (dhkd bench, from benchmarks/) as a table
# and a JSON file; make bench-readme: benchmarks/README.md's tables from BENCH_JSONS.
# benchmarks/README.md lists the commands behind its tables.
#   make bench                                                      rd profile, synthetic data
#   make bench DATA=data/mvtec_ad CATEGORY=bottle COMPARE=anomalib BENCH_JSON=results/bench_rd.json
#   make bench PROFILE=paper DEVICE=cuda BENCH_JSON=results/bench_paper.json
# The timings do not depend on the teacher's weights, so BENCH_SET defaults to weights=none
# (no download). COMPARE=anomalib installs the bench extra (anomalib) first.
CATEGORY   ?= bottle
COMPARE    ?=
BENCH_SET  ?= model.teacher.weights=none
BENCH_JSON ?= $(RESULTS)/bench.json
BENCH_JSONS ?= $(foreach run,bench_rd bench_rd_2 bench_rd_3 bench_rd_anomalib_width bench_rd_anomalib_width_2 bench_rd_anomalib_width_3 \
	bench_rd_allocator bench_rd_allocator_2 bench_rd_allocator_3,$(RESULTS)/$(run).json)

.PHONY: bench bench-readme
bench: setup
	$(if $(strip $(COMPARE)),$(BIN)/pip install --quiet -e '.[bench]',@true)
	mkdir -p '$(dir $(BENCH_JSON))'
	$(PY) -m benchmarks.bench --profile '$(or $(PROFILE),rd)' --device '$(DEVICE)' \
		$(if $(strip $(DATA)),--data-root '$(DATA)' --category '$(CATEGORY)') \
		$(if $(strip $(COMPARE)),--compare '$(COMPARE)') $(foreach s,$(BENCH_SET),--set '$(s)') --json '$(BENCH_JSON)'

bench-readme: setup
	$(PY) -m benchmarks.report $(BENCH_JSONS) --readme benchmarks/README.md

# ---------------------------------------------------------------------------------------------
# make test-ui: the browser tests, in headless Chromium (Debian's `chromium`, driven by
# Playwright). JupyterLab on loopback with the visual-analysis notebook, the threshold slider
# moved (about a minute); and make book on a tiny make reproduce run, every page opened (about
# three, most of it that run). Screenshots go to results/ui/. Installs chromium with apt-get
# when it is missing (needs root or sudo). UI_RUN=runs/bottle shows that evaluated run instead of toy maps.
CHROMIUM ?= /usr/bin/chromium
UI_RUN   ?=

.PHONY: test-ui
test-ui: setup
	@test -x '$(CHROMIUM)' || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; \
	  else echo "make test-ui needs $(CHROMIUM): install Debian's chromium as root (apt-get install chromium)" >&2; exit 1; fi; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
	DHKD_CHROMIUM='$(CHROMIUM)' DHKD_UI_RUN='$(UI_RUN)' $(PY) -m pytest -m ui -q -s
