# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test bench clean-venv

# torch is installed first, pinned, so that open_clip/timm/torchvision resolve
# against it (and a local CPU wheel, where the machine has one, is used).
TORCH_SPEC ?= torch==2.13.0
# the editable install also compiles laion_hf/extract/_rules.pyx in place (setup.py): redone when it changes
$(STAMP): pyproject.toml setup.py laion_hf/extract/_rules.pyx
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/laion-hf demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

clean-venv:
	rm -rf $(VENV)
