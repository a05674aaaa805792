# The two commands of the README: `make demo` and `make test`. Both install what they need.
PY ?= python3
PIP ?= $(PY) -m pip
DEMO ?= demo
export PIP_DISABLE_PIP_VERSION_CHECK = 1

.PHONY: setup ffmpeg test demo bench lint clean reliability fuzz

ffmpeg:  ## Debian's ffmpeg/ffprobe, when missing
	@command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1 || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null; }

setup: ffmpeg  ## ffmpeg + torch (CPU-capable wheels from the local index) + this package with dev extras
	$(PIP) install -q "torch==2.14.1" "torchvision==0.29.1" "torchaudio>=2.11"
	$(PIP) install -q -e ".[dev]"

test: setup
	$(PY) -m pytest -q

RELIABILITY_TESTS = tests/test_reliability_*.py tests/test_hardening_*.py tests/test_fuzz_parsers.py

reliability: setup  ## the reliability, hardening and fuzz suites, then regenerate docs/RELIABILITY.md (about 3 minutes on 2 cores)
	$(PY) -m pytest -q $(RELIABILITY_TESTS) --reliability-doc

fuzz: setup  ## every fuzz test, long: MMCACHE_FUZZ_EXAMPLES examples each (default 5000; about 9 minutes on 2 cores)
	HYPOTHESIS_PROFILE=long $(PY) -m pytest -q -m fuzz -p no:cacheprovider

lint: setup
	$(PY) -m ruff check .

demo: setup  ## the Snakemake workflow (workflows/config/config.yaml): 80 clips (4 classes only fusion separates) -> 8 shards, 2 at once -> train -> report
	@test ! -d $(DEMO) -o -d $(DEMO)/logs || { echo "replacing $(DEMO)/ (made before the workflow)"; rm -rf $(DEMO); }
	$(PY) -m snakemake --cores 2 --config out=$(DEMO)
	@cat $(DEMO)/report.txt

bench: setup  ## every benchmark, one after the other (about 75 minutes on a quiet 2-core machine); each rewrites its section of benchmarks/RESULTS.md
	$(PY) benchmarks/bench_extract.py
	$(PY) benchmarks/bench_decode.py
	$(PY) benchmarks/bench_read.py
	$(PY) benchmarks/bench_remote.py
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_scaling.py
	$(PY) benchmarks/bench_scale.py

clean:
	rm -rf $(DEMO) .pytest_cache bench-out
