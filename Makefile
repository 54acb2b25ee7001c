# The README's two commands: `make demo` and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
TW     := $(VENV)/bin/tagwright
AS_OF  ?= $(shell date -d yesterday +%F)
CUSTOMERS ?= 2000
DAYS   ?= 730
SEED   ?= 7

.PHONY: demo test install clean

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(TW) sample --customers $(CUSTOMERS) --days $(DAYS) --seed $(SEED) --end-date $(AS_OF) --out data/inbox
	$(TW) run --as-of $(AS_OF)

test: install
	$(PY) -m pytest

clean:
	rm -rf data $(VENV)
