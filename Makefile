# The two commands of a fresh machine: `make demo` and `make test`. Each sets itself up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := runs/demo

.PHONY: demo test install lint weights clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/lensjobs simulate --n 8 --seed 1 --out $(DEMO)/candidates.fits
	$(BIN)/lensjobs validate $(DEMO)/candidates.fits

# Re-make the released weights (lensjobs/models/released): ~1 h on 2 CPU cores.
weights: $(STAMP)
	$(BIN)/lensjobs simulate --n 24000 --seed 1 --out data/train_seed1.fits
	$(BIN)/lensjobs simulate --n 2000 --seed 2 --out data/test_seed2.fits
	$(BIN)/lensjobs train segmenter data/train_seed1.fits --test data/test_seed2.fits --seed 0 --epochs 12
	$(BIN)/lensjobs train regressor data/train_seed1.fits --test data/test_seed2.fits --seed 0 --epochs 12

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) runs data .pytest_cache .ruff_cache
