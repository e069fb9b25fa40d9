# The two commands of a fresh machine: `make demo` and `make test`. Each sets itself up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := runs/demo

.PHONY: demo test install system-packages lint weights images clean
# Debian packages the tests need: debootstrap (the HTCondor pool's root), chromium (gallery).
DEBS := debootstrap chromium chromium-driver
POOL := containers/minicondor/pool.sh

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all,test]'
	touch $@

install: $(STAMP)

# Eight simulated candidates (lenses with interlopers, a non-lens, one broken cutout) through
# the whole DAG on this machine with the standard preset; prints where the gallery is.
demo: $(STAMP)
	rm -rf $(DEMO)
	$(BIN)/lensjobs simulate --n 8 --seed 1 --nonlens-frac 0.15 --broken 1 --out $(DEMO)/candidates.fits
	$(BIN)/lensjobs submit $(DEMO)/candidates.fits --runs-dir $(DEMO) --name demo --local -j 2

# Re-make the released weights (lensjobs/models/released): ~3 h on 2 CPU cores. First the
# plain simulations with the lens within 0.5" of the centre, then fine-tuning on
# model-breaking and plain ones with the lens within 1"; held-out sets use other seeds.
W := data/weights
weights: $(STAMP)
	$(BIN)/lensjobs simulate --n 24000 --seed 1 --supersampling 2 --out data/train_seed1.fits
	$(BIN)/lensjobs simulate --n 2000 --seed 2 --supersampling 2 --out data/test_seed2.fits
	$(BIN)/lensjobs simulate --n 24000 --seed 31 --supersampling 2 --centre-max 1 --model-breaking --out data/train_seed31_breaking.fits
	$(BIN)/lensjobs simulate --n 12000 --seed 32 --supersampling 2 --centre-max 1 --out data/train_seed32_plain.fits
	$(BIN)/lensjobs simulate --n 1000 --seed 34 --supersampling 2 --centre-max 1 --model-breaking --out data/test_seed34_breaking.fits
	for kind in segmenter regressor; do \
	  OMP_NUM_THREADS=1 $(BIN)/lensjobs train $$kind data/train_seed1.fits --test data/test_seed2.fits --seed 0 --epochs 12 --out $(W)/plain && \
	  OMP_NUM_THREADS=1 $(BIN)/lensjobs train $$kind data/train_seed31_breaking.fits data/train_seed32_plain.fits --test data/test_seed34_breaking.fits --seed 0 --epochs 8 --init $(W)/plain --out lensjobs/models/released \
	  || exit 1; done

# The job images (Apptainer SIFs) in images/, built once per change of what goes in them.
images: $(STAMP) system-packages
	PYTHON=$(BIN)/python containers/build-images.sh all

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

system-packages:
	@missing=$$(for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# The integration tests use a real personal HTCondor pool whose jobs run from the images;
# it is taken down even on failure.
test: lint system-packages images
	$(POOL) up
	$(BIN)/pytest; status=$$?; $(POOL) down; exit $$status

clean:
	rm -rf $(VENV) runs data images .pytest_cache .ruff_cache
