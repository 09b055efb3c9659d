# Two commands do all set-up on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ENSEMBLE := $(VENV)/bin/ensemble
# CPU torch wheel installed first when the machine has no NVIDIA GPU, so pip does
# not pull the multi-GB CUDA build. Override e.g. with
#   make TORCH_CPU='torch --index-url https://download.pytorch.org/whl/cpu'
TORCH_CPU ?= torch==2.13.0
RUN_DATA ?= sklearn:breast_cancer
RUN_OUT ?= runs
PYTEST_ARGS ?=

.PHONY: venv browser run test lint clean bench bench-autogluon bench-scale bench-quality

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then \
		$(PY) -m pip install -q "$(TORCH_CPU)"; fi
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

run: venv
	$(ENSEMBLE) fit --data $(RUN_DATA) --target target --out $(RUN_OUT)

# Headless Chromium renders report.html in the report test (Debian package).
browser:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then \
		true; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium (Debian package) for the report test"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null \
		|| { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }; \
	elif command -v sudo >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then \
		sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; \
	else \
		echo "chromium missing and no apt-get: install it to run the report test" >&2; exit 1; \
	fi

test: venv browser
	ENSEMBLE_REQUIRE_BROWSER=1 $(PY) -m pytest $(PYTEST_ARGS)

# AutoGluon's pins clash with ours: it gets a venv of its own.
AG_VENV ?= .venv-autogluon
BENCH_TIME_LIMIT ?= 120
SHARED ?= ../shared/datasets

bench-autogluon: $(AG_VENV)/.installed

# The portfolio AutoGluon's users get: LightGBM, XGBoost, CatBoost and its
# neural networks (the CPU torch wheel first, as for our venv).
AG_VERSION ?= 1.6.3
$(AG_VENV)/.installed:
	test -x $(AG_VENV)/bin/python || $(PYTHON) -m venv $(AG_VENV)
	$(AG_VENV)/bin/python -m pip install -q --upgrade pip
	if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then \
		$(AG_VENV)/bin/python -m pip install -q "$(TORCH_CPU)"; fi
	$(AG_VENV)/bin/python -m pip install -q \
		"autogluon.tabular[lightgbm,xgboost,catboost,fastai]==$(AG_VERSION)" pyarrow
	touch $@

# Every shared table, side by side with sklearn stacking and AutoGluon.
bench: venv bench-autogluon
	$(PY) benchmarks/compare.py --data $(SHARED)/adult.tsv.gz --target target --time-limit $(BENCH_TIME_LIMIT)
	$(PY) benchmarks/compare.py --data $(SHARED)/bank_marketing.csv --target y --time-limit $(BENCH_TIME_LIMIT)
	$(PY) benchmarks/compare.py --data $(SHARED)/letter.tsv.gz --target target --time-limit $(BENCH_TIME_LIMIT)
	$(PY) benchmarks/compare.py --data $(SHARED)/california_housing.tsv.gz --target target --time-limit $(BENCH_TIME_LIMIT)

# Ours against AutoGluon best_quality and medium_quality on the ten shared
# tables at 300 s (about two hours of an otherwise idle machine; AutoGluon's
# rows are kept in benchmarks/results/ and reused).
QUALITY_TIME_LIMIT ?= 300
bench-quality: venv bench-autogluon
	$(PY) benchmarks/quality.py --time-limit $(QUALITY_TIME_LIMIT)

bench-scale: venv
	$(PY) benchmarks/scale.py --time-limit $(BENCH_TIME_LIMIT)

lint: venv
	$(VENV)/bin/ruff check ensemble tests jobs benchmarks
	$(VENV)/bin/ruff format --check ensemble tests jobs benchmarks
	$(VENV)/bin/mypy ensemble benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache
